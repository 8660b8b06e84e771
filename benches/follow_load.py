#!/usr/bin/env python3
"""Load generator and probes for benches/follow.sh (`logferry run` follow-mode benchmark).

Python 3.11, standard library only. Subcommands:

  layout   ROOT --files N [--prefill-lines K]
           Kubelet layout: ROOT/var/log/pods/<ns>_<pod>_<uid>/app/0.log and the links
           ROOT/var/log/containers/<pod>_<ns>_app-<64 hex>.log; writes ROOT/layout.json.
  write    ROOT --shard k --shards n --rate-mb R --seconds T --start-at EPOCH --result F
           Appends whole CRI lines (`<time> stdout|stderr F <msg>`, msg 100-400 bytes) to
           every k-th file of the layout, one write per file every --interval (0.1 s),
           files' phases spread evenly, so that all shards together write R MB/s
           (MB = 1e6 bytes). Lines come from a pre-generated buffer; each write is one
           os.write of a slice of whole lines to an O_APPEND descriptor kept open. Per file
           it counts lines, message bytes and a sum of CRC-32s of the messages (prefix sums
           over the buffer, so counting costs nothing per line).
  measure  --pid P --start-at EPOCH --skip S --seconds T --out F [--data-dir D --layout L]
           CPU of P (utime+stime from /proc/P/stat) over [start+S, start+T] as % of one
           core, per-second samples, VmRSS samples and VmHWM; with --data-dir, also how far
           the checkpoints are behind the files (bytes), once a second.
  wait     --data-dir D (--layout L | --glob G) --timeout S [--pid P --since EPOCH [--settle S]]
           Polls D/checkpoints.json until every file has a checkpoint at its size (file
           sizes are taken once: use it when nothing is writing). Reports the wall time
           since --since, P's CPU ticks at that moment and when P last used CPU; with
           --settle, then samples P's CPU until it is quiet (at most 1 tick in 0.3 s, for
           up to S s) and reports when P's work ended (the first sample within a tick of
           its final CPU time) and its CPU then: a disk buffer may still be shipping when
           the checkpoints are complete.
  count    --events FILE --layout L --writer-results R... [--prefill]
           Independent check of a file sink's output: per pod, the number of events, the
           message bytes and the CRC-32 sum must equal what the writers wrote.
  stopped  STDERR_FILE
           Prints the `events` of logferry's "stopped" log line (or -1); its log may be
           JSON lines or tracing's text format.
  problems STDERR_FILE [--top N]
           The number of WARN/ERROR lines in logferry's log, or the N most frequent.
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import glob
import json
import os
import random
import re
import signal
import sys
import time
import uuid
import zlib

CLK_TCK = os.sysconf("SC_CLK_TCK")
MASK64 = (1 << 64) - 1

WORDS = """request handler connection timeout retrying cache miss hit upstream backend session
token expired refreshed user account order payment invoice shipment queue consumer producer
partition offset commit rollback transaction deadlock lock acquired released worker pool
thread scheduler job completed failed started pending retry backoff circuit breaker endpoint
route resolved dns lookup tls handshake certificate verified socket closed reset peer gateway
proxy latency bytes received sent flushed buffer dropped metric counter gauge sample rate
limit exceeded quota tenant region zone node pod container image pulled config reloaded
feature flag enabled migration applied schema table index query rows returned inserted""".split()
MB_WORDS = ["café", "Zürich", "Straße", "日本", "処理中", "서울", "ошибка", "€42", "→", "✓", "🚀"]
LEVELS = ["INFO"] * 12 + ["DEBUG"] * 5 + ["WARN"] * 3 + ["ERROR"] * 2


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a writer never outlives the script that started it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        sys.exit("follow_load: parent already gone")


# --------------------------------------------------------------------------- lines


def make_message(rng: random.Random, n: int) -> str:
    """A message of about n bytes: plain text (70 %), JSON (25 %, needs escaping), non-ASCII (5 %)."""
    kind = rng.random()
    words: list[str] = []
    size = 0
    if 0.70 <= kind < 0.95:
        n = max(n - 110, 8)  # the JSON wrapper below adds about 110 bytes
    pool = WORDS if kind < 0.95 else WORDS + MB_WORDS * 3
    while size < n:
        w = rng.choice(pool)
        words.append(w)
        size += len(w.encode()) + 1
    text = " ".join(words)
    if 0.70 <= kind < 0.95:
        body = json.dumps({"level": rng.choice(LEVELS).lower(), "logger": "svc.http", "msg": text,
                           "trace_id": "%032x" % rng.getrandbits(128)}, separators=(",", ":"))
        return body
    msg = "%s %s" % (rng.choice(LEVELS), text)
    b = msg.encode()[:n]
    return b.decode("utf-8", "ignore").rstrip() or "x"


class Lines:
    """A buffer of whole CRI lines with prefix sums of line offsets, message bytes and CRCs."""

    def __init__(self, seed: int, target_bytes: int):
        rng = random.Random(seed)
        parts: list[bytes] = []
        off = [0]
        cm = [0]
        cc = [0]
        total = 0
        i = 0
        while total < target_bytes:
            msg = make_message(rng, rng.randint(100, 400)).encode()
            stream = "stderr" if rng.random() < 0.15 else "stdout"
            ts = "2026-11-21T10:%02d:%02d.%09dZ" % ((i // 60000) % 60, (i // 1000) % 60, (i % 1000) * 1000017)
            line = b"%s %s F %s\n" % (ts.encode(), stream.encode(), msg)
            parts.append(line)
            total += len(line)
            off.append(total)
            cm.append(cm[-1] + len(msg))
            cc.append(cc[-1] + zlib.crc32(msg))
            i += 1
        self.buf = b"".join(parts)
        self.mv = memoryview(self.buf)
        self.off = off
        self.cm = cm
        self.cc = cc
        self.n = i

    def take(self, a: int, want: float) -> tuple[int, int]:
        """From line a, the end line b of the shortest run of whole lines of >= want bytes."""
        if self.off[a] + want > self.off[self.n]:
            a = 0
        b = bisect.bisect_left(self.off, self.off[a] + want, lo=a)
        return a, max(b, a + 1)


# --------------------------------------------------------------------------- layout


def cmd_layout(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    root = os.path.abspath(args.root)
    pods_dir = os.path.join(root, "var/log/pods")
    links_dir = os.path.join(root, "var/log/containers")
    os.makedirs(pods_dir, exist_ok=True)
    os.makedirs(links_dir, exist_ok=True)
    lines = Lines(args.seed + 1000, max(args.prefill_lines * 450, 1 << 16)) if args.prefill_lines else None
    files = []
    for i in range(args.files):
        ns = "load-ns-%d" % (i % 8)
        pod = "load-%04d-%s" % (i, "%05x" % rng.getrandbits(20))
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        d = os.path.join(pods_dir, "%s_%s_%s" % (ns, pod, uid), "app")
        os.makedirs(d, exist_ok=True)
        live = os.path.join(d, "0.log")
        link = os.path.join(links_dir, "%s_%s_app-%064x.log" % (pod, ns, rng.getrandbits(256)))
        entry = {"path": live, "link": link, "ns": ns, "pod": pod, "lines": 0, "msg_bytes": 0, "crc": 0, "bytes": 0}
        with open(live, "wb") as f:
            if lines:
                a = rng.randrange(lines.n - args.prefill_lines) if lines.n > args.prefill_lines else 0
                b = min(a + args.prefill_lines, lines.n)
                f.write(lines.mv[lines.off[a]:lines.off[b]])
                entry.update(lines=b - a, msg_bytes=lines.cm[b] - lines.cm[a],
                             crc=(lines.cc[b] - lines.cc[a]) & MASK64, bytes=lines.off[b] - lines.off[a])
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(live, link)
        files.append(entry)
    with open(os.path.join(root, "layout.json"), "w") as f:
        json.dump({"root": root, "files": files}, f)
    print("layout: %d files under %s, %d prefilled lines" % (len(files), root, sum(e["lines"] for e in files)))


def load_layout(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------- writer


def cmd_write(args: argparse.Namespace) -> None:
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    lay = load_layout(os.path.join(args.root, "layout.json"))
    # With --writing W only the first W files are written to (a node where most
    # containers are quiet); the rate is shared among them.
    nfiles = min(args.writing or len(lay["files"]), len(lay["files"]))
    mine = [(g, e) for g, e in enumerate(lay["files"][:nfiles]) if g % args.shards == args.shard]
    per_write = args.rate_mb * 1e6 / nfiles * args.interval
    lines = Lines(args.seed, max(16 << 20, int(per_write * 4)))
    rng = random.Random(args.seed * 7919 + args.shard)
    # (phase, fd, line index, carry, path, counters)
    slots = []
    for g, e in mine:
        fd = os.open(e["path"], os.O_WRONLY | os.O_APPEND)
        slots.append([g / nfiles * args.interval, fd, rng.randrange(lines.n), 0.0, e["path"], [0, 0, 0, 0]])
    slots.sort(key=lambda s: s[0])
    off, cm, cc, mv = lines.off, lines.cm, lines.cc, lines.mv
    if not -5 < args.start_at - time.time() < 60:
        sys.exit("follow_load write: --start-at %.3f is not within a minute from now" % args.start_at)
    t0 = time.monotonic() + (args.start_at - time.time())
    end = t0 + args.seconds
    now = time.monotonic()
    if now < t0:
        time.sleep(t0 - now)
    cpu0 = os.times()
    wall_first = time.time()
    lates: list[float] = []
    total = writes = nlines = 0
    cycle = 0
    stop = False
    while not stop:
        base = t0 + cycle * args.interval
        for s in slots:
            due = base + s[0]
            if due >= end:
                stop = True
                break
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                lates.append(now - due)
            a, b = lines.take(s[2], per_write + s[3])
            n = os.write(s[1], mv[off[a]:off[b]])
            if n != off[b] - off[a]:
                sys.exit("follow_load: short write to %s" % s[4])
            s[3] += per_write - n
            s[2] = b
            c = s[5]
            c[0] += b - a
            c[1] += cm[b] - cm[a]
            c[2] += cc[b] - cc[a]
            c[3] += n
            total += n
            nlines += b - a
            writes += 1
        cycle += 1
    t_last = time.monotonic()
    cpu1 = os.times()
    for s in slots:
        os.close(s[1])
    lates.sort()
    result = {
        "shard": args.shard,
        "files": len(slots),
        "bytes": total,
        "lines": nlines,
        "writes": writes,
        "start": wall_first,
        "elapsed": t_last - t0,
        "mb_per_s": total / 1e6 / max(t_last - t0, 1e-9),
        "late_writes": len(lates),
        "late_p99_ms": 1000 * lates[int(len(lates) * 0.99)] if lates else 0.0,
        "late_max_ms": 1000 * lates[-1] if lates else 0.0,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "per_file": {s[4]: [s[5][0], s[5][1], s[5][2] & MASK64, s[5][3]] for s in slots},
    }
    with open(args.result + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(args.result + ".tmp", args.result)


# --------------------------------------------------------------------------- probes


def proc_ticks(pid: int) -> int | None:
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def proc_status(pid: int, key: str) -> int | None:
    """A /proc/PID/status value in KiB (VmRSS, VmHWM)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def thread_stats(pid: int) -> dict[int, tuple[str, int, int]]:
    """Per thread: (name, utime+stime ticks, voluntary + involuntary context switches)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return out
    for tid in tids:
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "stat") as f:
                head, rest = f.read().rsplit(")", 1)
            fields = rest.split()
            switches = 0
            with open(base + "status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        switches += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        out[int(tid)] = (head.split("(", 1)[1], int(fields[11]) + int(fields[12]), switches)
    return out


def read_checkpoints(data_dir: str) -> dict[str, int]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import checkpoints
    return checkpoints.offsets(data_dir)


def files_of(args: argparse.Namespace) -> list[str]:
    if getattr(args, "layout", None):
        return [os.path.realpath(e["path"]) for e in load_layout(args.layout)["files"]]
    return sorted(os.path.realpath(p) for p in glob.glob(args.glob))


def cmd_measure(args: argparse.Namespace) -> None:
    t0 = time.monotonic() + (args.start_at - time.time())
    files = files_of(args) if args.layout else []

    def sleep_until(t: float) -> None:
        d = t - time.monotonic()
        if d > 0:
            time.sleep(d)

    samples = []  # (t rel start, ticks, rss KiB, lag bytes)
    threads_first = threads_last = None
    t = args.skip
    while t <= args.seconds + 1e-9:
        sleep_until(t0 + t)
        now = time.monotonic()
        threads = thread_stats(args.pid)
        threads_first = threads_first or threads
        threads_last = threads
        ticks = proc_ticks(args.pid)
        rss = proc_status(args.pid, "VmRSS")
        if ticks is None:
            break
        lag = None
        if files and args.data_dir:
            ck = read_checkpoints(args.data_dir)
            size = 0
            for p in files:
                try:
                    size += os.stat(p).st_size
                except FileNotFoundError:
                    pass
            lag = size - sum(ck.get(p, 0) for p in files)
        samples.append((now - t0, ticks, rss, lag))
        t += args.step
    if len(samples) < 2:
        sys.exit("follow_load measure: pid %d gone before the window ended" % args.pid)
    per_sec = []
    for (ta, ka, _, _), (tb, kb, _, _) in zip(samples, samples[1:]):
        per_sec.append(100.0 * (kb - ka) / CLK_TCK / (tb - ta))
    span = samples[-1][0] - samples[0][0]
    ticks = samples[-1][1] - samples[0][1]
    lags = [s[3] for s in samples if s[3] is not None]
    by_name: dict[str, list[float]] = {}
    switches = 0
    for tid, (name, k, sw) in (threads_last or {}).items():
        k0, sw0 = threads_first.get(tid, (name, 0, 0))[1:]
        agg = by_name.setdefault(name, [0.0, 0])
        agg[0] += 100.0 * (k - k0) / CLK_TCK / span
        agg[1] += sw - sw0
        switches += sw - sw0
    out = {
        "threads_cpu_pct": {n: round(v[0], 2) for n, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])},
        "ctxt_switches_per_s": switches / span,
        "window_s": span,
        "cpu_ticks": ticks,
        "cpu_pct": 100.0 * ticks / CLK_TCK / span,
        "cpu_pct_per_step_min": min(per_sec),
        "cpu_pct_per_step_max": max(per_sec),
        "rss_kib_max_sampled": max(s[2] or 0 for s in samples),
        "vm_hwm_kib": proc_status(args.pid, "VmHWM"),
        "lag_bytes_max": max(lags) if lags else None,
        "lag_bytes_last": lags[-1] if lags else None,
        "samples": samples,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


def cmd_wait(args: argparse.Namespace) -> None:
    files = files_of(args)
    if not files:
        sys.exit("follow_load wait: no files")
    sizes = {p: os.stat(p).st_size for p in files}
    deadline = time.monotonic() + args.timeout
    since_mono = time.monotonic() + ((args.since or time.time()) - time.time())
    last_ticks = proc_ticks(args.pid) if args.pid else None
    last_change = time.monotonic()
    hist = [(last_change, last_ticks)] if last_ticks is not None else []  # (time, P's ticks) at every poll
    done = False
    behind = None
    while True:
        now = time.monotonic()
        if args.pid:
            t = proc_ticks(args.pid)
            if t is None:
                break
            hist.append((now, t))
            if t != last_ticks:
                last_ticks, last_change = t, now
        ck = read_checkpoints(args.data_dir)
        behind = sum(max(sizes[p] - ck.get(p, -1), 0) if p in ck else sizes[p] + 1 for p in files)
        if behind == 0:
            done = True
            break
        if now > deadline:
            break
        time.sleep(args.poll)
    # Checkpoints may cover data before the sink has shipped it (a disk buffer between
    # them), or be saved a while after the reading ended: go on sampling P's CPU until
    # it is quiet (at most 1 tick in --quiet-window); the end of its work is then the
    # first sample within 1 tick of its final CPU time.
    quiet_s = quiet_ticks = None
    if done and args.pid and args.settle > 0:
        settle_end = time.monotonic() + args.settle
        while True:
            time.sleep(args.poll)
            t = time.monotonic()
            k = proc_ticks(args.pid)
            if k is None:
                break
            hist.append((t, k))
            before = [h for h in hist if h[0] <= t - args.quiet_window]
            if before and k - before[-1][1] <= 1:
                end = next(h for h in hist if h[1] >= k - 1)
                quiet_s, quiet_ticks = end[0] - since_mono, k
                break
            if t > settle_end:
                break
    out = {
        "done": done,
        "quiet_s": quiet_s,
        "quiet_cpu_s": quiet_ticks / CLK_TCK if quiet_ticks is not None else None,
        "behind_bytes": behind,
        "files": len(files),
        "bytes": sum(sizes.values()),
        "elapsed_s": now - since_mono,
        "cpu_ticks": last_ticks,
        "cpu_s": (last_ticks or 0) / CLK_TCK,
        "last_cpu_s": last_change - since_mono,
        "vm_hwm_kib": proc_status(args.pid, "VmHWM") if args.pid else None,
    }
    text = json.dumps(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    sys.exit(0 if done else 1)


def cmd_count(args: argparse.Namespace) -> None:
    lay = load_layout(args.layout)
    want: dict[str, list[int]] = {}
    by_pod = {e["pod"]: e["path"] for e in lay["files"]}
    for e in lay["files"]:
        want[e["path"]] = [e["lines"], e["msg_bytes"], e["crc"]] if args.prefill else [0, 0, 0]
    for r in args.writer_results:
        with open(r) as f:
            res = json.load(f)
        for p, (n, mb, crc, _b) in res["per_file"].items():
            w = want[p]
            w[0] += n
            w[1] += mb
            w[2] = (w[2] + crc) & MASK64
    got: dict[str, list[int]] = {p: [0, 0, 0] for p in want}
    bad_lines = 0
    unknown = 0
    with open(args.events, "rb") as f:
        for line in f:
            try:
                ev = json.loads(line)
                pod = ev["kubernetes"]["pod"]
                msg = ev["message"].encode()
            except (ValueError, KeyError, TypeError):
                bad_lines += 1
                continue
            p = by_pod.get(pod)
            if p is None:
                unknown += 1
                continue
            g = got[p]
            g[0] += 1
            g[1] += len(msg)
            g[2] += zlib.crc32(msg)
    mismatched = []
    for p, w in want.items():
        g = got[p]
        g[2] &= MASK64
        if g != w:
            mismatched.append((p, w, g))
    out = {
        "events": sum(g[0] for g in got.values()),
        "expected": sum(w[0] for w in want.values()),
        "message_bytes": sum(g[1] for g in got.values()),
        "expected_message_bytes": sum(w[1] for w in want.values()),
        "files_mismatched": len(mismatched),
        "bad_lines": bad_lines,
        "unknown_pods": unknown,
        "examples": mismatched[:3],
        "ok": not mismatched and bad_lines == 0 and unknown == 0,
    }
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


def log_records(path: str):
    """logferry's own log lines as (level, message, fields): JSON lines or tracing's text."""
    try:
        f = open(path, errors="replace")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    yield "", line, {}
                    continue
                fields = rec.get("fields", rec)
                yield str(rec.get("level", "")).upper(), str(fields.get("message", rec.get("message", ""))), fields
            else:
                m = re.match(r"\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(\S+?):\s+(.*)$", line)
                if not m:
                    yield "", line, {}
                    continue
                text = m.group(3)
                fields = {k: v for k, v in re.findall(r"(\w+)=(\S+)", text)}
                yield m.group(1), text, fields


def cmd_stopped(args: argparse.Namespace) -> None:
    events = -1
    for _level, message, fields in log_records(args.stderr):
        if message == "stopped" or message.startswith("stopped "):
            try:
                events = int(fields.get("events", -1))
            except ValueError:
                pass
    print(events)


def cmd_problems(args: argparse.Namespace) -> None:
    """WARN and ERROR lines of logferry's log: the count, then the most frequent messages."""
    counts: dict[str, int] = {}
    for level, message, _fields in log_records(args.stderr):
        if level in ("WARN", "ERROR"):
            key = "%s %s" % (level, message[:200])
            counts[key] = counts.get(key, 0) + 1
    if args.top:
        for key, n in sorted(counts.items(), key=lambda kv: -kv[1])[: args.top]:
            print("%7d  %s" % (n, key))
    else:
        print(sum(counts.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("layout")
    p.add_argument("root")
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--prefill-lines", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_layout)

    p = sub.add_parser("write")
    p.add_argument("root")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--rate-mb", type=float, default=50)
    p.add_argument("--writing", type=int, default=0, help="write only the first N files (0: all)")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--start-at", type=float, default=None)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--result", required=True)
    p.set_defaults(fn=cmd_write)

    p = sub.add_parser("measure")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--skip", type=float, default=5)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--step", type=float, default=1.0)
    p.add_argument("--data-dir")
    p.add_argument("--layout")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_measure)

    p = sub.add_parser("wait")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--layout")
    p.add_argument("--glob")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--poll", type=float, default=0.02)
    p.add_argument("--pid", type=int)
    p.add_argument("--since", type=float)
    p.add_argument("--settle", type=float, default=0, help="after done, wait up to this long for --pid to go quiet")
    p.add_argument("--quiet-window", type=float, default=0.3)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_wait)

    p = sub.add_parser("count")
    p.add_argument("--events", required=True)
    p.add_argument("--layout", required=True)
    p.add_argument("--writer-results", nargs="*", default=[])
    p.add_argument("--prefill", action="store_true", help="the prefilled lines are expected too")
    p.set_defaults(fn=cmd_count)

    p = sub.add_parser("stopped")
    p.add_argument("stderr")
    p.set_defaults(fn=cmd_stopped)

    p = sub.add_parser("problems")
    p.add_argument("stderr")
    p.add_argument("--top", type=int, default=0, help="list the N most frequent instead of counting")
    p.set_defaults(fn=cmd_problems)

    args = ap.parse_args()
    if args.cmd == "write" and args.start_at is None:
        args.start_at = time.time() + 0.5
    args.fn(args)


if __name__ == "__main__":
    main()
