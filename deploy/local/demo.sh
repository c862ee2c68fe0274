#!/usr/bin/env bash
# The demo: on the local emulator, seed a fleet of all six kinds and run bunker's daily
# create (01:00) and clean (02:00) over a simulated month with --now, then show the plan.
# Installs what it needs (emulator venv) and builds bunker; nothing touches real AWS.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"

echo "== building bunker"
cargo build --locked --quiet --bin bunker
bunker="$CARGO_TARGET_DIR/debug/bunker"

source deploy/local/emulator.sh
echo "== local AWS emulator (moto + bunker plugin) on 127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
"$python" deploy/local/seed_fleet.py

cat > "$work/bunker.toml" <<TOML
# Short retention so a month shows pruning: 7 dailies, 2 weeklies, 1 monthly.
keep_daily = 7
keep_weekly = 2
keep_monthly = 1
keep_yearly = 1
TOML
echo "== config (bunker config show):"
"$bunker" config show --config "$work/bunker.toml" | sed 's/^/  /'

kinds="ebs ec2ami rds rds-cluster docdb redshift"
echo "== 31 simulated days, 2026-11-25 .. 2026-12-25: create at 01:00, clean at 02:00, every kind"
for i in $(seq 0 30); do
  day=$(date -u -d "2026-11-25 + $i days" +%F)
  line="$day"
  for k in $kinds; do
    c=$("$bunker" "$k" create-backups --config "$work/bunker.toml" --now "${day}T01:00:00Z" --json)
    d=$("$bunker" "$k" clean-backups --config "$work/bunker.toml" --now "${day}T02:00:00Z" --json)
    r=$(printf '%s' "$c" | "$python" -c 'import json,sys; e=json.load(sys.stdin)["entries"]; print(",".join(sorted({x.get("retention","?") for x in e if x["status"]=="OK"})) or "-")')
    n=$(printf '%s' "$d" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["summary"]["succeeded"])')
    line="$line  $k:+$r/-$n"
  done
  echo "  $line"
done
echo "   (+TYPE: backups created with that retention type; -N: expired backups deleted)"

echo "== bunker ebs list-backups (what exists now)"
"$bunker" ebs list-backups --config "$work/bunker.toml" --now 2026-12-25T03:00:00Z | sed 's/^/  /'
echo "== bunker plan ebs --now 2027-01-10T00:00:00Z (what a clean then would do; changes nothing)"
"$bunker" plan ebs --config "$work/bunker.toml" --now 2027-01-10T00:00:00Z | sed 's/^/  /'
echo "== bunker rds-cluster list-backups --json (first entry)"
"$bunker" rds-cluster list-backups --config "$work/bunker.toml" --json | "$python" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[0], indent=2))' | sed 's/^/  /'
echo "== HTTP requests the emulator served: $(curl -s "http://127.0.0.1:$port/_bunker/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
echo "== demo done"
