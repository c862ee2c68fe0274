#!/usr/bin/env bash
# Benchmark of the serve issue: N tagged volumes (KIND=ebs, the default), instances
# (KIND=ec2ami) or DB instances (KIND=rds); `bunker serve` catches up the day's create slot at
# start, then copies every new backup to 1 DR region and shares it (and the copy) with 1
# account (an AMI's snapshot too). Measures wall time from process start until bunker's last
# request (its last share), as the emulator timed it, once every copy and share exists (polled
# from outside with boto3 every POLL seconds, default 1.5, under its own role so the emulator
# counts its requests apart; the time the poller saw it is printed too), peak RSS of the
# service (VmHWM), and bunker's own HTTP requests per backup, by action.
# Runs RUNS times (default 3), each in a fresh account, and prints each run and the median.
#
#   benches/serve_fanout.sh 50
#   KIND=rds benches/serve_fanout.sh 200
#   BUNKER_BEFORE=/tmp/bunker-old benches/serve_fanout.sh 50   # old vs this build, side by side
#   SHELVERY_VENV=/path/to/venv-with-shelvery-0.10.1 benches/serve_fanout.sh 50   # side by side
#
# With BUNKER_BEFORE, each run goes through that binary and this build in turn (ABBA order,
# each in a fresh account, one emulator) and the medians' ratio is printed. Build the old
# binary in its own CARGO_TARGET_DIR: cargo's fingerprints of workspace crates do not tell
# two checkouts apart, so a shared target dir can hand one checkout the other's build.
# Builds bunker in release mode (the shipped binary); BUNKER_PROFILE=debug uses the debug
# build instead (quicker to build; say so when quoting figures).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
n="${1:-50}"
source benches/prepare.sh
[ -n "${BUNKER_BEFORE:-}" ] && bin="before=$BUNKER_BEFORE,after=$bin"
"$python" benches/serve_fanout.py "$bin" "$n" "${RUNS:-3}" "$work"
