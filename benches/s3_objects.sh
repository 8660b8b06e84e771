#!/usr/bin/env bash
# How many objects the S3 sink writes per prefix per minute at a steady rate, with the
# default thresholds (8 MiB as stored, 60 s): `logferry run` follows one container that
# writes R MB/s of CRI lines (benches/follow_load.py: 100-400 byte messages of words,
# JSON and logfmt) for T seconds, into a local endpoint that accepts every PutObject and
# records each key (benches/accept_all.py). Target (issue 18): at most 1 per minute per
# prefix at 1 MB/s.
#
# Usage: bash benches/s3_objects.sh [--rate-mb R] [--seconds T] [--compression C] [--lines-from F] [--bin PATH]
#   --rate-mb R       MB (1e6 bytes) of log lines per second; default 1
#   --lines-from F    write the CRI lines of file F (over and over) instead of
#                     follow_load.py's, e.g. bench-data/short-220-1m/var/log/pods/*/*/0.log
#   --seconds T       how long the container writes; default 180
#   --compression C   gzip (default), zstd or none
#   --bin PATH        this logferry binary instead of `cargo build --release`'s
#
# Prints each object (seconds since the start, stored bytes, key), the most objects of
# one prefix in any 60 s window while writing (the objects sealed at shutdown left
# out), and the event JSON / stored ratio.
set -euo pipefail

rate=1
seconds=180
compression=gzip
lines_from=""
bin_arg=""
while (($#)); do
    case "$1" in
        --rate-mb) rate="${2:?}"; shift 2 ;;
        --seconds) seconds="${2:?}"; shift 2 ;;
        --compression) compression="${2:?}"; shift 2 ;;
        --lines-from) lines_from="${2:?}"; shift 2 ;;
        --bin) bin_arg="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "s3_objects.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
bin="${bin_arg:-target/release/logferry}"
tmp="$(mktemp -d)"
server_pid=""; shipper_pid=""
trap '[[ -n "$shipper_pid" ]] && kill "$shipper_pid" 2>/dev/null; [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"' EXIT

print_machine "$tmp"
[[ -n "$bin_arg" ]] || cargo build --release --quiet
python3 benches/follow_load.py layout "$tmp/node" --files 1 > /dev/null
python3 benches/accept_all.py "$tmp/port" "$tmp/keys" 2> "$tmp/server.log" & server_pid=$!
for _ in $(seq 50); do [[ -s "$tmp/port" ]] && break; sleep 0.1; done
endpoint="http://127.0.0.1:$(cat "$tmp/port")"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
mkdir -p "$tmp/data"
cat > "$tmp/run.toml" <<TOML
data_dir = "$tmp/data"
[tail]
include = ["$tmp/node/var/log/containers/*.log"]
roots = ["$tmp/node/var/log/pods"]
[sink]
type = "s3"
bucket = "bench"
region = "us-east-1"
endpoint = "$endpoint"
node = "bench-node"
key_prefix = "logs/{namespace}/dt={date}/"
compression = "$compression"
[metrics]
listen = "127.0.0.1:0"
TOML
"$bin" run --config "$tmp/run.toml" 2> "$tmp/run.log" & shipper_pid=$!
start="$(python3 -c 'import time; print(time.time() + 2)')"
if [[ -z "$lines_from" ]]; then
    python3 benches/follow_load.py write "$tmp/node" --rate-mb "$rate" --seconds "$seconds" --start-at "$start" --result "$tmp/written.json"
else
    live="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["files"][0]["path"])' "$tmp/node/layout.json")"
    python3 - "$lines_from" "$rate" "$seconds" "$start" "$live" <<'PY'
# Whole lines of the file at the rate, a write every 0.1 s, from the start again at its end.
import os, sys, time
data, rate, seconds, start = open(sys.argv[1], "rb").read(), float(sys.argv[2]) * 1e6, float(sys.argv[3]), float(sys.argv[4])
out = os.open(sys.argv[5], os.O_WRONLY | os.O_APPEND)
time.sleep(max(0.0, start - time.time()))
pos = sent = 0
while time.time() - start < seconds:
    want = int(rate * (time.time() - start))
    while sent < want:
        end = data.find(b"\n", pos + min(want - sent, len(data) - pos - 1))
        if end < 0:
            pos = 0
            continue
        os.write(out, data[pos:end + 1])
        sent += end + 1 - pos
        pos = end + 1 if end + 1 < len(data) else 0
    time.sleep(0.1)
PY
fi
end="$(python3 -c 'import time; print(time.time())')"
sleep 2
kill -TERM "$shipper_pid"; wait "$shipper_pid" || true; shipper_pid=""
python3 - "$tmp/keys" "$start" "$end" "$tmp/run.log" "$rate" "$seconds" "$compression" <<'PY'
import collections, json, re, sys
keys, start, end, log, rate, seconds, compression = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), open(sys.argv[4]).read(), sys.argv[5], sys.argv[6], sys.argv[7]
objects = []
for line in open(keys):
    t, size, path = line.split(" ", 2)
    path = path.strip().split("?")[0]
    prefix = path.rsplit("/", 1)[0]
    objects.append((float(t) - start, int(size), prefix, path))
for t, size, _, path in objects:
    print(f"{t:7.1f} s {size:10d} B  {path}")
while_writing = [o for o in objects if o[0] <= end - start]
worst = 0
for prefix in {o[2] for o in objects}:
    times = sorted(o[0] for o in while_writing if o[2] == prefix)
    for i, t in enumerate(times):
        worst = max(worst, sum(1 for u in times[i:] if u < t + 60))
raw = stored = 0
m = re.search(r'"bytes":(\d+)', log) or re.search(r"bytes=(\d+)", log)
raw = int(m.group(1)) if m else 0
stored = sum(o[1] for o in objects)
print(f"\n{rate} MB/s of log lines ({raw / 1e6 / float(seconds):.2f} MB/s of event JSON) for {seconds} s, compression {compression}: {len(objects)} objects "
      f"({len(while_writing)} while writing); most objects of one prefix in a 60 s window: {worst}; "
      f"event JSON {raw / 1e6:.1f} MB, stored {stored / 1e6:.2f} MB ({stored / raw if raw else 0:.3f})")
PY
