//! Multiline grouping: the lines of one stack trace as one event.
//!
//! A [`Rule`] is a small state machine over whole lines (after the 16 KiB rejoin): its
//! start state says which line opens a group, and each later state which lines
//! continue it and where they lead. The built-ins ([`Parser`]) recognise what the Java,
//! Python, Go, Ruby and Node.js runtimes print for an uncaught error; a rule of one's
//! own is a `start` and a `continue` regex.
//!
//! A [`Grouper`] applies one rule to one file (or rotation set), per stream, so stdout
//! and stderr — and two containers — never mix. Per line:
//!
//! - no group open: a line the start state takes opens one; any other passes through;
//! - a group open: a line some rule of the current state takes joins it; any other
//!   closes it (emitted), then is looked at afresh (it may open the next group);
//! - a group reaching `max_lines` or `max_bytes` is closed before the line that would
//!   pass the cap.
//!
//! Some lines only belong to the group if more follows: the blank line between a
//! Python exception and "During handling of the above exception…", or between two Go
//! goroutine dumps. States reached by such lines are *tentative*: if the group closes
//! there, those lines are not part of it; they are looked at afresh, one by one, after
//! it.
//!
//! The emitted event is the lines joined with `\n`, with the first line's time, the
//! number of lines (`multiline` in the JSON when above one), and `partial` /
//! `truncated` if any line was. Where the group starts is its checkpoint limit:
//! positions never pass an open group, so a crash re-reads it whole.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use regex::bytes::Regex;

use crate::event::{Event, Nanos, Stream};

/// The built-in rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    Java,
    Python,
    Go,
    Ruby,
    NodeJs,
}

