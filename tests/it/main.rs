//! logferry's integration tests, built as one binary (see `util` for the helpers).

mod alloc;
mod aws;
mod backpressure;
mod buffer;
mod buffer_sinks;
mod cloudwatch;
mod data_dir;
mod cli;
mod deploy;
mod fault;
mod firehose;
mod follow;
mod golden;
mod kubelet;
mod metrics;
mod multiline;
mod node;
mod prometheus;
mod props;
mod route;
mod s3;
mod sinks;
mod terraform;
mod util;
mod vectors;
mod verify;
