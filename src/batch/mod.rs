//! Batch: request shaping for the AWS sinks, with AWS's limits as typed constants.
//!
//! Owns packing events into records and records into requests; never does I/O.
//! (The Firehose and CloudWatch Logs sinks that use it are the next issues.)

pub mod firehose;
