#!/usr/bin/env bash
# Benchmark of DynamoDB recovery-point exports in `backup` mode (issue 11): a table of N
# items of ~1 KiB (default 200,000), one AWS Backup job of it, then `bunker export
# recovery-point` with export.scan_segments 1, 2 and 4, side by side: each restores the
# backup to a temporary table, scans it in that many parallel segments into DynamoDB JSON
# lines, compresses, uploads, and deletes the table. Prints, per run, wall time, items/s and
# bunker's peak RSS (wait4's ru_maxrss), then the median per segment count. RUNS rounds
# (default 3), in ABC order rotated each round.
#
#   benches/dynamodb_export.sh 200000
#
# Builds bunker in release mode; BUNKER_PROFILE=debug uses the debug build (say so when
# quoting figures).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
n="${1:-200000}"
source benches/prepare.sh
"$python" benches/dynamodb_export.py "$bin" "$n" "${RUNS:-3}" "$work"
