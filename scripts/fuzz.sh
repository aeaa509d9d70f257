#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) and runs each on its corpus.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   run each target SECONDS (default 5), one at a time
#   scripts/fuzz.sh --cmin [TARGET...]      minimise the committed corpora (fuzz/corpus/<t>)
#   scripts/fuzz.sh --list                  the targets
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Runs under `nice -n ${FUZZ_NICE:-19}`. Environment:
#   FUZZ_ARGS       more libFuzzer options (e.g. -runs=10000000 to stop at 10 M executions)
#   FUZZ_SANITIZER  cargo-fuzz's --sanitizer: address (its default) or none (faster)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 10)
#   FUZZ_GROW=1     keep what a run finds in fuzz/corpus/<t> (then --cmin); by default new
#                   inputs go to a scratch directory and the committed corpora stay as they are
# Prints executions per target and exits non-zero when a target fails; the input that
# failed is in fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run <target> <file>).
# docs/fuzzing.md describes the targets and the runs recorded so far.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# Started from inside cargo (a test, a make step), these name the outer, stable toolchain.
unset CARGO RUSTC RUSTUP_TOOLCHAIN
NICE=(nice -n "${FUZZ_NICE:-19}")
SAN=(--sanitizer "${FUZZ_SANITIZER:-address}")

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain and cargo-fuzz:" >&2
    echo "  rustup toolchain install nightly --profile minimal && cargo install cargo-fuzz --locked" >&2
    exit 2
fi

targets() { cargo +nightly fuzz list; }

mode=run
seconds=5
case "${1:-}" in
    --list) targets; exit 0 ;;
    --cmin) mode=cmin; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    '') ;;
    *)
        if [[ $1 =~ ^[0-9]+$ ]]; then
            seconds=$1
            shift
        fi
        ;;
esac

known=$(targets)
if (($# == 0)); then
    # shellcheck disable=SC2206 # target names are single words
    selected=($known)
else
    selected=("$@")
    for t in "${selected[@]}"; do
        grep -qx "$t" <<<"$known" || { echo "fuzz.sh: no target $t (have: $(echo $known))" >&2; exit 2; }
    done
fi

echo "fuzz.sh: building ${#selected[@]} targets"
"${NICE[@]}" cargo +nightly fuzz build "${SAN[@]}"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/jetinfer-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if [[ $mode == cmin ]]; then
    for t in "${selected[@]}"; do
        before=$(ls "fuzz/corpus/$t" | wc -l)
        "${NICE[@]}" cargo +nightly fuzz cmin "${SAN[@]}" "$t" "fuzz/corpus/$t" >"$scratch/cmin-$t.log" 2>&1 ||
            { tail -20 "$scratch/cmin-$t.log"; exit 1; }
        echo "$t: $before -> $(ls "fuzz/corpus/$t" | wc -l) inputs"
    done
    exit 0
fi

failed=()
printf '%-12s %8s %14s %10s %s\n' target seconds executions exec/s result
for t in "${selected[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/corpus/$t"
    log="$scratch/$t.log"
    # libFuzzer writes what it finds into the first directory.
    dirs=("$scratch/$t" "fuzz/corpus/$t")
    [[ ${FUZZ_GROW:-0} == 1 ]] && dirs=("fuzz/corpus/$t")
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
    if "${NICE[@]}" cargo +nightly fuzz run "${SAN[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed+=("$t")
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    time=$(sed -n 's/^stat::.*//; s/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    printf '%-12s %8s %14s %10s %s\n' "$t" "${time:-$seconds}" "${execs:-?}" "${rate:-?}" "$result"
    if [[ $result == FAILED ]]; then
        grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written|^thread" "$log" | head -20 || true
        mkdir -p "$ROOT/fuzz/artifacts" && cp "$log" "$ROOT/fuzz/artifacts/$t.log"
    fi
done

if ((${#failed[@]})); then
    echo "fuzz.sh: failed: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
