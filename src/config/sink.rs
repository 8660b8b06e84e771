//! `[sink]` or `[sinks.<name>]`: where events go. A sink's keys depend on its `type`;
//! a key of another type is reported with the type it belongs to. Every sink has its
//! share of the buffer (`max_bytes`, `when_full`) and a `route`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::check::{self, Checker};
use super::raw::{self, Field, Opt, RawSink};
use super::{BufferConfig, CloudWatchConfig, Compression, EnvView, FirehoseConfig, NamedSink, Pacing, S3Config, SinkConfig, SinkOversize};
use crate::batch::cloudwatch::Template;
use crate::batch::firehose::MAX_RECORD_BYTES;

const TYPES: &[&str] = &["stdout", "file", "firehose", "cloudwatch", "s3"];

/// `PutLogEvents`: the smaller regional quota, per account and region.
pub const CLOUDWATCH_REQUESTS_PER_SECOND: usize = 1_500;
/// Retention periods CloudWatch Logs accepts, in days.
const RETENTION_DAYS: &[u32] = &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/// Firehose's smaller regional Direct PUT quotas (per stream, shared by every node).
pub const FIREHOSE_REQUESTS_PER_SECOND: usize = 1_000;
pub const FIREHOSE_RECORDS_PER_SECOND: usize = 100_000;
pub const FIREHOSE_BYTES_PER_SECOND: usize = 1 << 20;

/// At most this many sinks: each is a bit in a record's routing mask, and every
/// sink's metrics are series of their own.
pub const MAX_SINKS: usize = 16;

/// `[sink]` (one sink, named `default`) or `[sinks.<name>]` tables.
pub(super) fn build_sinks(
    ck: &mut Checker,
    one: Opt<RawSink>,
    many: Opt<BTreeMap<String, Field<RawSink>>>,
    env: &EnvView,
    buffer: &BufferConfig,
) -> Vec<NamedSink> {
    let one_of_types = format!("one of {}", check::quoted(TYPES));
    let tables: Vec<(String, String, Opt<RawSink>)> = match (one, many) {
        (Some(_), Some(_)) => {
            ck.report("sinks", "write either one [sink] table or [sinks.<name>] tables, not both (a [sink] is the sink named \"default\")");
            return Vec::new();
        }
        (None, None) => {
            ck.report("sink.type", format!("required: add a [sink] table with type = {one_of_types} (or [sinks.<name>] tables, one per sink)"));
            return Vec::new();
        }
        (Some(one), None) => vec![(DEFAULT_SINK.to_string(), "sink".to_string(), Some(one))],
        (None, Some(many)) => {
            let Some(many) = ck.get("sinks", Some(many), "a table of sinks ([sinks.<name>])") else { return Vec::new() };
            if many.is_empty() {
                ck.report("sinks", format!("must name at least one sink: [sinks.<name>] with type = {one_of_types}"));
            }
            if many.len() > MAX_SINKS {
                ck.report("sinks", format!("{} sinks; at most {MAX_SINKS}", many.len()));
            }
            many.into_iter().map(|(name, t)| (name.clone(), format!("sinks.{}", check::quote_key(&name)), Some(t))).collect()
        }
    };
    let mut sinks = Vec::new();
    for (name, at, table) in tables {
        if !valid_name(&name) {
            ck.report(&at, format!("{name:?} is not a sink name: 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter (it names metrics series and files)"));
        }
        if let Some(sink) = build_sink(ck, name, &at, table, env, buffer) {
            sinks.push(sink);
        }
    }
    check_outputs_distinct(ck, &sinks);
    sinks
}

/// The name a lone `[sink]` table gets.
pub const DEFAULT_SINK: &str = "default";

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Two sinks writing one file (or both to standard output) would interleave and
/// corrupt each other's lines.
fn check_outputs_distinct(ck: &mut Checker, sinks: &[NamedSink]) {
    for (i, b) in sinks.iter().enumerate() {
        let output = |s: &NamedSink| match &s.config {
            SinkConfig::File { path } => Some(path.display().to_string()),
            SinkConfig::Stdout => Some("standard output".to_string()),
            _ => None,
        };
        let Some(out) = output(b) else { continue };
        if let Some(a) = sinks[..i].iter().find(|a| output(a).as_ref() == Some(&out)) {
            let key = match &b.config {
                SinkConfig::File { .. } => format!("{}.path", b.at),
                _ => format!("{}.type", b.at),
            };
            ck.report(&key, format!("{out} is written by {} already: two sinks cannot write one output", a.at));
        }
    }
}

