#!/usr/bin/env bash
# Benchmark (a) of the foundation issue: N tagged volumes in the local emulator; time
# `bunker ebs create-backups` and `clean-backups`, and count the HTTP requests moto served.
# With SHELVERY_VENV=<venv with shelvery==0.10.1>, Shelvery runs side by side on the same
# emulator (its own account), so the ratio is measured in one run.
#
#   benches/ebs_create_clean.sh 50 1000
#
# Builds bunker in release mode (the shipped binary).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
sizes=("${@:-50}")
cargo build --locked --release --quiet --bin bunker
bunker="$CARGO_TARGET_DIR/release/bunker"
source deploy/local/emulator.sh
stats() { curl -s "$AWS_ENDPOINT_URL/_bunker/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
reset() { curl -s -X POST "$AWS_ENDPOINT_URL/_bunker/stats" >/dev/null; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

# Each run in its own account: credentials from AssumeRole (moto maps them to the account).
account_env() {
  "$python" - "$1" <<'PY'
import boto3, sys
c = boto3.client("sts", aws_access_key_id="x", aws_secret_access_key="x").assume_role(
    RoleArn=f"arn:aws:iam::{sys.argv[1]}:role/bench", RoleSessionName="bench")["Credentials"]
print(f"export AWS_ACCESS_KEY_ID={c['AccessKeyId']} AWS_SECRET_ACCESS_KEY={c['SecretAccessKey']} AWS_SESSION_TOKEN={c['SessionToken']}")
PY
}
seed() { # $1 = N, $2 = tag key
  "$python" - "$1" "$2" <<'PY'
import boto3, sys
ec2 = boto3.client("ec2")
for i in range(int(sys.argv[1])):
    ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[{"ResourceType": "volume",
        "Tags": [{"Key": sys.argv[2], "Value": "true"}, {"Key": "Name", "Value": f"vol-{i}"}]}])
PY
}

printf '%-10s %6s %-7s %9s %9s %12s %s\n' tool N step seconds requests "req/backup" result
# Deletes need an explicit owner id; simulated days lie after the wall clock (AWS dates are checked).
export BUNKER_DEPLOYMENT="bench-{account}-{region}"
acct=500000000000
for n in "${sizes[@]}"; do
  acct=$((acct + 1)); eval "$(account_env $acct)"; seed "$n" bunker:create_backup
  reset; t0=$(now); out=$("$bunker" ebs create-backups --now 2037-11-20T01:00:00Z --json); t1=$(now); r=$(stats)
  ok=$(printf '%s' "$out" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["summary"]["succeeded"])')
  printf '%-10s %6s %-7s %9s %9s %12s %s\n' bunker "$n" create "$(sub "$t1" "$t0")" "$r" "$(div "$r" "$ok")" "$ok ok"
  "$bunker" ebs create-backups --now 2037-11-21T01:00:00Z --json >/dev/null
  reset; t0=$(now); out=$(BUNKER_KEEP_DAILY=0 "$bunker" ebs clean-backups --now 2037-11-22T02:00:00Z --json); t1=$(now); r=$(stats)
  del=$(printf '%s' "$out" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["summary"]["succeeded"])')
  printf '%-10s %6s %-7s %9s %9s %12s %s\n' bunker "$n" clean "$(sub "$t1" "$t0")" "$r" "-" "$del deleted"

  if [ -n "${SHELVERY_VENV:-}" ]; then
    acct=$((acct + 1)); eval "$(account_env $acct)"; seed "$n" shelvery:create_backup
    reset; t0=$(now); SHELVERY_MONO_THREAD=1 "$SHELVERY_VENV/bin/shelvery" ebs create_backups >"$work/shelvery.log" 2>&1 || true; t1=$(now); r=$(stats)
    ok=$(curl -s "$AWS_ENDPOINT_URL/_bunker/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["by_action"].get("ec2:CreateSnapshot",0))')
    printf '%-10s %6s %-7s %9s %9s %12s %s\n' shelvery "$n" create "$(sub "$t1" "$t0")" "$r" "$(div "$r" "$ok")" "$ok snapshots"
    reset; t0=$(now); shelvery_keep_daily_backups=0 shelvery_keep_weekly_backups=0 shelvery_keep_monthly_backups=0 shelvery_keep_yearly_backups=0 \
      SHELVERY_MONO_THREAD=1 "$SHELVERY_VENV/bin/shelvery" ebs clean_backups >>"$work/shelvery.log" 2>&1 || true; t1=$(now); r=$(stats)
    del=$(curl -s "$AWS_ENDPOINT_URL/_bunker/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["by_action"].get("ec2:DeleteSnapshot",0))')
    printf '%-10s %6s %-7s %9s %9s %12s %s\n' shelvery "$n" clean "$(sub "$t1" "$t0")" "$r" "-" "$del deleted"
  fi
done
