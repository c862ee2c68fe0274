#!/usr/bin/env bash
# Benchmark of the serve issue: N tagged volumes; `bunker serve` catches up the day's create
# slot at start, then copies every new backup to 1 DR region and shares it (and the copy)
# with 1 account. Measures wall time from process start until every copy and share exists
# (polled from outside with boto3), peak RSS of the service (VmHWM), and HTTP requests.
# Runs RUNS times (default 3), each in a fresh account, and prints each run and the median.
#
#   benches/serve_fanout.sh 50
#   SHELVERY_VENV=/path/to/venv-with-shelvery-0.10.1 benches/serve_fanout.sh 50   # side by side
#
# Builds bunker in release mode (the shipped binary); BUNKER_PROFILE=debug uses the debug
# build instead (quicker to build; say so when quoting figures).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
n="${1:-50}"
profile="${BUNKER_PROFILE:-release}"
if [ "$profile" = release ]; then cargo build --locked --release --quiet --bin bunker; else cargo build --locked --quiet --bin bunker; fi
source deploy/local/emulator.sh
"$python" -c 'import boto3' 2>/dev/null || "$(dirname "$python")/pip" install -q boto3
"$python" benches/serve_fanout.py "$CARGO_TARGET_DIR/$profile/bunker" "$n" "${RUNS:-3}" "$work"
