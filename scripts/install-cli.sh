#!/usr/bin/env bash
# `make install`: put `rollhook` on PATH, as a link to this checkout's scripts/rollhook
# (in $ROLLHOOK_BIN_DIR, default /usr/local/bin). A `rollhook` there that is not such a
# link is left alone. With --if-possible (what `make run` uses) a missing permission is
# a hint, not an error.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin_dir=${ROLLHOOK_BIN_DIR:-/usr/local/bin}
link=$bin_dir/rollhook
target=$root/scripts/rollhook
soft=0
[[ ${1:-} == --if-possible ]] && soft=1

if [[ -L $link && $(readlink "$link") == "$target" ]]; then
    exit 0  # already this checkout's
fi
if [[ -e $link || -L $link ]] && ! [[ -L $link && $(readlink "$link") == */scripts/rollhook ]]; then
    echo "rollhook: $link exists and is not a link to a rollhook checkout; left alone" \
        "(use $target)" >&2
    exit $((1 - soft))
fi
if ! mkdir -p "$bin_dir" 2>/dev/null || [[ ! -w $bin_dir ]]; then
    echo "rollhook: cannot write $bin_dir: run \`sudo make install\` to put rollhook on PATH," \
        "or use $target" >&2
    exit $((1 - soft))
fi
previous=$(readlink "$link" 2>/dev/null || true)
ln -sfn "$target" "$link"
echo "rollhook: $link -> $target${previous:+ (was $previous)}"
case ":$PATH:" in
*":$bin_dir:"*) ;;
*) echo "rollhook: $bin_dir is not on your PATH; add it, or call $link" >&2 ;;
esac
