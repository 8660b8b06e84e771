//! CloudWatch Logs request shaping: JSON lines → log events → `PutLogEvents` batches.
//!
//! The rules a batch must follow (PutLogEvents API reference), as typed constants:
//! at most [`MAX_BATCH_EVENTS`] events and [`MAX_BATCH_BYTES`] bytes counted as each
//! message's UTF-8 bytes plus [`EVENT_OVERHEAD`]; an event at most
//! [`MAX_EVENT_BYTES`]; in chronological order; spanning at most [`MAX_SPAN_MS`].
//! Events more than 2 h ahead or older than 14 days (or the group's retention) are
//! rejected by AWS one by one: they are never sent, but set aside ([`Age`]).
//!
//! Owns parsing our own event format back (time, message, Kubernetes metadata),
//! rendering log group and stream names from templates, and cutting batches; never
//! does I/O.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use super::{Kube, TemplatePart};

/// Events per `PutLogEvents`.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Bytes per `PutLogEvents`: messages' UTF-8 bytes plus [`EVENT_OVERHEAD`] each.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What each event adds to a batch's size.
pub const EVENT_OVERHEAD: usize = 26;
/// One event's limit (message + overhead).
pub const MAX_EVENT_BYTES: usize = 1_048_576;
/// A batch's time span, first to last event.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Events older than this are rejected.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Events further ahead than this are rejected.
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;
/// The longest log group or stream name.
pub const MAX_NAME_LEN: usize = 512;

/// One log event, tagged with the chunk (buffer record) it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
    pub chunk: u64,
}

impl LogEvent {
    /// Its size in a batch.
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// Our event format, read back (only what routing and timestamps need).
#[derive(Deserialize)]
struct EventFields<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    message: &'a serde_json::value::RawValue,
    /// Kept raw: routing looks it up as it is, and parses it once per pod.
    #[serde(default, borrow)]
    kubernetes: Option<&'a serde_json::value::RawValue>,
}

/// What a template may name: the event's Kubernetes metadata, and the node-wide
/// `{node}` and `{cluster}`.
pub const PLACEHOLDERS: &[&str] = &["namespace", "pod", "pod_uid", "container", "node", "cluster"];

/// A log group or stream name template: literal text and `{placeholder}`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}


impl Template {
    /// Parses `text`; an unknown placeholder or an unclosed `{` is an error saying so.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts = super::parse_template(text, PLACEHOLDERS)?;
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self { parts })
    }

    /// Whether it names `placeholder`.
    pub fn uses(&self, placeholder: &str) -> bool {
        let i = PLACEHOLDERS.iter().position(|p| *p == placeholder);
        self.parts.iter().any(|p| matches!(p, TemplatePart::Field(f) if Some(*f) == i))
    }

    /// The name for one event's fields (`values` in [`PLACEHOLDERS`] order; a missing
    /// one is `unknown`), made valid for CloudWatch: characters it refuses become `_`,
    /// at most [`MAX_NAME_LEN`] bytes.
    fn render(&self, values: &[Option<&str>; 6], group: bool) -> String {
        self.known_prefix(&values.map(|v| Some(v.filter(|v| !v.is_empty()).unwrap_or("unknown"))), group).0
    }

    /// The name as far as it is known: rendered up to the first placeholder whose value
    /// is `None`, and whether that is the whole name (for `logferry verify`).
    pub fn known_prefix(&self, values: &[Option<&str>; 6], group: bool) -> (String, bool) {
        let mut out = String::new();
        let mut whole = true;
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Field(i) => match values[*i] {
                    Some(v) => out.push_str(v),
                    None => {
                        whole = false;
                        break;
                    }
                },
            }
        }
        let valid = |c: char| if group { c.is_ascii_alphanumeric() || "._-/#".contains(c) } else { c != ':' && c != '*' };
        let mut name: String = out.chars().map(|c| if valid(c) { c } else { '_' }).collect();
        if name.len() > MAX_NAME_LEN {
            let mut cut = MAX_NAME_LEN;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        (name, whole)
    }
}

/// Where events go: the group and stream templates, with the node-wide values.
#[derive(Debug, Clone)]
pub struct LogStreams {
    group: Template,
    stream: Template,
    node: String,
    cluster: String,
    /// Send the bare message (`message_key = "message"`), not the whole JSON line.
    bare_message: bool,
    /// The names rendered for each `kubernetes` object seen, as written: a pod's events
    /// all carry the same one, so templates are rendered once per container.
    names: HashMap<Box<[u8]>, StreamKey>,
}

