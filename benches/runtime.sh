#!/bin/bash
# Container start latency through the runtime shim, against plain runc, in one run.
#
#   sudo benches/runtime.sh [NVBOX_BINARY] [ITERATIONS]
#
# NVBOX_BINARY defaults to target/release/nvbox (built with `cargo build --release` when
# missing); ITERATIONS defaults to 30. Needs root, runc and busybox-static (tests/run.sh
# installs them). Each iteration times create + start + waiting for the container's `true` to
# exit + delete, for five variants on a simulated 8-GPU host:
#   cpu-runc     plain runc, a CPU container
#   cpu-shim     nvidia-container-runtime (mode auto), the same CPU container
#   gpu-runc     plain runc, NVIDIA_VISIBLE_DEVICES=all but nothing to act on it (the floor)
#   gpu-jit      the shim in jit-cdi mode, NVIDIA_VISIBLE_DEVICES=all (runc makes the nodes,
#                mounts and cgroup rules; createContainer hooks make links and ld.so.cache)
#   gpu-legacy   the shim in legacy mode, NVIDIA_VISIBLE_DEVICES=all (our prestart hook)
# Every create gets a fresh copy of its bundle (the shim rewrites config.json, the hooks write
# into the rootfs); copying is outside the timed part. The variants are interleaved, rotating
# which goes first, so drift on the machine hits all alike. Prints mean and median in ms and
# the ratios of medians. Goal: cpu-shim/cpu-runc <= 1.05.
set -eu -o pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/nvbox}
iterations=${2:-30}
warmup=3
if [ $# -lt 1 ] && [ ! -x "$bin" ]; then
    cargo build --release --quiet
fi
[ -x "$bin" ] || { echo "runtime.sh: $bin is not executable" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "runtime.sh: needs root (runc, device nodes)" >&2; exit 1; }
runc=$(command -v runc) || { echo "runtime.sh: runc is not installed" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "runtime.sh: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d /tmp/nvbox-bench-runtime.XXXXXX)
state=$work/runc-state
variants="cpu-runc cpu-shim gpu-runc gpu-jit gpu-legacy"
cleanup() {
    for v in $variants; do "$runc" --root "$state" delete --force "bench-$$-$v" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" mock "$work/host" >"$work/host.toml"
sh symlinks.sh --binary "$bin" "$work/bin" >/dev/null
shim=$work/bin/nvidia-container-runtime
[ -x "$shim" ] || { echo "runtime.sh: $bin has no nvidia-container-runtime applet" >&2; exit 1; }
for mode in auto jit-cdi legacy; do
    { cat "$work/host.toml"; printf '\n[nvidia-container-runtime]\nmode = "%s"\n' "$mode"; } >"$work/$mode.toml"
done

# Pristine bundles: a busybox rootfs whose process is `true`, with or without the GPU request.
make_template() {
    dir=$work/template-$1
    mkdir -p "$dir/rootfs"
    for d in bin sbin usr/bin usr/sbin etc proc sys dev tmp; do mkdir -p "$dir/rootfs/$d"; done
    cp /bin/busybox "$dir/rootfs/bin/busybox"
    chroot "$dir/rootfs" /bin/busybox --install -s
    echo 12.0 >"$dir/rootfs/etc/debian_version"
    "$runc" spec --bundle "$dir"
    sed -i -e 's/"terminal": true/"terminal": false/' -e 's/^\(\t*\)"sh"$/\1"true"/' "$dir/config.json"
    if [ "$1" = gpu ]; then
        sed -i 's/"TERM=xterm"/"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"/' \
            "$dir/config.json"
    fi
}
make_template cpu
make_template gpu

# One container start, in microseconds. runc hands the pipe to the container, so `cat` sees
# end-of-file only once create, start and the container's process have all closed it.
start_once() {
    v=$1
    id=bench-$$-$v
    rm -rf "$work/bundle"
    cp -a "$work/template-${v%%-*}" "$work/bundle"
    case $v in
    *-runc) create=("$runc") ;;
    cpu-shim) create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$work/auto.toml" "$shim") ;;
    gpu-jit) create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$work/jit-cdi.toml" "$shim") ;;
    gpu-legacy) create=(env "NVIDIA_CTK_CONFIG_FILE_PATH=$work/legacy.toml" "$shim") ;;
    esac
    t0=${EPOCHREALTIME/./}
    {
        PATH=$work/bin:$PATH "${create[@]}" --root "$state" create --bundle "$work/bundle" "$id" &&
            "$runc" --root "$state" start "$id"
    } | cat >/dev/null
    # The process may still be exiting when its pipe closes: --force waits for it.
    "$runc" --root "$state" delete --force "$id"
    t1=${EPOCHREALTIME/./}
    echo $((t1 - t0)) >>"$work/$v.times"
}

set -- $variants
n=$#
for i in $(seq 1 $((warmup + iterations))); do
    # Rotate the order by one each iteration.
    k=$((i % n))
    order="${*:k+1} ${*:1:k}"
    for v in $order; do start_once "$v"; done
    if [ "$i" -eq "$warmup" ]; then rm -f "$work"/*.times; fi
done

# mean and median in ms of one variant's times
stats() {
    sort -n "$work/$1.times" | awk '{ t[NR] = $1; s += $1 } END {
        m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
        printf "%.3f %.3f\n", s / NR / 1000, m / 1000 }'
}
declare -A median
printf 'create+start+delete, %d iterations, 8 simulated GPUs\n' "$iterations"
for v in $variants; do
    read -r mean med <<<"$(stats "$v")"
    median[$v]=$med
    printf '  %-11s mean %8s ms   median %8s ms\n' "$v" "$mean" "$med"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '  ratio cpu-shim/cpu-runc (median)     %s  (goal <= 1.05)\n' "$(ratio "${median[cpu-shim]}" "${median[cpu-runc]}")"
printf '  ratio gpu-jit/gpu-runc (median)      %s\n' "$(ratio "${median[gpu-jit]}" "${median[gpu-runc]}")"
printf '  ratio gpu-legacy/gpu-runc (median)   %s\n' "$(ratio "${median[gpu-legacy]}" "${median[gpu-runc]}")"
printf '  ratio gpu-jit/gpu-legacy (median)    %s\n' "$(ratio "${median[gpu-jit]}" "${median[gpu-legacy]}")"
