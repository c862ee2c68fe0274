"""Driver of benches/vault_exports.sh (see there)."""
import base64, hashlib, json, os, random, statistics, subprocess, sys, time, urllib.request

import boto3

from benchlib import creds, start_serve

bunker, n, runs, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
endpoint = os.environ["AWS_ENDPOINT_URL"]
REGION, ROLE = "us-east-1", "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole"


def post(path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    return urllib.request.urlopen(urllib.request.Request(f"{endpoint}{path}", data=data, method="POST")).read()


def snapshot(ebs, rnd):
    s = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i in sorted(rnd.sample(range(2048), 200)):
        data = rnd.randbytes(524288) if i % 2 else (f"block {i} " * 70000).encode()[:524288]
        ebs.put_snapshot_block(SnapshotId=s, BlockIndex=i, BlockData=data, DataLength=len(data),
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(), ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=s, ChangedBlocksCount=200)
    return s


def one_run(account, run):
    c = creds(account, REGION)
    ec2, ebs, backup, s3 = (boto3.client(x, region_name=REGION, **c) for x in ("ec2", "ebs", "backup", "s3"))
    post("/_bunker/backup", {"account": account, "events": []})
    backup.create_backup_vault(BackupVaultName="Default")
    bucket = f"bench-vault-{account}"
    s3.create_bucket(Bucket=bucket)
    data = snapshot(ebs, random.Random(run))
    for _ in range(n):
        vol = ec2.create_volume(SnapshotId=data, Size=1, AvailabilityZone=f"{REGION}a")["VolumeId"]
        backup.start_backup_job(BackupVaultName="Default", ResourceArn=f"arn:aws:ec2:{REGION}:{account}:volume/{vol}",
                                IamRoleArn=ROLE)
    while any(p["Status"] != "COMPLETED" for p in backup.list_recovery_points_by_backup_vault(BackupVaultName="Default")["RecoveryPoints"]):
        time.sleep(0.1)
    cfg = os.path.join(work, f"vault-{account}.toml")
    with open(cfg, "w") as f:
        f.write(f'regions = ["{REGION}"]\nschedule.create = ""\nschedule.clean = ""\n'
                f'export.to = "s3://{bucket}/a"\nexport.vaults = ["Default"]\nexport.delete_source = true\n'
                '[serve]\nkinds = "ebs"\nlisten = "127.0.0.1:0"\ncheck_interval = "1s"\nreconcile_interval = "1h"\n')
    p, t0 = start_serve(bunker, cfg, c, REGION, os.path.join(work, f"state-{account}"))
    while backup.list_recovery_points_by_backup_vault(BackupVaultName="Default")["RecoveryPoints"]:
        if time.monotonic() - t0 > 900:
            sys.exit("timed out")
        time.sleep(0.2)
    wall = time.monotonic() - t0
    stats = json.load(urllib.request.urlopen(f"{endpoint}/_bunker/stats"))
    p.terminate()
    p.wait(timeout=30)
    manifests = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"].endswith(".manifest.json")]
    assert len(manifests) == n, manifests
    by = stats["by_action"]
    blocks = by.get("ebs:GetSnapshotBlock", 0)
    print(f"run {run + 1}: {n} recovery points exported, verified and deleted in {wall:.2f} s "
          f"({wall / n:.2f} s each); {stats['requests'] / n:.0f} requests per export "
          f"({blocks / n:.0f} GetSnapshotBlock, {by.get('s3:UploadPart', 0) / n:.1f} UploadPart, "
          f"{by.get('s3:GetObject', 0) / n:.1f} GetObject)")
    return wall, stats["requests"] / n


results = [one_run(f"72000000{run:04d}", run) for run in range(runs)]
print(f"median of {runs}: {statistics.median(r[0] for r in results):.2f} s for {n}, "
      f"{statistics.median(r[1] for r in results):.0f} requests per export")
