#!/usr/bin/env python3
"""Live-node benchmark of `logferry run`: what following a few busy containers costs.

    python3 benches/live.py [--bin target/release/logferry] [--work bench-data/live]
        [--format cri|docker] [--pods 3] [--containers-per-pod 2] [--rate 2000]
        [--seconds 30] [--skip 5] [--idle-seconds 20] [--max-size 4Mi] [--json OUT]

A node as the issue describes it: tests/kubelet_sim.py writes --pods x
--containers-per-pod containers (6 by default) at --rate messages a second in total
(~2 MB/s with its mix: 60-300 B messages, every 50th 20-60 KiB and split by the
runtime), one write() per container every 50 ms, and rotates the live files the
kubelet's way at --max-size. logferry follows the kubelet links with every setting at
its default and a file sink (bench-data/live/out.jsonl).

Measured, over [--skip, --seconds] of the writing:
  * CPU: utime + stime of /proc/PID/stat, % of one core ("cpu_pct"); and the same
    from the threads' schedstat run times in ns ("cpu_pct_ns": not rounded to ticks);
  * wake-ups: voluntary context switches of all of logferry's threads
    (/proc/PID/task/*/status), per second, and per thread name;
  * latency: for every event, the time it appeared in the sink's file (a reader
    polling it every 10 ms) minus the runtime's timestamp in the line (taken when the
    runtime made the message, within one 50 ms tick of its write): median, p99, max.
Then, after the writers stop and the sink has every message, --idle-seconds of
nothing: CPU and wake-ups per second of an idle node. Every message must have arrived
(events in the sink = messages written); the script fails otherwise.

Prints one JSON object (also written to --json) and a short summary on stderr.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def runtimes(pid):
    """Time on a CPU per thread, in ns (/proc/PID/task/TID/schedstat): {tid: ns}."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[tid] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def wakeups(pid):
    """Voluntary context switches per thread: {tid: (name, count)}."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "comm") as f:
                name = f.read().strip()
            with open(base + "status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out[tid] = (name, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


class Window:
    """CPU and wake-ups of a process between start() and stop()."""

    def __init__(self, pid):
        self.pid = pid

    def start(self):
        self.t0, self.k0, self.w0, self.r0 = time.monotonic(), cpu_ticks(self.pid), wakeups(self.pid), runtimes(self.pid)

    def stop(self):
        t1, k1, w1, r1 = time.monotonic(), cpu_ticks(self.pid), wakeups(self.pid), runtimes(self.pid)
        span = t1 - self.t0
        by_name = {}
        for tid, (name, n) in w1.items():
            by_name[name] = by_name.get(name, 0) + n - self.w0.get(tid, (name, 0))[1]
        cpu_by_name = {}
        for tid, ns in r1.items():
            name = w1.get(tid, ("?", 0))[0]
            cpu_by_name[name] = cpu_by_name.get(name, 0) + ns - self.r0.get(tid, 0)
        # Threads that ended in the window still count what they did before.
        return {
            "seconds": round(span, 2),
            "cpu_pct": round(100.0 * (k1 - self.k0) / CLK_TCK / span, 2),
            # The same from the scheduler's nanosecond clock, for the threads alive
            # at the end (logferry's threads live as long as it does): finer than
            # clock ticks, which a 0.5 % load moves by a tick in twelve.
            "cpu_pct_ns": round(100.0 * sum(ns - self.r0.get(tid, 0) for tid, ns in r1.items()) / 1e9 / span, 3),
            "wakeups_per_s": round(sum(by_name.values()) / span, 1),
            "wakeups_per_s_by_thread": {n: round(v / span, 1) for n, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v},
            "cpu_pct_ns_by_thread": {n: round(100.0 * v / 1e9 / span, 3) for n, v in sorted(cpu_by_name.items(), key=lambda kv: -kv[1]) if v},
        }


def event_time(line):
    """The event's "time" as seconds since the epoch (float), or None."""
    at = line.find(b'"time":"')
    if at < 0:
        return None
    end = line.find(b'"', at + 8)
    text = line[at + 8:end].decode()
    # 2026-12-06T11:52:45.123456789Z: whole seconds + fraction.
    whole, _, frac = text.rstrip("Z").partition(".")
    secs = datetime.fromisoformat(whole + "+00:00").timestamp()
    return secs + (float("0." + frac) if frac else 0.0)


