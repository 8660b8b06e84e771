#!/usr/bin/env bash
# Dense catch-up: a node with many containers coming back from downtime, each with a
# backlog, caught up by `logferry run` with the file sink (or a Firehose sink, see
# --sink) and the default settings.
# Measures peak RSS (VmHWM) while catching up and RSS a while after, wall and CPU
# time, and checks that every line arrived exactly once (count and message bytes).
#
# Usage: bash benches/dense.sh [options]
#   --containers N   containers (log files) on the fake node; default 1000
#   --mb N           backlog in total, MB (1e6 bytes), split evenly; default 2100
#   --after S        seconds after catching up before RSS is read again; default 60
#   --runs R         runs; default 1
#   --bin PATH       this logferry binary instead of `cargo build --release`'s
#   --work DIR       where runs go; default bench-data/dense
#   --extra TOML     appended to the config (e.g. $'[buffer]\nmemory_bytes = 8388608')
#   --sink S         file (default) or firehose: a Firehose sink sending to a local
#                    endpoint that accepts everything (benches/accept_all.py, pace
#                    ceilings raised out of the way), which counts the events it
#                    gets; caught up once every line is read and the endpoint has had
#                    no call for 2 s (the time is that of its last call); checked by
#                    the events' count (and no record without its final newline)
#                    rather than by message bytes
#
# The corpus is benches/gen_corpus.py's CRI mix (5 % of messages 20-120 KiB, split by
# the runtime at 16 KiB), in bench-data/dense-cri-<N>x<MB> (reused when complete), laid
# out as the kubelet does: /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log and a
# /var/log/containers/<pod>_<ns>_<container>-<64 hex>.log link to each. The config
# is the smallest one: data_dir, the kubelet's link glob, the pods root,
# start_at = "beginning", the file sink; everything else default.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh

containers=1000
mb=2100
after=60
runs=1
bin=""
work="bench-data/dense"
extra=""
sink=file
while (($#)); do
    case "$1" in
        --containers) containers="${2:?}"; shift 2 ;;
        --mb) mb="${2:?}"; shift 2 ;;
        --after) after="${2:?}"; shift 2 ;;
        --runs) runs="${2:?}"; shift 2 ;;
        --bin) bin="${2:?}"; shift 2 ;;
        --work) work="${2:?}"; shift 2 ;;
        --extra) extra="${2:?}"; shift 2 ;;
        --sink) sink="${2:?}"; shift 2 ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 64 ;;
    esac
done

[[ "$sink" == file || "$sink" == firehose ]] || { echo "--sink is file or firehose, not $sink" >&2; exit 64; }

if [[ -z "$bin" ]]; then
    cargo build --release --locked >&2
    bin=target/release/logferry
fi
mkdir -p "$work"
cp "$bin" "$work/logferry"
bin="$(pwd)/$work/logferry"

corpus="$(pwd)/bench-data/dense-cri-${containers}x${mb}"
if [[ ! -f "$corpus/expected.json" ]]; then
    rm -rf "$corpus"
    python3 benches/gen_corpus.py --format cri --size-mb "$mb" --containers "$containers" --out "$corpus" >&2
fi
links="$corpus/var/log/containers"
if [[ ! -d "$links" ]]; then
    mkdir -p "$links.tmp"
    for f in "$corpus"/var/log/pods/*/*/0.log; do
        pod_dir="$(basename "$(dirname "$(dirname "$f")")")"   # <ns>_<pod>_<uid>
        container="$(basename "$(dirname "$f")")"
        IFS=_ read -r ns pod _uid <<<"$pod_dir"
        id="$(printf '%s' "$f" | sha256sum | cut -c1-64)"
        ln -s "$f" "$links.tmp/${pod}_${ns}_${container}-${id}.log"
    done
    mv "$links.tmp" "$links"
fi
expected_messages="$(json_get "$corpus/expected.json" messages)"
expected_bytes="$(json_get "$corpus/expected.json" message_bytes)"
total_bytes="$(json_get "$corpus/expected.json" total_bytes)"
find "$corpus/var/log/pods" -type f -exec cat {} + > /dev/null

print_machine "$work"
echo "== dense catch-up: $containers containers, $total_bytes bytes, $expected_messages messages"
echo "command: bash benches/dense.sh --containers $containers --mb $mb --after $after --runs $runs --sink $sink${extra:+ --extra '$extra'}"
echo

# checkpoint_total DATA_DIR: the sum of the saved offsets (0 before the first save).
checkpoint_total() {
    python3 benches/checkpoints.py "$1" 2>/dev/null || echo 0
}

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# With Firehose, a local endpoint per run that counts the events it gets.
endpoint_pid=""
trap '[[ -z "$endpoint_pid" ]] || kill "$endpoint_pid" 2>/dev/null || true' EXIT
start_endpoint() {
    ACCEPT_ALL_COUNT="$1/events" python3 benches/accept_all.py "$1/port" > /dev/null 2> "$1/endpoint.log" &
    endpoint_pid=$!
    for _ in $(seq 50); do [[ -s "$1/port" ]] && break; sleep 0.1; done
    [[ -s "$1/port" ]] || { echo "the endpoint did not start:"; cat "$1/endpoint.log"; exit 1; }
}

