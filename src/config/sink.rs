//! `[sink]`: where events go. Its keys depend on `type`; a key of another type is
//! reported with the type it belongs to.

use std::time::Duration;

use super::check::{self, Checker};
use super::raw::{self, Field, RawSink};
use super::{FirehoseConfig, Pacing, SinkConfig, SinkOversize};
use crate::batch::firehose::MAX_RECORD_BYTES;

const TYPES: &[&str] = &["stdout", "file", "firehose"];

/// Firehose's smaller regional Direct PUT quotas (per stream, shared by every node).
pub const FIREHOSE_REQUESTS_PER_SECOND: usize = 1_000;
pub const FIREHOSE_RECORDS_PER_SECOND: usize = 100_000;
pub const FIREHOSE_BYTES_PER_SECOND: usize = 1 << 20;

pub(super) fn build_sink(ck: &mut Checker, field: Option<Field<RawSink>>) -> SinkConfig {
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
    let allowed: &[&str] = match kind.as_str() {
        "stdout" => &["type"],
        "file" => raw::FILE_SINK_KEYS,
        "firehose" => raw::FIREHOSE_SINK_KEYS,
        "cloudwatch" => {
            ck.report("sink.type", format!("\"cloudwatch\" is not available in this build yet (use {one_of_types})"));
            ck.unknown_keys("sink", &raw.unknown, raw::SINK_KEYS);
            return SinkConfig::Stdout;
        }
        other => {
            ck.report("sink.type", check::not_one_of(other, TYPES));
            ck.unknown_keys("sink", &raw.unknown, raw::SINK_KEYS);
            return SinkConfig::Stdout;
        }
    };
    ck.unknown_keys("sink", &raw.unknown, allowed);
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
        _ => SinkConfig::Stdout,
    }
}

/// "not allowed when sink.type = "stdout" (… belongs to type = "firehose")".
fn not_for_type(key: &str, kind: &str) -> String {
    let owner = if raw::FILE_SINK_KEYS.contains(&key) { "file" } else { "firehose" };
    match kind {
        "stdout" if owner == "file" => {
            r#"not allowed when sink.type = "stdout" (remove it, or set type = "file")"#.to_string()
        }
        _ => format!(r#"not allowed when sink.type = {kind:?} (it belongs to type = {owner:?})"#),
    }
}

fn build_firehose(ck: &mut Checker, raw: RawSink) -> FirehoseConfig {
    if raw.delivery_stream.is_none() {
        ck.report("sink.delivery_stream", r#"required when sink.type = "firehose": the delivery stream's name"#);
    }
    let delivery_stream = ck.get("sink.delivery_stream", raw.delivery_stream, "a string").unwrap_or_default();
    if delivery_stream.is_empty() && ck.problems.iter().all(|p| p.key != "sink.delivery_stream") {
        ck.report("sink.delivery_stream", "must not be empty");
    }
    let region = ck.get("sink.region", raw.region, "a string").filter(|r| !r.is_empty());
    let endpoint = ck.get("sink.endpoint", raw.endpoint, "a string").filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            ck.report("sink.endpoint", format!("{e:?} is not a URL like \"https://firehose.eu-west-1.amazonaws.com\""));
        }
    }
    let oversize = [("truncate", SinkOversize::Truncate), ("dead_letter", SinkOversize::DeadLetter)];
    FirehoseConfig {
        delivery_stream,
        region,
        endpoint,
        aggregate: ck.bool("sink.aggregate", raw.aggregate, true),
        record_max_bytes: ck.count("sink.record_max_bytes", raw.record_max_bytes, MAX_RECORD_BYTES, 1024, Some(MAX_RECORD_BYTES)),
        oversize: ck.choice("sink.oversize", raw.oversize, SinkOversize::Truncate, &oversize),
        linger: ck.duration("sink.linger", raw.linger, Duration::from_secs(1), false),
        max_in_flight: ck.count("sink.max_in_flight", raw.max_in_flight, 4, 1, Some(64)),
        request_timeout: ck.duration("sink.request_timeout", raw.request_timeout, Duration::from_secs(30), true),
        retry_max_wait: ck.duration("sink.retry_max_wait", raw.retry_max_wait, Duration::from_secs(30), true),
        pacing: Pacing {
            requests_per_second: ck.count("sink.max_requests_per_second", raw.max_requests_per_second, FIREHOSE_REQUESTS_PER_SECOND, 1, Some(1 << 20)) as u32,
            records_per_second: ck.count("sink.max_records_per_second", raw.max_records_per_second, FIREHOSE_RECORDS_PER_SECOND, 1, Some(100 << 20)) as u32,
            bytes_per_second: ck.count("sink.max_bytes_per_second", raw.max_bytes_per_second, FIREHOSE_BYTES_PER_SECOND, 1024, Some(1 << 31)) as u64,
            recovery: ck.duration("sink.rate_recovery", raw.rate_recovery, Duration::from_secs(60), true),
        },
    }
}
