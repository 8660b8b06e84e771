#!/usr/bin/env bash
# End-to-end benchmark of `logferry replay` on a generated corpus.
#
# Usage: bash benches/replay.sh [--size-mb N] [--formats "docker cri"] [--runs R]
#   --size-mb N   corpus size per format in MB (1e6 bytes); default 512
#   --formats F   space-separated list of docker, cri; default "docker cri"
#   --runs R      timed runs per format and mode; default 3
#
# For each format it:
#   1. generates a corpus with benches/gen_corpus.py into bench-data/<format>-<N>
#      (gitignored), or reuses it when bench-data/<format>-<N>/expected.json exists
#      (gen_corpus.py writes that file last, so an interrupted run is regenerated);
#   2. reads every file once so the timed runs read from the page cache, not the disk;
#   3. checks correctness once: `replay --dry-run` (no -q) must report, in its summary
#      on stderr, events == expected `messages`, rejoined == `split_messages`,
#      lines == `fragments` and malformed == 0;
#   4. times three (--runs) runs of each mode under /usr/bin/time:
#        dry-run: logferry replay -q --dry-run DIR/var/log/pods
#        output:  logferry replay -q DIR/var/log/pods > /dev/null   (decode + encode + write)
#
# The table reports, per format and mode: the corpus's total_bytes; the best (lowest)
# user+sys CPU seconds of the runs; MB per CPU-second from that (MB = 1e6 bytes);
# wall MB/s from the best wall time; and the highest peak RSS of the runs (MiB).
# time(1) counts CPU in 10 ms steps: a run well under a second (CRI --dry-run at 512 MB)
# needs a bigger --size-mb for a precise MB per CPU-second.
# Single-threaded work on a shared 2-core machine: CPU time is the steadier number,
# wall time also shows interference from other load.
set -euo pipefail

size_mb=512
formats="docker cri"
runs=3
while (($#)); do
    case "$1" in
        --size-mb) size_mb="${2:?--size-mb needs a value}"; shift 2 ;;
        --size-mb=*) size_mb="${1#*=}"; shift ;;
        --formats) formats="${2:?--formats needs a value}"; shift 2 ;;
        --formats=*) formats="${1#*=}"; shift ;;
        --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
        --runs=*) runs="${1#*=}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "replay.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done
if ! [[ "$size_mb" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    echo "replay.sh: --size-mb must be a positive number, not '$size_mb'" >&2
    exit 64
fi
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "replay.sh: --runs must be a positive integer, not '$runs'" >&2
    exit 64
fi
for fmt in $formats; do
    case "$fmt" in
        docker|cri) ;;
        *) echo "replay.sh: unknown format '$fmt' (docker, cri)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
bin=target/release/logferry
timer=/usr/bin/time
[[ -x "$timer" ]] || { echo "replay.sh: $timer (GNU time) is needed" >&2; exit 69; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
results="$tmp/results.tsv" # format mode bytes run user sys wall rss_kib

print_machine bench-data

echo "== build"
cargo build --release --quiet
echo "$bin built"
echo

for fmt in $formats; do
    echo "== $fmt: corpus bench-data/$fmt-$size_mb"
    dir="$(corpus "$fmt" "$size_mb")"
    expected="$dir/expected.json"
    bytes="$(json_get "$expected" total_bytes)"

    # Correctness, once: the summary (stderr) must match what the generator wrote.
    if ! "$bin" replay --dry-run "$dir/var/log/pods" 2> "$tmp/summary.txt" > /dev/null; then
        cat "$tmp/summary.txt" >&2
        echo "replay.sh: FAILED: logferry replay --dry-run exited non-zero on $dir" >&2
        exit 1
    fi
    sed 's/^/  /' "$tmp/summary.txt"
    python3 - "$tmp/summary.txt" "$expected" <<'PY'
import json, re, sys

summary = open(sys.argv[1]).read()
expected = json.load(open(sys.argv[2]))
# `  events N  lines N  rejoined N  malformed N  ...` (impl Display for Summary)
m = re.search(r"events (\d+)\s+lines (\d+)\s+rejoined (\d+)\s+malformed (\d+)", summary)
if not m:
    sys.exit("replay.sh: FAILED: no 'events N  lines N  rejoined N  malformed N' in the summary:\n" + summary)
events, lines, rejoined, malformed = map(int, m.groups())
checks = [
    ("events", events, "messages", expected["messages"]),
    ("rejoined", rejoined, "split_messages", expected["split_messages"]),
    ("lines", lines, "fragments", expected["fragments"]),
    ("malformed", malformed, "0", 0),
]
bad = [c for c in checks if c[1] != c[3]]
for name, got, key, want in checks:
    print("  check %-9s %10d  expected %-14s %10d  %s" % (name, got, key, want, "ok" if got == want else "MISMATCH"))
if bad:
    sys.exit("replay.sh: FAILED: the replay summary does not match %s" % sys.argv[2])
PY

    for mode in dry-run output; do
        for run in $(seq 1 "$runs"); do
            args=(replay -q "$dir/var/log/pods")
            [[ "$mode" == dry-run ]] && args=(replay -q --dry-run "$dir/var/log/pods")
            if ! "$timer" -f '%U %S %e %M' -o "$tmp/time.txt" "$bin" "${args[@]}" > /dev/null 2> "$tmp/stderr.txt"; then
                cat "$tmp/stderr.txt" "$tmp/time.txt" >&2
                echo "replay.sh: FAILED: $bin ${args[*]} exited non-zero" >&2
                exit 1
            fi
            # The last line: a killed or failing command makes time(1) add a line before it.
            read -r user sys wall rss < <(tail -n 1 "$tmp/time.txt")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fmt" "$mode" "$bytes" "$run" "$user" "$sys" "$wall" "$rss" >> "$results"
            printf '  %-7s run %d: user %6.2f s  sys %5.2f s  wall %6.2f s  peak RSS %7.1f MiB\n' \
                "$mode" "$run" "$user" "$sys" "$wall" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
        done
    done
    echo
done

echo "== results ($runs runs each; best CPU and best wall of the runs, highest peak RSS)"
echo
python3 - "$results" <<'PY'
import sys
from collections import OrderedDict

rows = OrderedDict()
for line in open(sys.argv[1]):
    fmt, mode, nbytes, _run, user, sys_, wall, rss = line.split("\t")
    r = rows.setdefault((fmt, mode), {"bytes": int(nbytes), "cpu": [], "wall": [], "rss": []})
    r["cpu"].append(float(user) + float(sys_))
    r["wall"].append(float(wall))
    r["rss"].append(int(rss))

mode_cmd = {"dry-run": "`replay -q --dry-run`", "output": "`replay -q > /dev/null`"}
print("| format | mode | bytes | best CPU s (user+sys) | MB per CPU-s | wall MB/s | peak RSS MiB |")
print("|---|---|---:|---:|---:|---:|---:|")
for (fmt, mode), r in rows.items():
    mb = r["bytes"] / 1e6
    cpu, wall = min(r["cpu"]), min(r["wall"])
    per_cpu = "%.0f" % (mb / cpu) if cpu > 0 else "n/a"
    per_wall = "%.0f" % (mb / wall) if wall > 0 else "n/a"
    print("| %s | %s | %d | %.2f | %s | %s | %.1f |" % (fmt, mode_cmd[mode], r["bytes"], cpu, per_cpu, per_wall, max(r["rss"]) / 1024))
PY
