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
    aws_emulator.py inventory ENDPOINT                      JSON: the buckets, Firehose
                                                            streams, IAM roles and log
                                                            groups there are
    aws_emulator.py role-policies ENDPOINT ROLE             JSON: the role's inline
                                                            policies by name, and its
                                                            trust policy ("trust")

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


def inventory(endpoint):
    import json

    out = {
        "buckets": [b["Name"] for b in client("s3", endpoint).list_buckets().get("Buckets", [])],
        "streams": client("firehose", endpoint).list_delivery_streams()["DeliveryStreamNames"],
        "roles": [r["RoleName"] for r in client("iam", endpoint).list_roles()["Roles"]],
        "log_groups": [g["logGroupName"] for g in client("logs", endpoint).describe_log_groups()["logGroups"]],
    }
    print(json.dumps(out))


def role_policies(endpoint, role):
    import json
    from urllib.parse import unquote

    iam = client("iam", endpoint)
    out = {}
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        out[name] = json.loads(unquote(doc)) if isinstance(doc, str) else doc
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    out["trust"] = json.loads(unquote(trust)) if isinstance(trust, str) else trust
    print(json.dumps(out))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    commands = {"firehose-setup": firehose_setup, "s3-read": s3_read, "logs-read": logs_read, "s3-setup": s3_setup, "s3-objects": s3_objects,
                "inventory": inventory, "role-policies": role_policies}
    commands[command](*args)
