#!/usr/bin/env bash
# S3 sink benchmark: `logferry replay --config` of a generated corpus into a local
# endpoint that accepts every PutObject (benches/accept_all.py), so that the numbers are
# logferry's: decode, the key per event, compression, request signing and HTTP.
#
# Usage: bash benches/s3.sh [--size-mb N] [--format cri|docker] [--runs R] [--bin PATH]
#   --size-mb N   corpus size in MB; default 512 (bench-data/<format>-<N>, reused)
#   --format F    default cri
#   --runs R      timed runs per mode; default 3
#   --bin PATH    this logferry binary instead of `cargo build --release`'s
#   --corpus DIR  replay DIR/var/log/pods instead (e.g. bench-data/short-220 from
#                 benches/gen_short.py: short messages that compress as logs usually do)
#
# Modes: gzip (the default), zstd and none. Reports per mode: best user+sys CPU seconds, MB of
# event JSON per CPU-second, peak RSS, objects, and stored/raw bytes.
set -euo pipefail

size_mb=512
format=cri
runs=3
bin_arg=""
corpus_arg=""
while (($#)); do
    case "$1" in
        --size-mb) size_mb="${2:?}"; shift 2 ;;
        --format) format="${2:?}"; shift 2 ;;
        --runs) runs="${2:?}"; shift 2 ;;
        --bin) bin_arg="${2:?}"; shift 2 ;;
        --corpus) corpus_arg="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "s3.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
bin="${bin_arg:-target/release/logferry}"
timer=/usr/bin/time
tmp="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"' EXIT

print_machine bench-data
[[ -n "$bin_arg" ]] || cargo build --release --quiet
if [[ -n "$corpus_arg" ]]; then dir="$corpus_arg"; else dir="$(corpus "$format" "$size_mb")"; fi
python3 benches/accept_all.py "$tmp/port" 2> "$tmp/server.log" & server_pid=$!
for _ in $(seq 50); do [[ -s "$tmp/port" ]] && break; sleep 0.1; done
endpoint="http://127.0.0.1:$(cat "$tmp/port")"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true

printf '\n%-6s %8s %10s %8s %8s %12s\n' mode cpu_s MB/cpu_s rss_MiB objects stored/raw
for mode in gzip zstd none; do
    cat > "$tmp/s3.toml" <<TOML
data_dir = "$tmp/data"
[sink]
type = "s3"
bucket = "bench"
region = "us-east-1"
endpoint = "$endpoint"
node = "bench-node"
key_prefix = "logs/{namespace}/dt={date}/"
compression = "$mode"
max_requests_per_second = 1000000
TOML
    best=""; rss=0
    for _ in $(seq "$runs"); do
        rm -rf "$tmp/data"
        $timer -f '%U %S %e %M' -o "$tmp/time" "$bin" replay --config "$tmp/s3.toml" "$dir/var/log/pods" 2> "$tmp/summary"
        read -r user sys wall kib < "$tmp/time"
        cpu="$(python3 -c "print($user + $sys)")"
        if [[ -z "$best" ]] || python3 -c "import sys; sys.exit(0 if $cpu < $best else 1)"; then best="$cpu"; fi
        (( kib > rss )) && rss="$kib"
    done
    python3 - "$mode" "$best" "$rss" "$tmp/summary" "$tmp/data" <<'PY'
import re, sys
mode, cpu, rss, summary = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), open(sys.argv[4]).read()
m = re.search(r"delivered (\d+) records, (\d+) bytes", summary)
if not m:
    sys.exit("s3.sh: no 'delivered' line in the summary:\n" + summary)
objects, raw = int(m.group(1)), int(m.group(2))
stored = re.search(r"stored (\d+) bytes", summary)
ratio = f"{int(stored.group(1)) / raw:.3f}" if stored else "-"
print(f"{mode:<6} {cpu:8.2f} {raw / 1e6 / cpu:10.0f} {rss / 1024:8.0f} {objects:8d} {ratio:>12}")
PY
done
echo "(MB = 1e6 bytes of event JSON written; CPU = logferry's user+sys, best of $runs)"
