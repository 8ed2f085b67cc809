#!/bin/sh
# Install or remove the applet symlinks of an nvbox binary.
#   ./symlinks.sh [--binary PATH] DIR     create DIR/<applet> -> PATH for every applet
#   ./symlinks.sh [--binary PATH] --remove DIR
# The applet names come from the binary itself (`nvbox --list`), so this script never drifts
# from the build. POSIX sh: works with dash and busybox.
set -eu

usage() {
    echo "usage: $0 [--binary PATH] [--remove] DIR" >&2
    exit 2
}

binary=""
remove=0
dir=""
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
    --binary=*) binary=${1#--binary=}; shift ;;
    --remove) remove=1; shift ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) [ -z "$dir" ] || usage; dir=$1; shift ;;
    esac
done
[ -n "$dir" ] || usage

if [ -z "$binary" ]; then
    here=$(dirname "$0")
    for candidate in "$here/target/x86_64-unknown-linux-gnu/release/nvbox" "$here/target/release/nvbox" "$dir/nvbox"; do
        if [ -x "$candidate" ]; then binary=$candidate; break; fi
    done
    [ -n "$binary" ] || { echo "$0: no nvbox binary found; pass --binary PATH" >&2; exit 1; }
fi
[ -x "$binary" ] || { echo "$0: $binary is not executable" >&2; exit 1; }

# An absolute target keeps links valid whatever directory they are read from.
case "$binary" in
/*) target=$binary ;;
*) target=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary") ;;
esac

names=$("$binary" --list) || { echo "$0: $binary --list failed" >&2; exit 1; }
[ -n "$names" ] || { echo "$0: $binary lists no applets" >&2; exit 1; }

if [ "$remove" -eq 1 ]; then
    for name in $names; do
        # Only links to this binary: never a file or link someone else installed there.
        if [ -L "$dir/$name" ] && [ "$(readlink "$dir/$name")" = "$target" ]; then
            rm -f "$dir/$name"
        fi
    done
    exit 0
fi

mkdir -p "$dir"
for name in $names; do
    link="$dir/$name"
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        echo "$0: $link exists and is not a symlink; leaving it" >&2
        continue
    fi
    # ln -sf replaces a stale link atomically enough for an installer and is idempotent.
    ln -sf "$target" "$link"
done
