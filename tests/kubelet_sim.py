#!/usr/bin/env python3
"""kubelet + container-runtime simulator for logferry integration tests.

Writes container log files into a fake node root the way containerd (CRI format) or
Docker (json-file format) and the kubelet do, while a follower (logferry) tails them, and
records the ground truth: every logical message written, in write order, so a test can
check that each one arrived exactly once.

    python3 tests/kubelet_sim.py --root DIR --format cri|docker --pods P \
        --containers-per-pod C --rate LINES_PER_SEC --duration SECONDS [--seed S]
        [--max-size BYTES] [--max-files N] [--rotate-check SECONDS]
        [--restart-every SECONDS] [--delete-pod-after SECONDS] [--delete-grace SECONDS]
        [--long-every N] [--truth FILE] ...      (see --help)

Layout (DIR is the node's "/"):
    DIR/var/log/pods/<ns>_<pod>_<uid>/<container>/<restartCount>.log
    DIR/var/log/pods/<ns>_<pod>_<uid>/<container>/<restartCount>.log.<YYYYMMDD-hhmmss>[.gz]
    DIR/var/log/containers/<pod>_<ns>_<container>-<64 hex id>.log -> absolute path of
        the live <restartCount>.log

The runtime.  Each tick (--batch-ms, 50 ms) every running container gets its share of
--rate messages and writes them with ONE write() of whole lines (no userspace buffering,
so a follower sees them at once).  A message is `<pod>/<container>/<restart> seq=<n> `
plus 60-300 bytes of padding (non-ASCII, quotes, backslashes, tabs, <>&, ESC ...); every
--long-every-th one is 20-60 KiB and gets split by the runtime:
  * cri (containerd): `<time> <stream> <P|F> <bytes>\\n`, cut every 16384 bytes exactly
    (a UTF-8 character may straddle two pieces); P on all but the last piece.  Like
    containerd (`length > maxLen`), a message of exactly k*16384 bytes ends in a full
    16384-byte F piece, never an empty one.  Time: 9 fraction digits + Z by default,
    `--cri-time trimmed` gives containerd's real time.RFC3339Nano (zeros trimmed).
  * docker (json-file): `{"log":"..","stream":"..","time":".."}\\n`, message+"\\n" cut in
    pieces of <= 16384 bytes at character boundaries; only the last piece's log ends in
    \\n.  Escaping is moby's jsonlog.ffjsonWriteJSONBytesAsString byte for byte: \\" \\\\
    \\n \\r, every other control (tab too) as \\u00XX, < > & as \\u003c \\u003e \\u0026,
    U+2028/U+2029 as \\u2028/\\u2029, everything else raw UTF-8.  Time is Go's
    time.RFC3339Nano in UTC (fraction zeros trimmed, dropped when zero).
Pieces of one long message sometimes go out in different ticks (so a rotation can fall
between them), and sometimes a short message on the other stream is written between two
pieces (interleaving).

The kubelet (pkg/kubelet/logs/container_log_manager.go) runs in its own thread, so the
runtime keeps writing while it works.  Every --rotate-check seconds (measured from the end
of the previous check) and at once on SIGUSR1, for each running container whose live
N.log is >= --max-size: glob N.log.*, remove unused files (*.tmp, plain files whose .gz
exists), remove the oldest so that at most max-files-2 rotated files remain, gzip every
remaining plain rotated file (X -> X.tmp, rename to X.gz, unlink X: the kubelet's own
names; the brief's "X.gz.tmp" is not what the kubelet does), rename N.log to
N.log.<UTC YYYYMMDD-hhmmss> (bumped by a second when needed so names stay unique and sort
in rotation order), then ReopenContainerLog.  Until then the runtime's fd still points at
the renamed file; with --late-write-prob (0.5) the reopen comes 1-2 ticks late, so the
runtime's next batch lands in the renamed file.  If the container exited meanwhile the
reopen "fails" and the file is renamed back, as the kubelet does.  Afterwards the newest
rotated file is plain and all older ones are .gz, at most --max-files files per N.

Restarts (--restart-every S): every S s a random running container gets a new container
ID and writes <n+1>.log from then on; its old files stay; the new symlink is created and
the old one removed.  Pod deletion (--delete-pod-after S): every S s (--delete-count
times, default once) a random pod stops writing; --delete-grace s later its symlinks and
its whole pod directory are removed.

Ground truth (--truth, default DIR/truth.jsonl): one JSON object per message, written
when its last piece is written (so in the order a follower completes them) and flushed
every tick: {"container_path": "<abs pod dir>/<container>", "restart": n,
"stream": "stdout"|"stderr", "message": "<text, no newline>"}.
Message content is deterministic for a given --seed (per container and restart); what
lands in which file and the timestamps depend on timing.

Stops after --duration s (0: run until signalled) or on SIGTERM/SIGINT: it finishes the
current tick (and any rotation in progress), writes the rest of any half-written long
message, waits for pending pod deletions (a second signal skips that), and prints one
JSON summary line on stderr; exit status 0 (1 if the kubelet thread failed).  Handlers
are installed first thing, but a signal sent before the interpreter is up kills it: wait
for the truth file, which is created once every log file and symlink exists.
If the rate asked for is more than the simulator can write, it writes what it can (see
messages_per_s in the summary) and still stops on time.
"""