# The sink's table: the file, or Firehose at the endpoint with its pace ceilings
# raised out of the way.
sink_table() {
    if [[ "$sink" == file ]]; then
        printf '[sink]\ntype = "file"\npath = "%s"\n' "$1/out.jsonl"
        return
    fi
    printf '[sink]\ntype = "firehose"\ndelivery_stream = "bench"\nregion = "us-east-1"\nendpoint = "http://127.0.0.1:%s"\n' "$(cat "$1/port")"
    printf 'max_requests_per_second = 1000000\nmax_records_per_second = 100000000\nmax_bytes_per_second = 2147483648\n'
}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true

# caught_up DIR: every line read (the checkpoints at the end), and with Firehose the
# endpoint called, then quiet for 2 s.
caught_up() {
    [[ "$(checkpoint_total "$1/data")" -ge "$total_bytes" ]] || return 1
    [[ "$sink" == file ]] && return 0
    [[ -s "$1/events.last" ]] || return 1
    local _calls last
    read -r _calls last < "$1/events.last"
    awk -v last="$last" -v now="$(date +%s.%N)" 'BEGIN { exit !(now - last >= 2) }'
}

for run in $(seq 1 "$runs"); do
    dir="$(pwd)/$work/run-$run"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    [[ "$sink" == firehose ]] && start_endpoint "$dir"
    cat > "$dir/logferry.toml" <<EOF
data_dir = "$dir/data"
[tail]
include = ["$links/*.log"]
roots = ["$corpus/var/log/pods"]
start_at = "beginning"
$(sink_table "$dir")
$extra
EOF
    start_ns=$(date +%s%N)
    "$bin" run --config "$dir/logferry.toml" 2> "$dir/stderr.log" &
    pid=$!
    peak_rss=0
    deadline=$((SECONDS + 600))
    while :; do
        sleep 0.5
        kill -0 "$pid" 2>/dev/null || { echo "logferry exited early:"; tail -20 "$dir/stderr.log"; exit 1; }
        rss="$(status_kib "$pid" VmRSS)"
        ((rss > peak_rss)) && peak_rss=$rss
        caught_up "$dir" && break
        ((SECONDS < deadline)) || { echo "not caught up in 10 minutes (the check below says what is missing)"; break; }
    done
    caught_ns=$(date +%s%N)
    if [[ "$sink" == firehose ]]; then
        read -r _ last < "$dir/events.last"   # "<calls> <seconds>.<milliseconds>"
        caught_ns=$(( ${last%.*} * 1000000000 + 10#${last#*.} * 1000000 ))
    fi
    ticks=$(cpu_ticks "$pid")
    hwm="$(status_kib "$pid" VmHWM)"
    sleep "$after"
    rss_after="$(status_kib "$pid" VmRSS)"
    kill -TERM "$pid"
    wait "$pid" || { echo "logferry exited non-zero"; tail -20 "$dir/stderr.log"; exit 1; }
    wall=$(awk -v a="$start_ns" -v b="$caught_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }')
    if [[ "$sink" == firehose ]]; then
        kill "$endpoint_pid"; wait "$endpoint_pid" 2>/dev/null || true; endpoint_pid=""
        read -r got_messages torn < "$dir/events"
        ok="as many events as written, no record without its final newline"
        if [[ "$got_messages" != "$expected_messages" || "$torn" != 0 ]]; then
            ok="MISMATCH: $got_messages events ($torn records without a final newline), expected $expected_messages"
        fi
    else
        read -r got_messages got_bytes < <(python3 - "$dir/out.jsonl" <<'EOF'
import json, sys
n = b = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        n += 1
        b += len(json.loads(line)["message"].encode())
print(n, b)
EOF
)
        ok="exactly once (count and message bytes)"
        if [[ "$got_messages" != "$expected_messages" || "$got_bytes" != "$expected_bytes" ]]; then
            ok="MISMATCH: $got_messages messages / $got_bytes bytes, expected $expected_messages / $expected_bytes"
        fi
    fi
    printf 'run %d: caught up in %s s (%s s CPU), peak RSS %.1f MiB (VmHWM), RSS %.1f MiB %d s later (sampled peak %.1f); %s\n' \
        "$run" "$wall" "$cpu" "$(echo "$hwm / 1024" | bc -l)" "$(echo "$rss_after / 1024" | bc -l)" "$after" "$(echo "$peak_rss / 1024" | bc -l)" "$ok"
    rm -f "$dir/out.jsonl"
done
