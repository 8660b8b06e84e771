#!/usr/bin/env python3
"""Writes the golden fixtures: container log files (`<case>.log`) and, computed here
from the messages they were made from, the events logferry must emit (`<case>.out`).

This script is the test oracle: it knows what each line *means* (which message, which
stream, which piece) because it wrote it, and it formats the expected events itself,
independently of the Rust code. Run it after changing a case; commit its output.

    python3 tests/make_fixtures.py
"""
import datetime as dt
import gzip
import io
import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent / "fixtures"
EPOCH = 0  # golden tests pass read time 0 for lines without a usable time

# --- formatting the expected events -------------------------------------------------


def fmt_time(ns):
    secs, frac = divmod(ns, 1_000_000_000)
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=secs)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % frac


def parse_ns(s):
    """RFC 3339 with up to 9 fraction digits and Z or an offset, to ns since epoch."""
    main, rest = s[:19], s[19:]
    frac = 0
    if rest.startswith("."):
        digits = ""
        rest = rest[1:]
        while rest and rest[0].isdigit():
            digits += rest[0]
            rest = rest[1:]
        frac = int(digits.ljust(9, "0"))
    base = dt.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    if rest not in ("Z", "z"):
        sign = -1 if rest[0] == "-" else 1
        base -= sign * dt.timedelta(hours=int(rest[1:3]), minutes=int(rest[4:6]))
    return int(base.timestamp()) * 1_000_000_000 + frac


def event(time_ns, stream, message: bytes, truncated=False, partial=False, kube=None, lines=1):
    parts = [
        '"time":' + json.dumps(fmt_time(time_ns)),
        '"stream":' + json.dumps(stream),
        '"message":' + json.dumps(message.decode("utf-8", "replace"), ensure_ascii=False),
    ]
    if truncated:
        parts.append('"truncated":true')
    if partial:
        parts.append('"partial":true')
    if lines > 1:
        parts.append('"multiline":%d' % lines)
    if kube:
        k = ['"namespace":' + json.dumps(kube["namespace"]), '"pod":' + json.dumps(kube["pod"])]
        if "pod_uid" in kube:
            k.append('"pod_uid":' + json.dumps(kube["pod_uid"]))
        k.append('"container":' + json.dumps(kube["container"]))
        if "restart_count" in kube:
            k.append('"restart_count":%d' % kube["restart_count"])
        parts.append('"kubernetes":{' + ",".join(k) + "}")
    return ("{" + ",".join(parts) + "}\n").encode()


# --- writing lines as the runtimes do ---------------------------------------------------


def go_escape(b: bytes) -> bytes:
    """Docker's json-file escaping (Go encoding/json): <>& and controls as \\u00XX."""
    s = json.dumps(b.decode("utf-8"), ensure_ascii=False)[1:-1]
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        s = s.replace(ch, rep)
    return s.encode()


def docker_line(log: bytes, stream="stdout", time="2026-11-21T10:00:00.000000001Z", raw_log=None) -> bytes:
    """A json-file line; `log` is a complete message (its newline is added)."""
    value = raw_log if raw_log is not None else go_escape(log + b"\n")
    return b'{"log":"' + value + b'","stream":"' + stream.encode() + b'","time":"' + time.encode() + b'"}\n'


def docker_pieces(msg: bytes, limit=16384):
    """Docker's copier: the line plus its newline, cut every `limit` bytes of raw data;
    cut at a character boundary here (Docker's encoder would replace a cut character)."""
    data = msg + b"\n"
    out = []
    while data:
        n = min(limit, len(data))
        while n < len(data) and (data[n] & 0xC0) == 0x80:
            n -= 1
        out.append(data[:n])
        data = data[n:]
    return out


