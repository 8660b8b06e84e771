#!/usr/bin/env bash
# Follow-mode benchmark of `logferry run`: busy node, idle node, catch-up of a backlog.
#
# Usage: bash benches/follow.sh [options]
#   --files N            container log files on the fake node; default 500
#   --rate-mb R          busy: total write rate in MB/s (MB = 1e6 bytes); default 50
#   --writing W          busy: only W of the files are written to (the rest stay
#                        quiet, as on a node with many idle containers); default all
#   --seconds T          busy: how long the writers write; default 30
#   --skip S             busy: seconds of load left out of the CPU window; default 5
#   --idle-seconds T     idle: the CPU window; default 60
#   --runs R             runs of each phase; the table reports the best; default 3
#   --writers W          busy: writer processes (files split between them); default 1
#   --catchup-mb M       catch-up corpus size per format; default 1024
#   --catchup-formats F  space-separated list of cri, docker; default "cri docker"
#   --check-seconds T    correctness run (file sink, same rate) length; default 10
#   --phases P           any of "busy idle catchup check perf"; default "busy idle catchup check"
#   --perf               add the "perf" phase: one extra busy run with `perf record -g`
#                        for 10 s after --skip (not counted), top symbols and threads
#   --sinks K            busy and idle: K file sinks writing to /dev/null (each through
#                        a link of its own), every event to every one, instead of the
#                        stdout sink; for the cost of more sinks (compare K=1 with K=2)
#   --bin PATH           benchmark this logferry binary instead of building the working
#                        tree (`cargo build --release`, the default): for A/B comparisons
#   --work DIR           where runs and results go; default bench-data/follow
#
# Everything is written under bench-data/follow/ (gitignored); catch-up corpora are
# bench-data/<format>-<M> (shared with benches/replay.sh, reused when their expected.json
# exists). The release binary is built, then copied to bench-data/follow/logferry so a
# rebuild by someone else cannot change it mid-run.
#
# Phases (node = ROOT/var/log/pods/<ns>_<pod>_<uid>/app/0.log plus the
# ROOT/var/log/containers/<pod>_<ns>_app-<64 hex>.log links; `include` is the default
# kubelet glob over the links, every other setting default, sink = stdout > /dev/null;
# a build with a metrics listener gets [metrics] listen = "127.0.0.1:0"):
#   busy     N empty files; logferry starts and registers them all (checkpoints at 0);
#            then benches/follow_load.py appends whole CRI lines (messages 100-400 B,
#            15 % stderr, a quarter JSON that needs escaping) to every file every 100 ms,
#            R MB/s in total, for T s. logferry's CPU (utime+stime of /proc/PID/stat) is
#            taken over [S, T] of the load, its peak RSS is VmHWM. The checkpoints are
#            compared with the file sizes every second (lag). After the writers stop:
#            the time until the checkpoints cover every byte (drain; checkpoints are saved
#            every 200 ms, the default), then SIGTERM, and logferry's own "stopped events=N"
#            must equal the lines written.
#   check    the busy load for --check-seconds with a file sink in bench-data instead;
#            every event is parsed: per pod, events, message bytes and the sum of the
#            messages' CRC-32 must equal what the writers wrote. The output is deleted
#            when it matches (and after every busy run, the written log files).
#   idle     N files with 200 lines each, read at start; then no writes: CPU over
#            --idle-seconds (rescans every 10 s, the default, included), VmRSS and VmHWM.
#   catchup  a generated corpus (benches/gen_corpus.py, 8 files, page cache warmed);
#            include = DIR/var/log/pods/*/*/*.log, start_at = "beginning",
#            checkpoint_interval = "100ms". Timed from the spawn until the checkpoints
#            show every file read to its size, then on until logferry is quiet (at most
#            one 10 ms CPU tick in 300 ms): with a disk buffer between reading and the
#            sink, complete checkpoints do not yet mean shipped. CPU and wall time are
#            taken at the start of the quiet window (if it never comes within 10 s, the
#            CPU at complete checkpoints is used, and the table says so). Then SIGTERM:
#            its events must equal the corpus's expected messages. Compared with
#            `replay -q --dry-run DIR` and `replay -q DIR > /dev/null` under /usr/bin/time.
#
# The table reports the best (lowest) CPU of the runs, the highest peak RSS, and each
# run's numbers beside it. CPU % is of one core (100 % = one core busy).
set -euo pipefail

