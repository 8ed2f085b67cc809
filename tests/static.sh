#!/bin/sh
# Static-binary checks: build the release binary as README says (a plain `cargo build --release`:
# .cargo/config.toml selects the target and +crt-static), then check what a packager would: no
# dynamic dependencies, size, and that the installed symlinks and the simulated-host quick start
# work with that very file.
set -u
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --quiet || exit 1
bin="target/$target/release/nvbox"
pass=0
fail=0
check() {
    name=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "ok   $name"
        pass=$((pass + 1))
    else
        echo "FAIL $name"
        fail=$((fail + 1))
    fi
}
is_static() {
    out=$(ldd "$bin" 2>&1)
    case "$out" in
    *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
    *) echo "$out" >&2; return 1 ;;
    esac
}
small() { [ "$(stat -c %s "$bin")" -le 3145728 ]; }
no_interp() { ! readelf -l "$bin" | grep -q 'Requesting program interpreter'; }
no_needed() { readelf -d "$bin" >"$tmp/dynamic" 2>&1 && ! grep -q '(NEEDED)' "$tmp/dynamic"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
installs() {
    sh ./symlinks.sh --binary "$(pwd)/$bin" "$tmp/bin" &&
        "$tmp/bin/nvidia-container-cli" --version | grep -q '^cli-version: '
}
quick_start() {
    "$bin" mock "$tmp/host" --gpus 8 >"$tmp/config.toml" &&
        NVIDIA_CTK_CONFIG_FILE_PATH="$tmp/config.toml" "$tmp/bin/nvidia-container-cli" info |
        grep -c '^Device Index:' | grep -qx 8
}
check "ldd: no dynamic dependencies" is_static
check "no program interpreter (PT_INTERP)" no_interp
check "no DT_NEEDED" no_needed
check "size <= 3 MiB ($(stat -c %s "$bin") bytes)" small
check "symlinks.sh installs runnable applets" installs
check "quick start: mock host + info through the symlink" quick_start
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
