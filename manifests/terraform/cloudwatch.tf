# The log group the cloudwatch sink's default template names, with a retention. Groups
# its template names per namespace are created by logferry itself (create_missing, with
# the sink's retention_days) under log_group_prefix, which its policy covers.

resource "aws_cloudwatch_log_group" "logs" {
  count = var.create_log_group ? 1 : 0

  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  tags              = local.tags
}