files=500
sinks=0
writing=0
rate_mb=50
seconds=30
skip=5
idle_seconds=60
runs=3
writers=1
catchup_mb=1024
catchup_formats="cri docker"
check_seconds=10
phases="busy idle catchup check"
bin_arg=""
work_arg=""
while (($#)); do
    case "$1" in
        --files) files="${2:?}"; shift 2 ;;
        --sinks) sinks="${2:?}"; shift 2 ;;
        --rate-mb) rate_mb="${2:?}"; shift 2 ;;
        --writing) writing="${2:?}"; shift 2 ;;
        --seconds) seconds="${2:?}"; shift 2 ;;
        --skip) skip="${2:?}"; shift 2 ;;
        --idle-seconds) idle_seconds="${2:?}"; shift 2 ;;
        --runs) runs="${2:?}"; shift 2 ;;
        --writers) writers="${2:?}"; shift 2 ;;
        --catchup-mb) catchup_mb="${2:?}"; shift 2 ;;
        --catchup-formats) catchup_formats="${2:?}"; shift 2 ;;
        --check-seconds) check_seconds="${2:?}"; shift 2 ;;
        --phases) phases="${2:?}"; shift 2 ;;
        --perf) phases="$phases perf"; shift ;;
        --bin) bin_arg="${2:?}"; shift 2 ;;
        --work) work_arg="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "follow.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done
num='^[0-9]+(\.[0-9]+)?$'
int='^[1-9][0-9]*$'
for v in "files=$files" "runs=$runs" "writers=$writers" "catchup-mb=$catchup_mb"; do
    [[ "${v#*=}" =~ $int ]] || { echo "follow.sh: --${v%%=*} must be a positive integer, not '${v#*=}'" >&2; exit 64; }
done
for v in "rate-mb=$rate_mb" "seconds=$seconds" "skip=$skip" "idle-seconds=$idle_seconds" "check-seconds=$check_seconds"; do
    [[ "${v#*=}" =~ $num ]] || { echo "follow.sh: --${v%%=*} must be a number, not '${v#*=}'" >&2; exit 64; }
done
awk -v s="$skip" -v t="$seconds" 'BEGIN { exit !(s + 2 <= t) }' || { echo "follow.sh: --skip must be at least 2 s below --seconds" >&2; exit 64; }
for p in $phases; do
    case "$p" in busy|idle|catchup|check|perf) ;; *) echo "follow.sh: unknown phase '$p'" >&2; exit 64 ;; esac
done
for f in $catchup_formats; do
    case "$f" in cri|docker) ;; *) echo "follow.sh: unknown format '$f' (cri, docker)" >&2; exit 64 ;; esac
done
has_phase() { [[ " $phases " == *" $1 "* ]]; }

[[ -z "$bin_arg" || -x "$bin_arg" ]] || { echo "follow.sh: --bin $bin_arg is not an executable" >&2; exit 64; }
[[ -z "$bin_arg" ]] || bin_arg="$(realpath "$bin_arg")"
[[ -z "$work_arg" ]] || work_arg="$(realpath -m "$work_arg")"
cd "$(dirname "$0")/.."
repo="$PWD"
source benches/common.sh
work="${work_arg:-$repo/bench-data/follow}"
helper="$repo/benches/follow_load.py"
timer=/usr/bin/time
[[ -x "$timer" ]] || { echo "follow.sh: $timer (GNU time) is needed" >&2; exit 69; }
# The real interpreter, not a pyenv shim: the pids we start are the processes we measure/kill.
py="$(python3 -c 'import sys; print(sys.executable)')"
pdeath=()
if setpriv --help 2>/dev/null | grep -q pdeathsig; then
    pdeath=(setpriv --pdeathsig TERM) # logferry gets SIGTERM if this script dies
fi

# ---------------------------------------------------------------- process hygiene

started=() # every background process this script started, by pid
# running PID: the process exists and is not a zombie waiting to be reaped.
running() { local st; st="$(awk '{ print $3 }' "/proc/$1/stat" 2> /dev/null)"; [[ -n "$st" && "$st" != Z ]]; }
cleanup() {
    local p
    trap - EXIT INT TERM
    for p in "${started[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for p in "${started[@]}"; do running "$p" && alive=1; done
        ((alive)) || break
        sleep 0.5
    done
    for p in "${started[@]}"; do running "$p" && kill -KILL "$p" 2>/dev/null || true; done
    wait 2> /dev/null || true
}
trap cleanup EXIT
trap 'echo "follow.sh: interrupted" >&2; exit 130' INT
trap 'echo "follow.sh: terminated" >&2; exit 143' TERM
forget() { # pid: it has exited
    local p keep=()
    for p in "${started[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    started=("${keep[@]}")
}

