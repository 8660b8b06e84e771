#!/usr/bin/env bash
# End-to-end benchmark of `logferry run`: tail → disk buffer → file sink, against
# `logferry replay` on the same corpus.
#
# Usage: bash benches/pipeline.sh [--size-mb N] [--formats "cri docker"] [--runs R]
#   --size-mb N   corpus size per format in MB (1e6 bytes); default 1024
#   --formats F   space-separated list of cri, docker; default "cri docker"
#   --runs R      timed runs per format and mode; default 3
#   --watch M     [tail] watch for `run`: inotify (the default) or poll — for diagnosis
#
# For each format it:
#   1. generates a corpus with benches/gen_corpus.py into bench-data/<format>-<N>
#      (gitignored), or reuses it when bench-data/<format>-<N>/expected.json exists;
#      then reads every file once so that every run reads from the page cache;
#   2. baseline, R runs each under /usr/bin/time:
#        logferry replay -q --dry-run DIR/var/log/pods
#        logferry replay -q DIR/var/log/pods > /dev/null
#      and once, untimed, `replay -q DIR/var/log/pods > bench-data/pipeline/replay.jsonl`
#      for the expected output size; and R runs of the disk alone writing as many bytes
#      as the pipeline will (what bounds a file sink):
#        dd if=/dev/zero of=bench-data/pipeline/dd.tmp bs=12M oflag=direct conv=fdatasync
#   3. R runs of `logferry run --config CFG`, each with a fresh data_dir and output in
#      bench-data/pipeline/ and this configuration (defaults otherwise):
#        data_dir = ".../bench-data/pipeline/<format>-run<i>/data"
#        [tail]  include = ["DIR/var/log/pods/*/*/*.log"], roots = ["DIR/var/log/pods"],
#                checkpoint_interval = "100ms"          (to see completion quickly)
#                watch = "inotify"                      (the default; see --watch)
#        [sink]  type = "file", path = ".../bench-data/pipeline/<format>-run<i>/out.jsonl"
#                (fsynced after every batch read from the buffer)
#        [metrics] listen = ""   (only if this build knows the key: no port to collide on)
#      A monitor (Python, polling every 25 ms) starts logferry and stops the clock when
#      every stream's checkpoint offset in <data_dir>/checkpoints.json equals its file's
#      size AND the output file has reached the size of replay's output; it then reads
#      the process's CPU time (utime + stime of /proc/PID/stat), peak RSS (VmHWM) and
#      bytes written (/proc/PID/io), sends SIGTERM and waits for the exit (which must be
#      0). After the exit it checks that the output has exactly `messages` lines
#      (expected.json: no loss, no duplicates) and the same number of bytes as replay's
#      output. A run that has not completed after 300 s fails.
#
# The table reports the best wall time and the best CPU time of the runs (the two can
# come from different runs), MB/s (MB = 1e6 bytes of corpus), MB per CPU-second, the
# highest peak RSS, and the ratio of `run`'s wall throughput to `replay > /dev/null`'s.
# `run` writes each byte once while its sink keeps up (the buffer holds records in
# memory first; the file sink writes whole blocks with O_DIRECT and fsyncs); the "disk"
# column is what it wrote per /proc/PID/io.
set -euo pipefail

size_mb=1024
formats="cri docker"
runs=3
watch=inotify
while (($#)); do
    case "$1" in
        --size-mb) size_mb="${2:?--size-mb needs a value}"; shift 2 ;;
        --size-mb=*) size_mb="${1#*=}"; shift ;;
        --formats) formats="${2:?--formats needs a value}"; shift 2 ;;
        --formats=*) formats="${1#*=}"; shift ;;
        --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
        --runs=*) runs="${1#*=}"; shift ;;
        --watch) watch="${2:?--watch needs a value}"; shift 2 ;;
        --watch=*) watch="${1#*=}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "pipeline.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done