impl Parser {
    pub const NAMES: [&'static str; 5] = ["java", "python", "go", "ruby", "nodejs"];

    pub fn from_name(name: &str) -> Option<Parser> {
        Some(match name {
            "java" => Parser::Java,
            "python" => Parser::Python,
            "go" => Parser::Go,
            "ruby" => Parser::Ruby,
            "nodejs" => Parser::NodeJs,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Parser::Java => "java",
            Parser::Python => "python",
            Parser::Go => "go",
            Parser::Ruby => "ruby",
            Parser::NodeJs => "nodejs",
        }
    }

    /// The state machine, its start state first.
    fn table(self) -> &'static [StateTable] {
        match self {
            // `Exception in thread "main" java.lang.X: …`, `java.lang.X` alone, then
            // `\tat …` frames, `Caused by: …` / `Suppressed: …` chains, `... 12 more`
            // (and the C# lines .NET prints in the same shape).
            Parser::Java => &[
                ("start", false, &[(r"\S(?:Exception|Error|Throwable)(?::|$)", "after_exception")]),
                (
                    "after_exception",
                    false,
                    &[
                        (r"^[\t ]+(?:eval )?at ", "frames"),
                        (r"^[\t ]*(?:Caused by|Suppressed):", "after_exception"),
                        (r"^[\t ]*nested exception is:", "after_exception"),
                        (r"^[\t ]*\.\.\. \d+ (?:more|common frames omitted)", "frames"),
                        (r"^[\t ]+--- End of inner exception stack trace ---$", "frames"),
                    ],
                ),
                (
                    "frames",
                    false,
                    &[
                        (r"^[\t ]+(?:eval )?at ", "frames"),
                        (r"^[\t ]*(?:Caused by|Suppressed):", "after_exception"),
                        (r"^[\t ]*\.\.\. \d+ (?:more|common frames omitted)", "frames"),
                        (r"^[\t ]+--- End of inner exception stack trace ---$", "frames"),
                        (r"^--- End of stack trace from previous location", "frames"),
                    ],
                ),
            ],
            // `Traceback (most recent call last):`, `  File "…", line N, in f` and its
            // source line (and 3.11's `~~~^^^` markers), the exception line; then,
            // chained, a blank line, "During handling of the above exception, another
            // exception occurred:" or "The above exception was the direct cause of the
            // following exception:", a blank line and the next traceback.
            Parser::Python => &[
                ("start", false, &[(r"^Traceback \(most recent call last\):$", "frames")]),
                ("frames", false, &[(r"^[\t ]+File ", "code"), (r"^[\t ]+\[Previous line repeated", "frames")]),
                (
                    "code",
                    false,
                    &[(r"^[\t ]+File ", "code"), (r"^[\t ]+\S", "code"), (r"^(?:[^\s.():]+\.)*[^\s.():]+(?::|$)", "raised")],
                ),
                ("raised", false, &[(r"^$", "after_raised"), (r"^[\t ]+\S", "raised")]),
                ("after_raised", true, &[(r"^(?:During handling of the above exception|The above exception was the direct cause)", "chained")]),
                ("chained", false, &[(r"^$", "chained_gap")]),
                ("chained_gap", false, &[(r"^Traceback \(most recent call last\):$", "frames")]),
            ],
            // `panic: …` (or `fatal error: …`, `http: panic serving …`), perhaps
            // `[signal …]`, then every `goroutine N [state]:` block of
            // `function(args)` / `\tfile:line +0x…` pairs, blank lines between.
            Parser::Go => &[
                (
                    "start",
                    false,
                    &[(r"\bpanic: ", "after_panic"), (r"^fatal error: ", "after_panic"), (r"http: panic serving", "goroutine")],
                ),
                ("after_panic", false, &[(r"^$", "goroutine"), (r"^\[signal ", "after_panic"), (r"^\tpanic: ", "after_panic"), (r"^\s+\[recovered\]", "after_panic")]),
                ("goroutine", false, &[(r"^goroutine \d+ \[[^\]]+\]:$", "frame_call")]),
                (
                    "frame_call",
                    false,
                    &[
                        (r"^(?:[^\s.:]+\.)*[^\s.():]+\(|^created by ", "frame_file"),
                        (r"^\.\.\.additional frames elided\.\.\.$", "frame_call"),
                        (r"^$", "between_goroutines"),
                    ],
                ),
                ("frame_file", false, &[(r"^\s", "frame_call")]),
                ("between_goroutines", true, &[(r"^goroutine \d+ \[[^\]]+\]:$", "frame_call")]),
            ],
            // `file.rb:6:in 'method': message (Class)` then `\tfrom file.rb:1:in …`.
            Parser::Ruby => &[
                ("start", false, &[(r"^\S+:\d+:in [`'][^']*': ", "from")]),
                ("from", false, &[(r"^[\t ]+from \S+:\d+:in ", "from"), (r"^[\t ]+from \S+:\d+$", "from")]),
            ],
            // `TypeError: …` (or `Error`, `SomeException`) then `    at …` frames.
            Parser::NodeJs => &[
                ("start", false, &[(r"^(?:[\w$.]+\.)?[A-Z][\w$]*(?:Error|Exception)(?: \[[\w-]+\])?(?::|$)", "after_error")]),
                ("after_error", false, &[(r"^[\t ]+at ", "frames")]),
                ("frames", false, &[(r"^[\t ]+at ", "frames"), (r"^[\t ]+\.\.\. \d+ lines matching cause stack trace \.\.\.$", "frames")]),
            ],
        }
    }
}

/// One state of a built-in rule: its name, whether lines reaching it are tentative,
/// and its rules, (regex, next state's name), tried in order.
type StateTable = (&'static str, bool, &'static [(&'static str, &'static str)]);

/// Where a rule leads from a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    State(usize),
    /// Close the open group; this line opens the next (a custom rule's `start`).
    Restart,
}

#[derive(Debug)]
struct State {
    rules: Vec<(Regex, Next)>,
    tentative: bool,
}

/// A compiled multiline rule: a state machine over lines, state 0 being "no group".
#[derive(Debug)]
pub struct Rule {
    name: String,
    states: Vec<State>,
}

impl Rule {
    /// A built-in rule.
    pub fn builtin(parser: Parser) -> Rule {
        let table = parser.table();
        let index = |name: &str| table.iter().position(|(n, _, _)| *n == name).expect("a built-in rule names its own states");
        let states = table
            .iter()
            .map(|(_, tentative, rules)| State {
                rules: rules.iter().map(|(re, next)| (Regex::new(re).expect("a built-in regex compiles"), Next::State(index(next)))).collect(),
                tentative: *tentative,
            })
            .collect();
        Rule { name: parser.name().to_string(), states }
    }