/// Rendered names kept at most (then forgotten and rendered again as needed).
const NAMES_KEPT: usize = 4096;

/// A log group and stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub group: String,
    pub stream: String,
}

impl LogStreams {
    pub fn new(group: Template, stream: Template, node: String, cluster: String, bare_message: bool) -> Self {
        Self { group, stream, node, cluster, bare_message, names: HashMap::new() }
    }

    /// One JSON line (without its newline) → where it goes and the log event.
    /// A line that is not an event of ours goes to the group and stream of "unknown"
    /// metadata, timed `now_ms`, whole.
    pub fn route(&mut self, line: &[u8], chunk: u64, now_ms: i64) -> (&StreamKey, LogEvent) {
        let parsed: Option<EventFields<'_>> = serde_json::from_slice(line).ok();
        let kube = parsed.as_ref().and_then(|p| p.kubernetes).map_or(&b""[..], |k| k.get().as_bytes());
        if !self.names.contains_key(kube) {
            if self.names.len() >= NAMES_KEPT {
                self.names.clear();
            }
            let key = self.render(kube);
            self.names.insert(kube.into(), key);
        }
        let timestamp = parsed
            .as_ref()
            .and_then(|p| crate::event::time::parse_rfc3339(p.time.as_bytes()))
            .map_or(now_ms, |ns| ns.div_euclid(1_000_000));
        let message = match (&parsed, self.bare_message) {
            (Some(p), true) => bare(p.message),
            _ => String::from_utf8_lossy(line).into_owned(),
        };
        (&self.names[kube], LogEvent { timestamp, message, chunk })
    }

    /// The names for one `kubernetes` object (empty: none).
    fn render(&self, kube: &[u8]) -> StreamKey {
        let kube: Kube<'_> = serde_json::from_slice(kube).unwrap_or_default();
        let values = [
            kube.namespace.as_deref(),
            kube.pod.as_deref(),
            kube.pod_uid.as_deref(),
            kube.container.as_deref(),
            Some(self.node.as_str()),
            Some(self.cluster.as_str()),
        ];
        StreamKey { group: self.group.render(&values, true), stream: self.stream.render(&values, false) }
    }
}

/// A message's text: a JSON string unescaped, anything else (an embedded object) as
/// written.
fn bare(raw: &serde_json::value::RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
}

/// Whether AWS would accept an event's time now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Ok,
    TooOld,
    TooNew,
}

/// `retention_days`: the group's retention (0: none), which may be stricter than 14 days.
pub fn age(timestamp: i64, now_ms: i64, retention_days: u32) -> Age {
    let mut max_age = MAX_AGE_MS;
    if retention_days > 0 {
        max_age = max_age.min(i64::from(retention_days) * 24 * 3600 * 1000);
    }
    if timestamp < now_ms - max_age {
        Age::TooOld
    } else if timestamp > now_ms + MAX_AHEAD_MS {
        Age::TooNew
    } else {
        Age::Ok
    }
}

/// Cuts `message` to fit one event (at a character boundary); `true` if it was cut.
pub fn fit_event(message: &mut String) -> bool {
    let max = MAX_EVENT_BYTES - EVENT_OVERHEAD;
    if message.len() <= max {
        return false;
    }
    let mut cut = max;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    true
}

/// Sorts `events` by time (stably: equal times keep their order) and takes the
/// longest prefix that is one valid batch. `events` must each fit ([`fit_event`]).
pub fn take_batch(events: &mut Vec<LogEvent>) -> Vec<LogEvent> {
    events.sort_by_key(|e| e.timestamp);
    let mut bytes = 0;
    let mut n = 0;
    for e in events.iter() {
        let span = e.timestamp - events[0].timestamp;
        if n == MAX_BATCH_EVENTS || bytes + e.size() > MAX_BATCH_BYTES || span > MAX_SPAN_MS {
            break;
        }
        bytes += e.size();
        n += 1;
    }
    events.drain(..n.max(1).min(events.len())).collect()
}

