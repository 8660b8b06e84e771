//! `[sink]`: where events go. Its keys depend on `type`; a key of another type is
//! reported with the type it belongs to.

use std::time::Duration;

use super::check::{self, Checker};
use super::raw::{self, Field, RawSink};
use super::{CloudWatchConfig, EnvView, FirehoseConfig, Pacing, SinkConfig, SinkOversize};
use crate::batch::cloudwatch::Template;
use crate::batch::firehose::MAX_RECORD_BYTES;

const TYPES: &[&str] = &["stdout", "file", "firehose", "cloudwatch"];

/// `PutLogEvents`: the smaller regional quota, per account and region.
pub const CLOUDWATCH_REQUESTS_PER_SECOND: usize = 1_500;
/// Retention periods CloudWatch Logs accepts, in days.
const RETENTION_DAYS: &[u32] = &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/// Firehose's smaller regional Direct PUT quotas (per stream, shared by every node).
pub const FIREHOSE_REQUESTS_PER_SECOND: usize = 1_000;
pub const FIREHOSE_RECORDS_PER_SECOND: usize = 100_000;
pub const FIREHOSE_BYTES_PER_SECOND: usize = 1 << 20;

pub(super) fn build_sink(ck: &mut Checker, field: Option<Field<RawSink>>, env: &EnvView) -> SinkConfig {
    let one_of_types = format!("one of {}", check::quoted(TYPES));
    if field.is_none() {
        ck.report("sink.type", format!("required: add a [sink] table with type = {one_of_types}"));
        return SinkConfig::Stdout;
    }
    let Some(raw) = ck.get("sink", field, "a table") else {
        return SinkConfig::Stdout;
    };
    if raw.kind.is_none() {
        ck.report("sink.type", format!("required: {one_of_types}"));
    }
    let Some(kind) = ck.get("sink.type", raw.kind.clone(), &one_of_types) else {
        ck.unknown_keys("sink", &raw.unknown, raw::SINK_KEYS);
        return SinkConfig::Stdout;
    };
    if !TYPES.contains(&kind.as_str()) {
        ck.report("sink.type", check::not_one_of(&kind, TYPES));
        ck.unknown_keys("sink", &raw.unknown, raw::SINK_KEYS);
        return SinkConfig::Stdout;
    }
    let allowed = raw::sink_keys_of(&kind);
    ck.unknown_keys("sink", &raw.unknown, &allowed);
    for key in raw.present() {
        if !allowed.contains(&key) {
            ck.report(&format!("sink.{key}"), not_for_type(key, &kind));
        }
    }
    match kind.as_str() {
        "file" if raw.path.is_none() => {
            ck.report("sink.path", r#"required when sink.type = "file""#);
            SinkConfig::Stdout
        }
        "file" => SinkConfig::File { path: ck.absolute_path("sink.path", raw.path, "") },
        "firehose" => SinkConfig::Firehose(build_firehose(ck, raw)),
        "cloudwatch" => SinkConfig::CloudWatch(build_cloudwatch(ck, raw, env)),
        _ => SinkConfig::Stdout,
    }
}

/// "not allowed when sink.type = "stdout" (… belongs to type = "firehose")".
fn not_for_type(key: &str, kind: &str) -> String {
    let owners: Vec<String> = raw::sink_key_types(key).iter().map(|t| format!("{t:?}")).collect();
    match kind {
        "stdout" if owners == ["\"file\""] => {
            r#"not allowed when sink.type = "stdout" (remove it, or set type = "file")"#.to_string()
        }
        _ => format!(r#"not allowed when sink.type = {kind:?} (it belongs to type = {})"#, owners.join(" or ")),
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

fn build_common(ck: &mut Checker, raw: &RawSink, example: &str, default_requests: usize) -> Common {
    let region = ck.get("sink.region", raw.region.clone(), "a string").filter(|r| !r.is_empty());
    let endpoint = ck.get("sink.endpoint", raw.endpoint.clone(), "a string").filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            ck.report("sink.endpoint", format!("{e:?} is not a URL like {example:?}"));
        }
    }
    Common {
        region,
        endpoint,
        linger: ck.duration("sink.linger", raw.linger.clone(), Duration::from_secs(1), false),
        max_in_flight: ck.count("sink.max_in_flight", raw.max_in_flight.clone(), 4, 1, Some(64)),
        request_timeout: ck.duration("sink.request_timeout", raw.request_timeout.clone(), Duration::from_secs(30), true),
        retry_max_wait: ck.duration("sink.retry_max_wait", raw.retry_max_wait.clone(), Duration::from_secs(30), true),
        requests_per_second: ck.count("sink.max_requests_per_second", raw.max_requests_per_second.clone(), default_requests, 1, Some(1 << 20)) as u32,
        recovery: ck.duration("sink.rate_recovery", raw.rate_recovery.clone(), Duration::from_secs(60), true),
    }
}

fn build_cloudwatch(ck: &mut Checker, raw: RawSink, env: &EnvView) -> CloudWatchConfig {
    let common = build_common(ck, &raw, "https://logs.eu-west-1.amazonaws.com", CLOUDWATCH_REQUESTS_PER_SECOND);
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
    let log_group = template("sink.log_group", raw.log_group, "/eks/{cluster}/containers");
    let log_stream = template("sink.log_stream", raw.log_stream, "{namespace}/{pod}/{container}");
    let var = |name: &str| env.vars.get(name).cloned().unwrap_or_default();
    let cluster = ck.get("sink.cluster", raw.cluster, "a string").unwrap_or_else(|| var("CLUSTER_NAME"));
    let node = ck.get("sink.node", raw.node, "a string").unwrap_or_else(|| var("NODE_NAME"));
    for (name, value, source) in [("cluster", &cluster, "CLUSTER_NAME"), ("node", &node, "NODE_NAME")] {
        let used = [&log_group, &log_stream].into_iter().flatten().any(|t| t.uses(name));
        if used && value.is_empty() {
            ck.report(&format!("sink.{name}"), format!("required by {{{name}}} in sink.log_group or sink.log_stream: set it, or {source} in the environment"));
        }
    }
    let retention_days = ck.count("sink.retention_days", raw.retention_days, 30, 0, Some(3653)) as u32;
    if retention_days != 0 && !RETENTION_DAYS.contains(&retention_days) {
        ck.report("sink.retention_days", format!("{retention_days} is not a retention CloudWatch Logs offers (0 for none, or one of {RETENTION_DAYS:?})"));
    }
    let keys = [("", false), ("message", true)];
    let bare_message = ck.choice("sink.message_key", raw.message_key, false, &keys);
    CloudWatchConfig {
        log_group: log_group.unwrap_or_else(|| Template::parse("/eks/containers").expect("a valid template")),
        log_stream: log_stream.unwrap_or_else(|| Template::parse("{namespace}/{pod}/{container}").expect("a valid template")),
        cluster,
        node,
        create_missing: ck.bool("sink.create_missing", raw.create_missing, true),
        retention_days,
        bare_message,
        park_after: ck.duration("sink.park_after", raw.park_after, Duration::from_secs(600), false),
        region: common.region,
        endpoint: common.endpoint,
        linger: common.linger,
        max_in_flight: common.max_in_flight,
        request_timeout: common.request_timeout,
        retry_max_wait: common.retry_max_wait,
        pacing: Pacing { requests_per_second: common.requests_per_second, records_per_second: u32::MAX, bytes_per_second: u64::from(u32::MAX), recovery: common.recovery },
    }
}

fn build_firehose(ck: &mut Checker, raw: RawSink) -> FirehoseConfig {
    let common = build_common(ck, &raw, "https://firehose.eu-west-1.amazonaws.com", FIREHOSE_REQUESTS_PER_SECOND);
    if raw.delivery_stream.is_none() {
        ck.report("sink.delivery_stream", r#"required when sink.type = "firehose": the delivery stream's name"#);
    }
    let delivery_stream = ck.get("sink.delivery_stream", raw.delivery_stream, "a string").unwrap_or_default();
    if delivery_stream.is_empty() && ck.problems.iter().all(|p| p.key != "sink.delivery_stream") {
        ck.report("sink.delivery_stream", "must not be empty");
    }
    let oversize = [("truncate", SinkOversize::Truncate), ("dead_letter", SinkOversize::DeadLetter)];
    FirehoseConfig {
        delivery_stream,
        region: common.region,
        endpoint: common.endpoint,
        aggregate: ck.bool("sink.aggregate", raw.aggregate, true),
        record_max_bytes: ck.count("sink.record_max_bytes", raw.record_max_bytes, MAX_RECORD_BYTES, 1024, Some(MAX_RECORD_BYTES)),
        oversize: ck.choice("sink.oversize", raw.oversize, SinkOversize::Truncate, &oversize),
        linger: common.linger,
        max_in_flight: common.max_in_flight,
        request_timeout: common.request_timeout,
        retry_max_wait: common.retry_max_wait,
        pacing: Pacing {
            requests_per_second: common.requests_per_second,
            records_per_second: ck.count("sink.max_records_per_second", raw.max_records_per_second, FIREHOSE_RECORDS_PER_SECOND, 1, Some(100 << 20)) as u32,
            bytes_per_second: ck.count("sink.max_bytes_per_second", raw.max_bytes_per_second, FIREHOSE_BYTES_PER_SECOND, 1024, Some(1 << 31)) as u64,
            recovery: common.recovery,
        },
    }
}
