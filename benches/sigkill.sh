#!/usr/bin/env bash
# SIGKILL while the kubelet rotates: tests/kubelet_sim.py writes Docker or CRI logs
# (16 KiB splits, interleaved streams, rotation with compression) while `logferry run`
# (file sink, default settings) is SIGKILLed every 0.5-2.5 s and restarted at once.
# Afterwards it checks that every line arrived, that every event is a whole line the
# runtime wrote (no piece of a split line alone), and reports the duplicates: how many
# lines, and how many seconds of input each kill repeated on average.
#
# Usage: bash benches/sigkill.sh [options]
#   --format F    cri or docker; default docker
#   --kills N     kills; default 27
#   --seed S      simulator and kill-time seed; default 1
#   --rate R      lines per second over 6 containers; default 2000
#   --bin PATH    this logferry binary instead of `cargo build --release`'s
#   --work DIR    where the run goes; default bench-data/sigkill
#   --tail TOML   added to the config's [tail] table (e.g. 'checkpoint_interval = "1s"')
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh

format=docker
kills=27
seed=1
rate=2000
bin=""
work="bench-data/sigkill"
tail_extra=""
while (($#)); do
    case "$1" in
        --format) format="${2:?}"; shift 2 ;;
        --kills) kills="${2:?}"; shift 2 ;;
        --seed) seed="${2:?}"; shift 2 ;;
        --rate) rate="${2:?}"; shift 2 ;;
        --bin) bin="${2:?}"; shift 2 ;;
        --work) work="${2:?}"; shift 2 ;;
        --tail) tail_extra="${2:?}"; shift 2 ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 64 ;;
    esac
done
if [[ -z "$bin" ]]; then
    cargo build --release --quiet
    bin="target/release/logferry"
fi
bin="$(realpath "$bin")"
root="$(realpath -m "$work")/$format-$seed"
rm -rf "$root"
mkdir -p "$root/var/log/containers" "$root/var/log/pods" "$root/data"
print_machine "$root"

cat > "$root/logferry.toml" <<EOF
data_dir = "$root/data"
[tail]
include = ["$root/var/log/containers/*.log"]
roots = ["$root/var/log/pods"]
$tail_extra
[sink]
type = "file"
path = "$root/out.jsonl"
[metrics]
listen = "127.0.0.1:0"
EOF

python3 tests/kubelet_sim.py --root "$root" --format "$format" --pods 3 --containers-per-pod 2 \
    --rate "$rate" --duration 0 --seed "$seed" --max-size 1Mi --max-files 5 --rotate-check 1 \
    --long-every 20 --truth "$root/truth.jsonl" 2>/dev/null &
sim=$!
trap 'kill "$sim" 2>/dev/null || true' EXIT
start=$(date +%s.%N)
for i in $(seq "$kills"); do
    "$bin" run --config "$root/logferry.toml" 2>>"$root/logferry.log" &
    pid=$!
    sleep "$(python3 -c "import random; random.seed($seed * 1000 + $i); print(0.5 + 2 * random.random())")"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
done
"$bin" run --config "$root/logferry.toml" 2>>"$root/logferry.log" &
pid=$!
sleep 1
kill -TERM "$sim"
wait "$sim" || true
end=$(date +%s.%N)
# Let the last run catch up, then stop it cleanly.
sleep 8
kill -TERM "$pid"
wait "$pid"

echo "== sigkill ($format, $kills kills, seed $seed, $rate lines/s)"
python3 - "$root" "$kills" "$(python3 -c "print($end - $start)")" <<'EOF'
import collections, json, sys
root, kills, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
truth = [json.loads(l)["message"] for l in open(root + "/truth.jsonl")]
events = [json.loads(l) for l in open(root + "/out.jsonl")]
got = collections.Counter(e["message"] for e in events)
whole = set(truth)
# A piece alone is a defect unless logferry flagged it `partial` (it follows input lost
# unread, which `missing` then shows too).
flagged = {e["message"] for e in events if e.get("partial")}
cut = [m for m in got if m not in whole and m not in flagged]
lost_heads = [m for m in flagged if m not in whole]
missing = [m for m in truth if m not in got]
dups = sum(n - 1 for n in got.values())
per_second = len(truth) / seconds
print(f"lines:      {len(truth)} in {seconds:.1f} s ({per_second:.0f}/s)")
print(f"missing:    {len(missing)}")
print(f"not whole:  {len(cut)}" + (f"  e.g. {[(len(m), m[:60]) for m in cut[:3]]}" if cut else ""))
print(f"flagged partial: {len(flagged)}, of which cut: {len(lost_heads)}")
print(f"duplicates: {dups} ({100 * dups / len(truth):.1f} %), {dups / kills / per_second:.2f} s of input per kill")
sys.exit(1 if missing or cut else 0)
EOF
