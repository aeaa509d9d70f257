#!/usr/bin/env bash
# Proves that a freshly installed Debian bookworm with only git, make, ca-certificates, curl and
# a Rust toolchain runs `make demo` (and, asked for, `make test`) from a clone of this
# repository: scripts/setup.sh must install everything else. docs/fresh-machine.md records the
# runs and what they found.
#
# NOT run by CI or by `make test`: it downloads ~3 GB (PyTorch and its CUDA libraries, crates)
# and builds the whole workspace from nothing, 30+ minutes on two cores.
#
# Usage: scripts/fresh-machine-check.sh [options] [make target…]    (default target: demo)
#   --root           run make as root (default: as user `dev`, which gets passwordless sudo)
#   --ref REF        the commit to clone (default: HEAD of this checkout; uncommitted changes
#                    are NOT in the clone)
#   --overlay FILE…  after cloning, copy these files from this working tree over the clone
#                    (to try an uncommitted fix); ends at the next `--`
#   --keep           leave the container running afterwards (its name is printed)
#   --pip-cache DIR  bind-mount DIR as the user's pip cache (shares PyPI downloads between runs;
#                    a run with a warm cache no longer proves the download; for the
#                    non-root run DIR must be writable by uid 1000, else pip skips it)
#   --rust MODE      auto (default): rustup from https://sh.rustup.rs, else rustup-init from
#                    static.rust-lang.org, else the host's toolchain; rustup | host: only that
#   --cargo-test T   instead of make targets, run `make setup build` and then
#                    `cargo test -p jetinfer-tests --test T -- --test-threads=1`
# Environment: JETINFER_BASE_IMAGE (default jetinfer-base:bookworm, made by
# scripts/compose-local-images.sh; any Debian bookworm image will do).
#
# Output: progress on stderr, the full log in target/fresh-machine/<name>.log, and a summary
# (per-step seconds, disk used by each part, the outcome) at its end and on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BASE_IMAGE=${JETINFER_BASE_IMAGE:-jetinfer-base:bookworm}

