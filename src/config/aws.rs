//! The AWS sinks' settings, as checked: Firehose, CloudWatch Logs, S3, and the pacing
//! they share. Built by `sink.rs`.

use std::time::Duration;

/// `[sink] type = "firehose"`: Amazon Data Firehose, `PutRecordBatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirehoseConfig {
    pub delivery_stream: String,
    /// `None`: the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// An endpoint URL instead of the region's (VPC endpoints, tests).
    pub endpoint: Option<String>,
    /// Pack many events per record (`false`: one event per record).
    pub aggregate: bool,
    pub record_max_bytes: usize,
    /// Events in one record, at most (0: as many as fit). Firehose's dynamic
    /// partitioning splits an aggregated record into at most 500 events.
    pub max_events_per_record: usize,
    /// An event larger than a record: cut its message, or set it aside whole.
    pub oversize: SinkOversize,
    /// How long a batch may wait to fill before it is sent anyway.
    pub linger: Duration,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// One attempt's limit; a slower answer is a failure, retried.
    pub request_timeout: Duration,
    /// The cap of the exponential backoff between retries.
    pub retry_max_wait: Duration,
    pub pacing: Pacing,
}

/// `[sink] type = "s3"`: objects of JSON lines straight into a bucket, `PutObject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Where each event's object goes, from its metadata and its day.
    pub key_prefix: crate::batch::s3::KeyTemplate,
    pub node: String,
    pub cluster: String,
    pub compression: Compression,
    /// An object is written once it is this large as stored (compressed)…
    pub object_max_bytes: usize,
    /// …or once its oldest line has waited this long.
    pub object_max_age: Duration,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub retry_max_wait: Duration,
    pub pacing: Pacing,
}

/// How S3 objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The object name's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".jsonl.gz",
            Compression::Zstd => ".jsonl.zst",
            Compression::None => ".jsonl",
        }
    }
}

/// `[sink] type = "cloudwatch"`: CloudWatch Logs, `PutLogEvents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchConfig {
    /// Log group and stream names, from each event's metadata.
    pub log_group: crate::batch::cloudwatch::Template,
    pub log_stream: crate::batch::cloudwatch::Template,
    /// `{cluster}` and `{node}` (defaults: `CLUSTER_NAME`, `NODE_NAME`).
    pub cluster: String,
    pub node: String,
    /// Create a missing group (with `retention_days`) and stream.
    pub create_missing: bool,
    /// The retention set on groups logferry creates; 0: none (never expire).
    pub retention_days: u32,
    /// Send the bare message rather than the event's JSON line.
    pub bare_message: bool,
    /// A log stream refused permanently this long, while others are accepted, is
    /// parked: its events go to the dead letters.
    pub park_after: Duration,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub linger: Duration,
    /// Puts in flight at once (across streams; one per stream).
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub retry_max_wait: Duration,
    pub pacing: Pacing,
}

/// What an AWS sink does with an event over its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOversize {
    /// Cut the message to fit and mark the event `"truncated": true`.
    Truncate,
    /// Write the event whole to `<data_dir>/dead-letter/` and count it.
    DeadLetter,
}

/// Ceilings for one sink's pace, and how fast it recovers after throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub requests_per_second: u32,
    pub records_per_second: u32,
    pub bytes_per_second: u64,
    /// Time to climb from the floor back to the ceilings with no throttling.
    pub recovery: Duration,
}
