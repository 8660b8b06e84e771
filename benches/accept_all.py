#!/usr/bin/env python3
"""A Firehose endpoint on 127.0.0.1 that accepts every PutRecordBatch, and an S3 one
that accepts every PutObject: the far end of benches/firehose.sh and benches/s3.sh, so
that what is measured is logferry's own work.

    accept_all.py PORT_FILE [KEYS_FILE]
                                listens on a free port, writes it to PORT_FILE; with
                                KEYS_FILE, appends "<unix time> <bytes> <path>" per PUT

It counts records without decoding them (the Data fields are base64, never a quote),
answers with one RecordId each, and prints totals on SIGTERM. With the environment's
ACCEPT_ALL_COUNT=FILE it also hands every PutRecordBatch body to a second process that
decodes the records as they come (so that the endpoint stays quick), and keeps in
FILE.last "<calls> <unix time of the last call>"; on SIGTERM that process writes to
FILE "<events> <torn>": the newline-ended events in the records, and the records that
did not end with a newline (benches/dense.sh --sink firehose checks both).

    accept_all.py --count FILE  that second process: bodies on stdin, one per line
"""
import base64
import http.server
import os
import re
import threading
import signal
import subprocess
import sys
import time

calls = 0
keys = None
records = 0
body_bytes = 0
COUNT = os.environ.get("ACCEPT_ALL_COUNT")
COUNTER = None  # the counting process, with COUNT
HANDING = threading.Lock()  # calls are answered on threads of their own
DATA = re.compile(rb'"Data":"([^"]*)"')


def hand_to_counter(body):
    """Passes the body on (one per line: base64 and JSON hold no newline), notes the call."""
    with HANDING:
        COUNTER.stdin.write(body + b"\n")
        with open(COUNT + ".last.tmp", "w") as f:
            f.write(f"{calls} {time.time():.3f}\n")
        os.replace(COUNT + ".last.tmp", COUNT + ".last")


def count(path):
    """Events (newlines) in the records of the bodies on stdin, and records not ending
    with one, written to `path` at the end of the input."""
    events = torn = 0
    for body in sys.stdin.buffer:
        for m in DATA.finditer(body):
            data = base64.b64decode(m.group(1))
            events += data.count(b"\n")
            torn += not data.endswith(b"\n")
    with open(path, "w") as f:
        f.write(f"{events} {torn}\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global calls, records, body_bytes
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = body.count(b'"Data"')
        calls += 1
        if COUNTER:
            hand_to_counter(body)
        records += n
        body_bytes += len(body)
        entries = ",".join(['{"RecordId":"r"}'] * n)
        out = ('{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[%s]}' % entries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_PUT(self):
        global calls, records, body_bytes
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        calls += 1
        records += 1
        body_bytes += len(body)
        if keys:
            keys.write("%.3f %d %s\n" % (time.time(), len(body), self.path))
            keys.flush()
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    global keys, COUNTER
    if sys.argv[1] == "--count":
        count(sys.argv[2])
        return
    if COUNT:
        COUNTER = subprocess.Popen([sys.executable, __file__, "--count", COUNT], stdin=subprocess.PIPE)
    if len(sys.argv) > 2:
        keys = open(sys.argv[2], "a")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))

    def stop(*_):
        print(f"accept_all: {calls} calls, {records} records, {body_bytes} request bytes", file=sys.stderr)
        if COUNTER:
            with HANDING:
                COUNTER.stdin.close()
            COUNTER.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
