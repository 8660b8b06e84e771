#!/usr/bin/env python3
"""A trace-heavy CRI corpus for the multiline benchmark (issue 17).

    python3 benches/gen_traces.py --size-mb N --out DIR [--seed S] [--containers K]

Each container's 0.log (under DIR/var/log/pods/<ns>_<pod>_<uid>/app/) holds application
log lines (80-300 bytes) and Java stack traces as the JVM prints them (an exception
line, 8-40 `\\tat` frames, sometimes a `Caused by:` chain with `... N more`), so that
about 30 % of all lines are in traces. stdout and stderr interleave. DIR/expected.json
says how many lines, traces and trace lines were written, for the benchmark to check
that `replay --multiline java` groups exactly those.
"""
import argparse
import json
import os
import random

WORDS = ("request served user cart order payment retry cache miss hit worker queue job "
         "started finished latency ms id region shard token session refreshed").split()
CLASSES = ["com.example.shop.CartService", "com.example.shop.OrderService", "org.springframework.web.servlet.FrameworkServlet",
           "org.apache.catalina.core.ApplicationFilterChain", "java.base/java.lang.Thread", "io.netty.channel.AbstractChannelHandlerContext"]
EXCEPTIONS = ["java.lang.NullPointerException", "java.lang.IllegalStateException", "org.springframework.dao.DataAccessResourceFailureException",
              "java.util.concurrent.TimeoutException", "java.io.UncheckedIOException"]


def app_line(rng):
    n = rng.randint(80, 300)
    words = []
    while sum(len(w) + 1 for w in words) < n:
        words.append(rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(0, 10**6)))
    return ("INFO " + " ".join(words))[:n]


def frame(rng):
    cls = rng.choice(CLASSES)
    method = rng.choice(["handle", "run", "invoke", "doFilter", "process", "apply"])
    return f"\tat {cls}.{method}({cls.rsplit('.', 1)[-1].split('/')[-1]}.java:{rng.randint(10, 900)})"


def trace(rng):
    lines = [f"{rng.choice(EXCEPTIONS)}: {' '.join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))}"]
    lines += [frame(rng) for _ in range(rng.randint(8, 40))]
    if rng.random() < 0.4:
        lines.append(f"Caused by: {rng.choice(EXCEPTIONS)}: {rng.choice(WORDS)} {rng.choice(WORDS)}")
        lines += [frame(rng) for _ in range(rng.randint(3, 12))]
        lines.append(f"\t... {rng.randint(5, 60)} more")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--containers", type=int, default=8)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    per_file = int(a.size_mb * 1e6 / a.containers)
    totals = {"files": a.containers, "total_bytes": 0, "lines": 0, "traces": 0, "trace_lines": 0}
    for c in range(a.containers):
        d = os.path.join(a.out, "var/log/pods", f"shop_api-{c}_uid-{c:08d}", "app")
        os.makedirs(d, exist_ok=True)
        out = []
        size = 0
        ns = 1_765_015_200_000_000_000 + c
        # Per stream: the lines waiting to be written (a trace goes out whole, in order).
        queues = {"stdout": [], "stderr": []}
        while size < per_file:
            stream = "stderr" if rng.random() < 0.5 else "stdout"
            q = queues[stream]
            if not q:
                # ~30 % of lines in traces: a trace (~25 lines) for every ~58 app lines.
                if rng.random() < 0.017:
                    t = trace(rng)
                    q.extend(t)
                    totals["traces"] += 1
                    totals["trace_lines"] += len(t)
                else:
                    q.append(app_line(rng))
            line = q.pop(0)
            ns += rng.randint(1000, 2_000_000)
            secs, frac = divmod(ns, 1_000_000_000)
            import datetime as dt
            ts = dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
            rec = f"{ts} {stream} F {line}\n"
            out.append(rec)
            size += len(rec.encode())
            totals["lines"] += 1
        # Finish traces left open.
        for stream, q in queues.items():
            for line in q:
                out.append(f"2025-12-06T10:00:00.000000000Z {stream} F {line}\n")
                totals["lines"] += 1
        data = "".join(out).encode()
        with open(os.path.join(d, "0.log"), "wb") as f:
            f.write(data)
        totals["total_bytes"] += len(data)
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(totals, f, indent=1)
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
