//! Batch: request shaping for the AWS sinks, with AWS's limits as typed constants.
//!
//! Owns packing events into Firehose records and records into requests
//! ([`firehose`]), and turning events into CloudWatch Logs batches per log stream
//! ([`cloudwatch`]); never does I/O.

pub mod cloudwatch;
pub mod firehose;
pub mod s3;