now() { date +%s.%N; }
at_plus() { awk -v t="$(now)" -v d="$1" 'BEGIN { printf "%.3f", t + d }'; }
sleep_until() { local d; d="$(awk -v t="$(now)" -v u="$1" 'BEGIN { d = u - t; printf "%.3f", (d > 0 ? d : 0) }')"; sleep "$d"; }

# start_logferry CONFIG STDERR: sets lf_pid.
start_logferry() {
    "${pdeath[@]}" "$bin" run --config "$1" > "${3:-/dev/null}" 2> "$2" &
    lf_pid=$!
    started+=("$lf_pid")
    sleep 0.05
    if ! kill -0 "$lf_pid" 2>/dev/null; then
        cat "$2" >&2
        echo "follow.sh: logferry exited at start" >&2
        exit 1
    fi
}

# stop_logferry PID: SIGTERM, wait for the exit (SIGKILL after 40 s: shutdown_timeout is
# 20 s); sets lf_rc.
stop_logferry() {
    kill -TERM "$1" 2> /dev/null || true
    local i
    for ((i = 0; i < 400; i++)); do running "$1" || break; sleep 0.1; done
    if running "$1"; then
        echo "follow.sh: WARNING: logferry $1 still running 40 s after SIGTERM; SIGKILL" >&2
        kill -KILL "$1" 2> /dev/null || true
    fi
    lf_rc=0
    wait "$1" || lf_rc=$?
    forget "$1"
}

# stderr_problems FILE: the number of WARN/ERROR lines of logferry's own log (text or JSON).
stderr_problems() { "$py" "$helper" problems "$1"; }

# ---------------------------------------------------------------- machine, build

echo "== machine"
machine_facts "$repo/bench-data"
echo "cpus:   $machine_nproc ($(nproc --all) online)"
echo "cpu:    $machine_cpu"
echo "kernel: $machine_kernel"
echo "memory: $machine_mem"
echo "fs:     $machine_fs (bench-data)"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "rustc:  $rustc_version"
echo "commit: $commit"
echo "python: $py ($("$py" --version 2>&1))"
echo

mkdir -p "$work"
rm -rf "$work/results" "$work/busy" "$work/idle" "$work/check" "$work/catchup" "$work/perf"
mkdir -p "$work/results"
bin="$work/logferry"
if [[ -z "$bin_arg" ]]; then
    echo "== build"
    cargo build --release --quiet
    cp target/release/logferry "$bin.tmp" && mv -f "$bin.tmp" "$bin"
    binary="working tree ($commit)"
    echo "target/release/logferry built, copied to $bin"
else
    cp "$bin_arg" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
    binary="$bin_arg"
    echo "== binary: $bin_arg (not built), copied to $bin"
fi
echo

# Machine info for the table.
"$py" - "$work/results/machine.json" <<PY
import json, sys
json.dump({"nproc": "$machine_nproc", "cpu": """$machine_cpu""", "kernel": "$machine_kernel", "memory": "$machine_mem",
           "fs": "$machine_fs", "rustc": "$rustc_version", "commit": "$commit", "binary": """$binary""",
           "files": $files, "rate_mb": $rate_mb, "seconds": $seconds, "skip": $skip,
           "idle_seconds": $idle_seconds, "runs": $runs, "writers": $writers, "catchup_mb": $catchup_mb},
          open(sys.argv[1], "w"))
PY

# Builds with a metrics listener (default 0.0.0.0:9180) get an ephemeral loopback port
# instead, so that runs never collide with another logferry on the machine.
metrics_config=""
if grep -aq 'metrics.listen' "$bin"; then
    metrics_config=$'[metrics]\nlisten = "127.0.0.1:0"'
fi

# node_config DIR SINK: a config with defaults, following DIR's kubelet links.
node_config() {
    local dir="$1" sink="$2"
    {
        echo "data_dir = \"$dir/data\""
        [[ -z "$metrics_config" ]] || echo "$metrics_config"
        echo "[tail]"
        echo "include = [\"$dir/node/var/log/containers/*.log\"]"
        echo "roots = [\"$dir/node/var/log/pods\"]"
        if [[ "$sink" == stdout && "$sinks" -gt 0 ]]; then
            local i
            for i in $(seq "$sinks"); do
                ln -sf /dev/null "$dir/null-$i"
                echo "[sinks.s$i]"
                echo 'type = "file"'
                echo "path = \"$dir/null-$i\""
            done
        else
            echo "[sink]"
            if [[ "$sink" == stdout ]]; then
                echo 'type = "stdout"'
            else
                echo 'type = "file"'
                echo "path = \"$sink\""
            fi
        fi
    } > "$dir/logferry.toml"
}

# ---------------------------------------------------------------- busy

