"""Driver of benches/file_restore.sh (see there)."""
import json, os, shutil, statistics, subprocess, sys, time, urllib.request

import boto3

from benchlib import creds

bunker, runs, work, tree = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
endpoint = os.environ["AWS_ENDPOINT_URL"]
REGION, ACCOUNT, BUCKET = "us-east-1", "730000000002", "restore-bench"


def served():
    """Bytes of GetObject answers the emulator has served from the bucket."""
    return json.load(urllib.request.urlopen(f"{endpoint}/_bunker/stats"))["get_object_bytes"].get(BUCKET, 0)


def timed(fn):
    before, t0 = served(), time.monotonic()
    fn()
    return time.monotonic() - t0, served() - before


c = creds(ACCOUNT, REGION)
env = dict(os.environ, AWS_ACCESS_KEY_ID=c["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=c["aws_secret_access_key"],
           AWS_SESSION_TOKEN=c["aws_session_token"], AWS_REGION=REGION)
s3 = boto3.client("s3", region_name=REGION, **c)
s3.create_bucket(Bucket=BUCKET)
out = json.loads(subprocess.run([bunker, "--json", "export", "path", tree, "--to", f"s3://{BUCKET}/files"],
                                env=env, capture_output=True, text=True, check=False).stdout)
archive, size = out["archive"], out["archive_size"]
listing = json.loads(subprocess.run([bunker, "--json", "ls", archive], env=env, capture_output=True, text=True,
                                    check=True).stdout)
small = [e for e in listing if e["type"] == "file" and 4096 <= e["size"] <= 8192]
pick = small[len(small) // 2]
print(f"{archive}: {size} bytes, {len(listing)} entries; restoring {pick['path']} ({pick['size']} bytes, "
      f"stream offset {pick['offset']})")
key = archive.split(f"s3://{BUCKET}/", 1)[1]


def with_bunker():
    d = os.path.join(work, "restore-bunker")
    shutil.rmtree(d, ignore_errors=True)
    subprocess.run([bunker, "restore", archive, "--path", pick["path"], "--to-dir", d], env=env, check=True,
                   capture_output=True)


def full_download():
    d = os.path.join(work, "restore-full")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    tar = subprocess.Popen(f"zstd -dc | tar -x -C {d} -- '{pick['path']}'", shell=True, stdin=subprocess.PIPE)
    for piece in body.iter_chunks(1 << 20):
        tar.stdin.write(piece)
    tar.stdin.close()
    if tar.wait() != 0:
        sys.exit("tar -x failed")


results = {"bunker restore --path": [], "full download | zstd -dc | tar -x": []}
for run in range(runs):
    for name, fn in zip(results, (with_bunker, full_download)):
        wall, got = timed(fn)
        results[name].append((wall, got))
        print(f"run {run + 1} {name}: {wall:.3f} s, {got} bytes read ({100 * got / size:.3f} % of the archive)")
for name, rs in results.items():
    wall, got = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
    print(f"median {name}: {wall:.3f} s, {got:.0f} bytes read ({100 * got / size:.3f} %)")
