#!/usr/bin/env python3
"""Generate a deterministic corpus of container log files for `logferry replay` benchmarks.

Usage:
    python3 benches/gen_corpus.py --format docker|cri --size-mb N --out DIR \
        [--seed S] [--containers K]

Layout written (like a kubelet node):
    DIR/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log   (K files, sizes split evenly)
    DIR/expected.json

expected.json keys:
    format          "docker" | "cri"
    files           number of log files written
    total_bytes     sum of the file sizes in bytes
    messages        logical log lines (after rejoining fragments per file and stream)
    fragments       physical lines
    split_messages  messages that were written as more than one fragment
    message_bytes   sum of the logical message lengths in bytes (UTF-8, no trailing newline)

Formats:
    docker  Docker json-file driver: {"log":"...","stream":"stdout","time":"<RFC3339Nano>"}
            per line. A message plus its trailing '\\n' is cut into pieces of at most
            16384 bytes at the largest UTF-8 character boundary; only the last piece's
            "log" ends with "\\n". Strings are escaped like Docker/Go (<, >, & as \\u003c,
            \\u003e, \\u0026; other non-ASCII written raw). Time fraction has trailing
            zeros trimmed.
    cri     containerd: "<time, 9 fraction digits>Z <stdout|stderr> <P|F> <bytes>\\n".
            Messages longer than 16384 bytes are cut at exact 16384-byte boundaries
            (a multi-byte character may straddle two pieces); pieces but the last are P.

Message mix (bytes of the logical message): ~70% 60-300 B, ~25% 1-4 KiB, ~5% 20-120 KiB.
~85% stdout / ~15% stderr; while a long message is being split, complete messages (and
sometimes another long message) on the other stream are interleaved between its fragments.

The output depends only on --format, --size-mb, --seed and --containers. Existing files at
the same paths are overwritten; other files under DIR are left alone (use a fresh DIR).
Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import json
import os
import random
import sys
import time
import uuid
from json.encoder import encode_basestring  # C-accelerated; same as json.dumps(ensure_ascii=False)

MAX_PIECE = 16384
BASE_SEC = calendar.timegm((2026, 11, 21, 10, 0, 0, 0, 0, 0))  # 2026-11-21T10:00:00Z
NAMESPACE = "bench-ns"
CONTAINER = "app"
FLUSH_BYTES = 8 << 20

SHORT_MIN, SHORT_MAX = 60, 300
MED_MIN, MED_MAX = 1024, 4096
LARGE_MIN, LARGE_MAX = 20 * 1024, 120 * 1024

POOL_SHORT = 3000
POOL_MEDIUM = 800
POOL_CHUNKS = 1500

# --------------------------------------------------------------------------- vocabulary

ASCII_WORDS = """
request handler connection timeout retrying cache miss hit upstream backend session token
expired refreshed user account order payment invoice shipment queue consumer producer
partition offset commit rollback transaction deadlock lock acquired released worker pool
thread scheduler job completed failed started pending retry backoff circuit breaker open
closed half-open endpoint route resolved dns lookup tls handshake certificate verified
socket closed reset peer gateway proxy latency slow fast bytes received sent flushed
buffer full dropped metric counter gauge histogram sample rate limit exceeded quota tenant
region zone node pod container image pulled config reloaded feature flag enabled disabled
migration applied schema table index query rows returned inserted updated deleted snapshot
checkpoint replica leader follower elected heartbeat missed health check passed degraded
ok warning critical shutdown graceful signal received listening port bound the a of to in
for with on from by at is was not no all new old next previous first last batch item
""".split()

MB_WORDS = [
    "café", "naïve", "Zürich", "Müller", "Ångström", "señor", "déjà-vu", "über", "Straße",
    "crème-brûlée", "São-Paulo", "Kraków", "Ærø", "日本", "東京", "処理中", "完了しました",
    "ユーザー", "错误", "数据库", "서울", "Привет", "ошибка", "Ελληνικά", "€42", "→", "✓",
    "½", "😀", "🚀", "✅", "🔥", "👍", "🎉", "🐳",
]

CJK_PHRASES = [
    "データベースへの接続がタイムアウトしました。", "ユーザーの認証に成功しました。",
    "注文番号を処理しています。", "キャッシュを再構築中です。", "設定ファイルを再読み込みしました。",
    "请求处理失败，正在重试。", "数据已成功写入磁盘。", "服务正在关闭。", "用户会话已过期。",
    "요청을 처리하는 중입니다。", "연결이 재설정되었습니다。", "東京リージョンのノードが応答しません。",
]

EMOJI = ["😀", "🚀", "✅", "🔥", "👍", "🎉", "🐳", "❤️", "⚠️", "🙏", "👀", "💥", "🇯🇵", "👩‍💻"]

LEVELS = ["INFO"] * 12 + ["DEBUG"] * 5 + ["WARN"] * 3 + ["ERROR"] * 2
METHODS = ["GET"] * 8 + ["POST"] * 3 + ["PUT", "DELETE", "PATCH"]
RESOURCES = ["items", "orders", "users", "carts", "payments", "search", "sessions", "inventory"]
STATUSES = [200] * 20 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 409, 429, 500, 502, 503]
LOGGERS = ["svc.http", "svc.db", "svc.cache", "orders.api", "payments.worker", "auth.jwt", "k8s.client"]
JAVA_CLASSES = [
    "com.example.orders.OrderService", "com.example.orders.OrderController",
    "com.example.payments.PaymentClient", "org.springframework.web.servlet.DispatcherServlet",
    "org.apache.catalina.core.ApplicationFilterChain", "com.zaxxer.hikari.pool.HikariPool",
    "io.netty.channel.AbstractChannelHandlerContext", "java.base/java.util.concurrent.ThreadPoolExecutor",
]
EXCEPTIONS = [
    "java.lang.IllegalStateException", "java.lang.NullPointerException",
    "java.util.concurrent.TimeoutException", "java.sql.SQLTransientConnectionException",
    "org.springframework.dao.DataIntegrityViolationException", "java.io.IOException",
]
NAMES = ["alice", "bob", "carol", "dave", "Zoë", "José", "Ünal", "Łukasz", "田中", "김민수", "erin", "frank"]
# Characters that must never appear in the pool (would need escapes we do not model, or are
# newlines): everything < 0x20 except TAB and ESC, plus U+2028/U+2029 which Docker escapes.
FORBIDDEN = {chr(c) for c in range(0x20) if c not in (0x09, 0x1B)} | {"\u2028", "\u2029"}


def blen(s: str) -> int:
    return len(s.encode("utf-8"))


class Vocab:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def hexs(self, n: int) -> str:
        return "%0*x" % (n, self.rng.getrandbits(4 * n))

    def ts_text(self) -> str:
        r = self.rng
        return "2026-11-21 10:%02d:%02d.%03d" % (r.randrange(60), r.randrange(60), r.randrange(1000))

    def ts_iso(self) -> str:
        r = self.rng
        return "2026-11-21T10:%02d:%02d.%03dZ" % (r.randrange(60), r.randrange(60), r.randrange(1000))

    def word(self, mb_prob: float) -> str:
        r = self.rng
        if r.random() < mb_prob:
            return r.choice(MB_WORDS)
        return r.choice(ASCII_WORDS)

    def text(self, max_bytes: int, mb_prob: float = 0.012) -> str:
        """Space-separated words, at most max_bytes UTF-8 bytes."""
        out: list[str] = []
        n = -1
        while True:
            w = self.word(mb_prob)
            wl = blen(w) + 1
            if n + wl > max_bytes:
                break
            out.append(w)
            n += wl
        return " ".join(out)


# --------------------------------------------------------------------------- short bodies


def short_plain(v: Vocab, target: int) -> str:
    r = v.rng
    head = "%s %-5s [worker-%d] %s /api/v1/%s?id=%d&page=%d %d %dms" % (
        v.ts_text(), r.choice(LEVELS), r.randrange(16), r.choice(METHODS), r.choice(RESOURCES),
        r.randrange(1, 10**7), r.randrange(1, 50), r.choice(STATUSES), r.randrange(1, 900))
    rest = target - blen(head) - 1
    return head + " " + v.text(rest) if rest > 8 else head


def short_json(v: Vocab, target: int) -> str:
    r = v.rng
    d = {
        "level": r.choice(["info"] * 6 + ["debug", "warn", "error"]),
        "ts": v.ts_iso(),
        "logger": r.choice(LOGGERS),
        "msg": "",
        "trace_id": v.hexs(32),
        "span_id": v.hexs(16),
    }
    if r.random() < 0.5:
        d["user"] = r.choice(NAMES)
    if r.random() < 0.5:
        d["duration_ms"] = round(r.random() * 500, 3)
    if r.random() < 0.15:
        d["query"] = "a=%d&b=<%s>" % (r.randrange(100), r.choice(ASCII_WORDS))
    base = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
    d["msg"] = v.text(max(target - blen(base), 5))
    if r.random() < 0.1:
        d["msg"] = 'user "%s" said: %s' % (r.choice(NAMES), d["msg"])
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def short_logfmt(v: Vocab, target: int) -> str:
    r = v.rng
    head = 'time="%s" level=%s component=%s' % (v.ts_iso(), r.choice(["info", "warning", "error", "debug"]), r.choice(LOGGERS))
    tail = ' err="%s"' % v.text(40) if r.random() < 0.3 else ""
    tail += " took=%d.%03dms" % (r.randrange(100), r.randrange(1000))
    rest = target - blen(head) - blen(tail) - 7
    return head + ' msg="' + v.text(max(rest, 5)) + '"' + tail


def short_java(v: Vocab, target: int) -> str:
    r = v.rng
    head = "%s %-5s [http-nio-8080-exec-%d] %s - " % (
        v.ts_text().replace(".", ","), r.choice(LEVELS), r.randrange(1, 200), r.choice(JAVA_CLASSES))
    return head + v.text(max(target - blen(head), 5))


def short_ansi(v: Vocab, target: int) -> str:
    r = v.rng
    lvl, col = r.choice([("INFO", 32), ("INFO", 32), ("WARN", 33), ("ERROR", 31), ("DEBUG", 36)])
    head = "\x1b[2m%s\x1b[0m \x1b[%dm%-5s\x1b[0m \x1b[1m%s\x1b[0m: " % (v.ts_iso(), col, lvl, r.choice(LOGGERS))
    return head + v.text(max(target - blen(head), 5))


def short_nginx(v: Vocab, target: int) -> str:
    r = v.rng
    line = '10.%d.%d.%d - - [21/Nov/2026:10:%02d:%02d +0000] "%s /%s/%d?q=%s&lang=%s HTTP/1.1" %d %d "-" "%s"' % (
        r.randrange(256), r.randrange(256), r.randrange(256), r.randrange(60), r.randrange(60),
        r.choice(METHODS), r.choice(RESOURCES), r.randrange(10**5), r.choice(ASCII_WORDS),
        r.choice(["en", "de", "ja", "fr"]), r.choice(STATUSES), r.randrange(10**5),
        r.choice(["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "kube-probe/1.31", "Go-http-client/1.1"]))
    return line


def short_python(v: Vocab, target: int) -> str:
    r = v.rng
    head = "%s:\t%s:\t" % (r.choice(["INFO", "WARNING", "ERROR", "DEBUG"]), r.choice(["uvicorn.access", "celery.worker", "app.tasks", "sqlalchemy.engine"]))
    return head + v.text(max(target - blen(head), 5))


SHORT_GENS = [(short_plain, 30), (short_json, 35), (short_logfmt, 10), (short_java, 10),
              (short_ansi, 5), (short_nginx, 5), (short_python, 5)]

# --------------------------------------------------------------------------- medium bodies


def fill_until(parts: list[str], size: int, target: int, gen) -> int:
    """Append gen() results to parts while the total stays <= target bytes."""
    while True:
        p = gen()
        pl = blen(p)
        if size + pl > target:
            return size
        parts.append(p)
        size += pl


def med_java_stack(v: Vocab, target: int) -> str:
    r = v.rng
    frames: list[str] = ["%s: %s" % (r.choice(EXCEPTIONS), v.text(80))]

    def frame() -> str:
        cls = r.choice(JAVA_CLASSES)
        m = r.choice(["process", "handle", "invoke", "doFilter", "run", "apply", "lambda$submit$0"])
        return "\n\tat %s.%s(%s.java:%d)" % (cls, m, cls.rsplit(".", 1)[-1], r.randrange(20, 900))

    d = {"@timestamp": v.ts_iso(), "level": "ERROR", "logger_name": r.choice(JAVA_CLASSES),
         "thread_name": "http-nio-8080-exec-%d" % r.randrange(1, 200),
         "message": "Failed to process order %d: %s" % (r.randrange(10**6), v.text(60)),
         "stack_trace": ""}
    base = blen(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
    # escaping "\n\t" in the stack costs 2 extra bytes per frame; account roughly
    fill_until(frames, base + blen(frames[0]), target - 40, lambda: frame() + "  ")
    d["stack_trace"] = "".join(f.rstrip(" ") for f in frames)
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def med_sql(v: Vocab, target: int) -> str:
    r = v.rng
    head = "%s DEBUG [db-pool-%d] o.h.SQL - select o.id, o.customer_id, o.status, o.total, c.name from orders o join customers c on c.id = o.customer_id where o.tenant = '%s' and o.id in (" % (
        v.ts_text(), r.randrange(8), r.choice(NAMES))
    parts = [head]
    fill_until(parts, blen(head), target - 40, lambda: "%d, " % r.randrange(10**9))
    tail = "0) and o.note <> 'x' order by o.id"
    parts.append(tail)
    return "".join(parts)


def med_http_dump(v: Vocab, target: int) -> str:
    r = v.rng
    head = "%s WARN [gateway] slow upstream response method=POST url=https://api.internal/v2/%s?x=%d&y=%d status=%d headers={" % (
        v.ts_text(), r.choice(RESOURCES), r.randrange(100), r.randrange(100), r.choice(STATUSES))
    parts = [head,
             '"Authorization":"Bearer %s",' % base64.b64encode(r.randbytes(r.randrange(60, 200))).decode()]
    size = blen(head) + blen(parts[1])
    size = fill_until(parts, size, target - 2, lambda: '"X-%s-%s":"%s",' % (
        r.choice(ASCII_WORDS).capitalize(), r.choice(ASCII_WORDS).capitalize(), v.text(r.randrange(10, 60), 0.1)))
    parts.append("}")
    return "".join(parts)


def med_json_payload(v: Vocab, target: int) -> str:
    r = v.rng

    def item() -> str:
        return json.dumps({"id": r.randrange(10**6), "sku": "SKU-%s" % v.hexs(8),
                           "name": v.text(r.randrange(12, 60), 0.15), "qty": r.randrange(1, 9),
                           "price": round(r.random() * 200, 2)},
                          ensure_ascii=False, separators=(",", ":")) + ","

    head = '{"level":"info","msg":"batch processed","batch":%d,"items":[' % r.randrange(10**5)
    tail = '{}],"trace_id":"%s"}' % v.hexs(32)
    parts = [head]
    fill_until(parts, blen(head) + blen(tail), target, item)
    parts.append(tail)
    return "".join(parts)


def med_py_traceback(v: Vocab, target: int) -> str:
    r = v.rng
    frames = ["Traceback (most recent call last):"]

    def frame() -> str:
        return '\n  File "/app/%s/%s.py", line %d, in %s\n    %s' % (
            r.choice(["worker", "api", "tasks", "db"]), r.choice(ASCII_WORDS), r.randrange(10, 800),
            r.choice(["run", "handle", "_execute", "<module>", "__call__"]), v.text(50, 0.02))

    d = {"level": "error", "logger": "app.tasks", "msg": "task failed: " + v.text(50), "exc_info": ""}
    base = blen(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
    fill_until(frames, base + 40, target - 60, lambda: frame() + "        ")
    frames = [f.rstrip(" ") for f in frames]
    frames.append("\nKeyError: '%s'" % r.choice(ASCII_WORDS))
    d["exc_info"] = "".join(frames)
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


MED_GENS = [(med_java_stack, 25), (med_sql, 15), (med_http_dump, 20), (med_json_payload, 25), (med_py_traceback, 15)]

# --------------------------------------------------------------------------- large chunks


def chunk_text(v: Vocab, target: int) -> str:
    return v.text(target, 0.05)


def chunk_cjk(v: Vocab, target: int) -> str:
    r = v.rng
    parts: list[str] = []
    fill_until(parts, 0, target, lambda: r.choice(CJK_PHRASES) if r.random() < 0.85 else " id=%d " % r.randrange(10**6))
    return "".join(parts)


def chunk_emoji(v: Vocab, target: int) -> str:
    r = v.rng
    parts: list[str] = []
    fill_until(parts, 0, target, lambda: r.choice(EMOJI) if r.random() < 0.35 else r.choice(ASCII_WORDS) + " ")
    return "".join(parts)


def chunk_base64(v: Vocab, target: int) -> str:
    return base64.b64encode(v.rng.randbytes(target * 3 // 4)).decode()[:target]


def chunk_records(v: Vocab, target: int) -> str:
    r = v.rng
    parts: list[str] = []
    fill_until(parts, 0, target, lambda: json.dumps(
        {"id": r.randrange(10**6), "name": r.choice(NAMES), "city": r.choice(["Zürich", "Kraków", "東京", "Lyon", "Austin"]),
         "tags": [r.choice(ASCII_WORDS) for _ in range(r.randrange(1, 4))], "score": round(r.random(), 4)},
        ensure_ascii=False, separators=(",", ":")) + ",")
    return "".join(parts)


def chunk_html(v: Vocab, target: int) -> str:
    r = v.rng
    parts: list[str] = []
    fill_until(parts, 0, target, lambda: '<div class="item" data-id="%d">%s &amp; %s</div>' % (
        r.randrange(10**5), v.text(30, 0.08), r.choice(ASCII_WORDS)))
    return "".join(parts)


def chunk_hex(v: Vocab, target: int) -> str:
    r = v.rng
    parts: list[str] = []
    fill_until(parts, 0, target, lambda: "%08x  %s  " % (r.randrange(1 << 24), r.randbytes(16).hex(" ")))
    return "".join(parts)


CHUNK_GENS = [(chunk_text, 30), (chunk_cjk, 8), (chunk_emoji, 4), (chunk_base64, 15),
              (chunk_records, 17), (chunk_html, 12), (chunk_hex, 10)]


def weighted(gens):
    fns = [g for g, _ in gens]
    cum = []
    t = 0
    for _, w in gens:
        t += w
        cum.append(t)
    return fns, cum


def check_clean(s: str) -> None:
    if not FORBIDDEN.isdisjoint(s):
        raise AssertionError("pool text contains a forbidden character: %r" % s[:80])


class Pool:
    """Precomputed message bodies and chunks; messages are drawn/assembled from these."""

    def __init__(self, rng: random.Random):
        v = Vocab(rng)
        self.rng = rng
        self.short = self._build(v, SHORT_GENS, POOL_SHORT, lambda: rng.randint(SHORT_MIN, SHORT_MAX), SHORT_MIN, SHORT_MAX)
        self.medium = self._build(v, MED_GENS, POOL_MEDIUM, lambda: rng.randint(MED_MIN + 200, MED_MAX), MED_MIN, MED_MAX)
        chunks = self._build(v, CHUNK_GENS, POOL_CHUNKS, lambda: rng.randint(256, 2048), 1, 2048)
        # (raw text, bytes) and (JSON-string-escaped text, bytes) variants of each chunk
        self.chunks_raw = [(c, blen(c)) for c in chunks]
        self.chunks_json = [(e, blen(e)) for e in (encode_basestring(c)[1:-1] for c in chunks)]
        self.large_heads = []
        for i in range(64):
            if i % 2 == 0:
                h = "%s DEBUG [batch-%d] %s payload dump (%s): " % (v.ts_text(), rng.randrange(32), rng.choice(LOGGERS), v.text(40))
                self.large_heads.append((False, h, " <end of dump>"))
            else:
                h = '{"level":"debug","logger":"%s","msg":"large response body","status":%d,"body":"' % (
                    rng.choice(LOGGERS), rng.choice(STATUSES))
                self.large_heads.append((True, h, '","trace_id":"%s"}' % v.hexs(32)))

    @staticmethod
    def _build(v: Vocab, gens, count, pick_target, lo, hi) -> list[str]:
        fns, cum = weighted(gens)
        out: list[str] = []
        rng = v.rng
        while len(out) < count:
            fn = rng.choices(fns, cum_weights=cum)[0]
            s = fn(v, pick_target())
            n = blen(s)
            if lo <= n <= hi:
                check_clean(s)
                out.append(s)
        return out

    def large(self) -> str:
        r = self.rng
        is_json, head, tail = r.choice(self.large_heads)
        chunks = self.chunks_json if is_json else self.chunks_raw
        target = r.randint(LARGE_MIN + 2100, LARGE_MAX)
        parts = [head]
        size = blen(head) + blen(tail)
        nch = len(chunks)
        while True:
            c, cl = chunks[r.randrange(nch)]
            if size + cl > target:
                break
            parts.append(c)
            size += cl
        parts.append(tail)
        return "".join(parts)

    def message(self) -> bytes:
        x = self.rng.random()
        if x < 0.70:
            s = self.short[self.rng.randrange(POOL_SHORT)]
        elif x < 0.95:
            s = self.medium[self.rng.randrange(POOL_MEDIUM)]
        else:
            s = self.large()
        return s.encode("utf-8")

    def short_message(self) -> bytes:
        return self.short[self.rng.randrange(POOL_SHORT)].encode("utf-8")


# --------------------------------------------------------------------------- formats


def split_cri(msg: bytes) -> list[bytes]:
    if len(msg) <= MAX_PIECE:
        return [msg]
    return [msg[i:i + MAX_PIECE] for i in range(0, len(msg), MAX_PIECE)]


def split_docker(msg: bytes) -> list[bytes]:
    raw = msg + b"\n"
    n = len(raw)
    if n <= MAX_PIECE:
        return [raw]
    pieces = []
    start = 0
    while n - start > MAX_PIECE:
        cut = start + MAX_PIECE
        while raw[cut] & 0xC0 == 0x80:  # step back to a UTF-8 character boundary
            cut -= 1
        pieces.append(raw[start:cut])
        start = cut
    pieces.append(raw[start:])
    return pieces


class Clock:
    """Nanosecond clock starting at 2026-11-21T10:00:00Z."""

    def __init__(self, rng: random.Random, fixed9: bool):
        self.rng = rng
        self.ns = 0
        self.fixed9 = fixed9
        self._sec = -1
        self._prefix = ""

    def advance(self, new_message: bool) -> None:
        r = self.rng
        if new_message:
            us = r.randint(1, 2000)
        else:
            us = r.randint(0, 40)
        sub = r.randrange(1000) if r.random() < 0.7 else 0
        self.ns += us * 1000 + sub

    def stamp(self) -> str:
        sec, frac = divmod(self.ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(BASE_SEC + sec))
        if self.fixed9:
            return "%s.%09dZ" % (self._prefix, frac)
        if frac == 0:
            return self._prefix + "Z"
        return "%s.%sZ" % (self._prefix, ("%09d" % frac).rstrip("0"))


STREAMS = ("stdout", "stderr")
DOCKER_TAIL = {s: ',"stream":"%s","time":"' % s for s in STREAMS}
CRI_MID = {(s, last): (" %s %s " % (s, "F" if last else "P")).encode() for s in STREAMS for last in (False, True)}


def docker_line(stream: str, piece: bytes, last: bool, ts: str) -> bytes:
    esc = encode_basestring(piece.decode("utf-8"))
    if "<" in esc:
        esc = esc.replace("<", "\\u003c")
    if ">" in esc:
        esc = esc.replace(">", "\\u003e")
    if "&" in esc:
        esc = esc.replace("&", "\\u0026")
    return ('{"log":' + esc + DOCKER_TAIL[stream] + ts + '"}\n').encode("utf-8")


def cri_line(stream: str, piece: bytes, last: bool, ts: str) -> bytes:
    return b"".join((ts.encode("ascii"), CRI_MID[(stream, last)], piece, b"\n"))


# --------------------------------------------------------------------------- generation


class Stats:
    def __init__(self) -> None:
        self.messages = 0
        self.fragments = 0
        self.split_messages = 0
        self.message_bytes = 0


def write_file(path: str, target: int, fmt: str, pool: Pool, rng: random.Random, st: Stats) -> int:
    split = split_docker if fmt == "docker" else split_cri
    mkline = docker_line if fmt == "docker" else cri_line
    clock = Clock(rng, fixed9=(fmt == "cri"))
    first_line = True
    buf: list[bytes] = []
    buf_bytes = 0
    written = 0

    def message(stream: str, msg: bytes) -> list[tuple[str, bytes, bool, bool]]:
        pieces = split(msg)
        st.messages += 1
        st.message_bytes += len(msg)
        if len(pieces) > 1:
            st.split_messages += 1
        last = len(pieces) - 1
        return [(stream, p, i == last, i == 0) for i, p in enumerate(pieces)]

    with open(path, "wb") as f:
        while written < target:
            stream = "stderr" if rng.random() < 0.11 else "stdout"  # + interleaved ones -> ~15%
            seq = message(stream, pool.message())
            if len(seq) > 1:
                # Interleave complete messages of the other stream between the fragments
                # (and occasionally another long, split message of the other stream).
                other = "stdout" if stream == "stderr" else "stderr"
                other_seq: list = []
                for _ in range(len(seq) - 1):
                    if rng.random() < 0.3:
                        other_seq += message(other, pool.short_message())
                if rng.random() < 0.12:
                    long_other = message(other, pool.large().encode("utf-8"))
                    if other_seq and rng.random() < 0.5:
                        other_seq = long_other + other_seq
                    else:
                        other_seq += long_other
                if other_seq:
                    merged = [seq[0]]
                    i, j = 1, 0
                    while i < len(seq) or j < len(other_seq):
                        ri, rj = len(seq) - i, len(other_seq) - j
                        if rj and (not ri or rng.random() * (ri + rj) < rj):
                            merged.append(other_seq[j])
                            j += 1
                        else:
                            merged.append(seq[i])
                            i += 1
                    seq = merged
            for s, piece, last, first in seq:
                if first_line:
                    first_line = False  # very first line: exactly 2026-11-21T10:00:00Z
                else:
                    clock.advance(first)
                line = mkline(s, piece, last, clock.stamp())
                buf.append(line)
                buf_bytes += len(line)
                st.fragments += 1
            if buf_bytes >= FLUSH_BYTES:
                f.write(b"".join(buf))
                written += buf_bytes
                buf.clear()
                buf_bytes = 0
                continue
            if written + buf_bytes >= target:
                break
        if buf:
            f.write(b"".join(buf))
            written += buf_bytes
    return written


def make_uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate a deterministic container-log corpus for logferry replay benchmarks.")
    ap.add_argument("--format", required=True, choices=["docker", "cri"])
    ap.add_argument("--size-mb", type=float, default=512, help="total size in MB (1 MB = 1,000,000 bytes); default 512")
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--seed", type=int, default=1, help="random seed; default 1")
    ap.add_argument("--containers", type=int, default=8, help="number of container log files; default 8")
    args = ap.parse_args(argv)
    if args.size_mb <= 0:
        ap.error("--size-mb must be > 0")
    if args.containers < 1:
        ap.error("--containers must be >= 1")

    t0 = time.monotonic()
    rng = random.Random(args.seed)
    pool = Pool(rng)
    total_target = int(args.size_mb * 1_000_000)
    k = args.containers
    st = Stats()
    total = 0
    for i in range(k):
        target = total_target // k + (1 if i < total_target % k else 0)
        pod_dir = "%s_app-%d-7d9f8c6b5-x2k4p_%s" % (NAMESPACE, i, make_uid(rng))
        d = os.path.join(args.out, "var", "log", "pods", pod_dir, CONTAINER)
        os.makedirs(d, exist_ok=True)
        total += write_file(os.path.join(d, "0.log"), target, args.format, pool, rng, st)

    expected = {
        "format": args.format,
        "files": k,
        "total_bytes": total,
        "messages": st.messages,
        "fragments": st.fragments,
        "split_messages": st.split_messages,
        "message_bytes": st.message_bytes,
    }
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    dt = time.monotonic() - t0
    print("gen_corpus: %s seed=%d: %d files, %d bytes, %d messages, %d fragments, %d split, %d message bytes in %.1fs -> %s"
          % (args.format, args.seed, k, total, st.messages, st.fragments, st.split_messages, st.message_bytes, dt, args.out),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
