#!/usr/bin/env bash
# Benchmark of file-level EBS exports (issue 13): a 4 GiB GPT disk whose 3 GiB ext4 partition
# holds a copy of /usr/share (tens of thousands of files; `mkfs.ext4 -d`), written to the
# emulator as a snapshot with the EBS direct APIs. Interleaved, RUNS times (default 3):
# `bunker export ebs SNAP --to file://` (the image) and `bunker export ebs SNAP --files --to
# file://` (tar + catalog), and `tar -cf - . | zstd -3 -T2` of the same filesystem from a
# read-only loop mount (the baseline), each timed wall-clock, with the GetSnapshotBlock requests the
# emulator served, the output bytes and the peak RSS. Prints each run and the medians.
#
#   sudo benches/ebs_files.sh            # needs sfdisk (fdisk) and mkfs.ext4 (e2fsprogs)
#
# Builds bunker in release mode; BUNKER_PROFILE=debug uses the debug build (say so when
# quoting figures). TREE=/some/dir archives another tree. Directories are indexed (htree, as
# the kernel makes them; `e2fsck -D` after `mkfs.ext4 -d`); HTREE=0 leaves them linear lists.
# BLOCK_DELAY_MS=20 makes the emulator answer each GetSnapshotBlock 20 ms late (a far network).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
source benches/prepare.sh
"$python" benches/ebs_files.py "$bin" "${RUNS:-3}" "$work" "${TREE:-/usr/share}"
