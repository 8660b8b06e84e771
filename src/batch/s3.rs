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

/// A key prefix as the S3 sink knows it: a number for the prefix text (the same for
/// every pod whose events share it), and the text.
pub type PrefixId = u64;

/// Where each event goes: the prefix template, with the node-wide values.
#[derive(Debug, Clone)]
pub struct KeyPrefixes {
    template: KeyTemplate,
    node: String,
    cluster: String,
    /// Per `kubernetes` object as written: the hour (since the epoch) last rendered,
    /// and its prefix's id.
    rendered: HashMap<Box<[u8]>, (u32, PrefixId)>,
    /// Each prefix text's id, and back. Ids are never reused: after the tables are
    /// forgotten a prefix gets a new one.
    ids: HashMap<String, PrefixId>,
    texts: HashMap<PrefixId, String>,
    next_id: PrefixId,
    /// The last line's `kubernetes` bytes, the `YYYY-MM-DDTHH` of its time and its
    /// prefix: consecutive lines of one container mostly share them, and then cost a
    /// comparison, no hashing or time parsing.
    last_kube: Vec<u8>,
    last_hour: [u8; 13],
    last: Option<PrefixId>,
}

impl KeyPrefixes {
    pub fn new(template: KeyTemplate, node: String, cluster: String) -> Self {
        Self {
            template,
            node,
            cluster,
            rendered: HashMap::new(),
            ids: HashMap::new(),
            texts: HashMap::new(),
            next_id: 0,
            last_kube: Vec::new(),
            last_hour: [0; 13],
            last: None,
        }
    }

    /// The key prefix of one JSON line (without its newline); a line that is not an
    /// event of ours goes under "unknown" metadata at `now` (ns since the epoch).
    pub fn prefix(&mut self, line: &[u8], now: i64) -> (PrefixId, &str) {
        let id = self.prefix_id(line, now);
        (id, &self.texts[&id])
    }

    fn prefix_id(&mut self, line: &[u8], now: i64) -> PrefixId {
        let Some((kube, time_text)) = fields_fast(line) else {
            self.last = None;
            let parsed: Option<EventFields<'_>> = serde_json::from_slice(line).ok();
            let kube = parsed.as_ref().and_then(|p| p.kubernetes).map_or(&b""[..], |k| k.get().as_bytes());
            let time = parsed.as_ref().and_then(|p| crate::event::time::parse_rfc3339(p.time.as_bytes())).unwrap_or(now);
            return self.lookup(kube, time);
        };
        if let Some(id) = self.last.filter(|_| time_text[..13] == self.last_hour && kube == self.last_kube.as_slice()) {
            return id;
        }
        let time = crate::event::time::parse_rfc3339(time_text).unwrap_or(now);
        let id = self.lookup(kube, time);
        self.last_kube.clear();
        self.last_kube.extend_from_slice(kube);
        self.last_hour.copy_from_slice(&time_text[..13]);
        self.last = Some(id);
        id
    }

