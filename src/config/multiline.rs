//! `[[multiline]]`: which containers' stack traces are grouped, and by which rule.
//!
//! Each entry selects containers with the tail filters' keys (empty: all) and names a
//! built-in `parser` or its own `start` and `continue` regexes; the first entry that
//! selects a container applies to it (a container no entry selects is decoded as
//! before, at no extra cost). `max_lines` (default 1,000) and `flush_timeout` (default
//! 1 s) bound a group; `decode.max_message_bytes` bounds its bytes.

use std::sync::Arc;
use std::time::Duration;

use super::build_names;
use super::check::Checker;
use super::pods::NameFilter;
use super::raw::{self, Field, Opt, RawMultiline};
use crate::decode::multiline::{GroupBudget, Parser, Rule, DEFAULT_GROUP_BUDGET};
use crate::decode::Multiline;
use crate::event::KubeMeta;

/// Lines in one group, at most, unless configured.
pub const DEFAULT_MAX_LINES: u32 = 1000;
/// An open group is emitted after this long caught up and quiet, unless configured.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// One `[[multiline]]` entry.
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    namespaces: NameFilter,
    pods: NameFilter,
    containers: NameFilter,
    pub multiline: Multiline,
}

impl MultilineConfig {
    /// Whether this entry selects a container (files outside the pod layout have
    /// empty names, which only empty include lists let in).
    pub fn selects(&self, kube: Option<&KubeMeta>) -> bool {
        let (ns, pod, container) = kube.map_or(("", "", ""), |k| (k.namespace.as_str(), k.pod.as_str(), k.container.as_str()));
        self.namespaces.allows(ns) && self.pods.allows(pod) && self.containers.allows(container)
    }

    /// A rule for every container (`replay --multiline`).
    pub fn everywhere(parser: Parser) -> Self {
        let budget = Arc::new(GroupBudget::new(DEFAULT_GROUP_BUDGET));
        let multiline = Multiline { rule: Arc::new(Rule::builtin(parser)), max_lines: DEFAULT_MAX_LINES, flush_timeout: DEFAULT_FLUSH_TIMEOUT, budget };
        Self { namespaces: NameFilter::default(), pods: NameFilter::default(), containers: NameFilter::default(), multiline }
    }
}

/// The rule of the first entry that selects a container.
pub fn rule_for<'a>(entries: &'a [MultilineConfig], kube: Option<&KubeMeta>) -> Option<&'a Multiline> {
    entries.iter().find(|e| e.selects(kube)).map(|e| &e.multiline)
}

pub(super) fn build_multiline(ck: &mut Checker, field: Opt<Vec<Field<RawMultiline>>>) -> Vec<MultilineConfig> {
    let Some(entries) = ck.get("multiline", field, "an array of tables ([[multiline]])") else { return Vec::new() };
    let mut out = Vec::new();
    // One budget for every group of every entry.
    let budget = Arc::new(GroupBudget::new(DEFAULT_GROUP_BUDGET));
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("multiline[{i}]");
        let Some(raw) = ck.get(&at, Some(entry), "a table") else { continue };
        if let Some(m) = build_entry(ck, &at, raw, &budget) {
            out.push(m);
        }
    }
    out
}

fn build_entry(ck: &mut Checker, at: &str, raw: RawMultiline, budget: &Arc<GroupBudget>) -> Option<MultilineConfig> {
    ck.unknown_keys(at, &raw.unknown, raw::MULTILINE_KEYS);
    let mut written = Vec::new();
    let namespaces = build_names(ck, at, "namespaces", raw.include_namespaces, raw.exclude_namespaces, &mut written);
    let pods = build_names(ck, at, "pods", raw.include_pods, raw.exclude_pods, &mut written);
    let containers = build_names(ck, at, "containers", raw.include_containers, raw.exclude_containers, &mut written);
    let max_lines = ck.count(&format!("{at}.max_lines"), raw.max_lines, DEFAULT_MAX_LINES as usize, 2, Some(1_000_000)) as u32;
    let flush_timeout = ck.duration(&format!("{at}.flush_timeout"), raw.flush_timeout, DEFAULT_FLUSH_TIMEOUT, true);
    let rule = build_rule(ck, at, raw.parser, raw.start, raw.continue_)?;
    let multiline = Multiline { rule: Arc::new(rule), max_lines, flush_timeout, budget: budget.clone() };
    Some(MultilineConfig { namespaces, pods, containers, multiline })
}

/// `parser`, or `start` and `continue`: exactly one of the two ways.
fn build_rule(ck: &mut Checker, at: &str, parser: Opt<String>, start: Opt<String>, cont: Opt<String>) -> Option<Rule> {
    let parser = ck.get(&format!("{at}.parser"), parser, "a string");
    let start_key = format!("{at}.start");
    let cont_key = format!("{at}.continue");
    let start = ck.get(&start_key, start, "a regex string");
    let cont = ck.get(&cont_key, cont, "a regex string");
    match (parser, start, cont) {
        (Some(name), None, None) => match Parser::from_name(&name) {
            Some(p) => Some(Rule::builtin(p)),
            None => {
                ck.report(&format!("{at}.parser"), format!("{name:?} is not a built-in parser (expected one of: {})", Parser::NAMES.join(", ")));
                None
            }
        },
        (None, Some(start), Some(cont)) => {
            let start = regex(ck, &start_key, &start);
            let cont = regex(ck, &cont_key, &cont);
            Some(Rule::custom(start?, cont?))
        }
        (Some(_), _, _) => {
            ck.report(at, "has both `parser` and `start`/`continue`: use a built-in parser or a rule of your own, not both");
            None
        }
        (None, None, None) => {
            ck.report(at, format!("needs `parser` (one of: {}) or both `start` and `continue` regexes", Parser::NAMES.join(", ")));
            None
        }
        (None, _, None) => {
            ck.report(&cont_key, "is missing: a rule of your own needs both `start` and `continue`");
            None
        }
        (None, None, _) => {
            ck.report(&start_key, "is missing: a rule of your own needs both `start` and `continue`");
            None
        }
    }
}

fn regex(ck: &mut Checker, key: &str, pattern: &str) -> Option<regex::bytes::Regex> {
    match regex::bytes::Regex::new(pattern) {
        Ok(r) => Some(r),
        Err(e) => {
            ck.report(key, format!("not a regex: {e}"));
            None
        }
    }
}