import argparse
import bisect
import collections
import datetime as dt
import glob
import gzip
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid

SPLIT = 16384  # containerd max_container_log_line_size, docker copier bufSize
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"  # kubelet rotated-log suffix (UTC here)
LOG_MODE = 0o640  # containerd/dockerd open log files with 0640

STDERR_SHARE = 0.15
INTERLEAVE_PROB = 0.3  # long message gets a short other-stream message between pieces
SPREAD_PROB = 0.4  # long message pieces go out over several ticks
MAX_BACKLOG = 256  # above this many queued lines a container writes straight through

# --- message content ------------------------------------------------------------------

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua request handled status=200 latency_ms=12 "
    "user_id=42 GET POST /api/v1/orders cache miss retrying connection upstream timeout "
    "INFO WARN ERROR DEBUG trace_id=4bf92f3577b34da6 span=00f067aa0ba902b7"
).split() + [
    "café", "naïve", "Grüße", "façade", "ñandú", "Ωmega", "straße", "ünïcödé",
    "日本", "日本語", "東京都", "ログ", "한국어", "中文字符",
    "😀", "🚀", "👍🏽", "🇫🇷", "∑x²", "→", "…",
    'say "hi"', '"quoted"', "C:\\path\\to\\file", "back\\slash", "a<b>c", "<html>",
    "&amp;", "x=1&y=2", "tab\there", "\t", '{"k":"v","n":[1,2]}',
    "\x1b[31mred\x1b[0m", "bell\x07", "nul\x00byte", "del\x7f", "\x01ctl",
]


class Corpus:
    """A fixed pseudo-random text; padding is a slice of it with a byte budget."""

    def __init__(self, seed):
        rng = random.Random(f"corpus:{seed}")
        weights = [8 if w.isascii() and w.isprintable() else 1 for w in WORDS]
        parts = []
        nchars = 0
        while nchars < 220_000:
            w = rng.choices(WORDS, weights, k=64)
            s = " ".join(w) + " "
            parts.append(s)
            nchars += len(s)
        self.text = "".join(parts)
        # cum[i] = UTF-8 byte offset of character i
        self.cum = [0] + list(itertools.accumulate(len(c.encode()) for c in self.text))
        self.max_start = len(self.text) - 80_000  # >= 80 000 bytes always follow a start

    def take(self, rng, nbytes):
        start = rng.randrange(self.max_start)
        end = bisect.bisect_right(self.cum, self.cum[start] + nbytes) - 1
        return self.text[start:end]


# --- line formats ---------------------------------------------------------------------