# busy_run NAME MODE(measure|check|perf) SECONDS: one loaded run; writes results/NAME.json.
busy_run() {
    local name="$1" mode="$2" secs="$3"
    local dir="$work/$mode"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    "$py" "$helper" layout "$dir/node" --files "$files" > /dev/null
    local sink=stdout
    [[ "$mode" == check ]] && sink="$dir/out.jsonl"
    node_config "$dir" "$sink"
    local load
    load="$(cut -d' ' -f1 /proc/loadavg)"
    start_logferry "$dir/logferry.toml" "$dir/logferry.stderr"
    # Every file registered (checkpoint at offset 0) before the load starts.
    "$py" "$helper" wait --data-dir "$dir/data" --layout "$dir/node/layout.json" --timeout 60 --poll 0.2 > /dev/null \
        || { cat "$dir/logferry.stderr" >&2; echo "follow.sh: logferry did not register the $files files" >&2; exit 1; }
    local start_at
    start_at="$(at_plus 4)" # the writers generate their line buffers meanwhile
    local wpids=() k
    for ((k = 0; k < writers; k++)); do
        "$py" "$helper" write "$dir/node" --shard "$k" --shards "$writers" --rate-mb "$rate_mb" --writing "$writing" --seconds "$secs" \
            --start-at "$start_at" --result "$dir/writer-$k.json" &
        wpids+=($!)
        started+=($!)
    done
    local mpid=""
    if [[ "$mode" != check ]]; then
        "$py" "$helper" measure --pid "$lf_pid" --start-at "$start_at" --skip "$skip" --seconds "$secs" \
            --data-dir "$dir/data" --layout "$dir/node/layout.json" --out "$dir/measure.json" &
        mpid=$!
        started+=("$mpid")
    fi
    if [[ "$mode" == perf ]]; then
        sleep_until "$(awk -v s="$start_at" -v k="$skip" 'BEGIN { printf "%.3f", s + k }')"
        perf record -q -e cpu-clock -F 999 -g -p "$lf_pid" -o "$dir/perf.data" -- sleep 10 > /dev/null 2> "$dir/perf.stderr" || true
    fi
    local p rc=0
    for p in "${wpids[@]}"; do wait "$p" || rc=$?; forget "$p"; done
    ((rc == 0)) || { echo "follow.sh: a writer failed ($rc)" >&2; exit 1; }
    if [[ -n "$mpid" ]]; then
        wait "$mpid" || { echo "follow.sh: measuring failed" >&2; exit 1; }
        forget "$mpid"
    fi
    # Drain: from the writers' scheduled end until the checkpoints cover every byte.
    local end_at
    end_at="$(awk -v s="$start_at" -v t="$secs" 'BEGIN { printf "%.3f", s + t }')"
    "$py" "$helper" wait --data-dir "$dir/data" --layout "$dir/node/layout.json" --pid "$lf_pid" --since "$end_at" \
        --timeout 300 --poll 0.1 --out "$dir/drain.json" > /dev/null || echo "follow.sh: WARNING: logferry did not catch up within 300 s" >&2
    stop_logferry "$lf_pid"
    local events
    events="$("$py" "$helper" stopped "$dir/logferry.stderr")"
    local count_json="{}"
    if [[ "$mode" == check ]]; then
        count_json="$("$py" "$helper" count --events "$dir/out.jsonl" --layout "$dir/node/layout.json" --writer-results "$dir"/writer-*.json || true)"
        [[ -n "$count_json" ]] || count_json='{"ok": false}'
    fi
    local perf_top=""
    if [[ "$mode" == perf && -s "$dir/perf.data" ]]; then
        perf report -i "$dir/perf.data" --no-children --sort symbol --stdio -g none --percent-limit 0.7 2> /dev/null \
            | grep -vE '^(#|$)' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -30 > "$dir/perf-symbols.txt" || true
        perf report -i "$dir/perf.data" --no-children --sort comm --stdio -g none 2> /dev/null \
            | grep -vE '^(#|$)' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -10 > "$dir/perf-threads.txt" || true
        perf report -i "$dir/perf.data" --children --sort symbol --stdio -g none --percent-limit 5 2> /dev/null \
            | grep -vE '^(#|$)' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -30 > "$dir/perf-children.txt" || true
        perf_top="$dir"
    fi
    "$py" - "$dir" "$work/results/$name.json" "$mode" "$events" "$lf_rc" "$(stderr_problems "$dir/logferry.stderr")" "$load" "$count_json" <<'PY'
import glob, json, os, sys
d, out, mode, events, rc, problems, load, count = sys.argv[1:]
ws = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, "writer-*.json")))]
for w in ws:
    w.pop("per_file", None)
