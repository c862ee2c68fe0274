#!/usr/bin/env bash
# Benchmark of the vault exports (issue 11): N EBS recovery points in an AWS Backup vault
# (each a backup job of a volume made from a 1 GiB snapshot with 200 written blocks), every
# event dropped; one `bunker serve` run with export.vaults finds them by reconciliation,
# exports each, reads it back and deletes it (export.delete_source). Measures wall time from
# process start until the vault is empty, and the HTTP requests per export (every request
# the emulator served, bunker's and this script's polling, divided by N). RUNS runs
# (default 3), each in a fresh account; prints each run and the median.
#
#   benches/vault_exports.sh 20
#
# Builds bunker in release mode; BUNKER_PROFILE=debug uses the debug build (say so when
# quoting figures).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
n="${1:-20}"
source benches/prepare.sh
"$python" benches/vault_exports.py "$bin" "$n" "${RUNS:-3}" "$work"
