#!/bin/bash
# Every performance figure of the performance issues in one run, as a table and as JSON:
#
#   sudo benches/suite.sh [--short] [--json FILE] [BINARY]
#
# BINARY defaults to the static release build (built here). Needs root, runc and busybox-static;
# the docker rows also dockerd (skipped, and said so, without it). Simulated hosts (driver
# libraries at their real sizes and layouts): 1, 8, 64 H100s and 8 H100s with 7 MIG instances
# each; and 8 H100s whose driver files are NVIDIA's real ones, unpacked from Debian's packages
# (NVBOX_DRIVER_DEBS, default target/nvidia-debs, which tests/run.sh fills). Each container row times create + start + the
# container's `true` exiting + delete; the variants of a group are interleaved, rotating which
# goes first, so drift on the machine hits all alike, and every create gets a fresh copy of its
# bundle (outside the timed part), except the "bundle reused" group: the issue's own measure, one
# bundle kept per variant with a fresh config.json each run. Rows give median and min–max; ratios are of medians. The
# GPU rows are repeated with the bundle on a tmpfs, which takes the filesystem's cost of creating
# the plan's files out of the ratio.
#
# Before timing, each GPU variant is run once with `ls /dev` as its process: a container that
# does not get its GPUs, a failed command or a failed concurrent create fails the suite. Timings
# never do: the goals are shown for information. --short (CI, < 2 minutes) takes few iterations,
# no docker, and the 1-GPU and MIG hosts only for scaling.
set -eu -o pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

short=false json="" bin=""
while [ $# -gt 0 ]; do
    case $1 in
    --short) short=true ;;
    --json) json=$2; shift ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "suite.sh: unknown option $1" >&2; exit 2 ;;
    *) bin=$1 ;;
    esac
    shift
done
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/nvbox
fi
[ -x "$bin" ] || { echo "suite.sh: $bin is not executable" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "suite.sh: needs root (runc, device nodes)" >&2; exit 1; }
runc=$(command -v runc) || { echo "suite.sh: runc is not installed" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "suite.sh: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[ -n "$json" ] && json=$(cd "$(dirname "$json")" && pwd)/$(basename "$json")

if $short; then
    iters=8 warmup=1 cli_iters=30 scale_iters=3 rounds=1 phase_runs=3 hosts="1 8mig"
else
    iters=30 warmup=3 cli_iters=300 scale_iters=15 rounds=3 phase_runs=15 hosts="1 8 64 8mig"
fi

work=$(mktemp -d /tmp/nvbox-bench-suite.XXXXXX)
state=$work/runc-state
cleanup() {
    local id
    for id in $("$runc" --root "$state" list -q 2>/dev/null); do
        "$runc" --root "$state" delete --force "$id" >/dev/null 2>&1 || true
    done
    bench_dockerd_stop "$work" || true
    umount "$work/tmpfs" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "suite.sh: benchmark broken at line $LINENO: $BASH_COMMAND" >&2' ERR

notes=()
echo "nvbox benchmark suite ($($short && echo short || echo full)): $bin"
echo "setting up simulated hosts and bundles in $work"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null
shim=$work/bin/nvidia-container-runtime
[ -x "$shim" ] || { echo "suite.sh: $bin has no nvidia-container-runtime applet" >&2; exit 1; }
for h in 8 $hosts; do
    [ -d "$work/h$h" ] && continue
    case $h in
    *mig) bench_make_host "$bin" "$work/h$h" --gpus "${h%mig}" --mig 7 ;;
    *) bench_make_host "$bin" "$work/h$h" --gpus "$h" ;;
    esac
