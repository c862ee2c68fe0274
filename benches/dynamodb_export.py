"""Driver of benches/dynamodb_export.sh (see there)."""
import json, os, statistics, subprocess, sys, time

import boto3

from benchlib import creds

bunker, n, runs, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
REGION, ROLE = "us-east-1", "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole"
ACCOUNT = "510000000001"
SEGMENTS = [1, 2, 4]


def load(ddb):
    """The table `items`: n items of ~1 KiB each (a key, a number, a 1,000-byte string)."""
    ddb.create_table(TableName="items", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    pad = "x" * 1000
    for start in range(0, n, 25):
        batch = [{"PutRequest": {"Item": {"k": {"S": f"item-{i:07d}"}, "n": {"N": str(i)}, "pad": {"S": pad}}}}
                 for i in range(start, min(n, start + 25))]
        ddb.batch_write_item(RequestItems={"items": batch})


def backup_point(backup, account):
    job = backup.start_backup_job(BackupVaultName="Default", ResourceArn=f"arn:aws:dynamodb:{REGION}:{account}:table/items",
                                  IamRoleArn=ROLE)
    while backup.describe_backup_job(BackupJobId=job["BackupJobId"])["State"] != "COMPLETED":
        time.sleep(0.1)
    return job["RecoveryPointArn"]


def export(c, point, bucket, segments, run):
    cfg = os.path.join(work, f"ddb-{segments}-{run}.toml")
    with open(cfg, "w") as f:
        f.write(f'regions = ["{REGION}"]\nexport.to = "s3://{bucket}/s{segments}-r{run}"\nexport.scan_segments = {segments}\n')
    env = dict(os.environ, AWS_ACCESS_KEY_ID=c["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=c["aws_secret_access_key"],
               AWS_SESSION_TOKEN=c["aws_session_token"], AWS_REGION=REGION)
    t0 = time.monotonic()
    p = subprocess.Popen([bunker, "--json", "--config", cfg, "export", "recovery-point", point, "--vault", "Default"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    report = json.loads(out)
    assert os.waitstatus_to_exitcode(status) == 0 and report["state"] == "done", out
    return wall, usage.ru_maxrss / 1024


def main():
    c = creds(ACCOUNT, REGION)
    ddb, backup, s3 = (boto3.client(x, region_name=REGION, **c) for x in ("dynamodb", "backup", "s3"))
    t = time.monotonic()
    load(ddb)
    print(f"loaded {n} items of ~1 KiB in {time.monotonic() - t:.0f} s", flush=True)
    backup.create_backup_vault(BackupVaultName="Default")
    point = backup_point(backup, ACCOUNT)
    bucket = "bench-ddb-export"
    s3.create_bucket(Bucket=bucket)
    results = {s: [] for s in SEGMENTS}
    for run in range(runs):
        order = SEGMENTS[run % 3:] + SEGMENTS[:run % 3]
        for segments in order:
            wall, rss = export(c, point, bucket, segments, run)
            results[segments].append((wall, rss))
            print(f"run {run + 1}, {segments} segment(s): {wall:.2f} s, {n / wall:,.0f} items/s, peak RSS {rss:.0f} MiB",
                  flush=True)
    base = statistics.median(w for w, _ in results[1])
    for segments in SEGMENTS:
        walls = [w for w, _ in results[segments]]
        med = statistics.median(walls)
        print(f"median, {segments} segment(s): {med:.2f} s, {n / med:,.0f} items/s, "
              f"peak RSS {max(r for _, r in results[segments]):.0f} MiB max, {base / med:.2f}x the 1-segment rate")


main()