as_root=0 ref=HEAD keep=0 pip_cache="" rust=auto cargo_test="" overlay=() targets=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --root) as_root=1 ;;
        --ref) ref=$2; shift ;;
        --keep) keep=1 ;;
        --pip-cache) pip_cache=$(realpath -m "$2"); shift ;;
        --rust) rust=$2; shift ;;
        --cargo-test) cargo_test=$2; shift ;;
        --overlay)
            shift
            while [[ $# -gt 0 && $1 != -- ]]; do overlay+=("$1"); shift; done ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fresh-machine-check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
[[ ${#targets[@]} -gt 0 ]] || targets=(demo)
case $rust in auto|rustup|host) ;; *) echo "fresh-machine-check: --rust auto|rustup|host" >&2; exit 2 ;; esac

command -v docker >/dev/null || { echo "fresh-machine-check: docker is not installed" >&2; exit 1; }
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    || { echo "fresh-machine-check: image $BASE_IMAGE missing (scripts/compose-local-images.sh makes it)" >&2; exit 1; }
commit=$(git rev-parse --verify "$ref^{commit}")

name=jetinfer-fresh-$(date +%Y%m%d-%H%M%S)$([[ $as_root == 1 ]] && echo -root || true)
LOGDIR=$ROOT/target/fresh-machine
mkdir -p "$LOGDIR"
LOG=$LOGDIR/$name.log
: >"$LOG"
say() { echo "fresh-machine-check: $*" | tee -a "$LOG" >&2; }

# --- the Rust toolchain: which source is reachable decides the container's mounts ----------
reachable() { curl -sSf -o /dev/null -m 15 "$1" 2>/dev/null; }
RUSTUP_INIT_URL=https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init
rust_how=""
if [[ $rust != host ]]; then
    if reachable https://sh.rustup.rs; then rust_how=sh.rustup.rs
    elif reachable "$RUSTUP_INIT_URL"; then rust_how=rustup-init
    fi
fi
mounts=(-v "$ROOT:/src:ro")
if [[ -z $rust_how ]]; then
    [[ $rust != rustup ]] || { say "neither sh.rustup.rs nor static.rust-lang.org answers"; exit 1; }
    host_tc=$(rustc --print sysroot)
    rust_how="host toolchain $(basename "$host_tc"), bind-mounted read-only"
    mounts+=(-v "$host_tc:/opt/rust:ro")
fi
HOME_DIR=$([[ $as_root == 1 ]] && echo /root || echo /home/dev)
if [[ -n $pip_cache ]]; then
    mkdir -p "$pip_cache"
    mounts+=(-v "$pip_cache:$HOME_DIR/.cache/pip")
fi

say "container $name from $BASE_IMAGE, commit $(git rev-parse --short "$commit"), make ${targets[*]}" \
    "as $([[ $as_root == 1 ]] && echo root || echo 'dev (sudo)'), Rust from $rust_how" \
    "${pip_cache:+, pip cache $pip_cache}"
docker run -d --name "$name" --network host "${mounts[@]}" "$BASE_IMAGE" sleep infinity >/dev/null
declare -A took
user=root
# On every exit, a failed step included: the summary, then the container goes (unless --keep).
finish() {
    local rc=$?
    summary "$rc" || true
    if [[ $keep == 1 ]]; then say "kept: docker exec -it -u $user $name bash -l"
    else docker rm -f "$name" >/dev/null 2>&1 || true; fi
    exit "$rc"
}
summary() {
    {
        echo "=== fresh-machine-check $name: $([[ $1 == 0 ]] && echo PASSED || echo "FAILED (exit $1)")"
        echo "commit $(git rev-parse --short "$commit"), user $user, Rust from $rust_how${pip_cache:+, pip cache $pip_cache}"
        for k in "${!took[@]}"; do printf '  %-28s %6d s\n' "$k" "${took[$k]}"; done | sort
        echo "disk used:"
        docker exec -u root "$name" bash -c "du -sh $HOME_DIR/jetinfer/.venv $HOME_DIR/jetinfer/target $HOME_DIR/.cargo \
$HOME_DIR/.rustup $HOME_DIR/.cache/pip /var/cache/apt /usr 2>/dev/null" | sed 's/^/  /'
        docker ps -s --filter "name=$name" --format '  container writable layer: {{.Size}}'
    } | tee -a "$LOG"
    say "log: $LOG"
}
trap finish EXIT

# cx <user> <script>: runs a bash script in the container in a login shell (the PATH a user
# gets: no /usr/sbin for a non-root one), output to the log and stderr.
cx() {
    local user=$1 home=/root
    shift
    [[ $user == root ]] || home=/home/$user
    docker exec -i -u "$user" -w "$home" -e HOME="$home" "$name" bash -l -euo pipefail -c "$1" 2>&1 \
        | tee -a "$LOG" >&2
}
step() {
    local label=$1 t0
    shift
    say "--- $label"
    t0=$(date +%s)
    local rc=0
    "$@" || rc=$?
    took[$label]=$(( $(date +%s) - t0 ))
    say "--- $label: exit $rc after ${took[$label]} s"
    return $rc
}

# --- what the brief allows a fresh machine to have ----------------------------------------
prereq="apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
--no-install-recommends git make ca-certificates curl $([[ $as_root == 1 ]] || echo sudo) >/dev/null"
if [[ $as_root == 0 ]]; then
    prereq+=" && useradd -m -s /bin/bash dev && echo 'dev ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/dev"
    user=dev
fi
step prerequisites cx root "$prereq"
# This site reaches the internet through a TLS-intercepting proxy whose CA the host trusts
# (/usr/local/share/ca-certificates): the container trusts the same ones, for curl, cargo and
# pip (whose own CA bundle would not have them). Not needed on a machine with a direct line.
site_cas=(/usr/local/share/ca-certificates/*.crt)
if [[ -e ${site_cas[0]} ]]; then
    say "trusting the host's local CAs: ${site_cas[*]}"
    for c in "${site_cas[@]}"; do docker cp "$c" "$name:/usr/local/share/ca-certificates/"; done
    cx root "update-ca-certificates >/dev/null && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >/etc/pip.conf \
&& echo 'export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' >/etc/profile.d/site-ca.sh"
fi
rust_env='export PATH=$HOME/.cargo/bin:/opt/rust/bin:$PATH'
case $rust_how in
    sh.rustup.rs) step rust cx "$user" "curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal" ;;
    rustup-init) step rust cx "$user" "curl -sSf -o /tmp/rustup-init $RUSTUP_INIT_URL && chmod +x /tmp/rustup-init \
&& /tmp/rustup-init -y -q --profile minimal" ;;
    *) step rust cx "$user" "$rust_env; rustc --version" ;;
esac
cx "$user" "$rust_env; rustc --version; cargo --version"

# --- the clone ------------------------------------------------------------------------------
# /src belongs to another user: git refuses it unless it is marked safe.
step clone cx "$user" "git config --global --add safe.directory /src && git config --global --add safe.directory /src/.git \
&& git clone -q /src jetinfer && cd jetinfer && git checkout -q $commit && git log --oneline -1"
for f in "${overlay[@]}"; do
    say "overlay $f (from the working tree)"
    docker cp "$ROOT/$f" "$name:$HOME_DIR/jetinfer/$f"
    cx root "chown $user: $HOME_DIR/jetinfer/$f"
done

# --- the check ----------------------------------------------------------------------------
rc=0
run_env="$rust_env; cd jetinfer"
if [[ -n $cargo_test ]]; then
    step "make setup build" cx "$user" "$run_env; nice -n 10 make setup build" || rc=$?
    [[ $rc != 0 ]] || step "cargo test $cargo_test" cx "$user" "$run_env; source scripts/env.sh; \
nice -n 10 cargo test -p jetinfer-tests --test $cargo_test -- --test-threads=1" || rc=$?
else
    for t in "${targets[@]}"; do
        step "make $t" cx "$user" "$run_env; nice -n 10 make $t" || { rc=$?; break; }
    done
fi
# A second `make setup` must be quick: it runs on every `make test`.
[[ $rc != 0 ]] || step "make setup again" cx "$user" "$run_env; make setup" || rc=$?

exit $rc