done
# NVIDIA's real driver files, when the packages are at hand (tests/run.sh downloads them).
debs=${NVBOX_DRIVER_DEBS:-target/nvidia-debs}
if ls "$debs"/*.deb >/dev/null 2>&1; then
    bench_make_deb_host "$bin" "$work/hdeb" "$(cd "$debs" && pwd)"
    deb_host=true
else
    deb_host=false
    notes+=("real-package rows: no Debian NVIDIA packages in $debs (tests/run.sh downloads them)")
fi
bench_make_bundle "$work/template-cpu" cpu
bench_make_bundle "$work/template-gpu" gpu
mkdir -p "$work/times"

# Rows, one a line in rows.tsv: key, label, unit, n, median, min, max, ratio, upstream, goal
# ("-" where none). Ratio rows compare medians; upstream and goal are in the unit of the ratio
# when there is one, else of the median.
rows=$work/rows.tsv
: >"$rows"
row_value() { (IFS=$'\t'; echo "$*") >>"$rows"; }
row_time() {
    local n med min max
    read -r n med min max _ < <(bench_stats "$work/times/$3")
    row_value "$1" "$2" ms "$n" "$med" "$min" "$max" - "${4:--}" "${5:--}"
}
row_ratio() {
    local n med min max base
    read -r n med min max _ < <(bench_stats "$work/times/$3")
    read -r _ base _ < <(bench_stats "$work/times/$4")
    row_value "$1" "$2" ms "$n" "$med" "$min" "$max" "$(awk -v a="$med" -v b="$base" 'BEGIN { printf "%.3f", a / b }')" \
        "${5:--}" "${6:--}"
}

# --- containers through runc -----------------------------------------------------------------

# The runc variants: "TEMPLATE CONFIG [tmpfs]" where CONFIG `-` is plain runc, else the shim's
# config; `tmpfs` puts the bundle (and so the rootfs) on a tmpfs instead of /tmp's filesystem.
declare -A variant=([cpu-runc]="cpu -" [cpu-shim]="cpu $work/h8.auto.toml" [gpu-runc]="gpu -")
for h in 8 $hosts; do
    variant[gpu-jit-h$h]="gpu $work/h$h.jit-cdi.toml"
    variant[gpu-legacy-h$h]="gpu $work/h$h.legacy.toml"
done
variant[gpu-jit-deb]="gpu $work/hdeb.jit-cdi.toml"
variant[gpu-legacy-deb]="gpu $work/hdeb.legacy.toml"
variant[gpu-runc-tmpfs]="gpu - tmpfs"
variant[cpu-runc-reuse]="cpu - reuse"
variant[cpu-shim-reuse]="cpu $work/h8.auto.toml reuse"
variant[gpu-runc-reuse]="gpu - reuse"
variant[gpu-jit-reuse]="gpu $work/h8.jit-cdi.toml reuse"
variant[gpu-legacy-reuse]="gpu $work/h8.legacy.toml reuse"
variant[gpu-jit-tmpfs]="gpu $work/h8.jit-cdi.toml tmpfs"
variant[gpu-legacy-tmpfs]="gpu $work/h8.legacy.toml tmpfs"
mkdir -p "$work/tmpfs"
mount -t tmpfs -o size=512m,mode=0755 nvbox-bench "$work/tmpfs"

# One container of VARIANT in bundle BUNDLE with id ID; its output goes to stdout.
run_container() {
    local template config
    read -r template config _ <<<"${variant[$1]}"
    local create=("$runc")
    [ "$config" = - ] || create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$config" "$shim")
    local rc=0
    {
        PATH=$work/bin:$PATH "${create[@]}" --root "$state" create --bundle "$2" "$3" &&
            "$runc" --root "$state" start "$3"
    } | cat || rc=$?
    # The process may still be exiting when its pipe closes: --force waits for it.
    "$runc" --root "$state" delete --force "$3" || rc=$?
    return $rc
}

# One timed start of VARIANT, in microseconds, appended to times/VARIANT.
time_container() {
    local template fs bundle=$work/bundle
    read -r template _ fs <<<"${variant[$1]}"
    if [ "$fs" = reuse ]; then
        # The issue's measure: one bundle per variant kept across runs (its rootfs keeps the
        # mount targets earlier runs created), a fresh config.json each time.
        bundle=$work/reuse-$1
        [ -d "$bundle" ] || cp -a "$work/template-$template" "$bundle"
        cp "$work/template-$template/config.json" "$bundle/config.json"
    else
        [ "$fs" = tmpfs ] && bundle=$work/tmpfs/bundle
        rm -rf "$bundle"
        cp -a "$work/template-$template" "$bundle"
    fi
    local t0=${EPOCHREALTIME/./}
    run_container "$1" "$bundle" "bench-$$" >/dev/null
    local t1=${EPOCHREALTIME/./}
    echo $((t1 - t0)) >>"$work/times/$1"
}

# Fails unless a container of VARIANT sees exactly GPUS /dev/nvidiaN nodes and /dev/nvidiactl.
verify_gpus() {
    rm -rf "$work/bundle"
    cp -a "$work/template-gpu" "$work/bundle"
    sed -i 's/^\(\t*\)"true"$/\1"sh", "-c", "ls \/dev"/' "$work/bundle/config.json"
    local seen
    seen=$(run_container "$1" "$work/bundle" "bench-$$-verify")
    local n
    n=$(grep -cE '^nvidia[0-9]+$' <<<"$seen" || true)
    if [ "$n" -ne "$2" ] || ! grep -qx nvidiactl <<<"$seen"; then
        echo "suite.sh: benchmark broken: $1 container saw $n of $2 GPUs; its /dev:" $seen >&2
        exit 1
    fi
}

# Time VARIANT… with TIMER (a function appending one sample to times/VARIANT) for ITERATIONS
# after WARMUP discarded rounds, rotating the order by one each round.
interleave() {
    local timer=$1 n_iter=$2 n_warm=$3 i k v
    shift 3
    local n=$#
    for i in $(seq 1 $((n_warm + n_iter))); do
        k=$((i % n))
        for v in "${@:k+1}" "${@:1:k}"; do "$timer" "$v"; done
        if [ "$i" -eq "$n_warm" ]; then for v in "$@"; do rm -f "$work/times/$v"; done; fi
    done
}

gpus_of() { case $1 in *mig) echo "${1%mig}" ;; *) echo "$1" ;; esac; }
for h in 8 $hosts; do
    verify_gpus "gpu-jit-h$h" "$(gpus_of "$h")"
    verify_gpus "gpu-legacy-h$h" "$(gpus_of "$h")"
done
if $deb_host; then
    verify_gpus gpu-jit-deb 8
    verify_gpus gpu-legacy-deb 8
fi
echo "verified: every GPU variant's container gets its GPUs"

echo "(1, 2) container start, 8 GPUs: $iters iterations"
interleave time_container "$iters" "$warmup" cpu-runc cpu-shim gpu-runc gpu-jit-h8 gpu-legacy-h8
row_ratio start.gpu_legacy "runc, GPU container via runtime + legacy hook / plain" gpu-legacy-h8 gpu-runc 1.75 1.10
row_ratio start.gpu_jit "runc, GPU container via runtime jit-cdi / plain" gpu-jit-h8 gpu-runc 2.42 1.15
row_ratio start.cpu_shim "runc, CPU container via runtime / plain" cpu-shim cpu-runc 1.30 1.03
row_ratio start.jit_vs_legacy "runc, GPU container via runtime jit-cdi / legacy hook" gpu-jit-h8 gpu-legacy-h8
row_time start.plain "runc, plain container (the baseline)" gpu-runc "" ""

if $deb_host; then
    echo "(1c) container start, 8 GPUs, NVIDIA's real 535 driver files: $iters iterations"
    rm -f "$work/times/gpu-runc"
    interleave time_container "$iters" "$warmup" gpu-runc gpu-jit-deb gpu-legacy-deb
    row_ratio start.gpu_legacy_deb "real driver files: GPU container, legacy hook / plain" gpu-legacy-deb gpu-runc 1.75 1.10
    row_ratio start.gpu_jit_deb "real driver files: GPU container, jit-cdi / plain" gpu-jit-deb gpu-runc 2.42 1.15
    row_time start.plain_deb "real driver files: plain container (the baseline)" gpu-runc "" ""
fi

# The issue's own measure: one bundle reused (a fresh config.json per run), so the rootfs
# already holds the mount targets and what remains is nvbox's work and runc's for the plan.
echo "(1d) container start, 8 GPUs, bundle reused, fresh config.json: $iters iterations"
interleave time_container "$iters" "$warmup" cpu-runc-reuse cpu-shim-reuse gpu-runc-reuse gpu-jit-reuse gpu-legacy-reuse
row_ratio start.gpu_legacy_reuse "bundle reused: GPU container, legacy hook / plain" gpu-legacy-reuse gpu-runc-reuse 1.75 1.10
row_ratio start.gpu_jit_reuse "bundle reused: GPU container, jit-cdi / plain" gpu-jit-reuse gpu-runc-reuse 2.42 1.15
row_ratio start.cpu_shim_reuse "bundle reused: CPU container via runtime / plain" cpu-shim-reuse cpu-runc-reuse 1.30 1.03
row_time start.plain_reuse "bundle reused: plain container (the baseline)" gpu-runc-reuse "" ""

# The same plan with the rootfs on a tmpfs: what remains is nvbox's own cost, without the
# filesystem's price for the ~60 inodes (mount targets, directories, soname links) that any
# injector, upstream's too, creates in a fresh rootfs.
echo "(1b) container start, 8 GPUs, rootfs on tmpfs: $iters iterations"
interleave time_container "$iters" "$warmup" gpu-runc-tmpfs gpu-jit-tmpfs gpu-legacy-tmpfs
row_ratio start.gpu_legacy_tmpfs "rootfs on tmpfs: GPU container, legacy hook / plain" gpu-legacy-tmpfs gpu-runc-tmpfs "" 1.05
row_ratio start.gpu_jit_tmpfs "rootfs on tmpfs: GPU container, jit-cdi / plain" gpu-jit-tmpfs gpu-runc-tmpfs "" 1.05
row_time start.plain_tmpfs "rootfs on tmpfs: plain container (the baseline)" gpu-runc-tmpfs "" ""

echo "(9) scaling: hosts ${hosts// /, } GPUs, $scale_iters iterations"
scale=(gpu-runc)
for h in $hosts; do scale+=("gpu-jit-h$h" "gpu-legacy-h$h"); done
rm -f "$work/times/gpu-runc"
interleave time_container "$scale_iters" 1 "${scale[@]}"
for h in $hosts; do
    label=$(gpus_of "$h")" x H100"
    case $h in *mig) label="$label, 7 MIG each" ;; esac
    row_ratio "scale.jit_h$h" "scaling, jit-cdi, $label / plain" "gpu-jit-h$h" gpu-runc "" ""
    row_ratio "scale.legacy_h$h" "scaling, legacy hook, $label / plain" "gpu-legacy-h$h" gpu-runc "" ""
done

# --- the command-line tools -----------------------------------------------------------------

cfg8=$work/h8.toml
time_cli() {
    local cmd
    case $1 in
    version) cmd=("$bin" --version) ;;
    info) cmd=("$work/bin/nvidia-container-cli" info) ;;
    cdi*) cmd=("$work/bin/nvidia-ctk" cdi generate --format json) ;;
    list*) cmd=("$work/bin/nvidia-container-cli" list) ;;
    esac
    local cfg=$cfg8
    case $1 in *-stub) cfg=$work/hstub.toml ;; esac
    local t0=${EPOCHREALTIME/./}
    NVIDIA_CTK_CONFIG_FILE_PATH=$cfg "${cmd[@]}" >/dev/null
    local t1=${EPOCHREALTIME/./}
    echo $((t1 - t0)) >>"$work/times/$1"
}
n=$(NVIDIA_CTK_CONFIG_FILE_PATH=$cfg8 "$work/bin/nvidia-container-cli" list | grep -cE '/dev/nvidia[0-9]+$' || true)
[ "$n" -eq 8 ] || { echo "suite.sh: benchmark broken: list shows $n of 8 GPUs" >&2; exit 1; }
n=$(NVIDIA_CTK_CONFIG_FILE_PATH=$cfg8 "$work/bin/nvidia-ctk" cdi generate --format json |
    grep -oE '"name": *"[0-9]+"' | wc -l)
[ "$n" -eq 8 ] || { echo "suite.sh: benchmark broken: cdi generate names $n of 8 GPUs" >&2; exit 1; }
echo "(4, 5) info, list, cdi generate, 8 GPUs: $cli_iters iterations"
# The same 8-GPU host with few-hundred-byte libraries: real sizes must cost nothing more.
bench_make_host "$bin" "$work/hstub" --gpus 8 --stub-libraries
interleave time_cli "$cli_iters" 10 version info list cdi list-stub cdi-stub
row_time cli.info "nvidia-container-cli info (fork+exec from bash)" info 7 1
row_time cli.list "nvidia-container-cli list (fork+exec from bash)" list 7 1
row_time ctk.cdi_generate "nvidia-ctk cdi generate --format json" cdi 8 2
row_time cli.process_start "nvbox --version (any process start, the floor)" version
row_ratio cli.list_real_vs_stub "list: real-size libraries / stub libraries" list list-stub "" 1
row_ratio ctk.cdi_real_vs_stub "cdi generate: real-size libraries / stub libraries" cdi cdi-stub "" 1

# --- docker ---------------------------------------------------------------------------------

time_docker() {
    bench_docker_args "$1"
    local t0=${EPOCHREALTIME/./}
    docker run --rm --network none "${bench_args[@]}" nvbox-bench true
    local t1=${EPOCHREALTIME/./}
    echo $((t1 - t0)) >>"$work/times/docker-$1"
}
if $short; then
    notes+=("docker rows: not run in --short mode")
elif [ ! -x /usr/sbin/dockerd ] || ! command -v docker >/dev/null; then
    notes+=("docker rows: dockerd is not installed")
else
    docker_iters=$((iters * 2 / 3))
    echo "(3) docker run, 8 GPUs: $docker_iters iterations"
    bench_dockerd_start "$work" "$cfg8"
    for v in gpus runtime; do
        bench_docker_args "$v"
        n=$(docker run --rm --network none "${bench_args[@]}" nvbox-bench ls /dev | grep -cE '^nvidia[0-9]+$' || true)
        [ "$n" -eq 8 ] || { echo "suite.sh: benchmark broken: docker $v container saw $n of 8 GPUs" >&2; exit 1; }
    done
    interleave time_docker "$docker_iters" 1 plain gpus runtime
    row_ratio docker.gpus "docker run --gpus all / docker run" docker-gpus docker-plain 1.26 1.03
    row_ratio docker.runtime "docker run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all / plain" \
        docker-runtime docker-plain 1.30 1.03
    row_time docker.plain "docker run, plain (the baseline)" docker-plain
    bench_dockerd_stop "$work"
fi

# --- size and memory ------------------------------------------------------------------------

size=$(awk -v b="$(stat -c %s "$bin")" 'BEGIN { printf "%.3f", b / 1e6 }')
row_value size.binary "installed size: the static binary, one file" MB 1 "$size" "$size" "$size" - 43 3
notes+=("upstream's installed size: 39 MB of Go binaries + ~4 MB C library and deps")
notes+=("info, list, cdi generate are timed from bash: each includes the process-start row")

if /usr/bin/time -f %M true >/dev/null 2>&1; then
    # The hook: runc runs a wrapper that runs it under GNU time (which reports its child's peak).
    cp -a "$work/template-gpu" "$work/template-rss"
    printf '#!/bin/sh\nexec /usr/bin/time -f %%M -a -o %s %s "$@"\n' "$work/rss-hook.kib" \
        "$work/bin/nvidia-container-runtime-hook" >"$work/hook-rss"
    chmod +x "$work/hook-rss"
    hook="\"hooks\": {\"prestart\": [{\"path\": \"$work/hook-rss\",\
 \"args\": [\"nvidia-container-runtime-hook\", \"prestart\"],\
 \"env\": [\"NVIDIA_CTK_CONFIG_FILE_PATH=$cfg8\", \"PATH=/usr/sbin:/usr/bin:/sbin:/bin\"]}]},"
    sed -i "s|^\t\"process\": {|\t$hook\n\t\"process\": {|" "$work/template-rss/config.json"
    variant[rss-hook]="rss -"
    # The runtime execs the low-level runtime, and a peak survives exec: point it at busybox's
    # `true` so the peak is the shim's own.
    mkdir -p "$work/stub"
    ln -s /bin/busybox "$work/stub/true"
    { cat "$work/h8.jit-cdi.toml"; echo "runtimes = [\"$work/stub/true\"]"; } >"$work/rss-runtime.toml"
    for _ in 1 2 3 4 5; do
        time_container rss-hook
        rm -rf "$work/bundle"
        cp -a "$work/template-gpu" "$work/bundle"
        NVIDIA_CTK_CONFIG_FILE_PATH=$work/rss-runtime.toml /usr/bin/time -f %M -a -o "$work/rss-runtime.kib" \
            "$shim" --root "$state" create --bundle "$work/bundle" "bench-$$-rss"
    done
    grep -qE '"path": *"/dev/nvidia0"' "$work/bundle/config.json" ||
        { echo "suite.sh: benchmark broken: the runtime did not add the GPUs to config.json" >&2; exit 1; }
    # GNU time reports KiB and bench_stats divides by 1000: 1.024 makes that MB.
    for what in hook runtime; do
        read -r n med min max _ < <(bench_stats "$work/rss-$what.kib")
        mb() { awk -v k="$1" 'BEGIN { printf "%.3f", k * 1.024 }'; }
        upstream=6 && [ $what = runtime ] && upstream=10
        label="peak RSS, prestart hook (8 GPUs)"
        [ $what = runtime ] && label="peak RSS, runtime, jit-cdi create (8 GPUs)"
        row_value "rss.$what" "$label" MB "$n" "$(mb "$med")" \
            "$(mb "$min")" "$(mb "$max")" - "$upstream" 4
    done
else
    notes+=("peak RSS rows: GNU time (/usr/bin/time, Debian package time) is not installed")
fi

# --- inside the hook: phase timings from its debug log --------------------------------------

sed "s|^\[nvidia-container-cli\]$|&\ndebug = \"$work/hook-debug.log\"|" "$work/h8.legacy.toml" >"$work/debug.toml"
variant[gpu-legacy-debug]="gpu $work/debug.toml"
for _ in $(seq 1 "$phase_runs"); do time_container gpu-legacy-debug; done
# Each hook run opens the log with a banner; its lines carry HH:MM:SS.usec. Phases end at
# "prepared N mount sources", "container configured" and "allowed N devices".
awk -v dir="$work/times" '
    function us(t, p) { split(t, p, /[:.]/); return ((p[1] * 60 + p[2]) * 60 + p[3]) * 1e6 + p[4] }
    function flush() {
        if (start && prep && conf && allow) {
            print prep - start >>(dir "/phase-discovery"); print conf - prep >>(dir "/phase-mounts")
            print allow - conf >>(dir "/phase-cgroup"); print last - start >>(dir "/phase-total")
        }
        start = prep = conf = allow = 0
    }
    /^-- WARNING/ { flush(); next }
    /^[IWEF][0-9][0-9][0-9][0-9] / { t = us($2); if (!start) start = t; last = t }
    / prepared [0-9]+ mount sources$/ { prep = t }
    / container configured$/ { conf = t }
    / allowed [0-9]+ devices / { allow = t }
    END { flush() }' "$work/hook-debug.log"
[ -s "$work/times/phase-total" ] ||
    { echo "suite.sh: benchmark broken: no complete hook run in the debug log" >&2; exit 1; }
row_time hook.discovery "legacy hook, in-process: ld.so.cache read to mount sources prepared" phase-discovery
row_time hook.mounts "legacy hook, in-process: mounts, links, ld.so.cache" phase-mounts
row_time hook.cgroup "legacy hook, in-process: device cgroup rules" phase-cgroup
row_time hook.total "legacy hook, in-process: first to last log line" phase-total

# --- 32 concurrent GPU containers ---------------------------------------------------------------

# ROUNDS of 32 creates at once through runc and the shim; each start timed on its own.
concurrent() {
    local v=$1 r i template
    read -r template _ <<<"${variant[$v]}"
    for r in $(seq 1 "$rounds"); do
        for i in $(seq 1 32); do
            rm -rf "$work/c$i"
            cp -a "$work/template-$template" "$work/c$i"
        done
        for i in $(seq 1 32); do
            (
                t0=${EPOCHREALTIME/./}
                if run_container "$v" "$work/c$i" "bench-$$-c$i" >/dev/null 2>"$work/c$i.err"; then
                    t1=${EPOCHREALTIME/./}
                    echo $((t1 - t0)) >>"$work/times/conc-$v"
                else
                    cat "$work/c$i.err" >>"$work/conc-$v.failures"
                    echo >>"$work/times/conc-$v.failed"
                fi
            ) &
        done
        wait
    done
}
echo "(10) 32 concurrent GPU container starts, $rounds round(s)"
failed=0
for m in jit legacy; do
    concurrent "gpu-$m-h8"
    ok=0 bad=0
    if [ -f "$work/times/conc-gpu-$m-h8" ]; then ok=$(wc -l <"$work/times/conc-gpu-$m-h8"); fi
    if [ -f "$work/times/conc-gpu-$m-h8.failed" ]; then bad=$(wc -l <"$work/times/conc-gpu-$m-h8.failed"); fi
    failed=$((failed + bad))
    row_value "concurrent.$m.failures" "32 concurrent starts, $m: failures" count 1 "$bad" "$bad" "$bad" - - 0
    [ "$ok" -gt 0 ] || continue
    sort -n "$work/times/conc-gpu-$m-h8" | awk -v key="concurrent.$m" -v m="$m" '{ t[NR] = $1 } END {
        p50 = t[int((NR * 50 + 99) / 100)] / 1000; p99 = t[int((NR * 99 + 99) / 100)] / 1000
        printf "%s.p50\t32 concurrent starts, %s: p50\tms\t%d\t%.3f\t%.3f\t%.3f\t-\t-\t-\n", key, m, NR, p50, t[1] / 1000, t[NR] / 1000
        printf "%s.p99\t32 concurrent starts, %s: p99\tms\t%d\t%.3f\t%.3f\t%.3f\t-\t-\t-\n", key, m, NR, p99, t[1] / 1000, t[NR] / 1000
    }' >>"$rows"
done

# --- the report -------------------------------------------------------------------------------

echo
awk -F'\t' '
    function show(v, u) { return v == "-" ? "" : (u == "ratio" ? "x" v : v " " u) }
    {
        compared = ($8 != "-") ? $8 : $5
        met = ($10 == "-") ? "" : (compared + 0 <= $10 + 0 ? "yes" : "no")
        unit = ($8 != "-") ? "ratio" : $3
        range = ($4 > 1) ? sprintf("%s-%s", $6, $7) : ""
        printf "%-66s %9s %-3s %-17s %7s %9s %9s %s\n", $2, $5, $3, range, show($8, "ratio"),
            show($9, unit), ($10 == "-") ? "" : "<= " show($10, unit), met
    }
    BEGIN { printf "%-66s %13s %-17s %7s %9s %9s %s\n", "row", "median", "min-max", "ratio", "upstream", "goal", "met" }
' "$rows"
for note in "${notes[@]}"; do echo "note: $note"; done
echo "Ratios are of medians against the row named after the slash; goals are information, not tests."

if [ -n "$json" ]; then
    printf '%s\n' "${notes[@]}" >"$work/notes"
    awk -F'\t' -v mode="$($short && echo short || echo full)" -v bin="$bin" -v kernel="$(uname -r)" \
        -v cpus="$(nproc)" -v date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -v notes="$work/notes" '
        function str(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
        function num(v) { return v == "-" ? "null" : v + 0 }
        BEGIN {
            printf "{\n  \"suite\": \"nvbox\",\n  \"mode\": %s,\n  \"binary\": %s,\n", str(mode), str(bin)
            printf "  \"date\": %s,\n  \"kernel\": %s,\n  \"cpus\": %d,\n  \"rows\": [", str(date), str(kernel), cpus
        }
        {
            compared = ($8 != "-") ? $8 : $5
            met = ($10 == "-") ? "null" : (compared + 0 <= $10 + 0 ? "true" : "false")
            printf "%s\n    {\"key\": %s, \"label\": %s, \"unit\": %s, \"n\": %d, \"median\": %s, \"min\": %s, \"max\": %s, \"ratio\": %s, \"upstream\": %s, \"goal\": %s, \"goal_met\": %s}", \
                (NR > 1 ? "," : ""), str($1), str($2), str($3), $4, num($5), num($6), num($7), num($8), num($9), num($10), met
        }
        END {
            printf "\n  ],\n  \"notes\": ["
            n = 0
            while ((getline line <notes) > 0) if (line != "") printf "%s%s", (n++ ? ", " : ""), str(line)
            printf "]\n}\n"
        }' "$rows" >"$json"
    echo "wrote $json"
fi

if [ "$failed" -gt 0 ]; then
    echo "suite.sh: benchmark broken: $failed concurrent starts failed:" >&2
    sort -u "$work"/conc-*.failures | head -20 >&2
    exit 1
fi