m = json.load(open(os.path.join(d, "measure.json"))) if os.path.exists(os.path.join(d, "measure.json")) else {}
m.pop("samples", None)
drain = json.load(open(os.path.join(d, "drain.json"))) if os.path.exists(os.path.join(d, "drain.json")) else {}
wbytes = sum(w["bytes"] for w in ws)
welapsed = max(w["elapsed"] for w in ws)
r = {
    "mode": mode, "load": float(load), "exit": int(rc), "stderr_problems": int(problems),
    "writer_bytes": wbytes, "writer_lines": sum(w["lines"] for w in ws),
    "writer_mb_s": wbytes / 1e6 / welapsed, "writer_cpu_s": sum(w["cpu_s"] for w in ws),
    "writer_late_p99_ms": max(w["late_p99_ms"] for w in ws), "writer_late_max_ms": max(w["late_max_ms"] for w in ws),
    "events": int(events), "measure": m, "drain": drain, "count": json.loads(count),
}
json.dump(r, open(out, "w"))
lag = m.get("lag_bytes_max")
print("  %-8s writer %6.2f MB/s (p99 late %4.0f ms, %.1f CPU-s)  logferry CPU %s  VmHWM %s  max lag %s  drain %s  events %d / lines %d%s  exit %s  WARN/ERROR lines %s  load %s" % (
    os.path.basename(out)[:-5], r["writer_mb_s"], r["writer_late_p99_ms"], r["writer_cpu_s"],
    "%5.1f %% (per-s %.0f-%.0f)" % (m["cpu_pct"], m["cpu_pct_per_step_min"], m["cpu_pct_per_step_max"]) if m else "  n/a",
    "%5.1f MiB" % (max(m.get("vm_hwm_kib") or 0, drain.get("vm_hwm_kib") or 0) / 1024) if (m or drain) else "n/a",
    "%.1f MB" % (lag / 1e6) if lag is not None else "n/a",
    "%.1f s" % drain["elapsed_s"] if drain.get("done") else "NOT CAUGHT UP",
    r["events"], r["writer_lines"], "" if r["events"] == r["writer_lines"] else " MISMATCH",
    rc, problems, load))
if m:
    print("           threads, %% of a core: %s; context switches %.0f/s" % (
        ", ".join("%s %.1f" % kv for kv in m["threads_cpu_pct"].items()), m["ctxt_switches_per_s"]))
if mode == "check":
    print("           check: %s" % count)
PY
    if [[ "$mode" == check ]] && "$py" -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("ok") else 1)' "$count_json"; then
        rm -f "$dir/out.jsonl"
    fi
    rm -rf "$dir/node/var" # the written logs (rate x seconds of them); layout.json stays
    if [[ -n "$perf_top" ]]; then
        echo "  perf, threads:"; sed 's/^/    /' "$dir/perf-threads.txt"
        echo "  perf, self time by symbol:"; sed 's/^/    /' "$dir/perf-symbols.txt"
        echo "  perf, with children (>= 5 %):"; sed 's/^/    /' "$dir/perf-children.txt"
    fi
    if [[ "$(stderr_problems "$dir/logferry.stderr")" != 0 ]]; then
        echo "  logferry WARN/ERROR lines ($dir/logferry.stderr), the 5 most frequent:"
        "$py" "$helper" problems "$dir/logferry.stderr" --top 5 | sed 's/^/    /'
    fi
}

if has_phase busy; then
    echo "== busy: $files files (${writing/#0/all} written to), $rate_mb MB/s for $seconds s, CPU window $skip-$seconds s, $writers writer process(es)"
    for ((i = 1; i <= runs; i++)); do busy_run "busy-$i" measure "$seconds"; done
    echo
fi

if has_phase check; then
    echo "== check: the busy load for $check_seconds s, file sink, every event parsed and compared"
    busy_run check check "$check_seconds"
    echo
fi

if has_phase perf; then
    echo "== perf: one busy run with perf record -g for 10 s (not counted)"
    busy_run perf perf "$seconds"
    echo
fi

# ---------------------------------------------------------------- idle