_ESC = {c: "\\u%04x" % c for c in range(0x20)}
_ESC.update({ord("\n"): "\\n", ord("\r"): "\\r", ord('"'): '\\"', ord("\\"): "\\\\",
             ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
             0x2028: "\\u2028", 0x2029: "\\u2029"})


_json_str = json.encoder.encode_basestring_ascii  # C; same output as json.dumps(str)

_PLACEHOLDERS = {"\t": "\ue000", "\b": "\ue001", "\f": "\ue002"}
_encode_basestring = json.encoder.encode_basestring  # C; escapes " \\ and controls


def docker_escape(s):
    """moby jsonlog.ffjsonWriteJSONBytesAsString for valid UTF-8 input (no quotes).

    Fast path: the C JSON encoder, then moby's differences fixed up (it writes tab, BS
    and FF as \\u00XX, not \\t \\b \\f, and also escapes < > & U+2028 U+2029)."""
    if "\ue000" in s or "\ue001" in s or "\ue002" in s:
        return s.translate(_ESC)  # placeholder clash: slow exact path
    for c, ph in _PLACEHOLDERS.items():
        if c in s:
            s = s.replace(c, ph)
    e = _encode_basestring(s)[1:-1]
    for c, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                   ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
                   ("\ue000", "\\u0009"), ("\ue001", "\\u0008"), ("\ue002", "\\u000c")):
        if c in e:
            e = e.replace(c, rep)
    return e


class Clock:
    """Wall-clock timestamps, formatted with a per-second cache."""

    def __init__(self, style):
        self.style = style  # "fixed9" | "trimmed"
        self.sec = None
        self.prefix = ""

    def now(self):
        ns = time.time_ns()
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self.sec:
            self.sec = sec
            self.prefix = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S")
        if self.style == "fixed9":
            return "%s.%09dZ" % (self.prefix, frac)
        if frac == 0:
            return self.prefix + "Z"
        return ("%s.%09d" % (self.prefix, frac)).rstrip("0") + "Z"


def split_cri(msg):
    b = msg.encode()
    if not b:
        return [b""]
    return [b[i:i + SPLIT] for i in range(0, len(b), SPLIT)]


def split_docker(msg):
    """message+"\\n" in pieces of <= SPLIT bytes cut at character boundaries, as str."""
    b = msg.encode() + b"\n"
    out = []
    pos = 0
    while pos < len(b):
        end = min(pos + SPLIT, len(b))
        if end < len(b):
            while b[end] & 0xC0 == 0x80:
                end -= 1
        out.append(b[pos:end].decode())
        pos = end
    return out


# --- the node -------------------------------------------------------------------------

NAMESPACES = ["default", "kube-system", "payments", "team-a", "monitoring"]
APPS = ["web", "api", "worker", "nginx", "redis", "cart", "auth", "search", "billing",
        "ingest", "frontend", "coredns"]
CONTAINERS = ["app", "sidecar", "istio-proxy", "log-agent", "metrics", "envoy"]
ALNUM = "bcdfghjklmnpqrstvwxz2456789"


