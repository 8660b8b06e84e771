//! Decode: physical log lines → logical events.
//!
//! Owns the two container log formats ([`docker`] json-file and [`cri`]), per-file
//! format detection, and reassembly of split lines ([`reassemble`]). It never does
//! I/O and never panics on input: a line that fits neither format becomes a raw event
//! (the line itself, counted as malformed), so one bad line never stops a file.
//!
//! [`FileDecoder`] is the stage's one entry point: feed it each line of one file (or
//! one container's rotation set) with the line's offset and the time it was read, and
//! it calls back with every finished event. Nothing here allocates per line; a split
//! line is buffered until its last piece arrives.

pub mod cri;
pub mod docker;
pub mod multiline;
pub mod reassemble;

use std::sync::Arc;
use std::time::Duration;

use crate::event::{Event, Nanos, Stream};
use multiline::{Caps, Grouper, Rule};
pub use reassemble::{Fragment, Oversize, Reassembler, Window};

/// A line that is not of the expected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line is neither Docker json-file nor CRI")]
pub struct Malformed;

/// A container log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Docker,
    Cri,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Docker => "docker",
            Format::Cri => "cri",
        }
    }
}

/// Which format to expect: detected per file from its first decodable line, or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    #[default]
    Auto,
    Docker,
    Cri,
}

/// 1 MiB: the CloudWatch Logs event limit and a sane ceiling for one log line.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    pub format: FormatChoice,
    pub max_message_bytes: usize,
    pub oversize: Oversize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self { format: FormatChoice::Auto, max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES, oversize: Oversize::Truncate }
    }
}

/// What decoding saw; plain counters, summed into metrics per batch by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Physical lines fed in.
    pub lines: u64,
    /// Events emitted…
    pub events: u64,
    /// …of which on stderr.
    pub stderr_events: u64,
    /// Events put together from more than one piece.
    pub rejoined: u64,
    /// Lines that fit no format, emitted raw.
    pub malformed: u64,
    /// Events cut at `max_message_bytes`.
    pub truncated: u64,
    /// Messages over `max_message_bytes` dropped by policy.
    pub dropped_oversize: u64,
    /// Messages emitted not known to be whole: unfinished because the input ended or
    /// went quiet, or the first of their stream after a gap in the input.
    pub partial: u64,
    /// Docker records without a usable `stream` (taken as stdout).
    pub missing_stream: u64,
    /// Records without a usable `time` (given the time they were read).
    pub missing_time: u64,
    /// Events grouped by a multiline rule (more than one line each), and the lines
    /// in them; `events` counts each group once.
    pub groups: u64,
    pub grouped_lines: u64,
    /// Groups closed because the input went quiet for `flush_timeout` or ended.
    pub groups_flushed: u64,
    /// Groups closed at `max_lines` or `max_message_bytes`.
    pub groups_capped: u64,
}

impl DecodeStats {
    pub fn add(&mut self, o: &DecodeStats) {
        self.lines += o.lines;
        self.events += o.events;
        self.stderr_events += o.stderr_events;
        self.rejoined += o.rejoined;
        self.malformed += o.malformed;
        self.truncated += o.truncated;
        self.dropped_oversize += o.dropped_oversize;
        self.partial += o.partial;
        self.missing_stream += o.missing_stream;
        self.missing_time += o.missing_time;
        self.groups += o.groups;
        self.grouped_lines += o.grouped_lines;
        self.groups_flushed += o.groups_flushed;
        self.groups_capped += o.groups_capped;
    }
}

/// A multiline rule as a decoder applies it.
#[derive(Debug, Clone)]
pub struct Multiline {
    pub rule: Arc<Rule>,
    pub max_lines: u32,
    /// An open group is emitted once the file has been caught up and quiet this long.
    pub flush_timeout: Duration,
    /// Shared by every open group of the process.
    pub budget: Arc<multiline::GroupBudget>,
}

/// Scratch space a decoder keeps between turns; more is freed.
const SCRATCH_KEPT: usize = 1024;

/// Decodes the lines of one file, or of one container's files in rotation order.
#[derive(Debug)]
pub struct FileDecoder {
    choice: FormatChoice,
    format: Option<Format>,
    max_message_bytes: usize,
    oversize: Oversize,
    scratch: Vec<u8>,
    reassembler: Reassembler,
    /// Groups stack traces, when a multiline rule selects this file's container.
    grouper: Option<Grouper>,
    group_flush: Duration,
    pub stats: DecodeStats,
}

impl FileDecoder {
    pub fn new(opts: &DecodeOptions) -> Self {
        let format = match opts.format {
            FormatChoice::Auto => None,
            FormatChoice::Docker => Some(Format::Docker),
            FormatChoice::Cri => Some(Format::Cri),
        };
        Self {
            choice: opts.format,
            format,
            max_message_bytes: opts.max_message_bytes,
            oversize: opts.oversize,
            scratch: Vec::new(),
            reassembler: Reassembler::new(opts.max_message_bytes, opts.oversize),
            grouper: None,
            group_flush: Duration::ZERO,
            stats: DecodeStats::default(),
        }
    }

