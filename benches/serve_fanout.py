"""Driver of benches/serve_fanout.sh (see there). With SHELVERY_VENV set, Shelvery 0.10.1 does
the same work side by side on the same emulator (its own account; SHELVERY_RUNS runs, default
1, since one takes minutes): `shelvery ebs create_backups` with shelvery_dr_regions and
shelvery_share_aws_account_ids, mono-thread so its deferred copy/share happen in the process;
wall time until every copy and share exists, peak RSS from wait4."""
import json, os, statistics, subprocess, sys, time, urllib.request

import boto3

from benchlib import creds, start_serve

# BINARY may be several `label=path` separated by commas (e.g. before=/tmp/a,after=/tmp/b):
# each run then goes through every binary in turn, side by side on one emulator, each in its
# own fresh account, and the medians and their ratio are printed for each.
bunker, n, runs, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
binaries = [tuple(b.split("=", 1)) if "=" in b else ("bunker", b) for b in bunker.split(",")]
endpoint = os.environ["AWS_ENDPOINT_URL"]
SRC, DR, SHARE = "us-east-1", "us-west-2", "111111111111"


def shared(ec2, snap):
    a = ec2.describe_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission")
    return [p.get("UserId") for p in a["CreateVolumePermissions"]] == [SHARE]


def stats():
    return json.load(urllib.request.urlopen(f"{endpoint}/_bunker/stats"))


# The poller looks every POLL seconds with its own role, so the emulator counts its requests
# apart from bunker's (`by_role`), and checks shares from the share account's side: one
# DescribeSnapshots per region lists what the account was given.
POLL = float(os.environ.get("POLL", "1.5"))


KIND = os.environ.get("KIND", "ebs")
NOUN = {"ebs": "volumes", "ec2ami": "instances", "rds": "DB instances"}[KIND]


def seed(c, n):
    """n resources of KIND selected for backups, made as bunker's account."""
    tag = [{"Key": "bunker:create_backup", "Value": "true"}]
    if KIND == "rds":
        rds = boto3.client("rds", region_name=SRC, **c)
        for i in range(n):
            rds.create_db_instance(DBInstanceIdentifier=f"db-{i}", Engine="postgres", DBInstanceClass="db.t3.micro",
                                   MasterUsername="u", MasterUserPassword="password1", AllocatedStorage=20, Tags=tag)
        return
    ec2 = boto3.client("ec2", region_name=SRC, **c)
    if KIND == "ec2ami":
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=n, MaxCount=n,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": tag}])
        return
    for i in range(n):
        ec2.create_volume(AvailabilityZone=f"{SRC}a", Size=1, TagSpecifications=[{"ResourceType": "volume",
            "Tags": tag + [{"Key": "Name", "Value": f"vol-{i}"}]}])


def watcher(account):
    """A check, as the poller's own role, that all n backups and copies exist and the share
    account was given each (seen from its side: one listing per region)."""
    watch, give = creds(account, SRC, role="poller"), creds(SHARE, SRC, role="poller")
    if KIND == "rds":
        mine = [boto3.client("rds", region_name=r, **watch) for r in (SRC, DR)]
        theirs = [boto3.client("rds", region_name=r, **give) for r in (SRC, DR)]
        def done(n):
            if any(len(m.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]) != n for m in mine):
                return False
            given = [s for t in theirs for s in t.describe_db_snapshots(SnapshotType="shared", IncludeShared=True)["DBSnapshots"]
                     if f":{account}:" in s["DBSnapshotArn"]]
            return len(given) == 2 * n
        return done
    mine = [boto3.client("ec2", region_name=r, **watch) for r in (SRC, DR)]
    theirs = [boto3.client("ec2", region_name=r, **give) for r in (SRC, DR)]
    def done(n):
        if KIND == "ec2ami":
            if any(len(m.describe_images(Owners=["self"])["Images"]) != n for m in mine):
                return False
            images = sum(len(t.describe_images(Owners=[account], ExecutableUsers=["self"])["Images"]) for t in theirs)
            # An AMI's snapshot is shared with it (else it cannot be copied by the account).
            return images == 2 * n and sum(len(t.describe_snapshots(OwnerIds=[account])["Snapshots"]) for t in theirs) == 2 * n
        if any(len(m.describe_snapshots(OwnerIds=["self"])["Snapshots"]) != n for m in mine):
            return False
        return sum(len(t.describe_snapshots(OwnerIds=[account])["Snapshots"]) for t in theirs) == 2 * n
    return done


