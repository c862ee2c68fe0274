#!/usr/bin/env bash
# The demo: on the local emulator, seed a fleet of all six kinds and run bunker's daily
# create (01:00) and clean (02:00) over a simulated month with --now, then show the plan,
# the service (copies, shares, a pull), exports, and an AWS Backup recovery point exported,
# verified and deleted.
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
# The owner id of this install's backups (commands that delete refuse to run without one).
deployment = "demo-{account}-{region}"
# Short retention so a month shows pruning: 7 dailies, 2 weeklies, 1 monthly.
keep_daily = 7
keep_weekly = 2
keep_monthly = 1
keep_yearly = 1
TOML
echo "== config (bunker config show):"
"$bunker" config show --config "$work/bunker.toml" | sed 's/^/  /'

kinds="ebs ec2ami rds rds-cluster docdb redshift"
echo "== 31 simulated days, 2037-11-25 .. 2037-12-25: create at 01:00, clean at 02:00, every kind"
for i in $(seq 0 30); do
  day=$(date -u -d "2037-11-25 + $i days" +%F)
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
"$bunker" ebs list-backups --config "$work/bunker.toml" --now 2037-12-25T03:00:00Z | sed 's/^/  /'
echo "== bunker plan ebs --now 2038-01-10T00:00:00Z (what a clean then would do; changes nothing)"
"$bunker" plan ebs --config "$work/bunker.toml" --now 2038-01-10T00:00:00Z | sed 's/^/  /'
echo "== bunker rds-cluster list-backups --json (first entry)"
"$bunker" rds-cluster list-backups --config "$work/bunker.toml" --json | "$python" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[0], indent=2))' | sed 's/^/  /'
bunker_account=999999999999
echo "== bunker serve: copy every EBS backup to us-west-2 and share it with account $bunker_account (the data bunker)"
"$python" - "$work" <<'PY'
import boto3, sys
sqs = boto3.client("sqs")
q = sqs.create_queue(QueueName="bunker-events")["QueueUrl"]
d = sqs.create_queue(QueueName="bunker-events-dlq")["QueueUrl"]
open(f"{sys.argv[1]}/queues", "w").write(f"{q}\n{d}\n")
PY
{ read -r queue; read -r dlq; } < "$work/queues"
cat > "$work/serve.toml" <<TOML
deployment = "demo-{account}-{region}"
keep_daily = 7
keep_weekly = 2
keep_monthly = 1
keep_yearly = 1
regions = ["us-east-1"]
dr_regions = ["us-west-2"]
share_accounts = ["$bunker_account"]
schedule.create = ""   # the demo drives runs with a command message instead of the clock
schedule.clean = ""
[serve]
kinds = "ebs"
queue_url = "$queue"
dead_letter_queue_url = "$dlq"
listen = "127.0.0.1:0"
check_interval = "1s"
TOML
STATE_DIRECTORY="$work/state" BUNKER_LOG=info "$bunker" serve --config "$work/serve.toml" >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
listen=$(sed -n 's/^bunker serve: listening on //p' "$work/serve.out")
echo "  service up on $listen (/healthz: $(curl -s "http://$listen/healthz"))"
echo "  start-up reconciliation copies the backups made so far; then a command message on the queue:"
echo '    {"action": "create-backups", "kind": "ebs"}'
"$python" - "$queue" <<'PY'
import boto3, json, sys, time
def ebs_sources(ec2):
    return [s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            if not any(t["Key"] == "bunker:ami_part" for t in s.get("Tags", []))]
before = len(ebs_sources(boto3.client("ec2", region_name="us-east-1")))
boto3.client("sqs").send_message(QueueUrl=sys.argv[1], MessageBody=json.dumps({"action": "create-backups", "kind": "ebs"}))
# A malformed message too: it goes to the dead-letter queue with its reason.
boto3.client("sqs").send_message(QueueUrl=sys.argv[1], MessageBody="{oops")
src, dr = boto3.client("ec2", region_name="us-east-1"), boto3.client("ec2", region_name="us-west-2")
for _ in range(300):
    sources = ebs_sources(src)
    copies = dr.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    if len(sources) > before and len(copies) == len(sources) and all(
            dr.describe_snapshot_attribute(SnapshotId=c["SnapshotId"], Attribute="createVolumePermission")["CreateVolumePermissions"]
            for c in copies):
        break
    time.sleep(0.2)
print(f"  us-east-1: {len(sources)} EBS backups; us-west-2: {len(copies)} copies")
for c in sorted(copies, key=lambda c: c["SnapshotId"])[:3]:
    t = {x["Key"]: x["Value"] for x in c["Tags"]}
    shared = dr.describe_snapshot_attribute(SnapshotId=c["SnapshotId"], Attribute="createVolumePermission")["CreateVolumePermissions"]
    print(f"    {c['SnapshotId']}  copy_of={t['bunker:copy_of']}  owner={t['bunker:deployment']}  shared={[p['UserId'] for p in shared]}")
