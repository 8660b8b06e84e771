#!/usr/bin/env bash
# Issue 25's comparison: the commit before the work (--base) against the working tree,
# benchmarked alternately in one run, so that the ratios hold whatever the machine's
# speed that day.
#
# Usage: bash benches/compare.sh [options]
#   --base REV      the commit to compare with; default e41f691 (before issue 25)
#   --rounds R      rounds; each runs every benchmark once per binary, the order
#                   alternating (base, head; then head, base; ...); default 2
#   --phases P      any of "live busy firehose"; default all three
#   --seconds T     live and busy: seconds of writing; default 30
#
# Benchmarks (each with --bin, so both binaries see the same files and load):
#   live      benches/live.py: 6 containers at ~2 MB/s with rotation, file sink: CPU %,
#             wake-ups/s busy and idle, latency p99
#   busy      benches/follow.sh --phases busy: 5,000 containers, 200 of them writing
#             50 MB/s in total, stdout sink: CPU % while writing, context switches/s
#   firehose  benches/firehose.sh --runs 1 on the 512 MB CRI corpus into the local
#             accept-all endpoint: MB of event JSON per CPU-second (aggregate mode)
#
# The base is built once in a worktree (bench-data/compare/base-src, target directory
# target/compare-base) and kept; the working tree is built with `cargo build
# --release`. Results: bench-data/compare/ (per run JSON), the table on stdout:
# per measure, each binary's median over the rounds and head / base (or base / head
# where less is better, so that > 1 always means the head is better).
set -euo pipefail

base=e41f691
rounds=2
phases="live busy firehose"
seconds=30
while (($#)); do
    case "$1" in
        --base) base="${2:?}"; shift 2 ;;
        --rounds) rounds="${2:?}"; shift 2 ;;
        --phases) phases="${2:?}"; shift 2 ;;
        --seconds) seconds="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
work="$(pwd)/bench-data/compare"
mkdir -p "$work/runs"
print_machine bench-data

# ---------------------------------------------------------------- the two binaries
base_rev="$(git rev-parse --short "$base")"
if [[ ! -x "$work/logferry-$base_rev" ]]; then
    echo "== building $base_rev (once; kept as $work/logferry-$base_rev)"
    rm -rf "$work/base-src"
    git worktree prune
    git worktree add -f --detach "$work/base-src" "$base_rev" > /dev/null
    (cd "$work/base-src" && CARGO_TARGET_DIR="$(pwd)/../../../target/compare-base" cargo build --release --locked --quiet)
    cp target/compare-base/release/logferry "$work/logferry-$base_rev"
    git worktree remove --force "$work/base-src"
fi
echo "== building the working tree"
cargo build --release --locked --quiet
cp target/release/logferry "$work/logferry-head"
declare -A bins=([base]="$work/logferry-$base_rev" [head]="$work/logferry-head")

# ---------------------------------------------------------------- one run each
run_live() { # WHICH ROUND
    python3 benches/live.py --bin "${bins[$1]}" --work "$work/live" --seconds "$seconds" --idle-seconds 15 \
        --json "$work/runs/live-$1-$2.json" > /dev/null 2> "$work/runs/live-$1-$2.log" \
        || { cat "$work/runs/live-$1-$2.log" >&2; exit 1; }
}
run_busy() {
    bash benches/follow.sh --phases busy --runs 1 --files 5000 --writing 200 --rate-mb 50 --seconds "$seconds" \
        --bin "${bins[$1]}" --work "$work/follow" > "$work/runs/busy-$1-$2.log" 2>&1 \
        || { tail -20 "$work/runs/busy-$1-$2.log" >&2; exit 1; }
    cp "$work/follow/results/busy-1.json" "$work/runs/busy-$1-$2.json"
}
run_firehose() {
    bash benches/firehose.sh --runs 1 --bin "${bins[$1]}" > "$work/runs/firehose-$1-$2.log" 2>&1 \
        || { tail -20 "$work/runs/firehose-$1-$2.log" >&2; exit 1; }
}

for ((r = 1; r <= rounds; r++)); do
    order="base head"
    ((r % 2 == 0)) && order="head base"
    for phase in $phases; do
        for which in $order; do
            echo "round $r: $phase, $which"
            "run_$phase" "$which" "$r"
        done
    done
done

# ---------------------------------------------------------------- the table
python3 - "$work/runs" "$rounds" "$phases" "$base_rev" <<'PY'
import glob, json, os, re, statistics, sys
runs, rounds, phases, base_rev = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]

def values(phase, which, get):
    out = []
    for r in range(1, rounds + 1):
        path = os.path.join(runs, "%s-%s-%d" % (phase, which, r))
        try:
            out.append(get(path))
        except (FileNotFoundError, KeyError, ValueError, AttributeError):
            pass
    return out

def firehose_mb_per_cpu(path):
    text = open(path + ".log").read()
    row = re.search(r"^aggregate\s+(\S+)\s+(\S+)", text, re.M)
    return float(row.group(2))

measures = []  # (phase, name, getter, lower is better)
if "live" in phases:
    j = lambda p: json.load(open(p + ".json"))
    measures += [
        ("live", "CPU, % of a core", lambda p: j(p)["busy"]["cpu_pct"], True),
        ("live", "CPU (schedstat ns), %", lambda p: j(p)["busy"].get("cpu_pct_ns", float("nan")), True),
        ("live", "wake-ups / s, writing", lambda p: j(p)["busy"]["wakeups_per_s"], True),
        ("live", "wake-ups / s, idle", lambda p: j(p)["idle"]["wakeups_per_s"], True),
        ("live", "latency p99, s", lambda p: j(p)["latency_s"]["p99"], True),
    ]
if "busy" in phases:
    j = lambda p: json.load(open(p + ".json"))
    measures += [
        ("busy", "CPU while writing, % of a core", lambda p: j(p)["measure"]["cpu_pct"], True),
        ("busy", "context switches / s", lambda p: j(p)["measure"]["ctxt_switches_per_s"], True),
    ]
if "firehose" in phases:
    measures += [("firehose", "MB per CPU-second", firehose_mb_per_cpu, False)]

print()
print("%-9s %-32s %14s %14s %8s   %s" % ("bench", "measure", base_rev, "head", "better", "runs (base | head)"))
for phase, name, get, lower in measures:
    b, h = values(phase, "base", get), values(phase, "head", get)
    if not b or not h:
        print("%-9s %-32s %14s" % (phase, name, "no data"))
        continue
    mb, mh = statistics.median(b), statistics.median(h)
    ratio = (mb / mh if lower else mh / mb) if (mh and mb) else float("nan")
    print("%-9s %-32s %14.3g %14.3g %7.2fx   %s | %s" % (phase, name, mb, mh, ratio,
          " ".join("%.3g" % v for v in b), " ".join("%.3g" % v for v in h)))
print("\n(medians over %d rounds; 'better' is how many times better the head is: base/head where less is better)" % rounds)
PY