def one_run(label, bunker, account, run):
    c = creds(account, SRC)  # bunker's role: "bench"
    seed(c, n)
    done = watcher(account)
    cfg = os.path.join(work, f"bench-{account}.toml")
    with open(cfg, "w") as f:
        f.write(f'regions = ["{SRC}"]\ndr_regions = ["{DR}"]\nshare_accounts = ["{SHARE}"]\n'
                'schedule.create = "0 0 * * *"\nschedule.clean = ""\n'
                f'[serve]\nkinds = "{KIND}"\nlisten = "127.0.0.1:0"\ncheck_interval = "1s"\nreconcile_interval = "1h"\n')
    p, t0 = start_serve(bunker, cfg, c, SRC, os.path.join(work, f"state-{account}"))
    epoch0 = time.time() - (time.monotonic() - t0)
    while not done(n):
        if time.monotonic() - t0 > 3600:
            sys.exit("timed out")
        time.sleep(POLL)
    seen = time.monotonic() - t0
    with open(f"/proc/{p.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    # start_serve zeroed the counters: everything the "bench" role made since is bunker's.
    s = stats()
    made = s["by_role"].get(f"{account}:bench", {})
    # The wall time is until bunker's last request (its last share: an idle service makes
    # none), as the emulator timed it, not until the poller next looked: at 50 backups the
    # poll period would otherwise be most of the figure.
    wall = s["last_by_role"][f"{account}:bench"] - epoch0
    reqs = sum(made.values())
    p.terminate()
    p.wait(timeout=30)
    by_action = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(made.items(), key=lambda kv: -kv[1]))
    print(f"run {run + 1} ({label}, {KIND}): {n} {NOUN} -> {n} backups, {n} copies in {DR}, {2 * n} shares: "
          f"{wall:.2f} s ({1000 * wall / n:.0f} ms per backup; the poller saw it at {seen:.2f} s), peak RSS {hwm:.1f} MiB, "
          f"bunker's requests per backup {reqs / n:.2f}: {by_action}")
    return wall, hwm, reqs / n


results = {label: [] for label, _ in binaries}
for run in range(runs):
    # The emulator slows as its state grows: alternate the order (ABBA) so neither binary
    # always runs second.
    order = list(enumerate(binaries))
    for k, (label, path) in order if run % 2 == 0 else reversed(order):
        results[label].append(one_run(label, path, f"7{k}00000000{run:02d}", run))
for label, rs in results.items():
    wall = statistics.median(r[0] for r in rs)
    print(f"{label} median of {runs} ({KIND}): {wall:.2f} s ({1000 * wall / n:.0f} ms per backup), "
          f"peak RSS {statistics.median(r[1] for r in rs):.1f} MiB, {statistics.median(r[2] for r in rs):.2f} requests per backup")
if len(binaries) > 1:
    (a, ra), (b, rb) = list(results.items())[:2]
    ma, mb = statistics.median(r[0] for r in ra), statistics.median(r[0] for r in rb)
    print(f"ratio {b}/{a}: {mb / ma:.2f}x time")
results = next(iter(results.values()))

shelvery = os.environ.get("SHELVERY_VENV")
if shelvery:
    srun = []
    for run in range(int(os.environ.get("SHELVERY_RUNS", "1"))):
        account = f"7900000000{run:02d}"
        c = creds(account, SRC)
        src, dr = boto3.client("ec2", region_name=SRC, **c), boto3.client("ec2", region_name=DR, **c)
        for i in range(n):
            src.create_volume(AvailabilityZone=f"{SRC}a", Size=1, TagSpecifications=[{"ResourceType": "volume",
                "Tags": [{"Key": "shelvery:create_backup", "Value": "true"}, {"Key": "Name", "Value": f"vol-{i}"}]}])
        env = dict(os.environ, AWS_ACCESS_KEY_ID=c["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=c["aws_secret_access_key"],
                   AWS_SESSION_TOKEN=c["aws_session_token"], AWS_REGION=SRC, AWS_DEFAULT_REGION=SRC, TZ="UTC",
                   SHELVERY_MONO_THREAD="1", shelvery_dr_regions=DR, shelvery_share_aws_account_ids=SHARE)
        t0 = time.monotonic()
        log = open(os.path.join(work, f"shelvery-{run}.log"), "w")
        p = subprocess.Popen([os.path.join(shelvery, "bin", "shelvery"), "ebs", "create_backups"], env=env,
                             stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        exited = time.monotonic() - t0
        copies = [s for s in dr.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
        sources = [s["SnapshotId"] for s in src.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
        shares = sum(shared(src, s) for s in sources) + sum(shared(dr, s["SnapshotId"]) for s in copies)
        srun.append((exited, usage.ru_maxrss / 1024))
        print(f"shelvery run {run + 1}: exit {status >> 8} after {exited:.2f} s, peak RSS {usage.ru_maxrss / 1024:.1f} MiB; "
              f"{len(sources)} backups, {len(copies)} copies in {DR}, {shares} of {2 * n} shares")
    sw, sr = statistics.median(r[0] for r in srun), statistics.median(r[1] for r in srun)
    bw, br = statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)
    print(f"shelvery median of {len(srun)}: {sw:.2f} s, peak RSS {sr:.1f} MiB; ratio {sw / bw:.1f}x time, {sr / br:.1f}x memory")
