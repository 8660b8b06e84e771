# The role logferry runs as. Its policies are manifests/iam/*.json — one source of
# truth with the kustomize overlays' documentation — with the files' example names
# (account 111122223333, region us-east-1, stream logferry, bucket my-logs, cluster
# my-cluster, the example OIDC provider) replaced by what this module creates. A
# precondition refuses a file that no longer names the example it replaces.

locals {
  iam_dir = "${path.module}/../iam"

  example_account = "111122223333"
  example_issuer  = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"

  oidc_issuer = var.oidc_provider_arn == null ? "" : split("oidc-provider/", var.oidc_provider_arn)[1]

  trust_policy = var.trust == "irsa" ? replace(replace(replace(
    file("${local.iam_dir}/irsa-trust-policy.json"),
    "arn:aws:iam::${local.example_account}:oidc-provider/${local.example_issuer}", coalesce(var.oidc_provider_arn, "missing")),
    local.example_issuer, local.oidc_issuer),
    "system:serviceaccount:logging:logferry", "system:serviceaccount:${var.namespace}:${var.service_account}",
    ) : replace(
    file("${local.iam_dir}/pod-identity-trust-policy.json"),
    "\"${local.example_account}\"", "\"${local.account}\"",
  )

  # Each policy: its file, the example resource it names, and what replaces it.
  replacements = {
    firehose = {
      file = "${local.iam_dir}/firehose-policy.json"
      from = "arn:aws:firehose:us-east-1:${local.example_account}:deliverystream/logferry"
      to   = "arn:${local.partition}:firehose:${local.region}:${local.account}:deliverystream/${local.stream_name}"
      on   = var.create_firehose
    }
    s3 = {
      file = "${local.iam_dir}/s3-policy.json"
      from = "arn:aws:s3:::my-logs/logs/*"
      to   = "${local.bucket_arn}/${var.s3_key_prefix}*"
      on   = var.s3_sink
    }
    cloudwatch = {
      file = "${local.iam_dir}/cloudwatch-logs-policy.json"
      from = "arn:aws:logs:us-east-1:${local.example_account}:log-group:/eks/my-cluster/"
      to   = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${local.log_group_prefix}"
      on   = var.create_log_group
    }
  }
  granted = { for k, r in local.replacements : k => r if r.on }
}

resource "aws_iam_role" "logferry" {
  count = var.create_role ? 1 : 0

  name               = "${var.name}-shipper"
  description        = "logferry, the log shipper DaemonSet (service account ${var.namespace}/${var.service_account})"
  assume_role_policy = local.trust_policy
  tags               = local.tags

  lifecycle {
    precondition {
      condition     = var.trust != "irsa" || var.oidc_provider_arn != null
      error_message = "trust = \"irsa\" needs oidc_provider_arn (the cluster's IAM OIDC provider)."
    }
    precondition {
      condition     = !strcontains(local.trust_policy, local.example_account) && !strcontains(local.trust_policy, "EXAMPLE")
      error_message = "The trust policy still names an example value of manifests/iam/: the file changed; update the replacements in iam.tf."
    }
  }
}

resource "aws_iam_role_policy" "logferry" {
  for_each = var.create_role ? local.granted : {}

  name   = "${var.name}-${each.key}"
  role   = aws_iam_role.logferry[0].id
  policy = replace(file(each.value.file), each.value.from, each.value.to)

  lifecycle {
    precondition {
      condition     = strcontains(file(each.value.file), each.value.from)
      error_message = "${each.value.file} no longer names ${each.value.from}: update the replacement in iam.tf."
    }
  }
}

# EKS Pod Identity: the association of the role with the service account (the
# eks-pod-identity-agent add-on must be installed in the cluster).
resource "aws_eks_pod_identity_association" "logferry" {
  count = var.create_role && var.trust == "pod_identity" ? 1 : 0

  cluster_name    = var.cluster_name
  namespace       = var.namespace
  service_account = var.service_account
  role_arn        = aws_iam_role.logferry[0].arn
  tags            = local.tags
}
