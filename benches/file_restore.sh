#!/usr/bin/env bash
# Benchmark of single-file restore (issue 13): a tree (default /usr/share: ~660 MiB, ~44,000
# files) exported with `bunker export path` to the emulator's S3, then, interleaved RUNS times
# (default 3), one small file (4–8 KiB, from the middle of the stream) restored two ways:
#   (a) `bunker restore ARCHIVE --path FILE --to-dir DIR`: catalog + the frames holding it;
#   (b) what a user without the catalog does: download the whole archive and
#       `zstd -dc | tar -x FILE` (GetObject streamed straight into the pipe).
# Prints each run's wall time and the bytes the emulator served (GetObject, per bucket), and
# the medians.
#
#   benches/file_restore.sh            # TREE=/some/dir RUNS=5 to change
#
# Builds bunker in release mode; BUNKER_PROFILE=debug uses the debug build (say so when
# quoting figures).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
source benches/prepare.sh
"$python" benches/file_restore.py "$bin" "${RUNS:-3}" "$work" "${TREE:-/usr/share}"