[[ "$size_mb" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "pipeline.sh: --size-mb must be a positive number" >&2; exit 64; }
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "pipeline.sh: --runs must be a positive integer" >&2; exit 64; }
[[ "$watch" == inotify || "$watch" == poll ]] || { echo "pipeline.sh: --watch inotify|poll" >&2; exit 64; }
for fmt in $formats; do
    case "$fmt" in docker|cri) ;; *) echo "pipeline.sh: unknown format '$fmt' (docker, cri)" >&2; exit 64 ;; esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
root="$(pwd)"
bin="$root/target/release/logferry"
timer=/usr/bin/time
[[ -x "$timer" ]] || { echo "pipeline.sh: $timer (GNU time) is needed" >&2; exit 69; }
work="$root/bench-data/pipeline"
mkdir -p "$work"

tmp="$(mktemp -d)"
pidfile="$tmp/logferry.pid"
cleanup() {
    # The monitor writes logferry's pid here while it runs; stop it if we are cut short.
    if [[ -s "$pidfile" ]]; then
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 1
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
results="$tmp/results.tsv" # fmt mode bytes run cpu wall rss_kib disk_bytes

print_machine "$work"

echo "== build"
cargo build --release --quiet
echo "$bin built"
echo

# The monitor: starts `logferry run`, detects completion, measures, stops it.
cat > "$tmp/monitor.py" <<'PY'
import json, os, signal, subprocess, sys, time
sys.path.insert(0, os.environ["BENCHES_DIR"])
import checkpoints

bin_, cfg, data_dir, pods, out, want_bytes, pidfile, log = sys.argv[1:9]
want_bytes = int(want_bytes)
files = {}
for d, _, names in os.walk(pods):
    for n in names:
        if n.endswith(".log"):
            p = os.path.join(d, n)
            files[p] = os.path.getsize(p)
tick = os.sysconf("SC_CLK_TCK")

def checkpoints_done():
    at = checkpoints.offsets(data_dir)
    return all(at.get(p) == size for p, size in files.items())

def output_size():
    try:
        return os.path.getsize(out)
    except OSError:
        return 0

def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    written = 0
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                written = int(line.split()[1])
    # CPU per thread (named "tail", "buffer", "sink", … by the pipeline).
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            name = head.split("(", 1)[1]
            fields = rest.split()
            threads[name] = threads.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return cpu, hwm, written, threads

with open(log, "wb") as logf:
    t0 = time.monotonic()
    proc = subprocess.Popen([bin_, "run", "--config", cfg], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    with open(pidfile, "w") as f:
        f.write(str(proc.pid))
    try:
        ckpt_at = None
        while True:
            if proc.poll() is not None:
                sys.exit(f"logferry run exited early with status {proc.returncode}; see {log}")
            if ckpt_at is None and checkpoints_done():
                ckpt_at = time.monotonic() - t0
            if ckpt_at is not None and output_size() >= want_bytes:
                wall = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 300:
                sys.exit(f"not complete after 300 s (checkpoints done: {ckpt_at is not None}, output {output_size()} of {want_bytes} bytes); see {log}")
            time.sleep(0.025)
        cpu, hwm, written, threads = proc_stats(proc.pid)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        if rc != 0:
            sys.exit(f"logferry run exited with status {rc} after SIGTERM; see {log}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.remove(pidfile)
per_thread = ",".join(f"{n}={c:.2f}" for n, c in sorted(threads.items(), key=lambda t: -t[1]) if c > 0)
print(f"{wall:.3f} {cpu:.2f} {hwm} {written} {ckpt_at:.3f} {per_thread or '-'}")
PY

for fmt in $formats; do
    echo "== $fmt: corpus bench-data/$fmt-$size_mb"
    dir="$(corpus "$fmt" "$size_mb")"
    expected="$dir/expected.json"
    bytes="$(json_get "$expected" total_bytes)"
    messages="$(json_get "$expected" messages)"
    pods="$dir/var/log/pods"

    # Replay's output: the size the pipeline's output must reach, and a check of it.
    ref="$work/replay-$fmt.jsonl"
    "$bin" replay -q "$pods" > "$ref"
    ref_bytes="$(stat -c %s "$ref")"
    ref_lines="$(wc -l < "$ref")"
    rm -f "$ref"
    echo "replay output: $ref_lines lines, $ref_bytes bytes (expected messages: $messages)"
    if [[ "$ref_lines" != "$messages" ]]; then
        echo "pipeline.sh: FAILED: replay wrote $ref_lines lines, expected.json says $messages messages" >&2
        exit 1
    fi

    # The disk alone: the pipeline writes ref_bytes to it, in large direct writes.
    for run in $(seq 1 "$runs"); do
        sync
        t0="$(date +%s.%N)"
        dd if=/dev/zero of="$work/dd.tmp" bs=12M count="$(( (ref_bytes + 12582911) / 12582912 ))" oflag=direct conv=fdatasync status=none
        wall="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')"
        rm -f "$work/dd.tmp"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fmt" disk "$ref_bytes" "$run" 0 "$wall" 0 "$ref_bytes" >> "$results"
        printf '  disk    dd      run %d: wall %6.2f s for %d bytes (%.0f MB/s)\n' "$run" "$wall" "$ref_bytes" "$(awk -v b="$ref_bytes" -v w="$wall" 'BEGIN { print b / 1e6 / w }')"
    done

    for mode in dry-run output; do
        for run in $(seq 1 "$runs"); do
            args=(replay -q "$pods")
            [[ "$mode" == dry-run ]] && args=(replay -q --dry-run "$pods")
            if ! "$timer" -f '%U %S %e %M' -o "$tmp/time.txt" "$bin" "${args[@]}" > /dev/null 2> "$tmp/stderr.txt"; then
                cat "$tmp/stderr.txt" "$tmp/time.txt" >&2
                echo "pipeline.sh: FAILED: $bin ${args[*]}" >&2
                exit 1
            fi
            read -r user sys wall rss < <(tail -n 1 "$tmp/time.txt")
            cpu="$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fmt" "$mode" "$bytes" "$run" "$cpu" "$wall" "$rss" 0 >> "$results"
            printf '  replay %-7s run %d: cpu %6.2f s  wall %6.2f s  peak RSS %7.1f MiB\n' "$mode" "$run" "$cpu" "$wall" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
        done
    done

    for run in $(seq 1 "$runs"); do
        rdir="$work/$fmt-run$run"
        rm -rf "$rdir"
        mkdir -p "$rdir/data"
        cfg="$rdir/logferry.toml"
        cat > "$cfg" <<EOF
data_dir = "$rdir/data"

[tail]
include = ["$pods/*/*/*.log"]
roots = ["$pods"]
checkpoint_interval = "100ms"
watch = "$watch"

[sink]
type = "file"
path = "$rdir/out.jsonl"
EOF
        # Turn the metrics listener off where this build has one (no port collisions).
        cp "$cfg" "$tmp/probe.toml"
        printf '\n[metrics]\nlisten = ""\n' >> "$tmp/probe.toml"
        if "$bin" check --config "$tmp/probe.toml" > /dev/null 2>&1; then
            cp "$tmp/probe.toml" "$cfg"
        fi
        if ! "$bin" check --config "$cfg" > "$tmp/check.txt" 2>&1; then
            cat "$tmp/check.txt" >&2
            echo "pipeline.sh: FAILED: the generated configuration is not valid" >&2
            exit 1
        fi
        sync # start each run without others' dirty pages queued
        if ! BENCHES_DIR="$(pwd)/benches" python3 "$tmp/monitor.py" "$bin" "$cfg" "$rdir/data" "$pods" "$rdir/out.jsonl" "$ref_bytes" "$pidfile" "$rdir/logferry.log" > "$tmp/mon.txt"; then
            tail -n 20 "$rdir/logferry.log" >&2 || true
            echo "pipeline.sh: FAILED: run $run of $fmt" >&2
            exit 1
        fi
        read -r wall cpu hwm written ckpt_at threads < "$tmp/mon.txt"
        lines="$(wc -l < "$rdir/out.jsonl")"
        out_bytes="$(stat -c %s "$rdir/out.jsonl")"
        verdict=ok
        [[ "$lines" == "$messages" && "$out_bytes" == "$ref_bytes" ]] || verdict=MISMATCH
        printf '  run     pipeline run %d: cpu %6.2f s  wall %6.2f s (checkpoints at EOF after %.2f s)  peak RSS %7.1f MiB  wrote %.0f MB  output %d lines (expected %d), %d bytes (replay %d): %s\n' \
            "$run" "$cpu" "$wall" "$ckpt_at" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" "$(awk -v b="$written" 'BEGIN { print b / 1e6 }')" \
            "$lines" "$messages" "$out_bytes" "$ref_bytes" "$verdict"
        echo "          CPU s by thread: ${threads//,/  }"
        if [[ "$verdict" != ok ]]; then
            echo "pipeline.sh: FAILED: the output of run $run ($rdir/out.jsonl) is not what replay writes (lost or duplicated events)" >&2
            exit 1
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fmt" run "$bytes" "$run" "$cpu" "$wall" "$hwm" "$written" >> "$results"
        rm -rf "$rdir"
    done
    echo
done

echo "== results ($runs runs each; best CPU and best wall of the runs, highest peak RSS)"
echo
python3 - "$results" "$watch" <<'PY'
import sys
from collections import OrderedDict

rows = OrderedDict()
for line in open(sys.argv[1]):
    fmt, mode, nbytes, _run, cpu, wall, rss, written = line.rstrip("\n").split("\t")
    r = rows.setdefault((fmt, mode), {"bytes": int(nbytes), "cpu": [], "wall": [], "rss": [], "written": []})
    r["cpu"].append(float(cpu))
    r["wall"].append(float(wall))
    r["rss"].append(int(rss))
    r["written"].append(int(written))

cmd = {
    "dry-run": "`logferry replay -q --dry-run DIR/var/log/pods`",
    "output": "`logferry replay -q DIR/var/log/pods > /dev/null`",
    "run": "`logferry run --config CFG` (tail → buffer → file sink)" + ("" if sys.argv[2] == "inotify" else ", `watch = \"%s\"`" % sys.argv[2]),
    "disk": "`dd bs=12M oflag=direct conv=fdatasync`, as many bytes as `run` writes",
}
print("| format | command | wall s | MB/s | CPU s | MB per CPU-s | peak RSS MiB | disk written MB | vs replay > /dev/null (wall / CPU) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
notes = []
for (fmt, mode), r in rows.items():
    mb = r["bytes"] / 1e6
    cpu, wall = min(r["cpu"]), min(r["wall"])
    if mode == "disk":
        # MB/s here is of the output-sized file dd writes, not of the corpus.
        print("| %s | %s | %.2f | %.0f (written) |  |  |  | %.0f |  |" % (fmt, cmd[mode], wall, mb / wall, mb))
        if (fmt, "run") in rows:
            run_wall = min(rows[(fmt, "run")]["wall"])
            notes.append("%s: `run` wrote its output at %.0f MB/s, %.0f %% of the disk's rate under dd (%.0f MB/s), "
                         "and needed %.0f %% of dd's time" % (fmt, mb / run_wall, 100 * wall / run_wall, mb / wall, 100 * run_wall / wall))
        continue
    ratio = ""
    if mode == "run" and (fmt, "output") in rows:
        base = rows[(fmt, "output")]
        ratio = "**%.0f %%** / %.0f %%" % (100 * min(base["wall"]) / wall, 100 * min(base["cpu"]) / cpu)
    written = "%.0f" % (max(r["written"]) / 1e6) if mode == "run" else ""
    print("| %s | %s | %.2f | %.0f | %.2f | %.0f | %.1f | %s | %s |" % (fmt, cmd[mode], wall, mb / wall, cpu, mb / cpu, max(r["rss"]) / 1024, written, ratio))
print()
for n in notes:
    print(n)
PY
