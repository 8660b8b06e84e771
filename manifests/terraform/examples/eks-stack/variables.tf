variable "region" {
  description = "The cluster's region."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "The environment (part of names and a tag)."
  type        = string
  default     = "prod"
}

variable "cluster_name" {
  description = "The EKS cluster."
  type        = string
  default     = "my-cluster"
}

variable "bucket_name" {
  description = "The bucket for logs (globally unique)."
  type        = string
  default     = "my-cluster-logs-example"
}

variable "cloudwatch" {
  description = "Also a CloudWatch Logs group and the permission to write it."
  type        = bool
  default     = false
}

variable "trust" {
  description = "\"pod_identity\" or \"irsa\"."
  type        = string
  default     = "pod_identity"
}

variable "oidc_provider_arn" {
  description = "With trust = \"irsa\": the cluster's IAM OIDC provider ARN."
  type        = string
  default     = null
}

variable "bucket_force_destroy" {
  description = "Let destroy delete the bucket with its logs (tests, short-lived environments)."
  type        = bool
  default     = false
}