class SinkReader(threading.Thread):
    """Follows the file sink's output; records each event's latency."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stop_flag = path, False
        self.latencies, self.events, self.count_from = [], 0, None
        self.dump = None

    def run(self):
        while not os.path.exists(self.path) and not self.stop_flag:
            time.sleep(0.01)
        with open(self.path, "rb") as f:
            rest = b""
            while not self.stop_flag:
                chunk = f.read()
                if not chunk:
                    time.sleep(0.01)
                    continue
                now = time.time()
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    self.events += 1
                    if self.count_from is not None and now >= self.count_from:
                        t = event_time(line)
                        if t is not None:
                            self.latencies.append(now - t)
                            if self.dump:
                                self.dump.write("%.3f %.3f %s\n" % (t, now - t, line[line.rfind(b'"pod":"'):][:60].decode(errors="replace")))


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=os.path.join(REPO, "target/release/logferry"))
    p.add_argument("--work", default=os.path.join(REPO, "bench-data/live"))
    p.add_argument("--format", choices=["cri", "docker"], default="cri")
    p.add_argument("--pods", type=int, default=3)
    p.add_argument("--containers-per-pod", type=int, default=2)
    p.add_argument("--rate", type=float, default=2000, help="messages per second in total [2000]")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--skip", type=float, default=5)
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--max-size", default="4Mi")
    p.add_argument("--json")
    p.add_argument("--tail-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra [tail] setting, as TOML (e.g. busy_poll_interval=\"750ms\"); repeatable")
    p.add_argument("--dump-latency", metavar="FILE", help="every event's time, latency and pod, one per line")
    a = p.parse_args()

    work = os.path.abspath(a.work)
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work + "/data")
    # As on a node: the kubelet's directories exist before logferry starts.
    os.makedirs(work + "/node/var/log/containers")
    os.makedirs(work + "/node/var/log/pods")
    out = work + "/out.jsonl"
    config = work + "/logferry.toml"
    with open(config, "w") as f:
        f.write('data_dir = "%s/data"\n[metrics]\nlisten = "127.0.0.1:0"\n' % work)
        f.write('[tail]\ninclude = ["%s/node/var/log/containers/*.log"]\nroots = ["%s/node/var/log/pods"]\n' % (work, work))
        for option in a.tail_option:
            f.write(option + "\n")
        f.write('[sink]\ntype = "file"\npath = "%s"\n' % out)

    env = dict(os.environ)
    env.pop("CONTAINER_NAME", None)
    lf = subprocess.Popen([a.bin, "run", "--config", config], stdout=subprocess.DEVNULL,
                          stderr=open(work + "/logferry.stderr", "wb"), env=env)
    sim = None
    try:
        time.sleep(0.5)
        if lf.poll() is not None:
            sys.exit("live.py: logferry exited at start:\n" + open(work + "/logferry.stderr").read())
        reader = SinkReader(out)
        if a.dump_latency:
            reader.dump = open(a.dump_latency, "w")
        reader.start()
        sim = subprocess.Popen([sys.executable, os.path.join(REPO, "tests/kubelet_sim.py"), "--root", work + "/node",
                                "--format", a.format, "--pods", str(a.pods), "--containers-per-pod", str(a.containers_per_pod),
                                "--rate", str(a.rate), "--duration", str(a.seconds), "--max-size", a.max_size],
                               stderr=subprocess.PIPE)
        started = time.monotonic()
        time.sleep(a.skip)
        reader.count_from = time.time()
        busy = Window(lf.pid)
        busy.start()
        time.sleep(max(0.0, started + a.seconds - time.monotonic()))
        busy_result = busy.stop()
        reader.count_from = float("inf")
        _, sim_err = sim.communicate(timeout=120)
        if sim.returncode != 0:
            sys.exit("live.py: kubelet_sim failed:\n" + sim_err.decode())
        summary = json.loads(sim_err.decode().strip().splitlines()[-1])
        # Drain: every message in the sink (at most 30 s).
        deadline = time.monotonic() + 30
        while reader.events < summary["messages"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)
        idle = Window(lf.pid)
        idle.start()
        time.sleep(a.idle_seconds)
        idle_result = idle.stop()
        reader.stop_flag = True
        with open("/proc/%d/status" % lf.pid) as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    finally:
        for proc in (sim, lf):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        lf.wait(timeout=60)
    lat = reader.latencies
    result = {
        "binary": a.bin,
        "format": a.format,
        "containers": a.pods * a.containers_per_pod,
        "written_mb_per_s": summary["mb_per_s"],
        "messages": summary["messages"],
        "rotations": summary["rotations"],
        "events": reader.events,
        "busy": busy_result,
        "idle": idle_result,
        "latency_s": {
            "events": len(lat),
            "p50": round(percentile(lat, 50), 3) if lat else None,
            "p99": round(percentile(lat, 99), 3) if lat else None,
            "max": round(max(lat), 3) if lat else None,
        },
        "vm_hwm_kib": hwm,
    }
    text = json.dumps(result)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print("live: %s, %d containers, %.2f MB/s written, %d rotations: busy CPU %.2f %% of a core, %.0f wake-ups/s; "
          "idle CPU %.2f %%, %.1f wake-ups/s; latency p50 %.3f s, p99 %.3f s, max %.3f s; VmHWM %.1f MiB"
          % (a.format, result["containers"], summary["mb_per_s"], summary["rotations"], busy_result["cpu_pct"],
             busy_result["wakeups_per_s"], idle_result["cpu_pct"], idle_result["wakeups_per_s"],
             result["latency_s"]["p50"] or 0, result["latency_s"]["p99"] or 0, result["latency_s"]["max"] or 0,
             hwm / 1024), file=sys.stderr)
    print("  busy wake-ups by thread: %s" % busy_result["wakeups_per_s_by_thread"], file=sys.stderr)
    print("  idle wake-ups by thread: %s" % idle_result["wakeups_per_s_by_thread"], file=sys.stderr)
    print("  busy CPU %% of a core by thread: %s" % busy_result["cpu_pct_ns_by_thread"], file=sys.stderr)
    if reader.events != summary["messages"]:
        sys.exit("live.py: %d events in the sink, %d messages written" % (reader.events, summary["messages"]))


if __name__ == "__main__":
    main()
