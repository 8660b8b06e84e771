#!/usr/bin/env python3
"""Short-line CRI corpus for the Firehose billing check (issue 18).

    python3 benches/gen_short.py --out DIR [--lines N]

One container file, DIR/var/log/pods/shop_api_uid-1/app/0.log, of N (250,000) stdout
lines of ~88-character messages (~258-byte events once encoded with their metadata),
and DIR/expected.json with total_bytes, as benches/firehose.sh --corpus expects.
"""
import argparse
import json
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--lines", type=int, default=250_000)
    a = ap.parse_args()
    d = os.path.join(a.out, "var/log/pods/shop_api_uid-1/app")
    os.makedirs(d, exist_ok=True)
    rng = random.Random(1)
    words = "request served user cart order payment retry cache miss hit worker queue job started finished latency".split()
    out = []
    for i in range(a.lines):
        msg = " ".join(rng.choice(words) for _ in range(12))[:80] + f" id={i}"
        out.append(f"2026-12-06T10:00:00.{i:09d}Z stdout F {msg}\n")
    data = "".join(out).encode()
    with open(os.path.join(d, "0.log"), "wb") as f:
        f.write(data)
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump({"total_bytes": len(data)}, f)


if __name__ == "__main__":
    main()