    /// Groups lines by `multiline`'s rule (after rejoining split lines), per stream.
    pub fn with_multiline(mut self, multiline: Option<&Multiline>) -> Self {
        self.set_multiline(multiline);
        self
    }

    /// [`Self::with_multiline`] on a decoder in place.
    pub fn set_multiline(&mut self, multiline: Option<&Multiline>) {
        if let Some(m) = multiline {
            let caps = Caps { max_lines: m.max_lines, max_bytes: self.max_message_bytes };
            self.grouper = Some(Grouper::new(m.rule.clone(), caps, m.budget.clone()));
            self.group_flush = m.flush_timeout;
        }
    }

    /// The format in use, once known.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Decodes one line (without its `\n`) that starts at `offset` in the input and
    /// was read at `read_time`.
    pub fn line<F: FnMut(&Event<'_>)>(&mut self, line: &[u8], offset: u64, read_time: Nanos, emit: &mut F) {
        self.decode_line(line, offset, read_time, None, emit);
    }

    /// [`Self::line`] of the line at the end of `window`, starting at `offset`: the
    /// pieces of a split message may stay in the window rather than be copied. The
    /// caller keeps the window's bytes from [`Self::keep_from`] on until the next line,
    /// and calls [`Self::detach`] before it lets go of them or calls anything else.
    pub fn line_in<F: FnMut(&Event<'_>)>(&mut self, window: Window<'_>, offset: u64, read_time: Nanos, emit: &mut F) {
        let line = &window.bytes[(offset - window.offset) as usize..];
        if self.grouper.is_some() {
            // A multiline rule looks inside every message anyway (one set meanwhile
            // finds the pieces copied out first).
            self.reassembler.detach(window, &self.scratch);
            return self.decode_line(line, offset, read_time, None, emit);
        }
        self.decode_line(line, offset, read_time, Some(window), emit);
        self.reassembler.bound(window, &self.scratch);
    }

    /// Leaves split messages in place for [`Self::line_in`] while they spread over
    /// `span` bytes of input at most (default [`reassemble::IN_PLACE_SPAN`]).
    pub fn with_in_place_span(mut self, span: u64) -> Self {
        self.reassembler.set_in_place_span(span);
        self
    }

    /// Where the bytes the caller keeps for [`Self::line_in`] must start: the line of
    /// the oldest piece left in place, if any.
    pub fn keep_from(&self) -> Option<u64> {
        self.reassembler.keep_from()
    }

    /// Copies the pieces left in place out of `window` (kept from [`Self::keep_from`]):
    /// the caller is about to let go of those bytes.
    pub fn detach(&mut self, window: Window<'_>) {
        self.reassembler.detach(window, &self.scratch);
    }

    fn decode_line<F: FnMut(&Event<'_>)>(&mut self, line: &[u8], offset: u64, read_time: Nanos, window: Option<Window<'_>>, emit: &mut F) {
        self.stats.lines += 1;
        let format = match self.format {
            Some(f) => f,
            None => match self.detect(line) {
                Some(f) => f,
                None => return self.raw(line, offset, read_time, false, emit),
            },
        };
        let Self { scratch, reassembler, stats, grouper, .. } = self;
        // A split message left in place may have pieces in `scratch`: values are
        // appended after them then.
        if reassembler.keep_from().is_none() {
            scratch.clear();
        }
        // Docker values pass through escaped, unless a multiline rule will look
        // inside every line.
        let docker_form = if grouper.is_some() { docker::Form::Unescaped } else { docker::Form::Escaped };
        let decoded = match format {
            Format::Docker => docker_fragment(line, scratch, docker_form, stats, offset, read_time)
                .map(|(f, value)| Fragment { bytes: value.bytes(line, scratch), ..f }),
            Format::Cri => cri::parse(line).map(|c| Fragment {
                stream: c.stream,
                time: c.time,
                bytes: c.message,
                escaped: false,
                last: c.complete,
                offset,
            }),
        };
        match decoded {
            Ok(frag) => match grouper {
                None => match window {
                    Some(w) => reassembler.push_in(frag, w, scratch, stats, emit),
                    None => reassembler.push(frag, stats, emit),
                },
                Some(g) => {
                    // The message this piece finishes (if any) starts at its first piece.
                    let start = reassembler.pending_offset(frag.stream).unwrap_or(frag.offset);
                    let mut merged = Merged::default();
                    reassembler.push(frag, stats, &mut |ev| g.push(ev, start, &mut merged.counting(emit)));
                    merged.apply(stats, &g.stats);
                }
            },
            Err(Malformed) => self.raw(line, offset, read_time, false, emit),
        }
    }

