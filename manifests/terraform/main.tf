# logferry's AWS side: where it ships (an S3 bucket, a Firehose stream partitioned per
# namespace and day, a CloudWatch Logs group) and the role it ships as. Every part is
# behind a switch (variables.tf); outputs.tf hands back the names and a [sinks…] TOML
# snippet for the ConfigMap. README.md, "Terraform", shows how to call it.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition

  bucket      = var.create_bucket ? aws_s3_bucket.logs[0].bucket : var.bucket_name
  bucket_arn  = "arn:${local.partition}:s3:::${local.bucket}"
  stream_name = "${var.name}-logs"

  firehose_prefix       = coalesce(var.firehose_prefix, "${var.name}/!{partitionKeyFromQuery:namespace}/dt=!{timestamp:yyyyMMdd}/")
  firehose_error_prefix = coalesce(var.firehose_error_prefix, "${var.name}-errors/!{firehose:error-output-type}/dt=!{timestamp:yyyyMMdd}/")

  log_group_name   = coalesce(var.log_group_name, "/eks/${var.cluster_name}/containers")
  log_group_prefix = coalesce(var.log_group_prefix, "/eks/${var.cluster_name}/")

  tags = merge({ "app.kubernetes.io/name" = "logferry" }, var.tags)
}