class Instance:
    """One run of a container (one restartCount): its N.log and the runtime's fd."""

    def __init__(self, sim, ctr, restart):
        self.sim = sim
        self.ctr = ctr
        self.restart = restart
        pod = ctr.pod
        self.cid = hashlib.sha256(
            f"{sim.seed}/{pod.ns}/{pod.name}/{ctr.name}/{restart}".encode()).hexdigest()
        self.path = os.path.join(ctr.dir, f"{restart}.log")
        self.link = os.path.join(sim.containers_dir,
                                 f"{pod.name}_{pod.ns}_{ctr.name}-{self.cid}.log")
        self.rng = random.Random(f"msg:{sim.seed}:{pod.ns}/{pod.name}/{ctr.name}/{restart}")
        self.label = f"{pod.name}/{ctr.name}/{restart}"
        self.seq = 0
        self.queue = collections.deque()  # (line-maker args..., truth, yield_after)
        self.last_rot = 0  # kubelet thread only
        self.lock = threading.Lock()  # the runtime's: guards fd (write vs reopen), running
        self.fd = None
        self.running = False

    # runtime side
    def open(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Container:
    def __init__(self, pod, name):
        self.pod = pod
        self.name = name
        self.dir = os.path.join(pod.dir, name)
        self.cur = None


class Pod:
    def __init__(self, sim, ns, name, uid):
        self.ns = ns
        self.name = name
        self.uid = uid
        self.dir = os.path.join(sim.pods_dir, f"{ns}_{name}_{uid}")
        self.containers = []
        self.state = "running"  # running | stopped | deleted
        self.delete_at = None


class Sim:
    def __init__(self, a, flags):
        self.a = a
        self.flags = flags
        self.seed = a.seed
        self.root = os.path.abspath(a.root)
        self.pods_dir = os.path.join(self.root, "var", "log", "pods")
        self.containers_dir = os.path.join(self.root, "var", "log", "containers")
        self.cri = a.format == "cri"
        self.clock = Clock(a.cri_time if self.cri else "trimmed")
        self.corpus = Corpus(a.seed)
        self.sched = random.Random()  # timing-related choices: not part of the content
        self.sched.seed(f"sched:{a.seed}")
        self.rng_k = random.Random(f"kubelet:{a.seed}")
        self.stats = collections.Counter()  # main thread (runtime, restarts, deletion)
        self.kstats = collections.Counter()  # kubelet rotation thread
        self.kubelet_mutex = threading.Lock()  # containerLogManager.mutex
        self.kubelet_stop = False
        self.kubelet_error = None
        self.truth_buf = []
        self.pods = []

    # -- setup --------------------------------------------------------------------------

    def setup(self):
        os.makedirs(self.pods_dir, exist_ok=True)
        os.makedirs(self.containers_dir, exist_ok=True)
        rng = random.Random(f"node:{self.seed}")
        names = set()
        for i in range(self.a.pods):
            while True:
                app = rng.choice(APPS)
                rs = "".join(rng.choice(ALNUM) for _ in range(10))
                sfx = "".join(rng.choice(ALNUM) for _ in range(5))
                name = f"{app}-{rs}-{sfx}"
                if name not in names:
                    names.add(name)
                    break
            ns = NAMESPACES[i % len(NAMESPACES)] if i else "default"
            uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            pod = Pod(self, ns, name, uid)
            if os.path.exists(pod.dir):
                sys.exit(f"kubelet_sim: {pod.dir} exists already; use a fresh --root or seed")
            for j in range(self.a.containers_per_pod):
                cname = CONTAINERS[j] if j < len(CONTAINERS) else f"c{j}"
                pod.containers.append(Container(pod, cname))
            self.pods.append(pod)
        for pod in self.pods:
            os.makedirs(pod.dir, mode=0o755)
            for ctr in pod.containers:
                os.makedirs(ctr.dir, mode=0o755)
                self.start_instance(ctr, 0)
        self.truth = open(self.a.truth, "wb")

    def start_instance(self, ctr, restart):
        inst = Instance(self, ctr, restart)
        inst.open()  # the runtime creates the log file when the container starts
        os.symlink(inst.path, inst.link)  # then the kubelet links it (absolute path)
        inst.running = True
        ctr.cur = inst
        return inst

    def running_instances(self):
        return [c.cur for p in self.pods if p.state == "running" for c in p.containers]

    # -- messages -----------------------------------------------------------------------

    def new_message(self, inst, stream=None, short=False):
        rng = inst.rng
        seq = inst.seq
        inst.seq += 1
        le = self.a.long_every
        long_ = (not short) and le > 0 and seq % le == le - 1
        s = "stderr" if rng.random() < STDERR_SHARE else "stdout"
        if stream is not None:
            s = stream
        if long_:
            nbytes = rng.randint(self.a.long_min, self.a.long_max)
        else:
            nbytes = rng.randint(60, 300)
        msg = f"{inst.label} seq={seq} " + self.corpus.take(rng, nbytes)
        pieces = split_cri(msg) if self.cri else split_docker(msg)
        truth = (s, msg)
        n = len(pieces)
        if n == 1:
            inst.queue.append((s, True, pieces[0], truth, False))
            return 1
        self.stats["split_messages"] += 1
        self.stats["pieces"] += n
        spread = rng.random() < SPREAD_PROB
        inter_at = rng.randrange(n - 1) if rng.random() < INTERLEAVE_PROB else -1
        count = 1
        for i, piece in enumerate(pieces):
            last = i == n - 1
            inst.queue.append((s, last, piece, truth if last else None, spread and not last))
            if i == inter_at:
                # a short message on the other stream lands between two pieces
                other = "stderr" if s == "stdout" else "stdout"
                q = len(inst.queue)
                count += self.new_message(inst, stream=other, short=True)
                # its emission may not yield; keep the yield decision on our piece
                assert len(inst.queue) == q + 1
                self.stats["interleaved"] += 1
        return count

    def write_batch(self, inst, drain=False):
        """Write queued lines for inst in ONE write(); stops after a yielding piece."""
        q = inst.queue
        if not q:
            return
        out = []
        now = self.clock.now
        truth_buf = self.truth_buf
        path = None
        cri = self.cri
        while q:
            stream, last, piece, truth, yld = q.popleft()
            if cri:
                out.append(b"%s %s %s %s\n" % (now().encode(), stream.encode(),
                                                b"F" if last else b"P", piece))
            else:
                out.append(('{"log":"%s","stream":"%s","time":"%s"}\n' % (
                    docker_escape(piece), stream, now())).encode())
            if truth is not None:
                # == json.dumps({...}) (ASCII-only), built by hand: it is the hot spot
                if path is None:
                    path = '{"container_path": %s, "restart": %d, "stream": "' % (
                        _json_str(inst.ctr.dir), inst.restart)
                truth_buf.append('%s%s", "message": %s}' % (path, truth[0],
                                                             _json_str(truth[1])))
                self.stats["messages"] += 1
            if yld and not drain and len(q) < MAX_BACKLOG:
                self.stats["yields"] += 1
                break
        data = b"".join(out)
        self.stats["lines"] += len(out)
        self.stats["bytes"] += len(data)
        view = memoryview(data)
        with inst.lock:  # not while ReopenContainerLog swaps the fd
            while view:
                n = os.write(inst.fd, view)
                view = view[n:]

    def flush_truth(self):
        if self.truth_buf:
            self.truth_buf.append("")
            self.truth.write("\n".join(self.truth_buf).encode("ascii"))
            self.truth.flush()
            self.truth_buf.clear()

    # -- kubelet: rotation (own thread, like the kubelet's log manager goroutines) ------

    def kubelet_loop(self):
        a = self.a
        next_rot = time.monotonic() + a.rotate_check
        try:
            while not self.kubelet_stop:
                if self.flags.force_rotate or (a.rotate_check > 0
                                               and time.monotonic() >= next_rot):
                    self.flags.force_rotate = False
                    self.rotation_check()
                    next_rot = time.monotonic() + a.rotate_check  # wait.Forever: sliding
                else:
                    time.sleep(0.005)
        except BaseException:
            self.kubelet_error = traceback.format_exc()
            self.flags.stop = True

    def rotation_check(self):
        self.kstats["rotation_checks"] += 1
        for inst in self.running_instances():
            with self.kubelet_mutex:
                if not inst.running:
                    continue
                try:
                    size = os.stat(inst.path).st_size
                except FileNotFoundError:
                    continue
                if size >= self.a.max_size:
                    self.rotate(inst)

    def rotate(self, inst):
        log = inst.path
        logs = glob.glob(glob.escape(log) + ".*")
        # cleanupUnusedLogs
        inuse = []
        for l in logs:
            if l.endswith(".tmp") or (not l.endswith(".gz") and l + ".gz" in logs):
                os.remove(l)
                self.kstats["unused_removed"] += 1
            else:
                inuse.append(l)
        # removeExcessLogs
        inuse.sort()
        keep = max(self.a.max_files - 2, 0)
        excess = max(len(inuse) - keep, 0)
        for l in inuse[:excess]:
            os.remove(l)
            self.kstats["deletions"] += 1
        inuse = inuse[excess:]
        # compress every plain rotated file (the runtime keeps writing meanwhile)
        for l in inuse:
            if not l.endswith(".gz"):
                self.compress(l)
        # rotateLatestLog
        sec = max(int(time.time()), inst.last_rot + 1)
        while True:
            stamp = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime(TIMESTAMP_FORMAT)
            rotated = f"{log}.{stamp}"
            if not os.path.exists(rotated) and not os.path.exists(rotated + ".gz"):
                break
            sec += 1
        if sec > int(time.time()):
            self.kstats["rotation_name_bumps"] += 1
        inst.last_rot = sec
        os.rename(log, rotated)
        self.kstats["rotations"] += 1
        # The runtime's fd still points at the renamed file until ReopenContainerLog.
        # Sometimes that call is slow enough for the runtime's next batch to land there.
        if self.rng_k.random() < self.a.late_write_prob:
            size0 = os.stat(rotated).st_size
            time.sleep(self.rng_k.uniform(1.0, 2.0) * self.a.batch_ms / 1000.0)
            if os.stat(rotated).st_size > size0:
                self.kstats["late_writes"] += 1
        with inst.lock:
            if inst.running:
                inst.close()
                inst.open()
                return
        # the container exited meanwhile: reopen fails, the kubelet renames it back
        os.rename(rotated, log)
        self.kstats["rotations_undone"] += 1

    def compress(self, l):
        st = os.stat(l)
        tmp = l + ".tmp"
        with open(l, "rb") as r:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, st.st_mode & 0o777)
            with open(fd, "wb") as f:
                # like Go's gzip.NewWriter: no name, mtime 0
                with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6,
                                   mtime=0) as g:
                    shutil.copyfileobj(r, g, 1 << 16)
        os.rename(tmp, l + ".gz")
        os.remove(l)
        self.kstats["gzips"] += 1

    # -- kubelet: restarts and pod deletion ---------------------------------------------

    def restart_one(self):
        insts = self.running_instances()
        if not insts:
            return
        old = self.sched.choice(insts)
        self.write_batch(old, drain=True)  # the dying process's output is all written
        with old.lock:
            old.close()
            old.running = False
        ctr = old.ctr
        self.start_instance(ctr, old.restart + 1)
        os.remove(old.link)
        self.stats["restarts"] += 1

    def stop_pod(self, now):
        live = [p for p in self.pods if p.state == "running"]
        if not live:
            return
        pod = self.sched.choice(live)
        for ctr in pod.containers:
            self.write_batch(ctr.cur, drain=True)
            with ctr.cur.lock:
                ctr.cur.close()
                ctr.cur.running = False
        pod.state = "stopped"
        pod.delete_at = now + self.a.delete_grace
        self.stats["pods_stopped"] += 1

    def delete_pod(self, pod):
        with self.kubelet_mutex:
            self._delete_pod(pod)

    def _delete_pod(self, pod):
        for ctr in pod.containers:
            try:
                os.remove(ctr.cur.link)
            except FileNotFoundError:
                pass
        shutil.rmtree(pod.dir)
        pod.state = "deleted"
        self.stats["pods_deleted"] += 1

    # -- main loop ----------------------------------------------------------------------

    def run(self):
        a = self.a
        tick = a.batch_ms / 1000.0
        t0 = time.monotonic()
        last = t0
        next_tick = t0
        kubelet = threading.Thread(target=self.kubelet_loop, name="kubelet", daemon=True)
        kubelet.start()
        next_restart = t0 + a.restart_every if a.restart_every > 0 else None
        next_delete = t0 + a.delete_pod_after if a.delete_pod_after > 0 else None
        deletes_left = a.delete_count
        budget = 0.0
        # after a stall (busy machine) catch up on at most 0.5 s of messages
        cap = max(a.rate * 0.5, a.rate * tick * 2, 1.0)
        while not self.flags.stop:
            now = time.monotonic()
            if a.duration > 0 and now - t0 >= a.duration:
                break
            budget = min(budget + a.rate * (now - last), cap)
            last = now
            insts = self.running_instances()
            n = int(budget)
            if insts and n:
                budget -= n
                # saturated (rate above what we can do): bound a tick's work by time so
                # duration and signals stay honoured; containers in random order
                work_end = now + tick
                if a.duration > 0:
                    work_end = min(work_end, t0 + a.duration)
                base, rem = divmod(n, len(insts))
                extra = set(self.sched.sample(range(len(insts)), rem)) if rem else ()
                order = list(range(len(insts)))
                self.sched.shuffle(order)
                for i in order:
                    inst = insts[i]
                    k = base + (1 if i in extra else 0)
                    produced = 0
                    while produced < k:
                        produced += self.new_message(inst)
                        if produced & 63 == 0 and (self.flags.stop
                                                   or time.monotonic() > work_end):
                            break
                    self.write_batch(inst)
            else:
                for inst in insts:
                    self.write_batch(inst)
            self.flush_truth()

            now = time.monotonic()
            if next_restart is not None and now >= next_restart:
                self.restart_one()
                next_restart += a.restart_every
            if next_delete is not None and deletes_left > 0 and now >= next_delete:
                self.stop_pod(now)
                deletes_left -= 1
                next_delete += a.delete_pod_after
            for pod in self.pods:
                if pod.state == "stopped" and now >= pod.delete_at:
                    self.delete_pod(pod)
            self.flush_truth()

            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_tick = time.monotonic()  # far behind: don't try to catch up in bursts
        elapsed = time.monotonic() - t0
        self.kubelet_stop = True
        kubelet.join()
        self.finish(elapsed)

    def finish(self, elapsed):
        for inst in self.running_instances():
            self.write_batch(inst, drain=True)
        self.flush_truth()
        for pod in self.pods:
            if pod.state == "stopped":
                while self.flags.signals < 2 and time.monotonic() < pod.delete_at:
                    time.sleep(0.02)
                if self.flags.signals < 2:
                    self.delete_pod(pod)
        for p in self.pods:
            for c in p.containers:
                c.cur.close()
        self.truth.close()
        s = self.stats + self.kstats
        summary = {
            "messages": s["messages"], "lines": s["lines"], "bytes": s["bytes"],
            "rotations": s["rotations"], "gzips": s["gzips"], "deletions": s["deletions"],
            "restarts": s["restarts"], "pods_stopped": s["pods_stopped"],
            "pods_deleted": s["pods_deleted"], "split_messages": s["split_messages"],
            "interleaved": s["interleaved"], "late_writes": s["late_writes"],
            "yields": s["yields"], "rotation_name_bumps": s["rotation_name_bumps"],
            "rotations_undone": s["rotations_undone"],
            "elapsed_s": round(elapsed, 3),
            "messages_per_s": round(s["messages"] / elapsed, 1) if elapsed else 0,
            "mb_per_s": round(s["bytes"] / elapsed / 1e6, 3) if elapsed else 0,
            "format": self.a.format, "root": self.root, "truth": self.a.truth,
        }
        print(json.dumps(summary), file=sys.stderr, flush=True)
        if self.kubelet_error:
            print("kubelet_sim: the kubelet thread failed:\n" + self.kubelet_error,
                  file=sys.stderr, flush=True)
            sys.exit(1)