if has_phase idle; then
    echo "== idle: $files files with 200 lines each, read at start, then $idle_seconds s without writes"
    for ((i = 1; i <= runs; i++)); do
        dir="$work/idle"
        rm -rf "$dir"
        mkdir -p "$dir/data"
        "$py" "$helper" layout "$dir/node" --files "$files" --prefill-lines 200 > /dev/null
        node_config "$dir" stdout
        load="$(cut -d' ' -f1 /proc/loadavg)"
        start_logferry "$dir/logferry.toml" "$dir/logferry.stderr"
        "$py" "$helper" wait --data-dir "$dir/data" --layout "$dir/node/layout.json" --timeout 120 --poll 0.2 > /dev/null \
            || { echo "follow.sh: logferry did not read the prefilled files" >&2; exit 1; }
        sleep 2
        "$py" "$helper" measure --pid "$lf_pid" --start-at "$(at_plus 0)" --skip 0 --seconds "$idle_seconds" --step 5 --out "$dir/measure.json"
        rss_now="$(awk '/^VmRSS/ { print $2 }' "/proc/$lf_pid/status")"
        stop_logferry "$lf_pid"
        events="$("$py" "$helper" stopped "$dir/logferry.stderr")"
        "$py" - "$dir" "$work/results/idle-$i.json" "$events" "$lf_rc" "$(stderr_problems "$dir/logferry.stderr")" "$load" "$rss_now" <<'PY'
import json, os, sys
d, out, events, rc, problems, load, rss = sys.argv[1:]
m = json.load(open(os.path.join(d, "measure.json")))
m.pop("samples", None)
lines = sum(e["lines"] for e in json.load(open(os.path.join(d, "node/layout.json")))["files"])
r = {"measure": m, "events": int(events), "lines": lines, "exit": int(rc), "stderr_problems": int(problems),
     "load": float(load), "rss_kib": int(rss)}
json.dump(r, open(out, "w"))
print("  %-8s CPU %.3f %% (%d ticks in %.0f s; per-5-s %.2f-%.2f %%)  VmRSS %.1f MiB  VmHWM %.1f MiB  events %d / lines %d%s  exit %s  WARN/ERROR lines %s  load %s" % (
    os.path.basename(out)[:-5], m["cpu_pct"], m["cpu_ticks"], m["window_s"], m["cpu_pct_per_step_min"], m["cpu_pct_per_step_max"],
    int(rss) / 1024, m["vm_hwm_kib"] / 1024, r["events"], lines, "" if r["events"] == lines else " MISMATCH", rc, problems, load))
PY
    done
    echo
fi

# ---------------------------------------------------------------- catch-up

if has_phase catchup; then
    for fmt in $catchup_formats; do
        echo "== catch-up: $fmt, $catchup_mb MB backlog in bench-data/$fmt-$catchup_mb"
        corpus="$(corpus "$fmt" "$catchup_mb")"
        bytes="$(json_get "$corpus/expected.json" total_bytes)"
        messages="$(json_get "$corpus/expected.json" messages)"
        dir="$work/catchup/$fmt"
        for ((i = 1; i <= runs; i++)); do
            rm -rf "$dir"
            mkdir -p "$dir/data"
            cat > "$dir/logferry.toml" <<TOML
data_dir = "$dir/data"
[tail]
include = ["$corpus/var/log/pods/*/*/*.log"]
roots = ["$corpus/var/log/pods"]
start_at = "beginning"
checkpoint_interval = "100ms"
$metrics_config
[sink]
type = "stdout"
TOML
            load="$(cut -d' ' -f1 /proc/loadavg)"
            since="$(now)"
            start_logferry "$dir/logferry.toml" "$dir/logferry.stderr"
            "$py" "$helper" wait --data-dir "$dir/data" --glob "$corpus/var/log/pods/*/*/*.log" --pid "$lf_pid" --since "$since" \
                --timeout 600 --poll 0.02 --settle 10 --out "$dir/wait.json" > /dev/null || echo "follow.sh: WARNING: catch-up did not finish" >&2
            stop_logferry "$lf_pid"
            events="$("$py" "$helper" stopped "$dir/logferry.stderr")"
            cp "$dir/logferry.stderr" "$work/results/catchup-$fmt-$i.stderr"
            "$py" - "$dir/wait.json" "$work/results/catchup-$fmt-run-$i.json" "$bytes" "$events" "$messages" "$lf_rc" "$(stderr_problems "$dir/logferry.stderr")" "$load" <<'PY'
import json, os, sys
w, out, nbytes, events, messages, rc, problems, load = sys.argv[1:]
r = json.load(open(w))
r.update(kind="run", corpus_bytes=int(nbytes), events=int(events), messages=int(messages), exit=int(rc),
         stderr_problems=int(problems), load=float(load))