    /// A rule of one's own: a line matching `start` opens a group (closing the one
    /// open), a line matching `continue` joins it.
    pub fn custom(start: Regex, cont: Regex) -> Rule {
        let states = vec![
            State { rules: vec![(start.clone(), Next::State(1))], tentative: false },
            State { rules: vec![(start, Next::Restart), (cont, Next::State(1))], tentative: false },
        ];
        Rule { name: "custom".to_string(), states }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where `line` leads from `state`, if anywhere.
    fn next(&self, state: usize, line: &[u8]) -> Option<Next> {
        self.states[state].rules.iter().find(|(re, _)| re.is_match(line)).map(|(_, next)| *next)
    }
}

/// Caps on one group.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_lines: u32,
    pub max_bytes: usize,
}

/// What every open group of the process may hold together: groups wait in memory for
/// their next line, so a thousand containers each in the middle of a trace must not
/// add up past the memory budget. A group that would pass it closes early (counted
/// as capped); the rest of its trace goes line by line.
#[derive(Debug)]
pub struct GroupBudget {
    max: usize,
    used: AtomicUsize,
}

impl GroupBudget {
    pub fn new(max: usize) -> Self {
        Self { max, used: AtomicUsize::new(0) }
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| (u + n <= self.max).then_some(u + n)).is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held by open groups now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// 32 MiB: the default for all open groups together.
pub const DEFAULT_GROUP_BUDGET: usize = 32 << 20;

/// One stream's open group.
#[derive(Debug, Default)]
struct Group {
    /// The rule's state; 0: no group open.
    state: usize,
    buf: Vec<u8>,
    /// Lines in it, and how many of those (and of its bytes) are confirmed: the rest
    /// came through tentative states.
    lines: u32,
    committed_lines: u32,
    committed_bytes: usize,
    time: Nanos,
    start_offset: u64,
    partial: bool,
    truncated: bool,
    /// The tentative lines (after `committed_bytes`): each one's end in `buf`, time,
    /// offset and flags, to be looked at afresh if the group closes before them.
    tentative: Vec<Held>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    end: usize,
    time: Nanos,
    offset: u64,
    partial: bool,
    truncated: bool,
}

impl Group {
    fn is_open(&self) -> bool {
        self.state != 0
    }
}

/// What grouping saw; summed into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Events of more than one line emitted.
    pub groups: u64,
    /// Lines that went into them.
    pub grouped_lines: u64,
    /// Groups closed because the input went quiet (`flush_timeout`) or ended.
    pub flushed: u64,
    /// Groups closed at `max_lines` or `max_bytes`.
    pub capped: u64,
}

/// Applies one rule to one file's lines, per stream.
#[derive(Debug)]
pub struct Grouper {
    rule: Arc<Rule>,
    caps: Caps,
    budget: Arc<GroupBudget>,
    groups: [Group; 2],
    /// An escaped event's message unescaped (the decoder passes none through while a
    /// rule is set; one already on its way when the rule came is).
    text: Vec<u8>,
    pub stats: GroupStats,
}

