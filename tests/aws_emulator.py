#!/usr/bin/env python3
"""Sets up and reads back the AWS emulator (moto server) for the integration tests.

    aws_emulator.py firehose-setup ENDPOINT STREAM BUCKET   a bucket and a Direct PUT
                                                            stream delivering to it
    aws_emulator.py s3-read ENDPOINT BUCKET                 every object's bytes, in
                                                            key order, to stdout

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


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"firehose-setup": firehose_setup, "s3-read": s3_read}[command](*args)