/// The size of `events` in a batch.
pub fn batch_bytes(events: &[LogEvent]) -> usize {
    events.iter().map(LogEvent::size).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router(bare: bool) -> LogStreams {
        LogStreams::new(
            Template::parse("/eks/{cluster}/containers").unwrap(),
            Template::parse("{namespace}/{pod}/{container}").unwrap(),
            "ip-10-0-0-1".into(),
            "prod".into(),
            bare,
        )
    }

    const LINE: &str = r#"{"time":"2026-11-21T10:00:00.123456789Z","stream":"stdout","message":"GET \"/\" 200","kubernetes":{"namespace":"shop","pod":"web-1","pod_uid":"u","container":"nginx","restart_count":0}}"#;

    #[test]
    fn events_are_routed_and_timed_by_their_metadata() {
        let mut r = router(false);
        let (key, ev) = r.route(LINE.as_bytes(), 7, 0);
        assert_eq!(*key, StreamKey { group: "/eks/prod/containers".into(), stream: "shop/web-1/nginx".into() });
        assert_eq!(ev.timestamp, 1_795_255_200_123);
        assert_eq!(ev.message, LINE);
        assert_eq!(ev.chunk, 7);
        let mut r = router(true);
        let (_, bare) = r.route(LINE.as_bytes(), 7, 0);
        assert_eq!(bare.message, r#"GET "/" 200"#);
        let (key, raw) = r.route(b"not json", 1, 42);
        assert_eq!((key.stream.as_str(), raw.timestamp, raw.message.as_str()), ("unknown/unknown/unknown", 42, "not json"));
    }

    #[test]
    fn templates_are_checked_and_names_made_valid() {
        assert!(Template::parse("{nope}").unwrap_err().contains("{nope} is not a placeholder"));
        assert!(Template::parse("a{pod").is_err());
        assert!(Template::parse("").is_err());
        let t = Template::parse("x:{pod}*").unwrap();
        assert!(t.uses("pod") && !t.uses("node"));
        let values = [None, Some("p é"), None, None, None, None];
        assert_eq!(t.render(&values, false), "x_p é_");
        assert_eq!(Template::parse("/g/{pod}").unwrap().render(&values, true), "/g/p__");
    }

    #[test]
    fn ages_follow_the_limits_and_the_retention() {
        let now = 100 * 24 * 3600 * 1000;
        assert_eq!(age(now - MAX_AGE_MS - 1, now, 0), Age::TooOld);
        assert_eq!(age(now - MAX_AGE_MS + 1, now, 0), Age::Ok);
        assert_eq!(age(now - 2 * 24 * 3600 * 1000, now, 1), Age::TooOld);
        assert_eq!(age(now + MAX_AHEAD_MS + 1, now, 0), Age::TooNew);
    }

    fn events() -> impl Strategy<Value = Vec<LogEvent>> {
        let ev = (0i64..(3 * MAX_SPAN_MS), 0usize..3000, any::<bool>()).prop_map(|(t, len, big)| LogEvent {
            timestamp: t,
            message: "m".repeat(if big { len * 200 } else { len }),
            chunk: 0,
        });
        prop::collection::vec(ev, 0..12_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Any events become batches that satisfy every PutLogEvents rule, and every
        /// event is in exactly one batch.
        #[test]
        fn batches_follow_every_put_log_events_rule(mut events in events()) {
            for e in &mut events {
                fit_event(&mut e.message);
            }
            let total = events.len();
            let mut seen = 0;
            while !events.is_empty() {
                let batch = take_batch(&mut events);
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= MAX_BATCH_EVENTS);
                prop_assert!(batch_bytes(&batch) <= MAX_BATCH_BYTES);
                prop_assert!(batch.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
                prop_assert!(batch.last().unwrap().timestamp - batch[0].timestamp <= MAX_SPAN_MS);
                prop_assert!(batch.iter().all(|e| e.size() <= MAX_EVENT_BYTES));
                seen += batch.len();
            }
            prop_assert_eq!(seen, total);
        }
    }

    #[test]
    fn an_event_over_the_limit_is_cut_at_a_character_boundary() {
        let mut m = "é".repeat(MAX_EVENT_BYTES);
        assert!(fit_event(&mut m));
        assert!(m.len() + EVENT_OVERHEAD <= MAX_EVENT_BYTES && m.chars().all(|c| c == 'é'));
        let mut short = "ok".to_string();
        assert!(!fit_event(&mut short));
    }
}
