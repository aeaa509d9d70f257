#!/usr/bin/env bash
# Builds every image compose.yaml's CPU profile needs from local parts, for a Docker engine
# that cannot pull from a registry (tests/tests/compose_up.rs runs it; docs/compose.md):
#
#   jetinfer-base:bookworm          Debian bookworm minbase made with debootstrap (built once)
#   jetinfer-local/nats:<key>       the .venv's nats-server binary          docker/local/nats.Dockerfile
#   jetinfer-local/redis:<key>      Debian's redis-server                   docker/local/redis.Dockerfile
#   jetinfer-local/dispatcher:<key> host-built dispatcher + CLI, no libtorch docker/local/dispatcher.Dockerfile
#   jetinfer-local/torch:<key>      the .so files jetinfer-worker loads      docker/local/torch.Dockerfile
#   jetinfer-local/worker:<key>     host-built worker + CLI + sample models  docker/local/worker.Dockerfile
#
# <key> is a digest of the Dockerfile and of the files that go in (names, sizes, mtimes), so an
# image is rebuilt only when its inputs change; older tags of the same image are removed.
# Prints the variables compose.yaml reads, one `NAME=value` a line on stdout (progress goes to
# stderr), e.g.  eval "$(scripts/compose-local-images.sh)"; export JETINFER_NATS_IMAGE …
#
# Binaries come from target/debug (JETINFER_LOCAL_BIN_DIR=target/release for a release build):
# the host is bookworm like the base, so they run there. Debug info is stripped on the way in.
# Environment: JETINFER_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# JETINFER_BASE_IMAGE (default jetinfer-base:bookworm: any Debian bookworm image will do).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=env.sh
source scripts/env.sh

