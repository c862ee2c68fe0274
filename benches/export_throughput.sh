#!/usr/bin/env bash
# Benchmark of the export issue: a 2 GiB mixed image (half real files — a tar of /usr/share,
# topped up from /usr/lib —, a quarter zeros, a quarter random) exported from a local file,
# side by side in one run with `zstd -3 -T2` and `gzip -6` (the AWS Backup Actions sample's
# `dd | gzip`) on the same file:
#   (a) into a file:// target on tmpfs: the pipeline itself;
#   (b) end to end into the local S3 endpoint (moto + bunker's plugin), with moto's CPU time.
# Each tool runs RUNS times (default 3; gzip once, it is slow), interleaved; medians are quoted.
#
#   benches/export_throughput.sh            # RUNS=3 SIZE_MIB=2048
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
runs=${RUNS:-3}
size_mib=${SIZE_MIB:-2048}
cargo build --locked --release --quiet --bin bunker
bunker="$CARGO_TARGET_DIR/release/bunker"
command -v zstd >/dev/null || { echo "needs the zstd CLI (apt-get install zstd)" >&2; exit 2; }
source deploy/local/emulator.sh
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

shm=$(mktemp -d /dev/shm/bunker-bench.XXXXXX)
trap 'kill "$MOTO_PID" 2>/dev/null || true; rm -rf "$work" "$shm"' EXIT
img="$shm/mixed.img"
half=$((size_mib / 2)); quarter=$((size_mib / 4))
{ tar -cf - /usr/share /usr/lib 2>/dev/null || true; } | head -c "$((half << 20))" > "$img"
truncate -s "$((half << 20))" "$img"   # if the trees were smaller, pad (rarely)
head -c "$((quarter << 20))" /dev/zero >> "$img"
head -c "$((quarter << 20))" /dev/urandom >> "$img"
bytes=$(stat -c %s "$img")
echo "image: $bytes bytes ($size_mib MiB: half files, quarter zeros, quarter random) on tmpfs"

# measure CMD...: runs CMD, prints "<seconds> <max RSS KiB of any process of CMD>".
measure() {
  "$python" - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A secs rss size
for i in $(seq "$runs"); do
  rm -rf "$shm/out"; mkdir "$shm/out"
  read -r s r < <(measure "$bunker" export file "$img" --to "file://$shm/out" --name mixed)
  secs[bunker]+="$s "; rss[bunker]+="$r "; size[bunker]=$(stat -c %s "$shm/out/mixed.img.zst")
  read -r s r < <(measure bash -c "zstd -3 -T2 -q -c '$img' > '$shm/zstd.zst'")
  secs[zstd]+="$s "; rss[zstd]+="$r "; size[zstd]=$(stat -c %s "$shm/zstd.zst")
  if [ "$i" = 1 ]; then
    read -r s r < <(measure bash -c "dd if='$img' bs=10M status=none | gzip -6 > '$shm/img.gz'")
    secs[gzip]="$s"; rss[gzip]="$r"; size[gzip]=$(stat -c %s "$shm/img.gz")
  fi
done
rm -f "$shm/zstd.zst" "$shm/img.gz"

# (b) end to end into the emulator's S3.
"$python" - <<PY
import boto3
boto3.client("s3", endpoint_url="$AWS_ENDPOINT_URL", region_name="us-east-1",
             aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench")
PY
for i in $(seq "$runs"); do
  before=$(cpu_of "$MOTO_PID")
  read -r s r < <(measure "$bunker" export file "$img" --to "s3://bench/run$i" --name mixed)
  after=$(cpu_of "$MOTO_PID")
  secs[s3]+="$s "; rss[s3]+="$r "; moto_cpu+="$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }') "
done
size[s3]=${size[bunker]}

zsize=${size[zstd]}
printf '\n| %-34s | %9s | %8s | %14s | %9s | %9s |\n' tool seconds MB/s "output bytes" "vs zstd" "RSS MiB"
printf '|%s|\n' "------------------------------------|-----------|----------|----------------|-----------|-----------"
row() {
  local name=$1 key=$2
  local s=$(echo "${secs[$key]}" | tr ' ' '\n' | grep . | median)
  local r=$(echo "${rss[$key]}" | tr ' ' '\n' | grep . | median)
  awk -v n="$name" -v s="$s" -v b="$bytes" -v o="${size[$key]}" -v z="$zsize" -v r="$r" \
    'BEGIN { printf "| %-34s | %9.2f | %8.0f | %14d | %+8.2f%% | %9.0f |\n", n, s, b / 1e6 / s, o, (o / z - 1) * 100, r / 1024 }'
}
row "bunker export file → file:// (tmpfs)" bunker
row "zstd -3 -T2" zstd
row "dd | gzip -6 (1 run)" gzip
row "bunker export file → moto S3" s3
bz=$(echo "${secs[bunker]}" | tr ' ' '\n' | grep . | median); zz=$(echo "${secs[zstd]}" | tr ' ' '\n' | grep . | median)
awk -v b="$bz" -v z="$zz" 'BEGIN { printf "\nbunker (a) throughput / zstd -3 -T2: %.2fx (medians of the same run)\n", z / b }'
echo "moto CPU seconds per S3 export: $(echo "$moto_cpu" | tr ' ' '\n' | grep . | median) (runs: $moto_cpu)"
echo "runs: bunker ${secs[bunker]}| zstd ${secs[zstd]}| s3 ${secs[s3]}"
