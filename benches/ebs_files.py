"""Driver of benches/ebs_files.sh (see there)."""
import base64, hashlib, json, os, shutil, statistics, subprocess, sys, time, urllib.request

import boto3

from benchlib import creds

bunker, runs, work, tree = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
endpoint = os.environ["AWS_ENDPOINT_URL"]
REGION, ACCOUNT, BLOCK, GIB = "us-east-1", "730000000001", 524288, 4


def disk():
    """The disk image: GPT, partition 1 (1 MiB to 3 GiB + 1 MiB) ext4 made from `tree`."""
    img = os.path.join(work, "files-disk.img")
    with open(img, "wb") as f:
        f.truncate(GIB << 30)
    table = "label: gpt\nstart=2048, size=6291456, type=L\n"
    subprocess.run(["sfdisk", "-q", img], input=table.encode(), check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, "-E", "offset=1048576", img, "3G"], check=True)
    if os.environ.get("HTREE", "1") == "1":
        # `mkfs.ext4 -d` leaves every directory a linear list; the kernel indexes a directory
        # (htree) as it grows past one block, so a real volume's large directories are indexed.
        # `e2fsck -D` builds those indexes (on a loop device over the partition).
        loop = subprocess.run(["losetup", "--find", "--show", "--offset", "1048576", "--sizelimit", str(3 << 30), img],
                              check=True, capture_output=True, text=True).stdout.strip()
        try:
            fsck = subprocess.run(["e2fsck", "-fyD", loop], capture_output=True)
            if fsck.returncode not in (0, 1):
                sys.exit(f"e2fsck -D failed ({fsck.returncode}): {fsck.stdout}")
        finally:
            subprocess.run(["losetup", "-d", loop], check=True)
    return img


def snapshot(ebs, img):
    """Writes the image's non-zero blocks as a snapshot; returns (id, blocks written)."""
    s = ebs.start_snapshot(VolumeSize=GIB)["SnapshotId"]
    n, zero = 0, bytes(BLOCK)
    with open(img, "rb") as f:
        for i in range((GIB << 30) // BLOCK):
            data = f.read(BLOCK)
            if data == zero:
                continue
            ebs.put_snapshot_block(SnapshotId=s, BlockIndex=i, BlockData=data, DataLength=BLOCK,
                                   Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                                   ChecksumAlgorithm="SHA256")
            n += 1
    ebs.complete_snapshot(SnapshotId=s, ChangedBlocksCount=n)
    return s, n


def export(env, snap, kind, out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_bunker/stats", method="POST"))
    args = [bunker, "--json", "export", "ebs", snap, "--to", f"file://{out}"] + KINDS[kind]
    t0 = time.monotonic()
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"export failed ({p.returncode}): {p.stderr}")
    stats = json.load(urllib.request.urlopen(f"{endpoint}/_bunker/stats"))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    rss = json.loads(p.stdout).get("peak_rss_bytes", 0)
    return wall, stats["by_action"].get("ebs:GetSnapshotBlock", 0), size, rss, json.loads(p.stdout)


c = creds(ACCOUNT, REGION)
env = dict(os.environ, AWS_ACCESS_KEY_ID=c["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=c["aws_secret_access_key"],
           AWS_SESSION_TOKEN=c["aws_session_token"], AWS_REGION=REGION)
def tar_zstd(mnt, out):
    """The baseline: `tar -cf - . | zstd -3 -T2` of the same filesystem from a local mount."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t0 = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", f"tar -C {mnt} -cf - . | zstd -3 -T2 -q -o {out}/tree.tar.zst"],
                   check=True)
    return time.monotonic() - t0, os.path.getsize(f"{out}/tree.tar.zst")


delay = int(os.environ.get("BLOCK_DELAY_MS", "0"))
if delay:
    # Every GetSnapshotBlock answered that much later, as across a real network.
    faults = json.dumps({"ebs_block_delay_ms": delay}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_bunker/faults", data=faults, method="POST"))
img = disk()
snap, written = snapshot(boto3.client("ebs", region_name=REGION, **c), img)
mnt = os.path.join(work, "files-mnt")
os.makedirs(mnt, exist_ok=True)
subprocess.run(["mount", "-o", "ro,loop,offset=1048576,sizelimit=3221225472", img, mnt], check=True)
htree = "indexed directories (e2fsck -D)" if os.environ.get("HTREE", "1") == "1" else "linear directories (HTREE=0)"
print(f"snapshot {snap}: {written} of {(GIB << 30) // BLOCK} blocks allocated ({tree}, {htree}); "
      f"GetSnapshotBlock delayed {delay} ms")
# The image; the files with the block cache on disk (room for every block: fetched in batches
# of 32); the files with a cache too small for that (512 MiB: forward read-ahead only).
KINDS = {"image": [], "files": ["--files"], "files-512": ["--files", "--cache-mib", "512"]}
results = {k: [] for k in KINDS}
baseline = []
try:
    for run in range(runs):
        wall, size = tar_zstd(mnt, os.path.join(work, "files-tar"))
        print(f"run {run + 1} tar | zstd -3 -T2 (local mount): {wall:.2f} s, {size} bytes out")
        baseline.append(wall)
        for kind in KINDS:
            wall, gets, size, rss, out = export(env, snap, kind, os.path.join(work, f"files-{kind}"))
            extra = ""
            if kind != "image":
                t = out["filesystems"][0]["tree"]
                extra = f", {t['files']} files, {t['directories']} directories, {t['file_bytes']} bytes of content"
            print(f"run {run + 1} {kind}: {wall:.2f} s, {gets} GetSnapshotBlock, {size} bytes out, "
                  f"peak RSS {rss / 2**20:.1f} MiB{extra}")
            results[kind].append((wall, gets, size, rss))
finally:
    # Also when interrupted: no mount or loop device left behind.
    subprocess.run(["umount", mnt], check=True)
    os.remove(img)
for kind, rs in results.items():
    print(f"median {kind}: {statistics.median(r[0] for r in rs):.2f} s, "
          f"{statistics.median(r[1] for r in rs):.0f} GetSnapshotBlock, {statistics.median(r[2] for r in rs):.0f} bytes, "
          f"peak RSS {statistics.median(r[3] for r in rs) / 2**20:.1f} MiB")
files, tar = statistics.median(r[0] for r in results["files"]), statistics.median(baseline)
print(f"median tar | zstd -3 -T2: {tar:.2f} s; export ebs --files / tar | zstd: {tar / files:.2f}x the baseline's speed")