    /// The prefix id for a `kubernetes` object at a time, rendered when its hour is new.
    fn lookup(&mut self, kube: &[u8], time: i64) -> PrefixId {
        let hour = u32::try_from(time.div_euclid(3_600_000_000_000)).unwrap_or(0);
        // Looked up by the borrowed bytes: a line costs no allocation once its pod and
        // hour have been seen.
        if let Some(&(h, id)) = self.rendered.get(kube) {
            if h == hour {
                return id;
            }
        }
        if self.rendered.len() >= PREFIXES_KEPT || self.ids.len() >= PREFIXES_KEPT {
            self.forget();
        }
        let text = self.render(kube, time);
        let id = match self.ids.get(&text) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.ids.insert(text.clone(), id);
                self.texts.insert(id, text);
                id
            }
        };
        self.rendered.insert(kube.into(), (hour, id));
        id
    }

    fn forget(&mut self) {
        self.rendered.clear();
        self.ids.clear();
        self.texts.clear();
        self.last = None;
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

/// The `kubernetes` object and the time (its 30 characters) of a line as logferry's
/// encoder writes it (`{"time":"<30 characters>",…,"kubernetes":{…}}`), without parsing
/// the message: `None` for anything else (then the line is parsed). The `kubernetes`
/// object is last and holds only names (no `{`), so its `{` is the line's last one;
/// inside the message a quote is escaped, so `,"kubernetes":` before it is the
/// encoder's own.
fn fields_fast(line: &[u8]) -> Option<(&[u8], &[u8])> {
    const HEAD: &[u8] = b"{\"time\":\"";
    let time = line.strip_prefix(HEAD)?.get(..30).filter(|_| line.get(HEAD.len() + 30) == Some(&b'"'))?;
    const KUBE: &[u8] = b",\"kubernetes\":";
    let kube = match memchr::memrchr(b'{', line) {
        Some(at) if line[..at].ends_with(KUBE) => line[at..].strip_suffix(b"}")?,
        _ => b"",
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
        assert_eq!(p.prefix(line, 0).1, "fluentd/prod/payments/dt=20261206/");
        let next_day = br#"{"time":"2026-12-07T00:00:01.000000000Z","stream":"stdout","message":"m","kubernetes":{"namespace":"payments","pod":"api-1","container":"app"}}"#;
        assert_eq!(p.prefix(next_day, 0).1, "fluentd/prod/payments/dt=20261207/");
        assert_eq!(p.prefix(b"not json", 0).1, "fluentd/prod/unknown/dt=19700101/");
        let t = KeyTemplate::parse("{cluster}/{node}/{namespace}/{pod}/{container}/{date}/{hour}/").unwrap();
        let mut p = KeyPrefixes::new(t, "ip-10-0-0-1.ec2.internal".into(), "prod".into());
        assert_eq!(p.prefix(line, 0).1, "prod/ip-10-0-0-1.ec2.internal/payments/api-1/app/20261206/23/");
        // The fast path and the parse agree, with and without metadata.
        let plain = br#"{"time":"2026-12-06T01:00:00.000000000Z","stream":"stdout","message":"x \",\"kubernetes\":{ y"}"#;
        assert_eq!(fields_fast(plain).map(|(k, _)| k), Some(&b""[..]));
        assert_eq!(fields_fast(line).map(|(k, _)| k), Some(&br#"{"namespace":"payments","pod":"api-1","container":"app"}"#[..]));
        // A message embedded as an object (message_format = "json"), with and without
        // metadata after it.
        let embedded = br#"{"time":"2026-12-06T01:00:00.000000000Z","stream":"stdout","message":{"a":{"kubernetes":1}},"kubernetes":{"namespace":"x","pod":"p","container":"c"}}"#;
        assert_eq!(fields_fast(embedded).map(|(k, _)| k), Some(&br#"{"namespace":"x","pod":"p","container":"c"}"#[..]));
        let bare = br#"{"time":"2026-12-06T01:00:00.000000000Z","stream":"stdout","message":{"a":{"b":1}}}"#;
        assert_eq!(fields_fast(bare).map(|(k, _)| k), Some(&b""[..]));
        assert!(KeyTemplate::parse("{day}/").unwrap_err().contains("not a placeholder"));
        assert!(KeyTemplate::parse("/abs/").unwrap_err().contains("must not start with '/'"));
    }

    /// Consecutive lines of one container take the last line's prefix without a
    /// lookup; a new hour or another pod is looked up; pods of one namespace share a
    /// prefix and its id.
    #[test]
    fn prefix_ids_follow_pods_and_hours() {
        let t = KeyTemplate::parse("logs/{namespace}/dt={date}/{hour}/").unwrap();
        let mut p = KeyPrefixes::new(t, "n".into(), "c".into());
        let line = |hour: &str, pod: &str, ns: &str| format!(r#"{{"time":"2026-12-06T{hour}:59:59.000000000Z","stream":"stdout","message":"m","kubernetes":{{"namespace":"{ns}","pod":"{pod}","container":"app"}}}}"#);
        let (a, text) = p.prefix(line("10", "api-1", "shop").as_bytes(), 0);
        assert_eq!(text, "logs/shop/dt=20261206/10/");
        assert_eq!(p.prefix(line("10", "api-1", "shop").as_bytes(), 0).0, a, "the last line's");
        assert_eq!(p.prefix(line("10", "api-2", "shop").as_bytes(), 0).0, a, "another pod of the namespace");
        let (b, text) = p.prefix(line("11", "api-2", "shop").as_bytes(), 0);
        assert_ne!(a, b);
        assert_eq!(text, "logs/shop/dt=20261206/11/");
        let (c, text) = p.prefix(line("11", "dns", "kube-system").as_bytes(), 0);
        assert!(c != a && c != b && text == "logs/kube-system/dt=20261206/11/");
        assert_eq!(p.prefix(line("10", "api-1", "shop").as_bytes(), 0), (a, "logs/shop/dt=20261206/10/"), "back to the first");
        p.forget();
        assert!(p.prefix(line("10", "api-1", "shop").as_bytes(), 0).0 > c, "ids are never reused");
        assert!(KeyTemplate::parse("/abs/").unwrap_err().contains("must not start with '/'"));
    }
}