print("    …")
PY
dlq_reason=$("$python" -c 'import boto3,sys; m=boto3.client("sqs").receive_message(QueueUrl=sys.argv[1], MessageAttributeNames=["All"]).get("Messages",[]); print(m[0]["MessageAttributes"]["bunker_reason"]["StringValue"] if m else "-")' "$dlq")
echo "  dead-letter queue: 1 message, bunker_reason = \"$dlq_reason\""
echo "  /metrics (excerpt):"
curl -s "http://$listen/metrics" | grep -E '^bunker_(jobs|messages|runs)_total' | sed 's/^/    /'
kill -TERM "$serve_pid"
wait "$serve_pid" && echo "  SIGTERM: clean exit (code 0)"
echo "== data-bunker pull: account $bunker_account copies in what 123456789012 shared with it"
bunker_env=$("$python" - "$bunker_account" <<'PY'
import boto3, sys
c = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{sys.argv[1]}:role/bunker", RoleSessionName="demo")["Credentials"]
print(f"AWS_ACCESS_KEY_ID={c['AccessKeyId']} AWS_SECRET_ACCESS_KEY={c['SecretAccessKey']} AWS_SESSION_TOKEN={c['SessionToken']}")
PY
)
cat > "$work/bunker-account.toml" <<TOML
regions = ["us-east-1"]
source_accounts = ["123456789012"]
keep_daily_pulled = 30
TOML
env $bunker_env "$bunker" ebs pull-backups --config "$work/bunker-account.toml" | tail -n 4 | sed 's/^/  /'
echo "  a second pull finds nothing new:"
env $bunker_env "$bunker" ebs pull-backups --config "$work/bunker-account.toml" | tail -n 1 | sed 's/^/  /'
echo "  the bunker's own backups now (bunker ebs list-backups in $bunker_account):"
env $bunker_env "$bunker" ebs list-backups --config "$work/bunker-account.toml" | tail -n 4 | sed 's/^/    /'
echo "== export: a snapshot written block by block (EBS direct APIs) → a seekable zstd archive in S3"
snaps=$("$python" - <<'PY'
import base64, boto3, hashlib, random
ebs, s3 = boto3.client("ebs"), boto3.client("s3")
s3.create_bucket(Bucket="demo-archives")
rnd = random.Random(4)
def snapshot(parent, blocks):
    s = ebs.start_snapshot(VolumeSize=1, **({"ParentSnapshotId": parent} if parent else {}))["SnapshotId"]
    for i in blocks:
        data = (f"block {i} " * 60000).encode()[:524288] if i % 2 else rnd.randbytes(524288)
        ebs.put_snapshot_block(SnapshotId=s, BlockIndex=i, BlockData=data, DataLength=len(data),
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                               ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=s, ChangedBlocksCount=len(blocks))
    return s
first = snapshot(None, sorted(rnd.sample(range(2048), 200)))
later = snapshot(first, sorted(rnd.sample(range(2048), 20)))
print(first, later)
PY
)
read -r snap later <<<"$snaps"
echo "  $snap: 1 GiB volume, 200 of 2048 blocks written (half random, half text); $later: 20 blocks changed"
"$bunker" export ebs "$snap" --to s3://demo-archives/daily | sed 's/^/  /'
echo "== verify: every chunk hash and the whole-image hash"
"$bunker" verify "s3://demo-archives/daily/$snap.img.zst" | sed 's/^/  /'
echo "== restore to a file with bunker, and without it (zstd -d | b3sum against the manifest)"
"$bunker" restore "s3://demo-archives/daily/$snap.img.zst" --to-file "$work/disk.img" | sed 's/^/  /'
want=$("$python" -c 'import boto3,json,sys; print(json.loads(boto3.client("s3").get_object(Bucket="demo-archives", Key=sys.argv[1])["Body"].read())["image_blake3"])' "daily/$snap.manifest.json")
if command -v zstd >/dev/null && command -v b3sum >/dev/null; then
  got=$("$python" -c 'import boto3,sys; sys.stdout.buffer.write(boto3.client("s3").get_object(Bucket="demo-archives", Key=sys.argv[1])["Body"].read())' "daily/$snap.img.zst" | zstd -d | b3sum --no-names)
  echo "  aws s3 cp … - | zstd -d | b3sum: $got ($( [ "$got" = "$want" ] && echo matches || echo DIFFERS) the manifest)"
else
  echo "  (the check without bunker needs the zstd and b3sum CLIs: apt-get install zstd b3sum)"
