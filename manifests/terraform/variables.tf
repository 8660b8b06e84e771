# --- what to create -----------------------------------------------------------------

variable "create_bucket" {
  description = "Create the S3 bucket for logs: the archive Firehose writes to, and the target of logferry's s3 sink. False: name an existing bucket in bucket_name."
  type        = bool
  default     = true
}

variable "create_firehose" {
  description = "Create a Firehose delivery stream into the bucket, partitioned per namespace and day (dynamic partitioning), with its own delivery role."
  type        = bool
  default     = true
}

variable "s3_sink" {
  description = "Let logferry's role write objects into the bucket under s3_key_prefix (the s3 sink: no Firehose per-GB charge)."
  type        = bool
  default     = false
}

variable "create_log_group" {
  description = "Create the CloudWatch Logs log group log_group_name (with log_retention_days) and let logferry's role write to every group under log_group_prefix."
  type        = bool
  default     = false
}

variable "create_role" {
  description = "Create the IAM role logferry runs as, with exactly the policies of manifests/iam/ for what is created here."
  type        = bool
  default     = true
}

# --- names --------------------------------------------------------------------------

variable "name" {
  description = "The base of the names of what is created (stream, roles)."
  type        = string
  default     = "logferry"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.-]{1,40}$", var.name))
    error_message = "name: 1 to 40 letters, digits, '_', '.' or '-' (it is part of the stream's and the roles' names)."
  }
}

variable "cluster_name" {
  description = "The EKS cluster logferry runs in: the Pod Identity association's cluster, the default log group names."
  type        = string
}

variable "bucket_name" {
  description = "The S3 bucket for logs (created when create_bucket, else an existing one)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name: 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit."
  }
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete the bucket with the logs in it."
  type        = bool
  default     = false
}

variable "retention_days" {
  description = "Days the bucket keeps log objects (a lifecycle rule; 0: forever). Incomplete multipart uploads are removed after a day either way."
  type        = number
  default     = 90

  validation {
    condition     = var.retention_days >= 0 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days: a whole number of days, 0 for no expiry."
  }
}

variable "kms_key_arn" {
  description = "Encrypt the bucket with this KMS key (SSE-KMS); null: S3-managed keys (SSE-S3)."
  type        = string
  default     = null
}

variable "firehose_prefix" {
  description = "The Firehose stream's S3 prefix. The default gives <name>/<namespace>/dt=YYYYMMDD/, the layout of the s3 sink's default key_prefix."
  type        = string
  default     = null
}

variable "firehose_error_prefix" {
  description = "Where Firehose puts records it could not partition or deliver (required with dynamic partitioning)."
  type        = string
  default     = null
}

variable "firehose_buffering_size_mb" {
  description = "Firehose buffers this many MB per partition before writing an object (64 to 128 with dynamic partitioning)."
  type        = number
  default     = 64

  validation {
    condition     = var.firehose_buffering_size_mb >= 64 && var.firehose_buffering_size_mb <= 128
    error_message = "firehose_buffering_size_mb: 64 to 128 (dynamic partitioning needs at least 64)."
  }
}

variable "firehose_buffering_interval_seconds" {
  description = "…or for this many seconds, whichever comes first (0 to 900)."
  type        = number
  default     = 300

  validation {
    condition     = var.firehose_buffering_interval_seconds >= 0 && var.firehose_buffering_interval_seconds <= 900
    error_message = "firehose_buffering_interval_seconds: 0 to 900."
  }
}

variable "s3_key_prefix" {
  description = "The fixed start of the s3 sink's key_prefix (what its write permission covers); the sink adds <namespace>/dt=<date>/."
  type        = string
  default     = "logs/"

  validation {
    condition     = var.s3_key_prefix == "" || (endswith(var.s3_key_prefix, "/") && !startswith(var.s3_key_prefix, "/") && !strcontains(var.s3_key_prefix, "{"))
    error_message = "s3_key_prefix: fixed text ending with '/', not starting with '/', without placeholders (they come after it)."
  }
}

variable "log_group_name" {
  description = "The CloudWatch Logs group created (the cloudwatch sink's default template names /eks/<cluster>/containers). null: that default."
  type        = string
  default     = null
}

variable "log_group_prefix" {
  description = "logferry may create and write log groups whose names start with this (its log_group template's fixed part). null: /eks/<cluster>/."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the log group created (a value CloudWatch Logs accepts)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

# --- who runs logferry --------------------------------------------------------------

variable "trust" {
  description = "How the pods get the role: \"pod_identity\" (EKS Pod Identity, with an association for the service account) or \"irsa\" (IAM roles for service accounts, through oidc_provider_arn)."
  type        = string
  default     = "pod_identity"

  validation {
    condition     = contains(["pod_identity", "irsa"], var.trust)
    error_message = "trust: \"pod_identity\" or \"irsa\"."
  }
}

variable "oidc_provider_arn" {
  description = "With trust = \"irsa\": the cluster's IAM OIDC provider (arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>)."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null || can(regex("^arn:[^:]+:iam::[0-9]{12}:oidc-provider/.+", var.oidc_provider_arn))
    error_message = "oidc_provider_arn: an IAM OIDC provider ARN, arn:aws:iam::<account>:oidc-provider/<issuer without https://>."
  }
}

variable "namespace" {
  description = "The Kubernetes namespace of logferry's service account."
  type        = string
  default     = "logging"
}

variable "service_account" {
  description = "logferry's service account."
  type        = string
  default     = "logferry"
}

variable "tags" {
  description = "Tags for everything created."
  type        = map(string)
  default     = {}
}