def cri_pieces(msg: bytes, limit=16384):
    """containerd: cut every `limit` bytes exactly (a character may straddle)."""
    if not msg:
        return [(b"", True)]
    pieces = [msg[i : i + limit] for i in range(0, len(msg), limit)]
    return [(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]


def cri_line(ts, stream, tag, msg: bytes) -> bytes:
    return ts.encode() + b" " + stream.encode() + b" " + tag.encode() + b" " + msg + b"\n"


def text(n, seed):
    """`n` bytes of varied UTF-8 text without newlines (multi-byte characters included)."""
    alphabet = "abcdefghij klmnopqrstuvwxyz 0123456789 é ü ß 日本語 😀 \"quoted\" \\ <tag> & {json}\t"
    out = bytearray()
    i = seed
    while len(out) < n:
        out += alphabet[i % len(alphabet)].encode()
        i = (i * 31 + 7) % 1000003
    # Trim to exactly n bytes at a character boundary, padding with ASCII.
    out = out[:n]
    while out and (out[-1] & 0xC0) == 0x80 or (out and out[-1] >= 0xC0):
        out = out[:-1]
        # drop a cut character entirely
        while out and (out[-1] & 0xC0) == 0x80:
            out = out[:-1]
        if out and out[-1] >= 0xC0:
            out = out[:-1]
    out += b"x" * (n - len(out))
    assert len(out) == n and b"\n" not in out
    out.decode("utf-8")
    return bytes(out)


# --- the cases ---------------------------------------------------------------------------


def case_docker_escapes():
    log, out = b"", b""
    msgs = [
        "plain ascii line",
        'quotes " and backslash \\ and slash /',
        "<html> & </html> as Go escapes them",
        "tab\there, carriage return\rthere, bell\x07 and nul\x00",
        "raw UTF-8: héllo wörld, 日本語, emoji 😀",
        "",
    ]
    t = "2026-11-21T10:00:00.123456789Z"
    for i, m in enumerate(msgs):
        stream = "stderr" if i % 2 else "stdout"
        log += docker_line(m.encode(), stream, t)
        out += event(parse_ns(t), stream, m.encode())
    # Escapes Docker does not write but JSON allows: \/, \b, \f, \u escapes and a
    # surrogate pair for a character outside the BMP, lowercase and uppercase hex.
    log += docker_line(None, "stdout", t, raw_log=b"a\\/b\\bc\\fd \\u00e9\\u00E9 \\ud83d\\ude00\\n")
    out += event(parse_ns(t), "stdout", "a/b\bc\fd éé 😀".encode())
    # A lone surrogate decodes to U+FFFD.
    log += docker_line(None, "stdout", t, raw_log=b"lone \\ud800 surrogate\\n")
    out += event(parse_ns(t), "stdout", "lone \ufffd surrogate".encode())
    # An escaped backslash followed by n is not a newline: this piece is partial,
    # and the next stdout piece completes it.
    log += docker_line(None, "stdout", t, raw_log=b"C:\\\\new")
    log += docker_line(b"folder", "stdout", "2026-11-21T10:00:01Z")
    out += event(parse_ns(t), "stdout", b"C:\\newfolder")
    return log, out


def case_docker_split():
    log, out = b"", b""
    base = parse_ns("2026-11-21T10:00:00Z")
    sizes = [16383, 16384, 16385, 50000, 100000, 32768]
    streams = ["stdout", "stderr", "stdout", "stderr", "stdout", "stdout"]
    # Interleave: every stderr piece is emitted between stdout pieces.
    queues = {"stdout": [], "stderr": []}
    for i, (n, s) in enumerate(zip(sizes, streams)):
        msg = text(n, i)
        t = base + i * 1000
        pieces = docker_pieces(msg)
        queues[s].append((t, pieces, msg))
    # Emit alternately: one piece of the current stdout message, one of stderr. The
    # pieces of a message carry increasing times; the event keeps the first one's.
    expected = []
    cur = {s: None for s in queues}
    while any(queues[s] or cur[s] for s in queues):
        for s in ("stdout", "stderr"):
            if cur[s] is None and queues[s]:
                t, pieces, msg = queues[s].pop(0)
                cur[s] = [t, list(pieces), msg, 0]
            if cur[s] is None:
                continue
            t, pieces, msg, j = cur[s]
            piece = pieces.pop(0)
            log += docker_line(None, s, fmt_time(t + j), raw_log=go_escape(piece))
            cur[s][3] += 1
            if not pieces:
                expected.append(event(t, s, msg))
                cur[s] = None
    return log, b"".join(expected)


def case_docker_fields():
    log = b""
    out = b""
    t = "2026-11-21T10:00:00.5Z"
    log += b'{"time":"' + t.encode() + b'","stream":"stderr","log":"reordered fields\\n"}\n'
    out += event(parse_ns(t), "stderr", b"reordered fields")
    log += (b' { "attrs" : {"tag":"x","nested":[1,{"}":"]"}]} , "log":"extra attrs\\n", "stream":"stdout",'
            b' "n": -1.5e3, "ok": true, "none": null, "time":"' + t.encode() + b'" } \n')
    out += event(parse_ns(t), "stdout", b"extra attrs")
    log += b'{"log":"no stream, no time\\n"}\n'
    out += event(EPOCH, "stdout", b"no stream, no time")
    log += b'{"log":"unknown stream, bad time\\n","stream":"console","time":"yesterday"}\n'
    out += event(EPOCH, "stdout", b"unknown stream, bad time")
    log += b'{"log":"crio-style offset time\\n","stream":"stdout","time":"2026-11-21T12:00:00.25+02:00"}\n'
    out += event(parse_ns("2026-11-21T10:00:00.25Z"), "stdout", b"crio-style offset time")
    return log, out


def case_docker_malformed():
    log, out = b"", b""
    t = "2026-11-21T10:00:00Z"
    log += docker_line(b"first, good", "stdout", t)
    out += event(parse_ns(t), "stdout", b"first, good")
    for bad in [
        b"this is not json",
        b'{"log":"missing close"',
        b'{"log":42,"stream":"stdout"}',
        b'{"stream":"stdout","time":"2026-11-21T10:00:00Z"}',
        b"2026-11-21T10:00:00Z stdout F a CRI line in a Docker file",
        b"\xff\xfe invalid utf-8 \xc3",
        b"",
    ]:
        log += bad + b"\n"
        out += event(EPOCH, "stdout", bad)
    log += docker_line(b"still decoding after garbage", "stderr", t)
    out += event(parse_ns(t), "stderr", b"still decoding after garbage")
    # A piece left open when the file ends: emitted as partial at the end.
    log += docker_line(None, "stderr", t, raw_log=b"cut off at exit")
    # A last line without its newline (truncated write): kept as a raw event.
    log += b'{"log":"truncated wri'
    out += event(EPOCH, "stdout", b'{"log":"truncated wri')
    out += event(parse_ns(t), "stderr", b"cut off at exit", partial=True)
    return log, out


def case_cri_containerd():
    log, out = b"", b""
    ts = ["2026-11-21T10:00:00.%09dZ" % i for i in range(1, 40)]
    # An interleaved P,P,F on stdout and P,F on stderr.
    log += cri_line(ts[0], "stdout", "P", b"1a. some ")
    log += cri_line(ts[1], "stderr", "P", b"2a. error ")
    log += cri_line(ts[2], "stdout", "P", b"multiline ")
    log += cri_line(ts[3], "stderr", "F", b"message")
    log += cri_line(ts[4], "stdout", "F", b"log")
    out += event(parse_ns(ts[1]), "stderr", b"2a. error message")
    out += event(parse_ns(ts[0]), "stdout", b"1a. some multiline log")
    # A character cut between two pieces comes out whole.
    snow = "日".encode()
    log += cri_line(ts[5], "stdout", "P", b"split char " + snow[:2])
    log += cri_line(ts[6], "stdout", "F", snow[2:] + b" done")
    out += event(parse_ns(ts[5]), "stdout", "split char 日 done".encode())
    # Empty messages, with and without the space after the tag; a future tag field.
    log += cri_line(ts[7], "stdout", "F", b"")
    out += event(parse_ns(ts[7]), "stdout", b"")
    log += ts[8].encode() + b" stderr F\n"
    out += event(parse_ns(ts[8]), "stderr", b"")
    log += cri_line(ts[9], "stdout", "F:extra=1", b"tag with fields")
    out += event(parse_ns(ts[9]), "stdout", b"tag with fields")
    # Spaces and tabs inside a message are kept as they are.
    log += cri_line(ts[10], "stdout", "F", b"  two leading spaces\tand a tab  ")
    out += event(parse_ns(ts[10]), "stdout", b"  two leading spaces\tand a tab  ")
    # containerd's 16 KiB cut of long lines, bytes exactly.
    for i, n in enumerate([16384, 16385, 70000]):
        msg = text(n, 100 + i)
        t0 = ts[11 + 3 * i]
        pieces = cri_pieces(msg)
        for j, (piece, last) in enumerate(pieces):
            log += cri_line(t0 if j == 0 else ts[12 + 3 * i], "stdout", "F" if last else "P", piece)
        out += event(parse_ns(t0), "stdout", msg)
    # Malformed lines in a CRI file become raw events.
    for bad in [b"garbage", b"2026-11-21T10:00:00Z stdin F wrong stream", b"2026-11-21T10:00:00Z stdout X bad tag"]:
        log += bad + b"\n"
        out += event(EPOCH, "stdout", bad)
    return log, out


def case_cri_crio():
    log, out = b"", b""
    for i, (ts, utc) in enumerate([
        ("2026-11-21T12:00:00.123456789+02:00", "2026-11-21T10:00:00.123456789Z"),
        ("2026-11-21T04:30:00.5-05:30", "2026-11-21T10:00:00.5Z"),
        ("2026-11-21T10:00:01+00:00", "2026-11-21T10:00:01Z"),
    ]):
        stream = "stderr" if i == 1 else "stdout"
        log += cri_line(ts, stream, "F", b"cri-o line %d" % i)
        out += event(parse_ns(utc), stream, b"cri-o line %d" % i)
    log += cri_line("2026-11-21T12:00:02+02:00", "stdout", "P", b"cri-o split ")
    log += cri_line("2026-11-21T12:00:03+02:00", "stdout", "F", b"line")
    out += event(parse_ns("2026-11-21T10:00:02Z"), "stdout", b"cri-o split line")
    return log, out


def case_cri_partial_at_end():
    log, out = b"", b""
    log += cri_line("2026-11-21T10:00:00Z", "stdout", "P", b"stdout never finished ")
    log += cri_line("2026-11-21T10:00:01Z", "stderr", "P", b"stderr never ")
    log += cri_line("2026-11-21T10:00:02Z", "stderr", "P", b"finished")
    log += cri_line("2026-11-21T10:00:03Z", "stdout", "P", b"either")
    out += event(parse_ns("2026-11-21T10:00:00Z"), "stdout", b"stdout never finished either", partial=True)
    out += event(parse_ns("2026-11-21T10:00:01Z"), "stderr", b"stderr never finished", partial=True)
    return log, out


def case_detect_after_garbage():
    log, out = b"", b""
    for bad in [b"+ exec /app/start.sh", b"{not json at all"]:
        log += bad + b"\n"
        out += event(EPOCH, "stdout", bad)
    log += cri_line("2026-11-21T10:00:00Z", "stdout", "F", b"format found on the first decodable line")
    out += event(parse_ns("2026-11-21T10:00:00Z"), "stdout", b"format found on the first decodable line")
    return log, out



# --- multiline: stack traces as the runtimes print them ----------------------------------

# A long key list: the trace line holding it is over 16 KiB, so the runtime splits it.
LONG_KEYS = ",".join(str(40_000_000 + i * 7) for i in range(2400))

TRACES = {
    "java": [
        [
            'java.lang.NullPointerException: Cannot invoke "String.length()" because "name" is null',
            "\tat com.example.shop.CartService.total(CartService.java:42)",
            "\tat com.example.shop.CartController.checkout(CartController.java:27)",
            "\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
            "\tat java.base/java.lang.reflect.Method.invoke(Method.java:580)",
            "\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
            "\tat org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:63)",
            "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
        ],
        [
            "org.springframework.dao.DataIntegrityViolationException: could not execute statement "
            '[ERROR: duplicate key value violates unique constraint "orders_pkey" Detail: Key (id)=(' + LONG_KEYS + ") already exists.]",
            "\tat org.springframework.orm.jpa.vendor.HibernateJpaDialect.convertHibernateAccessException(HibernateJpaDialect.java:290)",
            "\tat com.example.shop.OrderRepository$$SpringCGLIB$$0.save(<generated>)",
            "\tat com.example.shop.OrderService.place(OrderService.java:58)",
            "\tSuppressed: java.lang.IllegalStateException: rollback failed",
            "\t\tat com.example.shop.Tx.rollback(Tx.java:17)",
            "\t\t... 2 more",
            'Caused by: org.postgresql.util.PSQLException: ERROR: duplicate key value violates unique constraint "orders_pkey"',
            "\tat org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2725)",
            "\tat org.postgresql.jdbc.PgStatement.executeInternal(PgStatement.java:517)",
            "\t... 23 common frames omitted",
        ],
    ],
    "python": [
        [
            "Traceback (most recent call last):",
            '  File "/app/worker.py", line 41, in handle',
            "    payload = json.loads(body)",
            "              ^^^^^^^^^^^^^^^^",
            '  File "/usr/local/lib/python3.12/json/__init__.py", line 346, in loads',
            "    return _default_decoder.decode(s)",
            "           ^^^^^^^^^^^^^^^^^^^^^^^^^^",
            '  File "/usr/local/lib/python3.12/json/decoder.py", line 355, in raw_decode',
            '    raise JSONDecodeError("Expecting value", s, err.value) from None',
            "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "/app/worker.py", line 44, in handle',
            "    raise BadMessage(body[:40])",
            "worker.BadMessage: b'not json: " + LONG_KEYS + "'",
        ],
        [
            "Traceback (most recent call last):",
            '  File "/app/app/db.py", line 12, in connect',
            "    return psycopg.connect(DSN, connect_timeout=3)",
            '  File "/usr/local/lib/python3.12/site-packages/psycopg/connection.py", line 119, in connect',
            "    raise last_ex.with_traceback(None)",
            "psycopg.OperationalError: connection failed: Connection refused",
            "",
            "The above exception was the direct cause of the following exception:",
            "",
            "Traceback (most recent call last):",
            '  File "/app/app/main.py", line 8, in <module>',
            "    db.connect()",
            '  File "/app/app/db.py", line 14, in connect',
            '    raise RuntimeError("database unavailable") from e',
            "RuntimeError: database unavailable",
        ],
    ],
    "go": [
        [
            "panic: assignment to entry in nil map",
            "",
            "goroutine 1 [running]:",
            "main.(*Cache).Put(...)",
            "\t/src/cache.go:21",
            "main.main()",
            "\t/src/main.go:14 +0x65",
        ],
        [
            "fatal error: all goroutines are asleep - deadlock!",
            "",
            "goroutine 1 [chan receive]:",
            "main.main()",
            "\t/src/main.go:9 +0x3d",
            "",
            "goroutine 18 [chan send]:",
            "main.worker(0xc000012345, {0x" + LONG_KEYS.replace(",", ", 0x") + "})",
            "\t/src/main.go:15 +0x2a",
            "created by main.main in goroutine 1",
            "\t/src/main.go:8 +0x25",
        ],
    ],
    "ruby": [
        [
            "/app/lib/billing.rb:12:in `charge': undefined method `amount' for nil:NilClass (NoMethodError)",
            "\tfrom /app/lib/billing.rb:5:in `block in run'",
            "\tfrom /app/lib/billing.rb:4:in `each'",
            "\tfrom /app/lib/billing.rb:4:in `run'",
            "\tfrom bin/billing:3:in `<main>'",
        ],
        [
            "/app/app/jobs/sync.rb:20:in 'Sync#call': connection reset by peer: " + LONG_KEYS + " (Errno::ECONNRESET)",
            "\tfrom /app/app/jobs/sync.rb:8:in 'block in Sync.run'",
            "\tfrom <internal:kernel>:187:in 'Kernel#loop'",
            "\tfrom /app/app/jobs/sync.rb:7:in 'Sync.run'",
        ],
    ],
    "nodejs": [
        [
            "TypeError: Cannot read properties of undefined (reading 'id')",
            "    at getUser (/app/src/users.js:14:22)",
            "    at /app/src/routes.js:31:18",
            "    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)",
            "    at next (/app/node_modules/express/lib/router/route.js:149:13)",
        ],
        [
            'ValidationError: "email" must be a valid email: ' + LONG_KEYS,
            "    at validate (/app/src/schema.js:40:11)",
            "    at async createUser (/app/src/users.js:52:3)",
            "    at async /app/src/routes.js:12:5",
        ],
    ],
}

# Lines around the traces that no rule continues (one mentions an error in passing).
SINGLES = ["GET /api/cart 200 12ms", 'level=warn msg="retrying after Error: timeout"', "worker 3 ready"]


def case_multiline(lang, fmt):
    """Two traces, the first on stderr and the second on stdout, each between single
    lines; after every second line of the trace's stream, a line on the other stream.
    Each line its own record (split at 16 KiB when longer). The events: stdout's, then
    stderr's, each stream in order (when a group closes decides how the two streams'
    events interleave, which this oracle does not model)."""
    records = []
    events = {"stdout": [], "stderr": []}
    n = 0

    def record(stream, line):
        nonlocal n
        n += 1
        ts = "2026-12-06T10:00:00.%09dZ" % n
        if fmt == "docker":
            for piece in docker_pieces(line):
                records.append(docker_line(b"", stream, ts, raw_log=go_escape(piece)))
        else:
            for piece, last in cri_pieces(line):
                records.append(cri_line(ts, stream, "F" if last else "P", piece))
        return parse_ns(ts)

    k = 0
    for i, trace in enumerate(TRACES[lang]):
        stream, other = ("stderr", "stdout") if i % 2 == 0 else ("stdout", "stderr")
        lines = [(SINGLES[i % len(SINGLES)].encode(), False)] + [(l.encode(), True) for l in trace] + [(b"done %d" % i, False)]
        group = None  # (first time, lines)
        for line, in_trace in lines:
            t = record(stream, line)
            if in_trace:
                if group is None:
                    group = (t, [])
                group[1].append(line)
            else:
                if group:
                    events[stream].append(event(group[0], stream, b"\n".join(group[1]), lines=len(group[1])))
                    group = None
                events[stream].append(event(t, stream, line))
            k += 1
            if k % 2 == 0:
                msg = ("request %d served" % k).encode()
                events[other].append(event(record(other, msg), other, msg))
    return b"".join(records), b"".join(events["stdout"] + events["stderr"])

CASES = {
    "docker_escapes": case_docker_escapes,
    "docker_split": case_docker_split,
    "docker_fields": case_docker_fields,
    "docker_malformed": case_docker_malformed,
    "cri_containerd": case_cri_containerd,
    "cri_crio": case_cri_crio,
    "cri_partial_at_end": case_cri_partial_at_end,
    "detect_after_garbage": case_detect_after_garbage,
}
for _lang in TRACES:
    for _fmt in ("docker", "cri"):
        CASES[f"multiline_{_lang}_{_fmt}"] = (lambda l, f: lambda: case_multiline(l, f))(_lang, _fmt)

# --- a node's /var/log, for the demo and the replay golden test --------------------------

NODE = HERE / "node"
PODS = "var/log/pods"
WEB = ("default", "web-6d4cf56db6-x7k2p", "1b4e28ba-2fa1-41d2-883f-0016d3cca427")
DNS = ("kube-system", "coredns-5d78c9869d-q8wzt", "9f0c4a3e-5b6d-4e8f-a1b2-c3d4e5f60718")
CID = "{:064x}"


def write_node():
    if NODE.exists():
        shutil.rmtree(NODE)
    out = []  # (set key, events)

    def pod_dir(p):
        return f"{PODS}/{p[0]}_{p[1]}_{p[2]}"

    def kube(p, container, restart):
        return {"namespace": p[0], "pod": p[1], "pod_uid": p[2], "container": container, "restart_count": restart}

    def put(rel, data, gz=False):
        path = NODE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if gz:
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as g:
                g.write(data)
            data = buf.getvalue()
        path.write_bytes(data)

    # web/nginx (containerd, CRI): two rotations, the older one gzipped; one line is
    # split across the last rotation (P in the rotated file, F in the live one).
    base = parse_ns("2026-11-21T09:55:00Z")
    files = [b"", b"", b""]
    events = b""
    k = kube(WEB, "nginx", 0)
    for i in range(30):
        t = base + i * 10_000_000_000
        ts = fmt_time(t)
        msg = b'10.0.0.%d - - "GET /items/%d HTTP/1.1" 200 %d "-" "curl/8.5.0"' % (i, i, 100 + i)
        fi = 0 if i < 10 else 1 if i < 20 else 2
        stream = "stderr" if i % 7 == 3 else "stdout"
        if i == 19:  # cut across the rotation
            files[1] += cri_line(ts, stream, "P", msg[:20])
            files[2] += cri_line(fmt_time(t + 1), stream, "F", msg[20:])
        else:
            files[fi] += cri_line(ts, stream, "F", msg)
        events += event(t, stream, msg, kube=k)
    nginx = f"{pod_dir(WEB)}/nginx"
    put(f"{nginx}/0.log.20261121-095700.gz", files[0], gz=True)
    put(f"{nginx}/0.log.20261121-100000", files[1])
    put(f"{nginx}/0.log", files[2])
    out.append(((nginx, "0.log"), events))

    # web/app (containerd): restarted once; a long JSON line split at 16 KiB.
    app = f"{pod_dir(WEB)}/app"
    t0 = parse_ns("2026-11-21T10:00:00Z")
    crash = b'{"level":"fatal","msg":"config missing","path":"/etc/app/config.yaml"}'
    put(f"{app}/0.log", cri_line(fmt_time(t0), "stderr", "F", crash))
    out.append(((app, "0.log"), event(t0, "stderr", crash, kube=kube(WEB, "app", 0))))
    big = b'{"level":"info","msg":"loaded","items":[' + b",".join(b'"item-%05d"' % i for i in range(3000)) + b"]}"
    data, ev = b"", b""
    t1 = t0 + 5_000_000_000
    data += cri_line(fmt_time(t1), "stdout", "F", b'{"level":"info","msg":"starting"}')
    ev += event(t1, "stdout", b'{"level":"info","msg":"starting"}', kube=kube(WEB, "app", 1))
    for j, (piece, last) in enumerate(cri_pieces(big)):
        data += cri_line(fmt_time(t1 + 1 + j), "stdout", "F" if last else "P", piece)
    ev += event(t1 + 1, "stdout", big, kube=kube(WEB, "app", 1))
    put(f"{app}/1.log", data)
    out.append(((app, "1.log"), ev))

    # coredns on a Docker node (json-file).
    dns = f"{pod_dir(DNS)}/coredns"
    data, ev = b"", b""
    kd = kube(DNS, "coredns", 0)
    for i, m in enumerate([b"[INFO] plugin/reload: Running configuration SHA512 = 1b2c", b".:53",
                           b"CoreDNS-1.11.1", b'[INFO] 10.0.0.7:51234 - 4242 "A IN web.default.svc. udp 41 false 512" NOERROR'],):
        t = t0 + i * 1_000_000
        data += docker_line(m, "stdout", fmt_time(t))
        ev += event(t, "stdout", m, kube=kd)
    put(f"{dns}/0.log", data)
    out.append(((dns, "0.log"), ev))

    # /var/log/containers links to the live files, as the kubelet makes them.
    links = NODE / "var/log/containers"
    links.mkdir(parents=True, exist_ok=True)
    for (p, c, n, i) in [(WEB, "nginx", "0.log", 1), (WEB, "app", "1.log", 2), (DNS, "coredns", "0.log", 3)]:
        name = f"{p[1]}_{p[0]}_{c}-{CID.format(i)}.log"
        os.symlink(f"../pods/{p[0]}_{p[1]}_{p[2]}/{c}/{n}", links / name)

    out.sort(key=lambda kv: (kv[0][0].split("/"), kv[0][1]))
    (HERE / "node.out").write_bytes(b"".join(ev for _, ev in out))


def main():
    for name, fn in CASES.items():
        log, out = fn()
        (HERE / f"{name}.log").write_bytes(log)
        (HERE / f"{name}.out").write_bytes(out)
    write_node()
    print(f"wrote {len(CASES)} cases and the node tree under {HERE}")


if __name__ == "__main__":
    main()