json.dump(r, open(out, "w"))
mb = int(nbytes) / 1e6
quiet = r.get("quiet_s") is not None
cpu = r["quiet_cpu_s"] if quiet else r["cpu_s"]
print("  run     %d: checkpoints complete at %6.2f s (CPU %5.2f s); quiet at %s  %5.0f MB per CPU-s  %5.0f MB/s wall  VmHWM %5.1f MiB  events %d / %d%s  exit %s  WARN/ERROR %s  load %s" % (
    int(os.path.basename(out).rsplit("-", 1)[1][:-5]), r["elapsed_s"], r["cpu_s"],
    "%6.2f s (CPU %5.2f s)" % (r["quiet_s"], r["quiet_cpu_s"]) if quiet else "NEVER (busy 10 s later)",
    mb / max(cpu, 1e-9), mb / (r["quiet_s"] if quiet else r["elapsed_s"]), (r["vm_hwm_kib"] or 0) / 1024, r["events"], r["messages"],
    "" if r["events"] == r["messages"] and r["done"] else " MISMATCH", rc, problems, load))
PY
        done
        for mode in dry-run output; do
            for ((i = 1; i <= runs; i++)); do
                args=(replay -q "$corpus/var/log/pods")
                [[ "$mode" == dry-run ]] && args=(replay -q --dry-run "$corpus/var/log/pods")
                "$timer" -f '%U %S %e %M' -o "$dir.time" "$bin" "${args[@]}" > /dev/null 2> "$dir.replay.stderr" \
                    || { cat "$dir.replay.stderr" >&2; echo "follow.sh: replay failed" >&2; exit 1; }
                read -r user sys wall rss < <(tail -n 1 "$dir.time")
                "$py" - "$work/results/catchup-$fmt-$mode-$i.json" "$bytes" "$user" "$sys" "$wall" "$rss" "$mode" <<'PY'
import json, sys
out, nbytes, user, sys_, wall, rss, mode = sys.argv[1:]
r = {"kind": mode, "corpus_bytes": int(nbytes), "cpu_s": float(user) + float(sys_), "elapsed_s": float(wall), "vm_hwm_kib": int(rss)}
json.dump(r, open(out, "w"))
mb = int(nbytes) / 1e6
print("  %-7s %d: CPU %6.2f s  wall %6.2f s  %5.0f MB per CPU-s  %5.0f MB/s wall  peak RSS %5.1f MiB" % (
    mode, int(out.rsplit("-", 1)[1][:-5]), r["cpu_s"], r["elapsed_s"], mb / max(r["cpu_s"], 1e-9), mb / r["elapsed_s"], int(rss) / 1024))
PY
            done
        done
        echo
    done
fi

# ---------------------------------------------------------------- table

echo "== results"
echo
"$py" - "$work/results" <<'PY'
import glob, json, os, sys

d = sys.argv[1]
mach = json.load(open(os.path.join(d, "machine.json")))


def load(pattern):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, pattern)))]


def fmt_runs(vals, f="%.1f"):
    return " / ".join(f % v for v in vals)


def verdict(ok):
    return "ok" if ok else "**MISSED**"


rows = []
busy = load("busy-*.json")
if busy:
    cpus = [b["measure"]["cpu_pct"] for b in busy]
    hwm = [max(b["measure"].get("vm_hwm_kib") or 0, b["drain"].get("vm_hwm_kib") or 0) / 1024 for b in busy]
    best = busy[cpus.index(min(cpus))]
    rate = mach["rate_mb"]
    title = "Busy: %d files, %g MB/s, %g s" % (mach["files"], rate, mach["seconds"])
    rows.append((title, "logferry CPU, %% of one core (window %g–%g s)" % (mach["skip"], mach["seconds"]),
                 "**%.1f %%**" % min(cpus), fmt_runs(cpus), "≤ 25 %", verdict(min(cpus) <= 25)))
    rows.append(("", "logferry peak RSS (VmHWM), highest of the runs", "**%.1f MiB**" % max(hwm), fmt_runs(hwm), "≤ 48 MiB", verdict(max(hwm) <= 48)))
    wr = [b["writer_mb_s"] for b in busy]
    rows.append(("", "writer's achieved rate, MB/s (p99 write lateness, ms)", "%.2f" % min(wr),
                 " / ".join("%.2f (%.0f)" % (b["writer_mb_s"], b["writer_late_p99_ms"]) for b in busy), "%g" % rate,
                 verdict(min(wr) >= 0.98 * rate)))
    rows.append(("", "MB shipped per logferry CPU-second (rate ÷ CPU)", "%.0f" % (best["writer_mb_s"] / (best["measure"]["cpu_pct"] / 100)), "", "", ""))
    bm = best["measure"]
    rows.append(("", "best run: CPU by thread, % of a core; context switches per second",
                 "; ".join("%s %.1f" % kv for kv in bm["threads_cpu_pct"].items()) + "; %.0f/s" % bm["ctxt_switches_per_s"], "", "", ""))
    lag = [b["measure"]["lag_bytes_max"] / 1e6 for b in busy]
    rows.append(("", "max checkpoint lag during the load, MB (checkpoints saved every 200 ms, the default)", "%.1f" % min(lag), fmt_runs(lag), "", ""))
    drains = [b["drain"]["elapsed_s"] if b["drain"].get("done") else float("inf") for b in busy]
    kept = all(b["events"] == b["writer_lines"] and b["drain"].get("done") for b in busy)
    rows.append(("", "kept up: events (logferry's count) = lines written; drain after the writers stop", "%s" % ("yes" if kept else "NO"),
                 " / ".join("%d = %d, %.1f s" % (b["events"], b["writer_lines"], dr) for b, dr in zip(busy, drains)), "equal", verdict(kept)))
