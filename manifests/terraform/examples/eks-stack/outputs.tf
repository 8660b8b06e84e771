output "bucket" {
  value = module.logferry.bucket
}

output "firehose_stream_name" {
  value = module.logferry.firehose_stream_name
}

output "log_group" {
  value = module.logferry.log_group
}

output "role_arn" {
  value = module.logferry.role_arn
}

output "sinks_toml" {
  value = module.logferry.sinks_toml
}
