#!/bin/sh
# Build and run every fuzz target, one after another, at low priority:
#   fuzz/run.sh            600 s per target (the full run)
#   fuzz/run.sh --short    10 s per target (CI: catches targets that no longer build or crash fast)
#   fuzz/run.sh SECONDS    SECONDS per target
# Prints runs, execs/s and crashes per target; exits 1 on any crash, timeout or OOM, naming the
# input libFuzzer saved (fuzz/artifacts/<target>/). New inputs go to a scratch corpus under the
# target dir, so the committed seeds in fuzz/corpus/ only change by hand (see fuzz/README.md).
# Needs nightly Rust and cargo-fuzz; without them it skips, except under CI=true, where it fails.
# FUZZ_TARGET_DIR: build directory (default fuzz/target); FUZZ_LOG_DIR: per-target libFuzzer logs
# (default $FUZZ_TARGET_DIR/logs); FUZZ_JOBS: targets run at a time (default 1).
set -eu
cd "$(dirname "$0")"

usage() { echo "usage: fuzz/run.sh [--short | SECONDS]" >&2; exit 2; }
case "${1:-}" in
    "") secs=600 ;;
    --short) secs=10 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]* | 0) usage ;;
    *) secs=$1 ;;
esac

missing=""
cargo +nightly --version >/dev/null 2>&1 || missing="nightly Rust (rustup toolchain install nightly)"
[ -n "$missing" ] || cargo +nightly fuzz --version >/dev/null 2>&1 ||
    missing="cargo-fuzz (cargo install cargo-fuzz --locked)"
if [ -n "$missing" ]; then
    if [ "${CI:-}" = true ]; then
        echo "fuzz/run.sh: FAIL: $missing is not installed" >&2
        exit 1
    fi
    echo "SKIP fuzz/run.sh: $missing is not installed"
    exit 0
fi

target_dir=${FUZZ_TARGET_DIR:-$(pwd)/target}
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
echo "== building fuzz targets (cargo +nightly fuzz build, address sanitizer)"
nice cargo +nightly fuzz build --target-dir "$target_dir"
targets=$(cargo +nightly fuzz list)
logs=${FUZZ_LOG_DIR:-$target_dir/logs}
mkdir -p "$logs"

run_one() {
    t=$1
    scratch="$target_dir/corpus/$t"
    mkdir -p "$scratch" "artifacts/$t"
    # anyhow captures a backtrace per error when RUST_BACKTRACE is set, which would slow every
    # rejected input down; panics still print theirs.
    # -timeout: one input taking 10 s is a hang; the default RSS limit (2 GiB) catches blow-ups.
    RUST_LIB_BACKTRACE=0 nice "$target_dir/$host/release/$t" -max_total_time="$secs" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" "$scratch" "corpus/$t" \
        >"$logs/$t.log" 2>&1
}

failed=0
printf '%-16s %8s %12s %10s %8s\n' target seconds runs execs/s crashes
set -- $targets
while [ $# -gt 0 ]; do
    batch=""
    n=0
    while [ $# -gt 0 ] && [ "$n" -lt "${FUZZ_JOBS:-1}" ]; do
        (start=$(date +%s); rc=0; run_one "$1" || rc=$?
            echo "$rc $(($(date +%s) - start))" >"$logs/$1.rc") &
        batch="$batch $1"
        n=$((n + 1))
        shift
    done
    wait
    for t in $batch; do
        read -r rc took <"$logs/$t.rc"
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -n 1)
        crashes=0
        [ "$rc" -eq 0 ] || crashes=1
        printf '%-16s %8s %12s %10s %8s\n' "$t" "$took" "${runs:-?}" "${rate:-?}" "$crashes"
        if [ "$rc" -ne 0 ]; then
            failed=1
            grep -A1 'panicked at' "$logs/$t.log" | sed "s/^/    $t: /" | head -n 4
            grep -E 'ERROR: (libFuzzer|AddressSanitizer)|Test unit written' "$logs/$t.log" |
                sed "s/^/    $t: /" | head -n 4
            echo "    $t: full log: $logs/$t.log"
        fi
    done
done
if [ "$failed" -ne 0 ]; then
    echo "fuzz/run.sh: FAIL: crashes found; reproduce with: cargo +nightly fuzz run TARGET ARTIFACT" >&2
    exit 1
fi
echo "fuzz/run.sh: ok, no crashes"