chk = load("check.json")
if chk:
    c = chk[0]
    cnt = c["count"]
    rows.append(("Check: the busy load, file sink, every event parsed",
                 "events = lines written, per pod, with message bytes and CRC-32 sums",
                 "yes" if cnt.get("ok") else "NO", "%s events of %s; %s files mismatched" % (cnt.get("events"), cnt.get("expected"), cnt.get("files_mismatched")),
                 "equal", verdict(cnt.get("ok"))))
idle = load("idle-*.json")
if idle:
    cpus = [i["measure"]["cpu_pct"] for i in idle]
    rows.append(("Idle: %d files, %g s, no writes" % (mach["files"], mach["idle_seconds"]), "logferry CPU, % of one core",
                 "**%.3f %%**" % min(cpus), fmt_runs(cpus, "%.3f"), "< 0.5 %", verdict(min(cpus) < 0.5)))
    rows.append(("", "VmRSS at the end / VmHWM, MiB (highest)", "%.1f / %.1f" % (max(i["rss_kib"] for i in idle) / 1024, max(i["measure"]["vm_hwm_kib"] for i in idle) / 1024), "", "", ""))
for fmt in ("cri", "docker"):
    runs = load("catchup-%s-run-*.json" % fmt)
    if not runs:
        continue
    mb = runs[0]["corpus_bytes"] / 1e6
    title = "Catch-up: %s, %.0f MB backlog" % (fmt, mb)
    quiet = all(r.get("quiet_s") is not None for r in runs)
    note = "" if quiet else " (never went quiet: CPU at checkpoints complete)"
    per_cpu = [mb / (r["quiet_cpu_s"] if quiet else r["cpu_s"]) for r in runs]
    walls = [mb / r["elapsed_s"] for r in runs]
    walls_quiet = [mb / r["quiet_s"] if r.get("quiet_s") else float("nan") for r in runs]
    ok = all(r["done"] and r["events"] == r["messages"] for r in runs)
    rows.append((title, "`logferry run`: MB per CPU-second, spawn to quiet%s" % note, "**%.0f**" % max(per_cpu), fmt_runs(per_cpu, "%.0f"), "", ""))
    rows.append(("", "`logferry run`: wall MB/s, spawn to quiet (to checkpoints complete)",
                 "%.0f (%.0f)" % (max(walls_quiet), max(walls)) if quiet else "n/a (%.0f)" % max(walls),
                 " / ".join("%.0f (%.0f)" % x for x in zip(walls_quiet, walls)), "", ""))
    rows.append(("", "`logferry run`: events = expected messages; peak RSS", "%s; %.1f MiB" % ("yes" if ok else "NO", max(r["vm_hwm_kib"] or 0 for r in runs) / 1024), "", "", verdict(ok)))
    for mode, label in (("dry-run", "`replay -q --dry-run`"), ("output", "`replay -q > /dev/null`")):
        rr = load("catchup-%s-%s-*.json" % (fmt, mode))
        if rr:
            pc = [mb / r["cpu_s"] for r in rr]
            wl = [mb / r["elapsed_s"] for r in rr]
            rows.append(("", "%s: MB per CPU-second; wall MB/s" % label, "%.0f; %.0f" % (max(pc), max(wl)), fmt_runs(pc, "%.0f"), "", ""))

print("Machine: %s CPUs (%s), %s, %s RAM, %s; %s. Binary: %s. Best of %d runs; CPU from /proc/PID/stat utime+stime, %% of one core." % (
    mach["nproc"], mach["cpu"], mach["kernel"], mach["memory"], mach["fs"], mach["rustc"], mach["binary"], mach["runs"]))
print()
print("| phase | measure | result | runs | target | |")
print("|---|---|---:|---|---|---|")
for r in rows:
    print("| %s |" % " | ".join(r))
PY
