#!/usr/bin/env python3
"""A Firehose endpoint on 127.0.0.1 that accepts every PutRecordBatch, and an S3 one
that accepts every PutObject: the far end of benches/firehose.sh and benches/s3.sh, so
that what is measured is logferry's own work.

    accept_all.py PORT_FILE [KEYS_FILE]
                                listens on a free port, writes it to PORT_FILE; with
                                KEYS_FILE, appends "<unix time> <bytes> <path>" per PUT

It counts records without decoding them (the Data fields are base64, never a quote),
answers with one RecordId each, and prints totals on SIGTERM.
"""
import http.server
import signal
import sys
import time

calls = 0
keys = None
records = 0
body_bytes = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global calls, records, body_bytes
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = body.count(b'"Data"')
        calls += 1
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
    global keys
    if len(sys.argv) > 2:
        keys = open(sys.argv[2], "a")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))

    def stop(*_):
        print(f"accept_all: {calls} calls, {records} records, {body_bytes} request bytes", file=sys.stderr)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
