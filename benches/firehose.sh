#!/usr/bin/env bash
# Firehose sink benchmark: `logferry replay --config` of a generated corpus into a
# local endpoint that accepts everything (benches/accept_all.py), so that the numbers
# are logferry's: decode, aggregation into records, request encoding (base64, JSON,
# SigV4 signing) and HTTP, per CPU-second of logferry; plus billed bytes / payload.
#
# Usage: bash benches/firehose.sh [--size-mb N] [--format cri|docker] [--runs R]
#   --size-mb N   corpus size in MB; default 512 (bench-data/<format>-<N>, reused)
#   --format F    default cri
#   --runs R      timed runs per mode; default 3
#   --bin PATH    this logferry binary instead of `cargo build --release`'s (to
#                 compare two commits in one run)
#   --corpus DIR  replay DIR/var/log/pods instead (DIR/expected.json gives total_bytes)
#
# Modes: aggregate (the default: events packed into ≤ 1,000 KiB records), partitioned
# (aggregate with max_events_per_record = 500, for dynamic partitioning) and
# one-per-record (aggregate = false), each with pacing ceilings raised out of the way.
# Reports per mode: best user+sys CPU seconds, payload MB per CPU-second, wall MB/s,
# peak RSS, records, and billed/payload from the replay summary.
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
        *) echo "firehose.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
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
bytes="$(json_get "$dir/expected.json" total_bytes)"

python3 benches/accept_all.py "$tmp/port" & server_pid=$!
for _ in $(seq 50); do [[ -s "$tmp/port" ]] && break; sleep 0.1; done
endpoint="http://127.0.0.1:$(cat "$tmp/port")"
echo "corpus: $dir ($bytes bytes of log files); endpoint: $endpoint"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true

printf '\n%-16s %10s %12s %10s %9s %10s %8s\n' mode cpu_s MB/cpu_s wall_MB/s rss_MiB records billed/x
for mode in aggregate partitioned one-per-record; do
    aggregate=true; [[ $mode == one-per-record ]] && aggregate=false
    max_events=0; [[ $mode == partitioned ]] && max_events=500
    cat > "$tmp/fh.toml" <<TOML
data_dir = "$tmp/data"
[sink]
type = "firehose"
delivery_stream = "bench"
region = "us-east-1"
endpoint = "$endpoint"
aggregate = $aggregate
max_events_per_record = $max_events
max_requests_per_second = 1000000
max_records_per_second = 100000000
max_bytes_per_second = 2147483648
TOML
    best_cpu=""; best_wall=""; rss=0
    for run in $(seq "$runs"); do
        $timer -f '%U %S %e %M' -o "$tmp/time" "$bin" replay --config "$tmp/fh.toml" "$dir/var/log/pods" 2> "$tmp/summary"
        read -r user sys wall kib < "$tmp/time"
        cpu="$(python3 -c "print($user + $sys)")"
        if [[ -z "$best_cpu" ]] || python3 -c "import sys; sys.exit(0 if $cpu < $best_cpu else 1)"; then best_cpu="$cpu"; fi
        if [[ -z "$best_wall" ]] || python3 -c "import sys; sys.exit(0 if $wall < $best_wall else 1)"; then best_wall="$wall"; fi
        (( kib > rss )) && rss="$kib"
    done
    # "delivered R records, B bytes (billed as X, Y×)" from the last run's summary.
    read -r records payload ratio < <(python3 - "$tmp/summary" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
m = re.search(r"delivered (\d+) records, (\d+) bytes \(billed as (\d+), ([0-9.]+)", s)
if not m:
    sys.exit("firehose.sh: no 'delivered' line in the summary:\n" + s)
print(m.group(1), m.group(2), m.group(4))
PY
)
    python3 - "$mode" "$best_cpu" "$best_wall" "$payload" "$rss" "$records" "$ratio" <<'PY'
import sys
mode, cpu, wall, payload, rss, records, ratio = sys.argv[1:]
cpu, wall, payload = float(cpu), float(wall), int(payload)
print(f"{mode:<16} {cpu:10.2f} {payload / 1e6 / cpu:12.0f} {payload / 1e6 / wall:10.0f} {int(rss) / 1024:9.0f} {int(records):10d} {float(ratio):8.3f}")
PY
done
echo "(MB = 1e6 bytes of event JSON delivered; CPU = logferry's user+sys, best of $runs)"