BASE_IMAGE=${JETINFER_BASE_IMAGE:-jetinfer-base:bookworm}
MIRROR=${JETINFER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BIN_DIR=$(realpath -m "${JETINFER_LOCAL_BIN_DIR:-target/debug}")
STAGE=$ROOT/target/compose-local

say() { echo "compose-local-images: $*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"
for b in jetinfer jetinfer-dispatcher jetinfer-worker; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b missing: cargo build --workspace --bins first"
done
[[ -f models/out/models.toml ]] || die "models/out/models.toml missing: run scripts/setup.sh (models/export.py)"
NATS_BIN=$(command -v nats-server) || die "nats-server not on PATH: run scripts/setup.sh (.venv)"
[[ -n ${TORCH_LIB:-} && -d $TORCH_LIB ]] || die "torch's lib folder not found in .venv: run scripts/setup.sh"

mkdir -p "$STAGE"
# One build at a time: two test runs must not stage into the same folders.
exec 9>"$STAGE/.lock"
flock 9

# --- the base: debootstrap once, then reuse -----------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    [[ $BASE_IMAGE == jetinfer-base:bookworm ]] || die "$BASE_IMAGE not found"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    rootfs=$(mktemp -d /var/tmp/jetinfer-base.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap bookworm (minbase) from $MIRROR into $rootfs (about a minute)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$STAGE/debootstrap.log" 2>&1 \
        || { tail -20 "$STAGE/debootstrap.log" >&2; die "debootstrap failed (log: $STAGE/debootstrap.log)"; }
    # As in Debian's own images: packages installed during a build start no services, and
    # apt keeps no downloaded .deb files.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    echo 'APT::Install-Recommends "false"; Binary::apt::APT::Keep-Downloaded-Packages "false";' \
        >"$rootfs/etc/apt/apt.conf.d/90jetinfer"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    say "imported $BASE_IMAGE"
fi
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")

# key <dockerfile> <extra text> <files…>: a digest of what an image is made of.
key() {
    local dockerfile=$1 extra=$2
    shift 2
    {
        sha256sum "$dockerfile"
        echo "$extra"
        [[ $# -eq 0 ]] || stat -L -c '%n %s %Y' "$@"
    } | sha256sum | cut -c1-16
}

# image <name> <key> <stage function> [build-arg…]: builds jetinfer-local/<name>:<key> unless
# it exists. The stage function fills the build context folder given as its argument.
image() {
    local name=$1 k=$2 stage_fn=$3
    shift 3
    local args=()
    for a in "$@"; do args+=(--build-arg "$a"); done
    local tag=jetinfer-local/$name:$k
    if docker image inspect "$tag" >/dev/null 2>&1; then
        say "$tag is up to date"
    else
        local ctx=$STAGE/$name
        rm -rf "$ctx"
        mkdir -p "$ctx"
        "$stage_fn" "$ctx"
        say "building $tag"
        # The engine's legacy builder (no BuildKit needed); its output only when it fails.
        docker build -f "docker/local/$name.Dockerfile" "${args[@]}" -t "$tag" "$ctx" \
            >"$STAGE/$name.build.log" 2>&1 \
            || { tail -30 "$STAGE/$name.build.log" >&2; die "docker build of $tag failed"; }
        rm -rf "$ctx"
        # Older builds of the same image (kept while a container still uses one).
        docker images "jetinfer-local/$name" --format '{{.Tag}}' | grep -vx "$k" \
            | sed "s|^|jetinfer-local/$name:|" | xargs -r docker rmi >/dev/null 2>&1 || true
    fi
    echo "$tag"
}

# A binary without its debug info (a debug build's is most of its size).
put_bin() { strip --strip-debug -o "$2/$(basename "$1")" "$1"; }

# The shared libraries the worker loads that the base does not have: everything ldd resolves
# inside the .venv. With PyPI's torch (a CUDA build) that includes libtorch_cuda.so and the
# CUDA libraries it needs: the worker does not start without them, even on the CPU.
VENV_REAL=$(realpath "$VIRTUAL_ENV")
worker_libs() {
    ldd "$BIN_DIR/jetinfer-worker" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
        case $(realpath "$lib") in "$VENV_REAL"/*) echo "$lib" ;; esac
    done | sort -u
}
missing=$(ldd "$BIN_DIR/jetinfer-worker" | grep 'not found' || true)
[[ -z $missing ]] || die "jetinfer-worker does not load here (source scripts/env.sh?):
$missing"
mapfile -t LIBS < <(worker_libs)
[[ ${#LIBS[@]} -gt 0 ]] || die "ldd found no torch library in jetinfer-worker: is it linked against the .venv's torch?"

stage_nats() { cp "$NATS_BIN" "$1/nats-server"; }
stage_redis() { :; }
stage_dispatcher() {
    mkdir "$1/bin"
    put_bin "$BIN_DIR/jetinfer-dispatcher" "$1/bin"
    put_bin "$BIN_DIR/jetinfer" "$1/bin"
}
stage_torch() {
    mkdir "$1/lib"
    # Each file under the name the binary asks for (ldd prints that name); a hard link where
    # target/ and the .venv share a file system (2.6 GB with torch's CUDA libraries).
    local lib
    for lib in "${LIBS[@]}"; do
        ln "$(realpath "$lib")" "$1/lib/$(basename "$lib")" 2>/dev/null || cp -L "$lib" "$1/lib/"
    done
}
stage_worker() {
    mkdir "$1/bin" "$1/models"
    put_bin "$BIN_DIR/jetinfer-worker" "$1/bin"
    put_bin "$BIN_DIR/jetinfer" "$1/bin"
    cp models/out/*.toml models/out/*.pt "$1/models/"
}

BIN_FILES=("$BIN_DIR/jetinfer" "$BIN_DIR/jetinfer-dispatcher" "$BIN_DIR/jetinfer-worker")
B="BASE=$BASE_IMAGE"
NATS_IMAGE=$(image nats "$(key docker/local/nats.Dockerfile "$BASE_ID" "$NATS_BIN")" stage_nats "$B")
REDIS_IMAGE=$(image redis "$(key docker/local/redis.Dockerfile "$BASE_ID")" stage_redis "$B")
DISPATCHER_IMAGE=$(image dispatcher "$(key docker/local/dispatcher.Dockerfile "$BASE_ID" "${BIN_FILES[@]:0:2}")" \
    stage_dispatcher "$B")
RUNTIME_IMAGE=$(image torch "$(key docker/local/torch.Dockerfile "$BASE_ID" "${LIBS[@]}")" stage_torch "$B")
WORKER_IMAGE=$(image worker "$(key docker/local/worker.Dockerfile "$RUNTIME_IMAGE" "${BIN_FILES[0]}" "${BIN_FILES[2]}" \
    models/out/*.toml models/out/*.pt)" stage_worker "RUNTIME=$RUNTIME_IMAGE")

# The worker must load in its image with nothing but what the image holds.
if ! out=$(docker run --rm --entrypoint /bin/sh "$WORKER_IMAGE" -c 'ldd /usr/local/bin/jetinfer-worker' 2>&1) \
    || grep -q 'not found' <<<"$out"; then
    die "jetinfer-worker does not load in $WORKER_IMAGE:
$out"
fi

cat <<EOF
JETINFER_NATS_IMAGE=$NATS_IMAGE
JETINFER_REDIS_IMAGE=$REDIS_IMAGE
JETINFER_DISPATCHER_IMAGE=$DISPATCHER_IMAGE
JETINFER_WORKER_IMAGE=$WORKER_IMAGE
EOF
