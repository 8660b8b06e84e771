#!/usr/bin/env bash
# Dense catch-up: a node with many containers coming back from downtime, each with a
# backlog, caught up by `logferry run` with the file sink and the default settings.
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
while (($#)); do
    case "$1" in
        --containers) containers="${2:?}"; shift 2 ;;
        --mb) mb="${2:?}"; shift 2 ;;
        --after) after="${2:?}"; shift 2 ;;
        --runs) runs="${2:?}"; shift 2 ;;
        --bin) bin="${2:?}"; shift 2 ;;
        --work) work="${2:?}"; shift 2 ;;
        --extra) extra="${2:?}"; shift 2 ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 64 ;;
    esac
done

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
echo "command: bash benches/dense.sh --containers $containers --mb $mb --after $after --runs $runs${extra:+ --extra '$extra'}"
echo

# checkpoint_total DATA_DIR: the sum of the saved offsets (0 before the first save).
checkpoint_total() {
    python3 benches/checkpoints.py "$1" 2>/dev/null || echo 0
}

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

for run in $(seq 1 "$runs"); do
    dir="$(pwd)/$work/run-$run"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    cat > "$dir/logferry.toml" <<EOF
data_dir = "$dir/data"
[tail]
include = ["$links/*.log"]
roots = ["$corpus/var/log/pods"]
start_at = "beginning"
[sink]
type = "file"
path = "$dir/out.jsonl"
$extra
EOF
    start_ns=$(date +%s%N)
    "$bin" run --config "$dir/logferry.toml" 2> "$dir/stderr.log" &
    pid=$!
    peak_rss=0
    while :; do
        sleep 0.5
        kill -0 "$pid" 2>/dev/null || { echo "logferry exited early:"; tail -20 "$dir/stderr.log"; exit 1; }
        rss="$(status_kib "$pid" VmRSS)"
        ((rss > peak_rss)) && peak_rss=$rss
        [[ "$(checkpoint_total "$dir/data")" -ge "$total_bytes" ]] && break
    done
    caught_ns=$(date +%s%N)
    ticks=$(cpu_ticks "$pid")
    hwm="$(status_kib "$pid" VmHWM)"
    sleep "$after"
    rss_after="$(status_kib "$pid" VmRSS)"
    kill -TERM "$pid"
    wait "$pid" || { echo "logferry exited non-zero"; tail -20 "$dir/stderr.log"; exit 1; }
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
    wall=$(awk -v a="$start_ns" -v b="$caught_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }')
    ok="exactly once (count and message bytes)"
    if [[ "$got_messages" != "$expected_messages" || "$got_bytes" != "$expected_bytes" ]]; then
        ok="MISMATCH: $got_messages messages / $got_bytes bytes, expected $expected_messages / $expected_bytes"
    fi
    printf 'run %d: caught up in %s s (%s s CPU), peak RSS %.1f MiB (VmHWM), RSS %.1f MiB %d s later (sampled peak %.1f); %s\n' \
        "$run" "$wall" "$cpu" "$(echo "$hwm / 1024" | bc -l)" "$(echo "$rss_after / 1024" | bc -l)" "$after" "$(echo "$peak_rss / 1024" | bc -l)" "$ok"
    rm -f "$dir/out.jsonl"
done
