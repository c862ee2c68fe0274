#!/usr/bin/env bash
# Benchmark of the dump issue: a database of about 2 GiB on a local PostgreSQL server —
# pgbench's tables (scale SCALE, default 20) plus an `events` table of EVENT_ROWS rows
# (default 9,000,000: ids, timestamps, and text of random hex, so it compresses like real
# data; pgbench's own rows are so regular that gzip output stacked under zstd shrinks 50×,
# which says nothing) — dumped side by side in one run, RUNS times each (default 3,
# interleaved; medians quoted):
#   bunker    `bunker export database postgres://…/bench --to file://…` (pg_dumpall globals
#             + pg_dump -Fc -Z0 into bunker's pipeline: zstd -3 frames, hashes, manifest)
#   pgdump    `pg_dump -Fc | zstd -3 -T2 > file` (pg_dump's own gzip, then zstd)
#   pgdump0   `pg_dump -Fc -Z0 | zstd -3 -T2 > file` (the same stream bunker archives)
#   rds       `bunker export rds SNAPSHOT --format dump --to file://…` end to end on the local
#             emulator, whose restored instance is this server (deploy/local/moto_rds_restore.py,
#             restore_seconds 0): restore, master password into SSM and ModifyDBInstance, the
#             same dumps, the index, the instance and parameter deleted (export.task_poll 1s:
#             about 2 s of the time is waiting for the emulator's instance, which on AWS is
#             minutes of restore)
# Throughput is the database's size (pg_database_size) over wall time; sizes are the files.
# Run as root (the server runs as the postgres user).
#
#   benches/database_dump.sh            # RUNS=3 SCALE=20 EVENT_ROWS=9000000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bunker-target}"
runs=${RUNS:-3}
scale=${SCALE:-20}
event_rows=${EVENT_ROWS:-9000000}
cargo build --locked --release --quiet --bin bunker
bunker="$CARGO_TARGET_DIR/release/bunker"
command -v zstd >/dev/null || { echo "needs the zstd CLI (apt-get install zstd)" >&2; exit 2; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

source deploy/local/emulator.sh  # sets python, port (the emulator's), work (removed on exit)
emulator_port=$port emulator_work=$work
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
work=$(mktemp -d /var/tmp/bunker-dump-bench.XXXXXX)
chown postgres: "$work"
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PGPASSWORD="bench-$RANDOM$RANDOM"
echo "$PGPASSWORD" > "$work/pw"; chown postgres: "$work/pw"
runuser -u postgres -- "$pgbin/initdb" -D "$work/data" -U postgres --auth=scram-sha-256 --pwfile="$work/pw" \
  --no-locale -E UTF8 --no-sync >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $work -c fsync=off -c shared_buffers=256MB" start >/dev/null
trap 'runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$work";
      kill "$MOTO_PID" 2>/dev/null || true; rm -rf "$emulator_work"' EXIT
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
psql -X -q -d postgres -c "CREATE DATABASE bench"
echo "generating pgbench scale $scale…" >&2
t0=$(date +%s)
pgbench -i -q -s "$scale" bench >/dev/null 2>&1
psql -X -q -d bench -c "CREATE TABLE events AS SELECT g AS id,
    timestamptz '2026-01-01' + g * interval '1 second' AS at, (g % 17)::int AS kind,
    md5(random()::text) || ' ' || md5((g % 1000)::text) || ' ' || repeat(chr(97 + g % 26), 20) AS body
  FROM generate_series(1, $event_rows) g"
db_bytes=$(psql -X -A -t -d postgres -c "SELECT pg_database_size('bench')")
echo "database: $db_bytes bytes (pgbench scale $scale + $event_rows events rows, generated in $(( $(date +%s) - t0 )) s)"

# The emulator: an RDS instance whose snapshots restore to this server (master user
# `master`, whose password the export resets), its snapshot, and a config.
psql -X -q -d postgres -c "CREATE ROLE master SUPERUSER LOGIN PASSWORD 'initial'"
"$python" - "$emulator_port" "$port" "$PGPASSWORD" <<'PY'
import json, sys, urllib.request
import boto3
emulator, server, password = sys.argv[1:]
url = f"http://127.0.0.1:{emulator}"
rds = boto3.client("rds", endpoint_url=url, region_name="us-east-1")
rds.create_db_instance(DBInstanceIdentifier="bench-db", Engine="postgres", EngineVersion="15.18",
                       DBInstanceClass="db.t3.micro", AllocatedStorage=20, MasterUsername="master",
                       MasterUserPassword="initial")
rds.create_db_snapshot(DBInstanceIdentifier="bench-db", DBSnapshotIdentifier="bench-snap")
def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
post("/_bunker/backup", {"account": "123456789012", "restore_seconds": 0})
post("/_bunker/rds-servers", {"account": "123456789012", "source": "bench-db", "host": "127.0.0.1",
                              "port": int(server), "admin_user": "postgres", "admin_password": password})
PY
printf 'regions = ["us-east-1"]\ndeployment = "bench"\nexport.task_poll = "1s"\n[serve]\ncheck_interval = "1s"\n' \
  > "$work/bunker.toml"

# measure CMD...: runs CMD, prints "<seconds> <max RSS KiB of any process of CMD>".
measure() {
  "$python" - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A secs rss size
out="$work/out"
for i in $(seq "$runs"); do
  rm -rf "$out"; mkdir "$out"
  read -r s r < <(measure "$bunker" export database "postgres://postgres@127.0.0.1:$port/bench" \
    --to "file://$out" --name b --json)
  secs[bunker]+="$s "; rss[bunker]+="$r "
  size[bunker]=$(( $(stat -c %s "$out/b.db-bench.pgdump.zst") + $(stat -c %s "$out/b.globals.sql.zst") ))
  read -r s r < <(measure sh -c "pg_dump -Fc -d bench | zstd -3 -T2 -q > $out/pgdump.zst")
  secs[pgdump]+="$s "; rss[pgdump]+="$r "; size[pgdump]=$(stat -c %s "$out/pgdump.zst")
  read -r s r < <(measure sh -c "pg_dump -Fc -Z0 -d bench | zstd -3 -T2 -q > $out/pgdump0.zst")
  secs[pgdump0]+="$s "; rss[pgdump0]+="$r "; size[pgdump0]=$(stat -c %s "$out/pgdump0.zst")
  mkdir "$out/rds"
  read -r s r < <(measure "$bunker" export rds bench-snap --format dump --to "file://$out/rds" \
    --config "$work/bunker.toml" --region us-east-1 --json)
  secs[rds]+="$s "; rss[rds]+="$r "
  size[rds]=$(( $(stat -c %s "$out/rds/bench-snap.db-bench.pgdump.zst") + $(stat -c %s "$out/rds/bench-snap.globals.sql.zst") ))
  echo "run $i done (s): bunker ${secs[bunker]}| pgdump ${secs[pgdump]}| pgdump0 ${secs[pgdump0]}| rds ${secs[rds]}" >&2
done

# The archive restores with standard tools (sanity, not timed).
# (pg_restore --list stops reading after the table of contents: only its own status counts.)
(set +o pipefail; zstd -dcq "$out/b.db-bench.pgdump.zst" | pg_restore --list >/dev/null)
"$bunker" verify --deep "file://$out/b.db-bench.pgdump.zst" >/dev/null

printf '\n%-8s %10s %10s %12s %12s %10s\n' tool "median s" "MB/s" "output B" "vs bunker" "RSS MiB"
b_s=$(echo "${secs[bunker]}" | tr ' ' '\n' | grep . | median)
for t in bunker pgdump pgdump0 rds; do
  s=$(echo "${secs[$t]}" | tr ' ' '\n' | grep . | median)
  r=$(echo "${rss[$t]}" | tr ' ' '\n' | grep . | sort -n | tail -n 1)
  awk -v t="$t" -v s="$s" -v b="$db_bytes" -v o="${size[$t]}" -v bs="$b_s" -v bo="${size[bunker]}" -v r="$r" \
    'BEGIN { printf "%-8s %10.2f %10.1f %12d %11.2fx %10.1f\n", t, s, b / s / 1e6, o, (b / s) / (b / bs) , r / 1024 }'
done
echo "(vs bunker: the tool's throughput over bunker's; RSS: the largest process of the run)"
for t in pgdump pgdump0 rds; do
  awk -v t="$t" -v o="${size[$t]}" -v bo="${size[bunker]}" 'BEGIN { printf "output size bunker / %s: %.3f\n", t, bo / o }'
done
echo "all runs (s): bunker ${secs[bunker]}| pgdump ${secs[pgdump]}| pgdump0 ${secs[pgdump0]}| rds ${secs[rds]}"