fi
echo "== incremental export of $later (only changed chunks), then restore base + increment to a new snapshot"
"$bunker" export ebs "$later" --base "$snap" --to s3://demo-archives/daily | sed 's/^/  /'
restored=$("$bunker" restore "s3://demo-archives/daily/$later.img.zst" --to-snapshot)
echo "  new snapshot: $restored (restored from $snap + $later)"
echo "== AWS Backup: a backup job of a volume made from $snap, then its recovery point exported, verified and deleted"
point=$("$python" - "$snap" <<'PY'
import boto3, sys, time
ec2, backup = boto3.client("ec2"), boto3.client("backup")
backup.create_backup_vault(BackupVaultName="Default")
vol = ec2.create_volume(SnapshotId=sys.argv[1], Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
job = backup.start_backup_job(BackupVaultName="Default", ResourceArn=f"arn:aws:ec2:us-east-1:123456789012:volume/{vol}",
                              IamRoleArn="arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole")
while backup.describe_backup_job(BackupJobId=job["BackupJobId"])["State"] != "COMPLETED":
    time.sleep(0.1)
print(job["RecoveryPointArn"])
PY
)
cat > "$work/vault.toml" <<TOML
regions = ["us-east-1"]
export.to = "s3://demo-archives/long-term"
export.vaults = ["Default"]
export.delete_source = true
TOML
"$bunker" vault list-recovery-points Default --config "$work/vault.toml" | sed 's/^/  /'
"$bunker" export recovery-point "$point" --vault Default --config "$work/vault.toml" | sed 's/^/  /'
echo "  after: $("$bunker" vault list-recovery-points Default --config "$work/vault.toml" --json | "$python" -c 'import json,sys; print(len(json.load(sys.stdin)), "recovery points left in Default")')"
echo "  the archive: s3://demo-archives/long-term/recovery-points/Default/${point##*/}.img.zst ($("$bunker" verify "s3://demo-archives/long-term/recovery-points/Default/${point##*/}.img.zst" | head -n 1))"
echo "== AWS Backup: an RDS instance's recovery point exported by RDS to Parquet, verified file by file, then deleted"
rds_point=$("$python" <<'PY'
import boto3, time
rds, backup = boto3.client("rds"), boto3.client("backup")
rds.create_db_instance(DBInstanceIdentifier="shop", Engine="postgres", DBInstanceClass="db.t3.micro",
                       MasterUsername="u", MasterUserPassword="password1234", AllocatedStorage=20)
job = backup.start_backup_job(BackupVaultName="Default", ResourceArn="arn:aws:rds:us-east-1:123456789012:db:shop",
                              IamRoleArn="arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole")
while backup.describe_backup_job(BackupJobId=job["BackupJobId"])["State"] != "COMPLETED":
    time.sleep(0.1)
print(job["RecoveryPointArn"])
PY
)
cat >> "$work/vault.toml" <<TOML
export.rds_role_arn = "arn:aws:iam::123456789012:role/bunker-rds-export"
export.kms_key = "alias/bunker-exports"
export.task_poll = "1s"
TOML
"$bunker" export recovery-point "$rds_point" --vault Default --config "$work/vault.toml" | sed 's/^/  /'
"$python" <<'PY'
import boto3, json
s3 = boto3.client("s3")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="demo-archives", Prefix="long-term/recovery-points/Default/")["Contents"]]
for key in keys:
    if key.endswith(".manifest.json"):
        m = json.loads(s3.get_object(Bucket="demo-archives", Key=key)["Body"].read())
        if m["format"] == "bunker-parquet-export":
            parquet = [o for o in m["objects"] if o["key"].endswith(".parquet")]
            print(f"  s3://demo-archives/{key}: engine {m['engine']}, {len(parquet)} Parquet files")
            for t in m["tables"]:
                print(f"    {t['name']}: {t['rows']} rows in {t['files']} file(s)")
PY
echo "  after: $("$bunker" vault list-recovery-points Default --config "$work/vault.toml" --json | "$python" -c 'import json,sys; print(len(json.load(sys.stdin)), "recovery points left in Default")')"
echo "== AWS Backup: a DynamoDB table's recovery point archived as the backup itself (a temporary table, scanned in 4 segments)"
ddb_point=$("$python" <<'PY'
import boto3, time
ddb, backup = boto3.client("dynamodb"), boto3.client("backup")
ddb.create_table(TableName="orders", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                 AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
for start in range(0, 500, 25):
    ddb.batch_write_item(RequestItems={"orders": [{"PutRequest": {"Item": {"k": {"S": f"order-{i:04d}"}, "n": {"N": str(i)}}}}
                                                  for i in range(start, start + 25)]})
job = backup.start_backup_job(BackupVaultName="Default", ResourceArn="arn:aws:dynamodb:us-east-1:123456789012:table/orders",
                              IamRoleArn="arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole")
while backup.describe_backup_job(BackupJobId=job["BackupJobId"])["State"] != "COMPLETED":
    time.sleep(0.1)
print(job["RecoveryPointArn"])
PY
)
"$bunker" export recovery-point "$ddb_point" --vault Default --config "$work/vault.toml" | sed 's/^/  /'
archive="s3://demo-archives/long-term/recovery-points/Default/orders-${ddb_point##*/}.jsonl.zst"
echo "  $archive: $("$python" - "$archive" <<'PY'
import boto3, subprocess, sys
bucket, key = sys.argv[1][5:].split("/", 1)
data = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
lines = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout.decode().splitlines()
print(f"zstd -d gives {len(lines)} items, one DynamoDB JSON line each, e.g. {lines[0]}")
PY
)"
echo "  tables left: $("$python" -c 'import boto3; print(boto3.client("dynamodb").list_tables()["TableNames"])') (the temporary table is gone)"
echo "== HTTP requests the emulator served: $(curl -s "http://127.0.0.1:$port/_bunker/stats" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
echo "== demo done"