    /// A line longer than the reader's cap: its head is emitted raw and truncated.
    pub fn overlong_line<F: FnMut(&Event<'_>)>(&mut self, head: &[u8], offset: u64, read_time: Nanos, emit: &mut F) {
        self.stats.lines += 1;
        self.raw(head, offset, read_time, true, emit);
    }

    /// The input ended for good: emits unfinished messages as `partial`, and open
    /// groups.
    pub fn finish<F: FnMut(&Event<'_>)>(&mut self, emit: &mut F) {
        self.flush_pending(false, emit);
        self.flush_groups(emit);
    }

    /// The input has a hole here (a file deleted unread, a truncation): unfinished
    /// messages are emitted as `partial`, and so is the next message of each stream;
    /// open groups are emitted (their continuation may be lost).
    pub fn gap<F: FnMut(&Event<'_>)>(&mut self, emit: &mut F) {
        self.flush_pending(true, emit);
        self.flush_groups(emit);
    }

    /// Emits unfinished messages as `partial` once the follower has read everything in
    /// the file and nothing new has arrived for `timeout`, and open groups once that
    /// lasted the rule's `flush_timeout`. `idle_at_eof` must count only time spent
    /// caught up with the file's end: while unread bytes remain, the continuation may
    /// be among them, so the follower passes `None` and nothing is cut.
    pub fn flush_stale<F: FnMut(&Event<'_>)>(&mut self, idle_at_eof: Option<Duration>, timeout: Duration, emit: &mut F) -> bool {
        let Some(idle) = idle_at_eof else { return false };
        let mut flushed = false;
        if idle >= timeout && self.reassembler.has_pending() {
            self.flush_pending(false, emit);
            flushed = true;
        }
        if idle >= self.group_flush && self.grouper.as_ref().is_some_and(Grouper::has_open) {
            self.flush_groups(emit);
            flushed = true;
        }
        flushed
    }

    /// How long after `idle_at_eof` began something held would be flushed by
    /// [`Self::flush_stale`], given `timeout` for split messages.
    pub fn flush_after(&self, timeout: Duration) -> Option<Duration> {
        let split = self.reassembler.has_pending().then_some(timeout);
        let group = self.grouper.as_ref().is_some_and(Grouper::has_open).then_some(self.group_flush);
        split.into_iter().chain(group).min()
    }

    /// Emits what the reassembler holds (as `partial`), through the grouper; `gap`: and
    /// marks the next message of each stream `partial`.
    fn flush_pending<F: FnMut(&Event<'_>)>(&mut self, gap: bool, emit: &mut F) {
        let Self { reassembler, stats, grouper, .. } = self;
        match grouper {
            None if gap => reassembler.gap(stats, emit),
            None => reassembler.flush_all(stats, emit),
            Some(g) => {
                let starts = [reassembler.pending_offset(Stream::Stdout), reassembler.pending_offset(Stream::Stderr)];
                let mut merged = Merged::default();
                let mut through = |ev: &Event<'_>| g.push(ev, starts[ev.stream.index()].unwrap_or(0), &mut merged.counting(emit));
                if gap {
                    reassembler.gap(stats, &mut through);
                } else {
                    reassembler.flush_all(stats, &mut through);
                }
                merged.apply(stats, &g.stats);
            }
        }
    }

    /// Emits every open group.
    fn flush_groups<F: FnMut(&Event<'_>)>(&mut self, emit: &mut F) {
        let Self { stats, grouper, .. } = self;
        if let Some(g) = grouper {
            let mut merged = Merged::default();
            g.flush(&mut merged.counting(emit));
            merged.apply(stats, &g.stats);
        }
    }

    /// The offset a checkpoint may record when everything before `read_offset` has
    /// been handed on: never past the first piece of an unfinished message.
    pub fn checkpoint_offset(&self, read_offset: u64) -> u64 {
        let group = self.grouper.as_ref().and_then(Grouper::oldest_open_offset);
        [self.reassembler.oldest_pending_offset(), group].into_iter().flatten().fold(read_offset, u64::min)
    }

    /// Lets go of the unescaping scratch space between turns: a stream holds no
    /// memory for the largest line it once saw (it is allocated again on demand).
    pub fn release_scratch(&mut self) {
        if self.scratch.capacity() > SCRATCH_KEPT && self.reassembler.keep_from().is_none() {
            self.scratch = Vec::new();
        }
    }

    /// A split message is waiting for more pieces.
    pub fn has_pending(&self) -> bool {
        self.reassembler.has_pending()
    }

    /// Something is held in memory: a split message or an open group.
    pub fn holds_lines(&self) -> bool {
        self.reassembler.has_pending() || self.grouper.as_ref().is_some_and(Grouper::has_open)
    }