fn build_sink(ck: &mut Checker, name: String, at: &str, field: Opt<RawSink>, env: &EnvView, buffer: &BufferConfig) -> Option<NamedSink> {
    let one_of_types = format!("one of {}", check::quoted(TYPES));
    let mut raw = ck.get(at, field, "a table")?;
    if raw.kind.is_none() {
        ck.report(&format!("{at}.type"), format!("required: {one_of_types}"));
    }
    let route = super::route::build_route(ck, &format!("{at}.route"), raw.route.take());
    let max_bytes = ck.count(&format!("{at}.max_bytes"), raw.max_bytes.take(), buffer.max_bytes as usize, super::MIN_BUFFER_BYTES, None) as u64;
    if max_bytes > buffer.max_bytes {
        ck.report(&format!("{at}.max_bytes"), format!("{max_bytes} is more than buffer.max_bytes ({}): a sink's share cannot exceed the buffer", buffer.max_bytes));
    }
    let when_full = ck.choice(&format!("{at}.when_full"), raw.when_full.take(), buffer.when_full, &super::WHEN_FULL);
    let Some(kind) = ck.get(&format!("{at}.type"), raw.kind.clone(), &one_of_types) else {
        ck.unknown_keys(at, &raw.unknown, raw::SINK_KEYS);
        return None;
    };
    if !TYPES.contains(&kind.as_str()) {
        ck.report(&format!("{at}.type"), check::not_one_of(&kind, TYPES));
        ck.unknown_keys(at, &raw.unknown, raw::SINK_KEYS);
        return None;
    }
    let allowed = raw::sink_keys_of(&kind);
    ck.unknown_keys(at, &raw.unknown, &allowed);
    for key in raw.present() {
        if !allowed.contains(&key) {
            ck.report(&format!("{at}.{key}"), not_for_type(at, key, &kind));
        }
    }
    let config = match kind.as_str() {
        "file" if raw.path.is_none() => {
            ck.report(&format!("{at}.path"), format!(r#"required when {at}.type = "file""#));
            return None;
        }
        "file" => SinkConfig::File { path: ck.absolute_path(&format!("{at}.path"), raw.path, "") },
        "firehose" => SinkConfig::Firehose(build_firehose(ck, at, raw)),
        "cloudwatch" => SinkConfig::CloudWatch(build_cloudwatch(ck, at, raw, env)),
        "s3" => SinkConfig::S3(build_s3(ck, at, raw, env)),
        _ => SinkConfig::Stdout,
    };
    Some(NamedSink { name, at: at.to_string(), config, route, max_bytes, when_full })
}

/// "not allowed when sink.type = "stdout" (… belongs to type = "firehose")".
fn not_for_type(at: &str, key: &str, kind: &str) -> String {
    let owners: Vec<String> = raw::sink_key_types(key).iter().map(|t| format!("{t:?}")).collect();
    match kind {
        "stdout" if owners == ["\"file\""] => {
            format!(r#"not allowed when {at}.type = "stdout" (remove it, or set type = "file")"#)
        }
        _ => format!(r#"not allowed when {at}.type = {kind:?} (it belongs to type = {})"#, owners.join(" or ")),
    }
}

/// What every AWS sink shares.
struct Common {
    region: Option<String>,
    endpoint: Option<String>,
    linger: Duration,
    max_in_flight: usize,
    request_timeout: Duration,
    retry_max_wait: Duration,
    requests_per_second: u32,
    recovery: Duration,
}

fn build_common(ck: &mut Checker, at: &str, raw: &RawSink, example: &str, default_requests: usize) -> Common {
    let region = ck.get(&format!("{at}.region"), raw.region.clone(), "a string").filter(|r| !r.is_empty());
    let endpoint = ck.get(&format!("{at}.endpoint"), raw.endpoint.clone(), "a string").filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            ck.report(&format!("{at}.endpoint"), format!("{e:?} is not a URL like {example:?}"));
        }
    }
    Common {
        region,
        endpoint,
        linger: ck.duration(&format!("{at}.linger"), raw.linger.clone(), Duration::from_secs(1), false),
        max_in_flight: ck.count(&format!("{at}.max_in_flight"), raw.max_in_flight.clone(), 4, 1, Some(64)),
        request_timeout: ck.duration(&format!("{at}.request_timeout"), raw.request_timeout.clone(), Duration::from_secs(30), true),
        retry_max_wait: ck.duration(&format!("{at}.retry_max_wait"), raw.retry_max_wait.clone(), Duration::from_secs(30), true),
        requests_per_second: ck.count(&format!("{at}.max_requests_per_second"), raw.max_requests_per_second.clone(), default_requests, 1, Some(1 << 20)) as u32,
        recovery: ck.duration(&format!("{at}.rate_recovery"), raw.rate_recovery.clone(), Duration::from_secs(60), true),
    }
}

fn build_cloudwatch(ck: &mut Checker, at: &str, raw: RawSink, env: &EnvView) -> CloudWatchConfig {
    let common = build_common(ck, at, &raw, "https://logs.eu-west-1.amazonaws.com", CLOUDWATCH_REQUESTS_PER_SECOND);
    let mut template = |key: &str, field, default: &str| {
        let text = ck.get(key, field, "a string").unwrap_or_else(|| default.to_string());
        match Template::parse(&text) {
            Ok(t) => Some(t),
            Err(e) => {
                ck.report(key, e);
                None
            }
        }
    };
    let log_group = template(&format!("{at}.log_group"), raw.log_group, "/eks/{cluster}/containers");
    let log_stream = template(&format!("{at}.log_stream"), raw.log_stream, "{namespace}/{pod}/{container}");
    let var = |name: &str| env.vars.get(name).cloned().unwrap_or_default();
    let cluster = ck.get(&format!("{at}.cluster"), raw.cluster, "a string").unwrap_or_else(|| var("CLUSTER_NAME"));
    let node = ck.get(&format!("{at}.node"), raw.node, "a string").unwrap_or_else(|| var("NODE_NAME"));
    for (name, value, source) in [("cluster", &cluster, "CLUSTER_NAME"), ("node", &node, "NODE_NAME")] {
        let used = [&log_group, &log_stream].into_iter().flatten().any(|t| t.uses(name));
        if used && value.is_empty() {
            ck.report(&format!("{at}.{name}"), format!("required by {{{name}}} in {at}.log_group or {at}.log_stream: set it, or {source} in the environment"));
        }
    }
    let retention_days = ck.count(&format!("{at}.retention_days"), raw.retention_days, 30, 0, Some(3653)) as u32;
    if retention_days != 0 && !RETENTION_DAYS.contains(&retention_days) {
        ck.report(&format!("{at}.retention_days"), format!("{retention_days} is not a retention CloudWatch Logs offers (0 for none, or one of {RETENTION_DAYS:?})"));
    }
    let keys = [("", false), ("message", true)];
    let bare_message = ck.choice(&format!("{at}.message_key"), raw.message_key, false, &keys);
    CloudWatchConfig {
        log_group: log_group.unwrap_or_else(|| Template::parse("/eks/containers").expect("a valid template")),
        log_stream: log_stream.unwrap_or_else(|| Template::parse("{namespace}/{pod}/{container}").expect("a valid template")),
        cluster,
        node,
        create_missing: ck.bool(&format!("{at}.create_missing"), raw.create_missing, true),
        retention_days,
        bare_message,
        park_after: ck.duration(&format!("{at}.park_after"), raw.park_after, Duration::from_secs(600), false),
        region: common.region,
        endpoint: common.endpoint,
        linger: common.linger,
        max_in_flight: common.max_in_flight,
        request_timeout: common.request_timeout,
        retry_max_wait: common.retry_max_wait,
        pacing: Pacing { requests_per_second: common.requests_per_second, records_per_second: u32::MAX, bytes_per_second: u64::from(u32::MAX), recovery: common.recovery },
    }
}

fn build_firehose(ck: &mut Checker, at: &str, raw: RawSink) -> FirehoseConfig {
    let common = build_common(ck, at, &raw, "https://firehose.eu-west-1.amazonaws.com", FIREHOSE_REQUESTS_PER_SECOND);
    if raw.delivery_stream.is_none() {
        ck.report(&format!("{at}.delivery_stream"), format!(r#"required when {at}.type = "firehose": the delivery stream's name"#));
    }
    let delivery_stream = ck.get(&format!("{at}.delivery_stream"), raw.delivery_stream, "a string").unwrap_or_default();
    if delivery_stream.is_empty() && ck.problems.iter().all(|p| p.key != format!("{at}.delivery_stream")) {
        ck.report(&format!("{at}.delivery_stream"), "must not be empty");
    }
    let oversize = [("truncate", SinkOversize::Truncate), ("dead_letter", SinkOversize::DeadLetter)];
    FirehoseConfig {
        delivery_stream,
        region: common.region,
        endpoint: common.endpoint,
        aggregate: ck.bool(&format!("{at}.aggregate"), raw.aggregate, true),
        record_max_bytes: ck.count(&format!("{at}.record_max_bytes"), raw.record_max_bytes, MAX_RECORD_BYTES, 1024, Some(MAX_RECORD_BYTES)),
        max_events_per_record: ck.count(&format!("{at}.max_events_per_record"), raw.max_events_per_record, 0, 0, Some(MAX_RECORD_BYTES)),
        oversize: ck.choice(&format!("{at}.oversize"), raw.oversize, SinkOversize::Truncate, &oversize),
        linger: common.linger,
        max_in_flight: common.max_in_flight,
        request_timeout: common.request_timeout,
        retry_max_wait: common.retry_max_wait,
        pacing: Pacing {
            requests_per_second: common.requests_per_second,
            records_per_second: ck.count(&format!("{at}.max_records_per_second"), raw.max_records_per_second, FIREHOSE_RECORDS_PER_SECOND, 1, Some(100 << 20)) as u32,
            bytes_per_second: ck.count(&format!("{at}.max_bytes_per_second"), raw.max_bytes_per_second, FIREHOSE_BYTES_PER_SECOND, 1024, Some(1 << 31)) as u64,
            recovery: common.recovery,
        },
    }
}

/// S3 accepts at least 3,500 PUT requests per second per key prefix.
pub const S3_REQUESTS_PER_SECOND: usize = 3500;

fn build_s3(ck: &mut Checker, at: &str, raw: RawSink, env: &EnvView) -> S3Config {
    let common = build_common(ck, at, &raw, "https://s3.eu-west-1.amazonaws.com", S3_REQUESTS_PER_SECOND);
    if raw.bucket.is_none() {
        ck.report(&format!("{at}.bucket"), format!(r#"required when {at}.type = "s3": the bucket's name"#));
    }
    let bucket = ck.get(&format!("{at}.bucket"), raw.bucket, "a string").unwrap_or_default();
    if bucket.is_empty() && ck.problems.iter().all(|p| p.key != format!("{at}.bucket")) {
        ck.report(&format!("{at}.bucket"), "must not be empty");
    }
    let prefix_key = format!("{at}.key_prefix");
    let prefix_text = ck.get(&prefix_key, raw.key_prefix, "a string").unwrap_or_else(|| "logs/{namespace}/dt={date}/".to_string());
    let key_prefix = crate::batch::s3::KeyTemplate::parse(&prefix_text).unwrap_or_else(|e| {
        ck.report(&prefix_key, e);
        crate::batch::s3::KeyTemplate::parse("logs/").expect("a literal prefix parses")
    });
    let var = |name: &str| env.vars.get(name).cloned().unwrap_or_default();
    let cluster = ck.get(&format!("{at}.cluster"), raw.cluster, "a string").unwrap_or_else(|| var("CLUSTER_NAME"));
    // Object names carry the node so that nodes never overwrite each other's objects:
    // NODE_NAME (the DaemonSet sets it), else the host's name.
    let host = || std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let node = ck.get(&format!("{at}.node"), raw.node, "a string").unwrap_or_else(|| Some(var("NODE_NAME")).filter(|n| !n.is_empty()).unwrap_or_else(host));
    if node.is_empty() {
        ck.report(&format!("{at}.node"), "required: object names carry the node so that nodes never overwrite each other's objects; set it, or NODE_NAME in the environment");
    }
    if key_prefix.uses("cluster") && cluster.is_empty() {
        ck.report(&format!("{at}.cluster"), format!("required by {{cluster}} in {at}.key_prefix: set it, or CLUSTER_NAME in the environment"));
    }
    let compression = ck.choice(&format!("{at}.compression"), raw.compression, Compression::Gzip, &[("gzip", Compression::Gzip), ("zstd", Compression::Zstd), ("none", Compression::None)]);
    S3Config {
        bucket,
        region: common.region,
        endpoint: common.endpoint,
        key_prefix,
        node,
        cluster,
        compression,
        object_max_bytes: ck.count(&format!("{at}.object_max_bytes"), raw.object_max_bytes, 8 << 20, 64 * 1024, Some(4 << 30)),
        object_max_age: ck.duration(&format!("{at}.object_max_age"), raw.object_max_age, Duration::from_secs(60), true),
        max_in_flight: common.max_in_flight,
        request_timeout: common.request_timeout,
        retry_max_wait: common.retry_max_wait,
        pacing: Pacing { requests_per_second: common.requests_per_second, records_per_second: u32::MAX, bytes_per_second: u64::from(u32::MAX), recovery: common.recovery },
    }
}
