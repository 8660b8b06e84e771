#!/usr/bin/env python3
"""Sets up and reads back the AWS emulator (moto server) for the integration tests.

    aws_emulator.py firehose-setup ENDPOINT STREAM BUCKET   a bucket and a Direct PUT
                                                            stream delivering to it
    aws_emulator.py s3-read ENDPOINT BUCKET                 every object's bytes, in
                                                            key order, to stdout
    aws_emulator.py logs-read ENDPOINT GROUP                JSON: the group's retention
                                                            and each stream's messages
                                                            in order (GetLogEvents)
    aws_emulator.py s3-setup ENDPOINT BUCKET                an empty bucket
    aws_emulator.py s3-objects ENDPOINT BUCKET              JSON: each object's key,
                                                            size, content encoding and
                                                            type, and its lines
                                                            (decompressed)

Talks only to ENDPOINT (a 127.0.0.1 URL), with dummy credentials.
"""
import sys

import boto3


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def firehose_setup(endpoint, stream, bucket):
    client("s3", endpoint).create_bucket(Bucket=bucket)
    client("firehose", endpoint).create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "logs/",
        },
    )


def s3_read(endpoint, bucket):
    s3 = client("s3", endpoint)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    out = sys.stdout.buffer
    for key in sorted(keys):
        out.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    out.flush()


def s3_setup(endpoint, bucket):
    client("s3", endpoint).create_bucket(Bucket=bucket)


def s3_objects(endpoint, bucket):
    import gzip
    import json

    s3 = client("s3", endpoint)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    out = []
    for key in sorted(keys):
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
        encoding = obj.get("ContentEncoding")
        data = gzip.decompress(body) if encoding == "gzip" else body
        out.append({
            "key": key,
            "size": len(body),
            "content_encoding": encoding,
            "content_type": obj.get("ContentType"),
            "lines": data.decode("utf-8").splitlines(),
        })
    print(json.dumps(out))


def logs_read(endpoint, group):
    import json

    logs = client("logs", endpoint)
    out = {"retention": None, "streams": {}}
    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    for g in groups:
        if g["logGroupName"] == group:
            out["retention"] = g.get("retentionInDays")
    if not any(g["logGroupName"] == group for g in groups):
        print(json.dumps(out))
        return
    streams = []
    for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=group):
        streams += [s["logStreamName"] for s in page["logStreams"]]
    for stream in streams:
        messages, token = [], None
        while True:
            kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
            if token:
                kwargs["nextToken"] = token
            page = logs.get_log_events(**kwargs)
            messages += [e["message"] for e in page["events"]]
            if not page["events"] or page.get("nextForwardToken") == token:
                break
            token = page["nextForwardToken"]
        out["streams"][stream] = messages
    print(json.dumps(out))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    commands = {"firehose-setup": firehose_setup, "s3-read": s3_read, "logs-read": logs_read, "s3-setup": s3_setup, "s3-objects": s3_objects}
    commands[command](*args)
