output "bucket" {
  description = "The S3 bucket for logs."
  value       = local.bucket
}

output "firehose_stream_name" {
  description = "The Firehose delivery stream (null when not created)."
  value       = var.create_firehose ? aws_kinesis_firehose_delivery_stream.logs[0].name : null
}

output "log_group" {
  description = "The CloudWatch Logs group (null when not created)."
  value       = var.create_log_group ? aws_cloudwatch_log_group.logs[0].name : null
}

output "role_arn" {
  description = "The role logferry runs as (null when not created): the ServiceAccount's eks.amazonaws.com/role-arn annotation with IRSA; with Pod Identity the association is made here."
  value       = var.create_role ? aws_iam_role.logferry[0].arn : null
}

output "service_account_annotations" {
  description = "The annotations logferry's ServiceAccount needs (IRSA: the role ARN; Pod Identity: none)."
  value       = var.create_role && var.trust == "irsa" ? { "eks.amazonaws.com/role-arn" = aws_iam_role.logferry[0].arn } : {}
}

output "sinks_toml" {
  description = "[sinks.…] tables for logferry.toml (the ConfigMap): one per destination created; logferry check accepts it."
  value = join("\n", compact([
    !var.create_firehose ? "" : <<-EOT
      # Firehose → s3://${local.bucket}/${local.firehose_prefix}
      [sinks.firehose]
      type = "firehose"
      delivery_stream = "${aws_kinesis_firehose_delivery_stream.logs[0].name}"
      region = "${local.region}"
      # The stream deaggregates at most 500 events per record (dynamic partitioning).
      max_events_per_record = 500
    EOT
    ,
    !var.s3_sink ? "" : <<-EOT
      # Objects straight into s3://${local.bucket}/${var.s3_key_prefix}<namespace>/dt=<date>/
      [sinks.s3]
      type = "s3"
      bucket = "${local.bucket}"
      region = "${local.region}"
      key_prefix = "${var.s3_key_prefix}{namespace}/dt={date}/"
    EOT
    ,
    !var.create_log_group ? "" : <<-EOT
      [sinks.cloudwatch]
      type = "cloudwatch"
      region = "${local.region}"
      cluster = "${var.cluster_name}"
      log_group = "${local.log_group_name}"
      retention_days = ${var.log_retention_days}
    EOT
  ]))
}
