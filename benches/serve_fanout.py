"""Driver of benches/serve_fanout.sh (see there)."""
import json, os, statistics, subprocess, sys, time, urllib.request

import boto3

bunker, n, runs, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
endpoint = os.environ["AWS_ENDPOINT_URL"]
SRC, DR, SHARE = "us-east-1", "us-west-2", "111111111111"


def creds(account):
    c = boto3.client("sts", aws_access_key_id="x", aws_secret_access_key="x", region_name=SRC).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/bench", RoleSessionName="bench")["Credentials"]
    return {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"],
            "aws_session_token": c["SessionToken"]}


def shared(ec2, snap):
    a = ec2.describe_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission")
    return [p.get("UserId") for p in a["CreateVolumePermissions"]] == [SHARE]


def requests():
    return json.load(urllib.request.urlopen(f"{endpoint}/_bunker/stats"))["requests"]


results = []
for run in range(runs):
    account = f"7000000000{run:02d}"
    c = creds(account)
    src, dr = boto3.client("ec2", region_name=SRC, **c), boto3.client("ec2", region_name=DR, **c)
    for i in range(n):
        src.create_volume(AvailabilityZone=f"{SRC}a", Size=1, TagSpecifications=[{"ResourceType": "volume",
            "Tags": [{"Key": "bunker:create_backup", "Value": "true"}, {"Key": "Name", "Value": f"vol-{i}"}]}])
    cfg = os.path.join(work, f"bench-{run}.toml")
    with open(cfg, "w") as f:
        f.write(f'regions = ["{SRC}"]\ndr_regions = ["{DR}"]\nshare_accounts = ["{SHARE}"]\n'
                'schedule.create = "0 0 * * *"\nschedule.clean = ""\n'
                '[serve]\nkinds = "ebs"\nlisten = "127.0.0.1:0"\ncheck_interval = "1s"\nreconcile_interval = "1h"\n')
    env = dict(os.environ, AWS_ACCESS_KEY_ID=c["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=c["aws_secret_access_key"],
               AWS_SESSION_TOKEN=c["aws_session_token"], AWS_REGION=SRC, STATE_DIRECTORY=os.path.join(work, f"state-{run}"))
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_bunker/stats", method="POST"))
    t0 = time.monotonic()
    p = subprocess.Popen([bunker, "serve", "--config", cfg], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()
    done_sources = set()
    while True:
        sources = [s["SnapshotId"] for s in src.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
        copies = dr.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        if len(sources) == n and len(copies) == n:
            pending = [s for s in sources if s not in done_sources]
            for s in pending:
                if shared(src, s):
                    done_sources.add(s)
            if len(done_sources) == n and all(shared(dr, s["SnapshotId"]) for s in copies):
                break
        if time.monotonic() - t0 > 600:
            sys.exit("timed out")
        time.sleep(0.05)
    wall = time.monotonic() - t0
    with open(f"/proc/{p.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    reqs = requests()
    p.terminate()
    p.wait(timeout=30)
    results.append((wall, hwm, reqs))
    print(f"run {run + 1}: {n} volumes -> {n} backups, {n} copies in {DR}, {2 * n} shares: "
          f"{wall:.2f} s, peak RSS {hwm:.1f} MiB, {reqs} HTTP requests (incl. this script's polling)")
print(f"median of {runs}: {statistics.median(r[0] for r in results):.2f} s, "
      f"peak RSS {statistics.median(r[1] for r in results):.1f} MiB")