def size_arg(s):
    s = s.strip()
    mult = {"k": 1000, "m": 1000 ** 2, "g": 1000 ** 3,
            "ki": 1024, "mi": 1024 ** 2, "gi": 1024 ** 3}
    low = s.lower()
    for suf in ("ki", "mi", "gi", "k", "m", "g"):
        if low.endswith(suf):
            return int(float(low[:-len(suf)]) * mult[suf])
    return int(s)


class Flags:
    """Set by signal handlers; polled by the main loop (each tick) and the kubelet
    thread (every 5 ms)."""
    stop = False
    signals = 0
    force_rotate = False


FLAGS = Flags()


def _on_stop(signum, frame):
    FLAGS.stop = True
    FLAGS.signals += 1


def _on_usr1(signum, frame):
    FLAGS.force_rotate = True


def main(argv=None):
    # first thing, so an early SIGUSR1 cannot kill us (tests should still wait for the
    # truth file, which appears once every log file and symlink exists)
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    signal.signal(signal.SIGUSR1, _on_usr1)
    p = argparse.ArgumentParser(
        description="Simulate containerd/Docker + kubelet writing and rotating container "
                    "logs under a fake node root, recording ground truth.")
    p.add_argument("--root", required=True, help="fake node root (DIR/var/log/...)")
    p.add_argument("--format", required=True, choices=["cri", "docker"])
    p.add_argument("--pods", type=int, required=True)
    p.add_argument("--containers-per-pod", type=int, required=True)
    p.add_argument("--rate", type=float, required=True,
                   help="messages per second, in total over all running containers")
    p.add_argument("--duration", type=float, required=True,
                   help="seconds to run (0: until SIGTERM/SIGINT)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-size", type=size_arg, default=1024 * 1024,
                   help="rotate a live log at this size (bytes; K/M/Ki/Mi ok) [1Mi]")
    p.add_argument("--max-files", type=int, default=5,
                   help="kubelet containerLogMaxFiles, must be > 1 [5]")
    p.add_argument("--rotate-check", type=float, default=1.0,
                   help="seconds between rotation checks, 0: only on SIGUSR1 [1]")
    p.add_argument("--restart-every", type=float, default=0.0,
                   help="every S s a random running container restarts, 0: never [0]")
    p.add_argument("--delete-pod-after", type=float, default=0.0,
                   help="after S s (and every S s, --delete-count times) a random pod "
                        "stops, and is deleted --delete-grace s later, 0: never [0]")
    p.add_argument("--delete-count", type=int, default=1,
                   help="how many pods to delete, one every --delete-pod-after s [1]")
    p.add_argument("--delete-grace", type=float, default=2.0,
                   help="seconds between a pod's last write and its deletion [2]")
    p.add_argument("--long-every", type=int, default=50,
                   help="every N-th message of a container is 20-60 KiB, 0: never [50]")
    p.add_argument("--long-min", type=size_arg, default=20 * 1024, help=argparse.SUPPRESS)
    p.add_argument("--long-max", type=size_arg, default=60 * 1024, help=argparse.SUPPRESS)
    p.add_argument("--truth", help="ground truth JSONL [DIR/truth.jsonl]")
    p.add_argument("--cri-time", choices=["fixed9", "trimmed"], default="fixed9",
                   help="CRI timestamps: 9 fraction digits, or containerd's "
                        "time.RFC3339Nano with trailing zeros trimmed [fixed9]")
    p.add_argument("--late-write-prob", type=float, default=0.5,
                   help="chance that ReopenContainerLog comes 1-2 ticks after the rename, "
                        "so a batch lands in the renamed file [0.5]")
    p.add_argument("--batch-ms", type=float, default=50.0, help="tick length [50]")
    a = p.parse_args(argv)
    if a.max_files <= 1:
        p.error("--max-files must be > 1 (as in the kubelet)")
    if a.pods < 1 or a.containers_per_pod < 1:
        p.error("--pods and --containers-per-pod must be >= 1")
    if a.long_min > a.long_max or a.long_max > 70_000:
        p.error("bad --long-min/--long-max")
    if a.truth is None:
        a.truth = os.path.join(a.root, "truth.jsonl")
    a.truth = os.path.abspath(a.truth)

    sim = Sim(a, FLAGS)
    sim.setup()
    sim.run()


if __name__ == "__main__":
    main()
