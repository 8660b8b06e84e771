# A Direct PUT stream into the bucket, split per namespace and day: logferry's records
# are newline-joined JSON events (max_events_per_record = 500 in the sink: Firehose
# splits an aggregated record into at most 500), deaggregated, a delimiter added back,
# the namespace read with JQ, and the prefix built from it and the arrival day.

resource "aws_kinesis_firehose_delivery_stream" "logs" {
  count = var.create_firehose ? 1 : 0

  name        = local.stream_name
  destination = "extended_s3"
  tags        = local.tags

  extended_s3_configuration {
    role_arn            = aws_iam_role.firehose[0].arn
    bucket_arn          = local.bucket_arn
    prefix              = local.firehose_prefix
    error_output_prefix = local.firehose_error_prefix
    buffering_size      = var.firehose_buffering_size_mb
    buffering_interval  = var.firehose_buffering_interval_seconds
    compression_format  = "GZIP"

    dynamic_partitioning_configuration {
      enabled = true
    }

    processing_configuration {
      enabled = true

      processors {
        type = "RecordDeAggregation"
        parameters {
          parameter_name  = "SubRecordType"
          parameter_value = "JSON"
        }
      }

      processors {
        type = "AppendDelimiterToRecord"
      }

      processors {
        type = "MetadataExtraction"
        parameters {
          parameter_name  = "JsonParsingEngine"
          parameter_value = "JQ-1.6"
        }
        parameters {
          parameter_name  = "MetadataExtractionQuery"
          parameter_value = "{namespace:.kubernetes.namespace}"
        }
      }
    }
  }
}

# The stream's own role: write objects into the bucket, nothing else.
resource "aws_iam_role" "firehose" {
  count = var.create_firehose ? 1 : 0

  name = "${var.name}-firehose-delivery"
  tags = local.tags
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "firehose.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "sts:ExternalId" = local.account } }
    }]
  })
}

resource "aws_iam_role_policy" "firehose" {
  count = var.create_firehose ? 1 : 0

  name = "${var.name}-firehose-delivery"
  role = aws_iam_role.firehose[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "TheBucket"
        Effect   = "Allow"
        Action   = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
        Resource = local.bucket_arn
      },
      {
        Sid      = "ItsObjects"
        Effect   = "Allow"
        Action   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
        Resource = "${local.bucket_arn}/*"
      },
    ]
  })
}