impl Grouper {
    pub fn new(rule: Arc<Rule>, caps: Caps, budget: Arc<GroupBudget>) -> Self {
        Self { rule, caps, budget, groups: Default::default(), text: Vec::new(), stats: GroupStats::default() }
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Takes one event (a whole line, rejoined) that starts at `offset`; emits what
    /// is finished: events passing through, and groups the event closes.
    pub fn push<F: FnMut(&Event<'_>)>(&mut self, ev: &Event<'_>, offset: u64, emit: &mut F) {
        let held = Held { end: 0, time: ev.time, offset, partial: ev.partial, truncated: ev.truncated };
        let Some(line) = ev.message.whole().filter(|_| !ev.escaped) else {
            let mut text = std::mem::take(&mut self.text);
            self.take(ev.stream, ev.text(&mut text), held, emit);
            self.text = text;
            return;
        };
        self.take(ev.stream, line, held, emit);
    }

    fn take<F: FnMut(&Event<'_>)>(&mut self, stream: Stream, line: &[u8], held: Held, emit: &mut F) {
        let i = stream.index();
        if self.groups[i].is_open() {
            let g = &self.groups[i];
            let fits = g.lines < self.caps.max_lines && g.buf.len() + 1 + line.len() <= self.caps.max_bytes;
            match self.rule.next(g.state, line) {
                Some(Next::State(next)) if fits && self.budget.take(1 + line.len()) => return self.join(i, next, line, held),
                Some(Next::State(_)) => {
                    self.stats.capped += 1;
                    // A continuation past the cap: it goes on its own.
                    self.close(stream, emit);
                    return emit(&event(stream, line, &held));
                }
                Some(Next::Restart) | None => self.close(stream, emit),
            }
        }
        match self.rule.next(0, line) {
            Some(Next::State(next)) if line.len() <= self.caps.max_bytes && self.budget.take(line.len()) => self.open(i, next, line, held),
            _ => emit(&event(stream, line, &held)),
        }
    }

    fn open(&mut self, i: usize, state: usize, line: &[u8], held: Held) {
        let g = &mut self.groups[i];
        g.state = state;
        g.buf.clear();
        g.buf.extend_from_slice(line);
        (g.lines, g.committed_lines, g.committed_bytes) = (1, 1, line.len());
        (g.time, g.start_offset, g.partial, g.truncated) = (held.time, held.offset, held.partial, held.truncated);
        g.tentative.clear();
    }

    fn join(&mut self, i: usize, state: usize, line: &[u8], held: Held) {
        let tentative = self.rule.states[state].tentative;
        let g = &mut self.groups[i];
        g.state = state;
        g.buf.push(b'\n');
        g.buf.extend_from_slice(line);
        g.lines += 1;
        if tentative {
            g.tentative.push(Held { end: g.buf.len(), ..held });
            return;
        }
        // Confirmed: so are the tentative lines before it.
        g.tentative.clear();
        (g.committed_lines, g.committed_bytes) = (g.lines, g.buf.len());
        g.partial |= held.partial;
        g.truncated |= held.truncated;
    }

    /// Emits `stream`'s open group (its confirmed lines), then looks afresh at the
    /// tentative lines after them.
    fn close<F: FnMut(&Event<'_>)>(&mut self, stream: Stream, emit: &mut F) {
        let g = &mut self.groups[stream.index()];
        if !g.is_open() {
            return;
        }
        g.state = 0;
        let buf = std::mem::take(&mut g.buf);
        self.budget.give(buf.len());
        let tentative = std::mem::take(&mut g.tentative);
        let lines = g.committed_lines;
        let message = &buf[..g.committed_bytes];
        let ev = Event { truncated: g.truncated, partial: g.partial, lines, ..Event::raw(g.time, stream, message) };
        if lines > 1 {
            self.stats.groups += 1;
            self.stats.grouped_lines += u64::from(lines);
        }
        emit(&ev);
        let mut start = self.groups[stream.index()].committed_bytes;
        for h in tentative {
            // Each tentative line follows a `\n`.
            let line = &buf[start + 1..h.end];
            start = h.end;
            self.take(stream, line, h, emit);
        }
        // Keep the buffer's memory only if it is small.
        let g = &mut self.groups[stream.index()];
        if g.buf.capacity() == 0 && buf.capacity() <= KEPT_CAPACITY {
            g.buf = buf;
            g.buf.clear();
        }
    }

    /// Emits every open group (the input ended, went quiet for `flush_timeout`, or
    /// has a hole).
    pub fn flush<F: FnMut(&Event<'_>)>(&mut self, emit: &mut F) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if self.groups[stream.index()].is_open() {
                self.stats.flushed += 1;
                self.close(stream, emit);
            }
        }
    }

    /// A group is open on some stream.
    pub fn has_open(&self) -> bool {
        self.groups.iter().any(Group::is_open)
    }

    /// Where the oldest open group starts: a checkpoint must not pass it.
    pub fn oldest_open_offset(&self) -> Option<u64> {
        self.groups.iter().filter(|g| g.is_open()).map(|g| g.start_offset).min()
    }

    /// Bytes held in open groups.
    pub fn held_bytes(&self) -> usize {
        self.groups.iter().map(|g| g.buf.capacity()).sum()
    }
}

impl Drop for Grouper {
    /// What open groups held goes back to the budget (a stream forgotten mid-group).
    fn drop(&mut self) {
        for g in self.groups.iter().filter(|g| g.is_open()) {
            self.budget.give(g.buf.len());
        }
    }
}

/// A group buffer this large or smaller is kept for the next group.
const KEPT_CAPACITY: usize = 16 * 1024;

fn event<'a>(stream: Stream, message: &'a [u8], h: &Held) -> Event<'a> {
    Event { truncated: h.truncated, partial: h.partial, ..Event::raw(h.time, stream, message) }
}

#[cfg(test)]
mod tests;
