# An environment's stack calling the module, as a user's would: logs to Firehose
# (partitioned per namespace and day) and straight to S3 from the same bucket, the
# role trusted by EKS Pod Identity. Then:
#
#   terraform apply
#   terraform output -raw sinks_toml   # → the [sinks…] of manifests/overlays/…/logferry.toml
#   kubectl apply -k manifests/overlays/…
#
# In your own stack: source = "git::https://<your mirror>/logferry.git//manifests/terraform?ref=<tag>"
# (the module reads ../iam/, so take the repository, not the folder alone).

provider "aws" {
  region = var.region
}

module "logferry" {
  source = "../.."

  cluster_name = var.cluster_name
  bucket_name  = var.bucket_name
  name         = "logferry-${var.environment}"

  create_bucket    = true
  create_firehose  = true
  s3_sink          = true
  create_log_group = var.cloudwatch

  retention_days       = 90
  bucket_force_destroy = var.bucket_force_destroy

  trust             = var.trust
  oidc_provider_arn = var.oidc_provider_arn

  tags = {
    environment = var.environment
  }
}
