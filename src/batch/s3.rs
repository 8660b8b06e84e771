//! S3 object shaping: JSON lines → objects under a key prefix per namespace and day.
//!
//! `key_prefix` is a template over the event's metadata (`{namespace}`, `{pod}`,
//! `{container}`) and the node's (`{node}`, `{cluster}`), and over the event's time in
//! UTC (`{date}` = `YYYYMMDD`, `{hour}` = `HH`), e.g. `fluentd/prod/{namespace}/dt={date}/`.
//! logferry appends an object name that never collides across nodes or restarts: the
//! node, the time the object was opened, this process's start and a sequence number,
//! and the compression's extension.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use super::{Kube, TemplatePart};

/// What a key prefix may name.
pub const PLACEHOLDERS: &[&str] = &["namespace", "pod", "container", "node", "cluster", "date", "hour"];

/// A key prefix template: literal text and `{placeholder}`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<TemplatePart>,
}


impl KeyTemplate {
    /// Parses `text`; an unknown placeholder or an unclosed `{` is an error saying so.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('/') {
            return Err(format!("{text:?} must not start with '/' (S3 keys are relative to the bucket)"));
        }
        Ok(Self { parts: super::parse_template(text, PLACEHOLDERS)? })
    }

    /// Whether it names `placeholder`.
    pub fn uses(&self, placeholder: &str) -> bool {
        let i = PLACEHOLDERS.iter().position(|p| *p == placeholder);
        self.parts.iter().any(|p| matches!(p, TemplatePart::Field(f) if Some(*f) == i))
    }

    /// The prefix for one event: `values` in [`PLACEHOLDERS`] order (a missing or empty
    /// one is `unknown`); characters S3 keys should avoid become `_`.
    fn render(&self, values: &[&str; 7]) -> String {
        self.known_prefix(&values.map(Some))
    }

    /// The prefix as far as it is known: rendered up to the first placeholder whose
    /// value is `None` (for `logferry verify`, which lists what it cannot name whole).
    pub fn known_prefix(&self, values: &[Option<&str>; 7]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Field(i) => {
                    let Some(v) = values[*i] else { break };
                    let v = if v.is_empty() { "unknown" } else { v };
                    out.extend(v.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=".contains(c) { c } else { '_' }));
                }
            }
        }
        out
    }
}

/// Our event format, read back (only what the key needs).
#[derive(Deserialize)]
struct EventFields<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(default, borrow)]
    kubernetes: Option<&'a serde_json::value::RawValue>,
}

/// Prefixes rendered kept at most (then forgotten and rendered again as needed).
const PREFIXES_KEPT: usize = 4096;

/// Where each event goes: the prefix template, with the node-wide values.
#[derive(Debug, Clone)]
pub struct KeyPrefixes {
    template: KeyTemplate,
    node: String,
    cluster: String,
    /// Per `kubernetes` object as written: the hour (since the epoch) last rendered,
    /// and the prefix for it.
    rendered: HashMap<Box<[u8]>, (u32, String)>,
}

impl KeyPrefixes {
    pub fn new(template: KeyTemplate, node: String, cluster: String) -> Self {
        Self { template, node, cluster, rendered: HashMap::new() }
    }

    /// The key prefix of one JSON line (without its newline); a line that is not an
    /// event of ours goes under "unknown" metadata at `now` (ns since the epoch).
    pub fn prefix(&mut self, line: &[u8], now: i64) -> &str {
        let (kube, time) = match fields_fast(line) {
            Some(found) => found,
            None => {
                let parsed: Option<EventFields<'_>> = serde_json::from_slice(line).ok();
                let kube = parsed.as_ref().and_then(|p| p.kubernetes).map_or(&b""[..], |k| k.get().as_bytes());
                (kube, parsed.as_ref().and_then(|p| crate::event::time::parse_rfc3339(p.time.as_bytes())).unwrap_or(now))
            }
        };
        let hour = u32::try_from(time.div_euclid(3_600_000_000_000)).unwrap_or(0);
        // Looked up by the borrowed bytes: a line costs no allocation once its pod and
        // hour have been seen.
        let fresh = self.rendered.get(kube).is_some_and(|(h, _)| *h == hour);
        if !fresh {
            if self.rendered.len() >= PREFIXES_KEPT {
                self.rendered.clear();
            }
            let prefix = self.render(kube, time);
            self.rendered.insert(kube.into(), (hour, prefix));
        }
        &self.rendered[kube].1
    }

