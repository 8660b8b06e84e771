//! The file as written: serde structs that accept any value, so that the checker can
//! see every problem at once.
//!
//! Each leaf is a [`Field`]: the value when it has the expected TOML type, otherwise
//! the value itself, kept for the checker to report ("must be an integer, got
//! \"many\""). Each table keeps its unknown keys. So deserializing a [`RawConfig`]
//! fails only on TOML syntax; every other problem reaches the checker.
//!
//! The `*_KEYS` lists name each table's keys for "unknown key (expected one of: …)";
//! a unit test checks them against the reference config, which sets every key.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use toml::Value;

/// A value of the expected type, or whatever was written instead.
#[derive(Debug, Clone)]
pub(super) enum Field<T> {
    Ok(T),
    Mistyped(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(match T::deserialize(value.clone()) {
            Ok(t) => Field::Ok(t),
            Err(_) => Field::Mistyped(value),
        })
    }
}

/// A key that may be absent.
pub(super) type Opt<T> = Option<Field<T>>;
/// A list of strings; each element is checked on its own.
pub(super) type List = Opt<Vec<Field<String>>>;
/// Keys a table does not know, with their values.
pub(super) type Unknown = BTreeMap<String, Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawConfig {
    pub data_dir: Opt<String>,
    pub shutdown_timeout: Opt<String>,
    pub tail: Opt<RawTail>,
    pub decode: Opt<RawDecode>,
    pub buffer: Opt<RawBuffer>,
    pub sink: Opt<RawSink>,
    pub sinks: Opt<BTreeMap<String, Field<RawSink>>>,
    pub multiline: Opt<Vec<Field<RawMultiline>>>,
    pub metrics: Opt<RawMetrics>,
    pub log: Opt<RawLog>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const TOP_KEYS: &[&str] =
    &["data_dir", "shutdown_timeout", "tail", "decode", "buffer", "sink", "sinks", "multiline", "metrics", "log"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTail {
    pub include: List,
    pub exclude: List,
    pub roots: List,
    pub start_at: Opt<String>,
    pub rescan_interval: Opt<String>,
    pub busy_poll_interval: Opt<String>,
    pub rotate_wait: Opt<String>,
    pub checkpoint_interval: Opt<String>,
    pub max_open_files: Opt<i64>,
    pub read_bytes_per_turn: Opt<i64>,
    pub read_threads: Opt<i64>,
    pub include_namespaces: List,
    pub exclude_namespaces: List,
    pub include_pods: List,
    pub exclude_pods: List,
    pub include_containers: List,
    pub exclude_containers: List,
    pub exclude_own_pod: Opt<bool>,
    pub watch: Opt<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const TAIL_KEYS: &[&str] = &[
    "include",
    "exclude",
    "roots",
    "start_at",
    "rescan_interval",
    "busy_poll_interval",
    "rotate_wait",
    "checkpoint_interval",
    "max_open_files",
    "read_bytes_per_turn",
    "read_threads",
    "include_namespaces",
    "exclude_namespaces",
    "include_pods",
    "exclude_pods",
    "include_containers",
    "exclude_containers",
    "exclude_own_pod",
    "watch",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawDecode {
    pub format: Opt<String>,
    pub max_message_bytes: Opt<i64>,
    pub oversize: Opt<String>,
    pub message_format: Opt<String>,
    pub partial_flush_timeout: Opt<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const DECODE_KEYS: &[&str] = &[
    "format",
    "max_message_bytes",
    "oversize",
    "message_format",
    "partial_flush_timeout",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBuffer {
    pub max_bytes: Opt<i64>,
    pub when_full: Opt<String>,
    pub fsync_interval: Opt<String>,
    pub fsync_bytes: Opt<i64>,
    pub memory_bytes: Opt<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const BUFFER_KEYS: &[&str] = &["max_bytes", "when_full", "fsync_interval", "fsync_bytes", "memory_bytes"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSink {
    #[serde(rename = "type")]
    pub kind: Opt<String>,
    pub path: Opt<String>,
    pub delivery_stream: Opt<String>,
    pub region: Opt<String>,
    pub endpoint: Opt<String>,
    pub aggregate: Opt<bool>,
    pub record_max_bytes: Opt<i64>,
    pub max_events_per_record: Opt<i64>,
    pub oversize: Opt<String>,
    pub linger: Opt<String>,
    pub max_in_flight: Opt<i64>,
    pub request_timeout: Opt<String>,
    pub retry_max_wait: Opt<String>,
    pub max_requests_per_second: Opt<i64>,
    pub max_records_per_second: Opt<i64>,
    pub max_bytes_per_second: Opt<i64>,
    pub rate_recovery: Opt<String>,
    pub log_group: Opt<String>,
    pub log_stream: Opt<String>,
    pub cluster: Opt<String>,
    pub node: Opt<String>,
    pub create_missing: Opt<bool>,
    pub retention_days: Opt<i64>,
    pub message_key: Opt<String>,
    pub park_after: Opt<String>,
    pub bucket: Opt<String>,
    pub key_prefix: Opt<String>,
    pub compression: Opt<String>,
    pub object_max_bytes: Opt<i64>,
    pub object_max_age: Opt<String>,
    pub max_bytes: Opt<i64>,
    pub when_full: Opt<String>,
    pub route: Opt<RawRoute>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

impl RawSink {
    /// The keys that were written (but `type`), for "not used by this type".
    pub fn present(&self) -> Vec<&'static str> {
        let keys: [(&str, bool); 29] = [
            ("path", self.path.is_some()),
            ("delivery_stream", self.delivery_stream.is_some()),
            ("region", self.region.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("aggregate", self.aggregate.is_some()),
            ("record_max_bytes", self.record_max_bytes.is_some()),
            ("max_events_per_record", self.max_events_per_record.is_some()),
            ("oversize", self.oversize.is_some()),
            ("linger", self.linger.is_some()),
            ("max_in_flight", self.max_in_flight.is_some()),
            ("request_timeout", self.request_timeout.is_some()),
            ("retry_max_wait", self.retry_max_wait.is_some()),
            ("max_requests_per_second", self.max_requests_per_second.is_some()),
            ("max_records_per_second", self.max_records_per_second.is_some()),
            ("max_bytes_per_second", self.max_bytes_per_second.is_some()),
            ("rate_recovery", self.rate_recovery.is_some()),
            ("log_group", self.log_group.is_some()),
            ("log_stream", self.log_stream.is_some()),
            ("cluster", self.cluster.is_some()),
            ("node", self.node.is_some()),
            ("create_missing", self.create_missing.is_some()),
            ("bucket", self.bucket.is_some()),
            ("key_prefix", self.key_prefix.is_some()),
            ("compression", self.compression.is_some()),
            ("object_max_bytes", self.object_max_bytes.is_some()),
            ("object_max_age", self.object_max_age.is_some()),
            ("retention_days", self.retention_days.is_some()),
            ("message_key", self.message_key.is_some()),
            ("park_after", self.park_after.is_some()),
        ];
        keys.into_iter().filter_map(|(k, set)| set.then_some(k)).collect()
    }
}

/// The keys every sink type has.
pub(super) const COMMON_SINK_KEYS: &[&str] = &["type", "max_bytes", "when_full", "route"];

/// Every sink type's keys: `type` and those of every type, the file sink's,
/// Firehose's own, CloudWatch Logs' own, then those of every AWS sink
/// ([`sink_key_types`] says which is which).
pub(super) const SINK_KEYS: &[&str] = &[
    "type",
    "max_bytes",
    "when_full",
    "route",
    "path",
    "delivery_stream",
    "aggregate",
    "record_max_bytes",
    "max_events_per_record",
    "oversize",
    "max_records_per_second",
    "max_bytes_per_second",
    "log_group",
    "log_stream",
    "cluster",
    "node",
    "create_missing",
    "retention_days",
    "message_key",
    "park_after",
    "bucket",
    "key_prefix",
    "compression",
    "object_max_bytes",
    "object_max_age",
    "region",
    "endpoint",
    "linger",
    "max_in_flight",
    "request_timeout",
    "retry_max_wait",
    "max_requests_per_second",
    "rate_recovery",
];

/// The sink types a key of [`SINK_KEYS`] belongs to.
pub(super) fn sink_key_types(key: &str) -> &'static [&'static str] {
    if COMMON_SINK_KEYS.contains(&key) {
        return &["stdout", "file", "firehose", "cloudwatch"];
    }
    match key {
        "path" => &["file"],
        "delivery_stream" | "aggregate" | "record_max_bytes" | "max_events_per_record" | "oversize" | "max_records_per_second"
        | "max_bytes_per_second" => &["firehose"],
        "log_group" | "log_stream" | "create_missing" | "retention_days" | "message_key" | "park_after" => &["cloudwatch"],
        "cluster" | "node" => &["cloudwatch", "s3"],
        "bucket" | "key_prefix" | "compression" | "object_max_bytes" | "object_max_age" => &["s3"],
        "region" | "endpoint" | "max_in_flight" | "request_timeout" | "retry_max_wait" | "max_requests_per_second" | "rate_recovery" => {
            &["firehose", "cloudwatch", "s3"]
        }
        "linger" => &["firehose", "cloudwatch"],
        _ => &[],
    }
}

/// The keys of sink type `kind`, in [`SINK_KEYS`] order.
pub(super) fn sink_keys_of(kind: &str) -> Vec<&'static str> {
    SINK_KEYS.iter().copied().filter(|k| sink_key_types(k).contains(&kind)).collect()
}

/// `[sinks.<name>.route]`: which events go to that sink.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRoute {
    pub include_namespaces: List,
    pub exclude_namespaces: List,
    pub include_pods: List,
    pub exclude_pods: List,
    pub include_containers: List,
    pub exclude_containers: List,
    pub streams: List,
    pub drop_messages: List,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const ROUTE_KEYS: &[&str] = &[
    "include_namespaces",
    "exclude_namespaces",
    "include_pods",
    "exclude_pods",
    "include_containers",
    "exclude_containers",
    "streams",
    "drop_messages",
];

/// One `[[multiline]]` entry: which containers, and which rule.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawMultiline {
    pub include_namespaces: List,
    pub exclude_namespaces: List,
    pub include_pods: List,
    pub exclude_pods: List,
    pub include_containers: List,
    pub exclude_containers: List,
    pub parser: Opt<String>,
    pub start: Opt<String>,
    #[serde(rename = "continue")]
    pub continue_: Opt<String>,
    pub max_lines: Opt<i64>,
    pub flush_timeout: Opt<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const MULTILINE_KEYS: &[&str] = &[
    "include_namespaces",
    "exclude_namespaces",
    "include_pods",
    "exclude_pods",
    "include_containers",
    "exclude_containers",
    "parser",
    "start",
    "continue",
    "max_lines",
    "flush_timeout",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawMetrics {
    pub listen: Opt<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const METRICS_KEYS: &[&str] = &["listen"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLog {
    pub level: Opt<String>,
    pub format: Opt<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

pub(super) const LOG_KEYS: &[&str] = &["level", "format"];

/// Every table's name (as its key path) and keys, to tell a user who put a key in
/// the wrong table where it belongs.
pub(super) const TABLES: &[(&str, &[&str])] = &[
    ("", TOP_KEYS),
    ("tail", TAIL_KEYS),
    ("decode", DECODE_KEYS),
    ("buffer", BUFFER_KEYS),
    ("sink", SINK_KEYS),
    ("sink.route", ROUTE_KEYS),
    ("multiline", MULTILINE_KEYS),
    ("metrics", METRICS_KEYS),
    ("log", LOG_KEYS),
];