    /// Bytes held in open groups.
    pub fn group_bytes(&self) -> usize {
        self.grouper.as_ref().map_or(0, Grouper::held_bytes)
    }

    fn detect(&mut self, line: &[u8]) -> Option<Format> {
        debug_assert_eq!(self.choice, FormatChoice::Auto);
        let found = if line.trim_ascii_start().first() == Some(&b'{') {
            docker::parse(line, &mut self.scratch).ok().map(|_| Format::Docker)
        } else {
            cri::parse(line).ok().map(|_| Format::Cri)
        };
        self.format = found;
        found
    }

    /// A line that fits no format (or is too long to read whole) is an event of its
    /// own, on stdout; it goes through the grouper like any stdout line.
    fn raw<F: FnMut(&Event<'_>)>(&mut self, line: &[u8], offset: u64, read_time: Nanos, overlong: bool, emit: &mut F) {
        self.stats.malformed += 1;
        let over = line.len() > self.max_message_bytes;
        if over && self.oversize == Oversize::Drop {
            self.stats.dropped_oversize += 1;
            return;
        }
        let message = if over { reassemble::cut_at_char_boundary(&line[..self.max_message_bytes]) } else { line };
        let truncated = over || overlong;
        self.stats.truncated += u64::from(truncated);
        self.stats.events += 1;
        let ev = Event { truncated, ..Event::raw(read_time, Stream::Stdout, message) };
        match &mut self.grouper {
            None => emit(&ev),
            Some(g) => {
                let mut merged = Merged::default();
                g.push(&ev, offset, &mut merged.counting(emit));
                merged.apply(&mut self.stats, &g.stats);
            }
        }
    }
}

/// Groups emitted during one call: the decoder counted each of their lines as an
/// event when it was rejoined; a group is one.
#[derive(Default)]
struct Merged {
    groups: u64,
    lines: u64,
    stderr_groups: u64,
    stderr_lines: u64,
}

impl Merged {
    /// `emit`, counting the groups that pass.
    fn counting<'a, F: FnMut(&Event<'_>)>(&'a mut self, emit: &'a mut F) -> impl FnMut(&Event<'_>) + 'a {
        move |ev: &Event<'_>| {
            if ev.lines > 1 {
                let lines = u64::from(ev.lines);
                self.groups += 1;
                self.lines += lines;
                if ev.stream == Stream::Stderr {
                    self.stderr_groups += 1;
                    self.stderr_lines += lines;
                }
            }
            emit(ev)
        }
    }

    /// Counts the groups into `stats`, with the grouper's own counters.
    fn apply(self, stats: &mut DecodeStats, grouper: &multiline::GroupStats) {
        stats.events -= self.lines - self.groups;
        stats.stderr_events -= self.stderr_lines - self.stderr_groups;
        stats.groups += self.groups;
        stats.grouped_lines += self.lines;
        stats.groups_flushed = grouper.flushed;
        stats.groups_capped = grouper.capped;
    }
}

/// A Docker line as a fragment, and where its `log` value is: in the line, or
/// appended to `scratch` (see [`docker::parse_appending`]). The fragment's bytes are
/// left empty: the caller takes them from there, through a shared borrow of `scratch`,
/// which a split message left in place reads too.
fn docker_fragment(
    line: &[u8],
    scratch: &mut Vec<u8>,
    form: docker::Form,
    stats: &mut DecodeStats,
    offset: u64,
    read_time: Nanos,
) -> Result<(Fragment<'static>, ValueAt), Malformed> {
    let d = docker::parse_appending(line, scratch, form)?;
    stats.missing_stream += u64::from(d.stream.is_none());
    stats.missing_time += u64::from(d.time.is_none());
    let fragment = Fragment {
        stream: d.stream.unwrap_or(Stream::Stdout),
        time: d.time.unwrap_or(read_time),
        bytes: &[],
        escaped: d.escaped,
        last: d.complete,
        offset,
    };
    Ok((fragment, ValueAt::of(d.log, line)))
}

/// Where a Docker value is.
#[derive(Debug, Clone, Copy)]
enum ValueAt {
    /// In the line, from `.0`, `.1` bytes.
    Line(usize, usize),
    /// The last `.0` bytes of the scratch buffer.
    ScratchEnd(usize),
}

impl ValueAt {
    fn of(value: &[u8], line: &[u8]) -> Self {
        match reassemble::offset_in(value, line) {
            Some(at) => ValueAt::Line(at, value.len()),
            None => ValueAt::ScratchEnd(value.len()),
        }
    }

    fn bytes<'a>(self, line: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            ValueAt::Line(at, len) => &line[at..at + len],
            ValueAt::ScratchEnd(len) => &scratch[scratch.len() - len..],
        }
    }
}

#[cfg(test)]
mod tests;