    fn render(&self, kube: &[u8], time: i64) -> String {
        let kube: Kube<'_> = serde_json::from_slice(kube).unwrap_or_default();
        let (date, hour) = date_and_hour(time);
        let values = [
            kube.namespace.as_deref().unwrap_or(""),
            kube.pod.as_deref().unwrap_or(""),
            kube.container.as_deref().unwrap_or(""),
            self.node.as_str(),
            self.cluster.as_str(),
            date.as_str(),
            hour.as_str(),
        ];
        self.template.render(&values)
    }
}

/// The `kubernetes` object and the time of a line as logferry's encoder writes it
/// (`{"time":"<30 characters>",…,"kubernetes":{…}}`), without parsing the message:
/// `None` for anything else (then the line is parsed). Inside the message a quote is
/// escaped, so the last `,"kubernetes":{` is the encoder's own.
fn fields_fast(line: &[u8]) -> Option<(&[u8], i64)> {
    const HEAD: &[u8] = b"{\"time\":\"";
    let time = line.strip_prefix(HEAD)?.get(..30).filter(|_| line.get(HEAD.len() + 30) == Some(&b'"'))?;
    let time = crate::event::time::parse_rfc3339(time)?;
    const KUBE: &[u8] = b",\"kubernetes\":";
    let kube = match memchr::memmem::rfind(line, KUBE) {
        Some(at) => line[at + KUBE.len()..].strip_suffix(b"}")?,
        None => b"",
    };
    Some((kube, time))
}

/// `YYYYMMDD` and `HH` of a time (ns since the epoch), UTC.
pub fn date_and_hour(ns: i64) -> (String, String) {
    let text = crate::event::time::format_rfc3339(ns);
    (format!("{}{}{}", &text[0..4], &text[5..7], &text[8..10]), text[11..13].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_namespace_and_the_events_day() {
        let t = KeyTemplate::parse("fluentd/prod/{namespace}/dt={date}/").unwrap();
        let mut p = KeyPrefixes::new(t, "node-1".into(), "prod".into());
        let line = br#"{"time":"2026-12-06T23:59:59.000000000Z","stream":"stdout","message":"m","kubernetes":{"namespace":"payments","pod":"api-1","container":"app"}}"#;
        assert_eq!(p.prefix(line, 0), "fluentd/prod/payments/dt=20261206/");
        let next_day = br#"{"time":"2026-12-07T00:00:01.000000000Z","stream":"stdout","message":"m","kubernetes":{"namespace":"payments","pod":"api-1","container":"app"}}"#;
        assert_eq!(p.prefix(next_day, 0), "fluentd/prod/payments/dt=20261207/");
        assert_eq!(p.prefix(b"not json", 0), "fluentd/prod/unknown/dt=19700101/");
        let t = KeyTemplate::parse("{cluster}/{node}/{namespace}/{pod}/{container}/{date}/{hour}/").unwrap();
        let mut p = KeyPrefixes::new(t, "ip-10-0-0-1.ec2.internal".into(), "prod".into());
        assert_eq!(p.prefix(line, 0), "prod/ip-10-0-0-1.ec2.internal/payments/api-1/app/20261206/23/");
        // The fast path and the parse agree, with and without metadata.
        let plain = br#"{"time":"2026-12-06T01:00:00.000000000Z","stream":"stdout","message":"x \",\"kubernetes\":{ y"}"#;
        assert_eq!(fields_fast(plain).map(|(k, _)| k), Some(&b""[..]));
        assert_eq!(fields_fast(line).map(|(k, _)| k), Some(&br#"{"namespace":"payments","pod":"api-1","container":"app"}"#[..]));
        assert!(KeyTemplate::parse("{day}/").unwrap_err().contains("not a placeholder"));
        assert!(KeyTemplate::parse("/abs/").unwrap_err().contains("must not start with '/'"));
    }
}
