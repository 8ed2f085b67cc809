#!/bin/sh
# Real-GPU check (not part of CI): on a machine with an NVIDIA driver, compare what nvbox
# discovers without NVML with what NVML reports through nvidia-smi, and with glibc's ldconfig.
#   tests/gpu/check.sh [NVBOX_BINARY]
set -u
bin=${1:-}
if [ -z "$bin" ]; then
    for c in target/x86_64-unknown-linux-gnu/release/nvbox target/release/nvbox target/debug/nvbox; do
        [ -x "$c" ] && bin=$c && break
    done
fi
[ -x "${bin:-}" ] || { echo "no nvbox binary; pass its path" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: not a GPU host" >&2; exit 2; }
cli() { NVIDIA_CTK_CONFIG_FILE_PATH=/nonexistent "$bin" nvidia-container-cli "$@"; }
pass=0
fail=0
same() { # name expected actual
    if [ "$2" = "$3" ]; then
        echo "ok   $1: $3"; pass=$((pass + 1))
    else
        echo "FAIL $1: nvidia-smi says '$2', nvbox says '$3'"; fail=$((fail + 1))
    fi
}

echo "== nvbox info"
cli info || fail=$((fail + 1))
csv=$(cli info --csv)
same "driver version" "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)" \
    "$(echo "$csv" | sed -n 2p | cut -d, -f1)"
same "CUDA version" "$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)" \
    "$(echo "$csv" | sed -n 2p | cut -d, -f2)"
ours=$(echo "$csv" | sed -n '5,$p')
same "GPU count" "$(nvidia-smi -L | grep -c '^GPU ')" "$(echo "$ours" | grep -c .)"
nvidia-smi --query-gpu=index,uuid,pci.bus_id,name,compute_cap --format=csv,noheader |
    while IFS=, read -r idx uuid bus name cap; do
        idx=$(echo "$idx" | tr -d ' '); uuid=$(echo "$uuid" | tr -d ' ')
        bus=$(echo "$bus" | tr -d ' ' | tr 'A-F' 'a-f'); name=$(echo "$name" | sed 's/^ *//')
        cap=$(echo "$cap" | tr -d ' ')
        row=$(echo "$ours" | awk -F, -v i="$idx" '$1 == i')
        echo "$row" | grep -q "$uuid" && echo "ok   GPU $idx uuid $uuid" || echo "FAIL GPU $idx uuid: want $uuid, row '$row'"
        [ "$(echo "$row" | cut -d, -f6)" = "$bus" ] && echo "ok   GPU $idx bus $bus" || echo "FAIL GPU $idx bus: want $bus, row '$row'"
        [ "$(echo "$row" | cut -d, -f3)" = "$name" ] && echo "ok   GPU $idx model $name" || echo "FAIL GPU $idx model: want $name, row '$row'"
        [ "$(echo "$row" | cut -d, -f7)" = "$cap" ] && echo "ok   GPU $idx arch $cap" || echo "FAIL GPU $idx arch: want $cap, row '$row'"
    done | tee /tmp/nvbox-gpu-rows.txt
pass=$((pass + $(grep -c '^ok' /tmp/nvbox-gpu-rows.txt)))
fail=$((fail + $(grep -c '^FAIL' /tmp/nvbox-gpu-rows.txt)))
same "brand of GPU 0" "$(nvidia-smi -q -i 0 | sed -n 's/^ *Product Brand *: *//p' | head -n1 | tr 'A-Z' 'a-z')" \
    "$(echo "$ours" | head -n1 | cut -d, -f4 | tr 'A-Z' 'a-z')"
same "minor of GPU 0" "$(nvidia-smi -q -i 0 | sed -n 's/^ *Minor Number *: *//p' | head -n1)" \
    "$(echo "$ours" | head -n1 | cut -d, -f2)"

echo "== nvbox list"
cli list | tee /tmp/nvbox-gpu-list.txt
for lib in $(grep '\.so\.' /tmp/nvbox-gpu-list.txt); do
    if [ -f "$lib" ]; then pass=$((pass + 1)); else echo "FAIL listed library missing: $lib"; fail=$((fail + 1)); fi
done
# Every driver library of this version that glibc's cache knows must be listed.
ver=$(echo "$csv" | sed -n 2p | cut -d, -f1)
for real in $(ldconfig -p | awk '/x86-64|aarch64/ {print $NF}' | xargs -r readlink -f | grep "\.so\.$ver\$" | sort -u); do
    base=$(basename "$real")
    case "$base" in
    libnvidia-gtk*|libnvidia-wayland*|libnvidia-egl-wayland*|libnvidia-vulkan-producer*|libnvidia-egl-gbm*|libnvidia-present*|libnvidia-api*|libnvidia-sandboxutils*|libGLX_indirect*) continue ;;
    esac
    if grep -q "/$base\$" /tmp/nvbox-gpu-list.txt; then pass=$((pass + 1)); else echo "FAIL not listed: $real"; fail=$((fail + 1)); fi
done
echo "== configure: nvidia-smi -L inside a scratch rootfs (upstream's e2e recipe)"
# A minimal rootfs with only nvidia-smi's non-NVIDIA dependencies; configure brings the driver.
# Standalone mode: the caller (a shell in a private mount namespace) is the "container".
if [ "$(id -u)" -eq 0 ]; then
    work=$(mktemp -d /tmp/nvbox-gpu-rootfs.XXXXXX)
    root=$work/rootfs
    mkdir -p "$root/etc" "$root/proc" "$root/dev" "$root/sys" "$root/tmp" "$root/usr/bin"
    [ -f /etc/debian_version ] && cp /etc/debian_version "$root/etc/"
    for dep in $(ldd "$(command -v nvidia-smi)" | grep -v -e nvidia -e libcuda | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$dep")" && cp -L "$dep" "$root$dep"
    done
    want=$(nvidia-smi -L)
    got=$(unshare --mount --propagation private sh -c '
        set -e
        mount --bind "$2" "$2"
        mount -t proc proc "$2/proc"
        mount -t tmpfs -o mode=0755 tmpfs "$2/dev"
        NVIDIA_CTK_CONFIG_FILE_PATH=/nonexistent "$1" nvidia-container-cli configure \
            --no-cgroups --device=all --utility --compute "$2"
        chroot "$2" /usr/bin/nvidia-smi -L' sh "$bin" "$root" 2>&1)
    same "nvidia-smi -L in a configured rootfs" "$want" "$got"
    rm -rf "$work"
else
    echo "SKIP configure check: needs root"
fi

echo "== timing (median of 50)"
python3 - "$bin" <<'PY' 2>/dev/null || true
import subprocess, sys, time, statistics, os
env = dict(os.environ, NVIDIA_CTK_CONFIG_FILE_PATH="/nonexistent")
for args in (["info"], ["list"]):
    ts = []
    for _ in range(50):
        t = time.perf_counter(); subprocess.run([sys.argv[1], "nvidia-container-cli"] + args, stdout=subprocess.DEVNULL, env=env); ts.append(time.perf_counter() - t)
    print(f"nvidia-container-cli {args[0]}: {statistics.median(ts)*1e3:.3f} ms")
PY
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
