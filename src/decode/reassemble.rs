//! Puts split lines back together, per (file, stream).
//!
//! Docker and containerd cut every line longer than 16 KiB into pieces; the pieces of
//! stdout and stderr interleave in one file. One [`Reassembler`] serves one file (or
//! one container's rotation set, so a line cut across a rotation is rejoined) and keeps
//! a separate pending message per stream, so interleaved pieces never mix.
//!
//! Pieces are joined as bytes, before any UTF-8 handling: a character cut between two
//! pieces comes out whole. A single, complete piece is passed through borrowed, with no
//! copy. A split line whose pieces were all read into one buffer stays there: the
//! caller passes the [`Window`] of bytes it keeps from the line holding the oldest such
//! piece ([`Reassembler::keep_from`]) to the current line, and the message is emitted
//! as the list of its pieces' places ([`Message::Pieces`]), not copied. Before the
//! caller lets go of those bytes (a turn's or a file's end) it calls
//! [`Reassembler::detach`], which copies the pieces into a buffer of the message's
//! own; a message spreading over more than [`IN_PLACE_SPAN`] of the input, one near
//! the cap or of more than [`IN_PLACE_PIECES`] pieces is copied too, so the bytes kept
//! stay bounded. (A Docker value rewritten while decoding it is in the decoder's own
//! bytes, which it keeps as they are meanwhile: such a piece stays there the same
//! way.) Otherwise a split line is buffered, and its buffer is released when it is
//! done, so a file that is idle holds no memory here. Released to the thread, which keeps the
//! two largest (up to [`SPARE_MAX_BYTES`] each; two, since stdout and stderr can each
//! have a message pending) for the next split messages it reads: a message of 100 KiB
//! no longer grows a fresh buffer (the kernel mapping and zeroing it, `realloc`
//! copying it) each time.
//!
//! The merged size is capped at `max_message_bytes`: beyond it the message is cut (at a
//! character boundary, `truncated`) or dropped whole, per [`Oversize`]. Either way the
//! rest of its pieces are consumed, not buffered.
//!
//! Pieces may come escaped ([`Fragment::escaped`], a Docker value passed through):
//! they are joined as they are, and the message stays escaped, while every piece is
//! and the escaped size is within the cap (the unescaped size is then too). A raw
//! piece among escaped ones, or an escaped message past the cap, turns the message raw
//! (unescaped) from there on, so the cap counts the application's bytes exactly and
//! the cut falls on a character.
//!
//! Input can also have a hole: a file deleted before it was read, a file truncated in
//! place. [`Reassembler::gap`] flushes what was pending and marks the first message of
//! each stream after the hole `partial`, since its head may have been in the lost bytes
//! (Docker's last piece and CRI's `F` line look exactly like a whole line).
//!
//! Never flush a pending message just because time passed while its continuation may
//! already be in the file unread: the caller decides when the input has really gone
//! quiet (see `FileDecoder::flush_stale`) or ended (`flush_all`).

use super::DecodeStats;
use crate::event::message::OWN;
use crate::event::{Event, Message, Nanos, Stream};

/// What to do with a message longer than `max_message_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Oversize {
    /// Keep the first `max_message_bytes` (cut at a character boundary), flag it.
    #[default]
    Truncate,
    /// Drop the whole message, counted.
    Drop,
}

/// One physical line's worth of a message.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    pub stream: Stream,
    pub time: Nanos,
    pub bytes: &'a [u8],
    /// `bytes` are in the event's JSON escaping ([`Event::escaped`]).
    pub escaped: bool,
    /// This piece ends the message.
    pub last: bool,
    /// Where the line holding this piece starts in the input.
    pub offset: u64,
}

/// Bytes read into one buffer: from stream offset `offset` on, up to the end of the
/// line being decoded. The caller keeps them there until it next decodes a line, or
/// calls [`Reassembler::detach`].
#[derive(Debug, Clone, Copy)]
pub struct Window<'w> {
    pub bytes: &'w [u8],
    pub offset: u64,
}

/// Where `part` starts within `whole`, when it lies within it (a slice of it).
pub(crate) fn offset_in(part: &[u8], whole: &[u8]) -> Option<usize> {
    let at = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    (at <= whole.len() && part.len() <= whole.len() - at).then_some(at)
}

impl Window<'_> {
    /// The stream offset of `piece`, when it lies within the window.
    fn offset_of(&self, piece: &[u8]) -> Option<u64> {
        offset_in(piece, self.bytes).map(|at| self.offset + at as u64)
    }

    /// The stream offset where the window ends.
    fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// By default a split message stays where it was read while it spreads over this
/// much of the input at most (its first piece's line to the current line): a reader's
/// buffer holds that and a read's worth more. [`Reassembler::set_in_place_span`]
/// changes it.
pub const IN_PLACE_SPAN: u64 = 256 * 1024;

/// …and has at most this many pieces.
pub const IN_PLACE_PIECES: usize = 16;

/// A split message's buffer starts with room for this many pieces like its first.
const FIRST_PIECES: usize = 4;

/// The largest buffer a thread keeps for its next split message.
pub const SPARE_MAX_BYTES: usize = 1 << 20;

/// A thread's two spare vectors of one kind: two, since each stream of a file can
/// have a message pending.
type Spares<T> = std::cell::Cell<[Vec<T>; 2]>;

thread_local! {
    /// The buffers of this thread's last split messages, emptied (see the module doc).
    static SPARES: Spares<u8> = const { std::cell::Cell::new([Vec::new(), Vec::new()]) };
    /// Room for the places of the thread's messages left in place, taken while a
    /// message is in place and given back when it is done.
    static PLACES: Spares<(u64, u32)> = const { std::cell::Cell::new([Vec::new(), Vec::new()]) };
}

/// The larger of a thread's spares (or a new vector), with room for `n` more.
fn take_larger<T: 'static>(spares: &'static std::thread::LocalKey<Spares<T>>, n: usize) -> Vec<T> {
    let [a, b] = spares.take();
    let (mut v, other) = if a.capacity() >= b.capacity() { (a, b) } else { (b, a) };
    spares.set([other, Vec::new()]);
    v.reserve(n);
    v
}

/// Keeps `v`, emptied, in place of the smaller of a thread's spares, unless it is
/// smaller than both.
fn keep_larger<T: 'static>(spares: &'static std::thread::LocalKey<Spares<T>>, mut v: Vec<T>) {
    let mut kept = spares.take();
    let smaller = usize::from(kept[1].capacity() < kept[0].capacity());
    if v.capacity() > kept[smaller].capacity() {
        v.clear();
        kept[smaller] = v;
    }
    spares.set(kept);
}

/// A buffer for a split message whose first piece is `first` bytes: the thread's
/// larger spare if it has one. Room for a few pieces up front: growing by doubling
/// from one piece copied most split messages twice over.
fn take_spare(first: usize, max: usize) -> Vec<u8> {
    take_larger(&SPARES, (FIRST_PIECES * first).min(max))
}

/// Keeps `buf` for the thread's next split message, unless it is larger than
/// [`SPARE_MAX_BYTES`] (or smaller than both spares).
fn give_back(buf: Vec<u8>) {
    if buf.capacity() <= SPARE_MAX_BYTES {
        keep_larger(&SPARES, buf);
    }
}

#[derive(Debug, Default)]
struct Pending {
    active: bool,
    buf: Vec<u8>,
    /// The pieces left where they were read, when there are any: (stream offset,
    /// length) in the window, or with [`OWN`] (offset, length) in the decoder's own
    /// bytes (values rewritten while decoding, which it keeps meanwhile). `buf` is
    /// empty then. Its room is the thread's ([`PLACES`]) while the message is in
    /// place: a file followed holds none between turns.
    places: Vec<(u64, u32)>,
    time: Nanos,
    start_offset: u64,
    pieces: u32,
    /// `buf` is in the event's JSON escaping.
    escaped: bool,
    overflowed: bool,
    /// Its first piece came right after a gap in the input: the head may be lost.
    head_lost: bool,
}

impl Pending {
    /// The bytes of the pieces left in place.
    fn placed(&self) -> usize {
        self.places.iter().map(|&(_, len)| len as usize).sum()
    }
}

#[derive(Debug)]
pub struct Reassembler {
    max_message_bytes: usize,
    oversize: Oversize,
    /// See [`IN_PLACE_SPAN`].
    in_place_span: u64,
    pending: [Pending; 2],
    /// Per stream: the next message follows a gap in the input.
    after_gap: [bool; 2],
}

impl Reassembler {
    pub fn new(max_message_bytes: usize, oversize: Oversize) -> Self {
        Self { max_message_bytes, oversize, in_place_span: IN_PLACE_SPAN, pending: Default::default(), after_gap: [false; 2] }
    }

    /// Leaves a split message in place while it spreads over `span` bytes of input at
    /// most (see [`IN_PLACE_SPAN`]): what the caller's buffer can keep without growing.
    pub fn set_in_place_span(&mut self, span: u64) {
        self.in_place_span = span;
    }

    /// Takes one piece; emits a message when `frag.last` completes one.
    pub fn push<F: FnMut(&Event<'_>)>(&mut self, frag: Fragment<'_>, stats: &mut DecodeStats, emit: &mut F) {
        let max = self.max_message_bytes;
        let i = frag.stream.index();
        let p = &mut self.pending[i];
        debug_assert!(p.places.is_empty(), "pieces left in place were not detached");
        if !p.active {
            let head_lost = std::mem::take(&mut self.after_gap[i]);
            if frag.last {
                emit_whole(&frag, max, self.oversize, head_lost, stats, emit);
                return;
            }
            p.active = true;
            p.time = frag.time;
            p.start_offset = frag.offset;
            p.head_lost = head_lost;
            p.escaped = frag.escaped;
            p.buf = take_spare(frag.bytes.len(), max);
        }
        p.pieces += 1;
        append(p, &frag, max, self.oversize);
        if frag.last {
            finish(p, frag.stream, false, self.oversize, stats, emit);
        }
    }

    /// Emits every unfinished message as `partial` (the input ended for good).
    pub fn flush_all<F: FnMut(&Event<'_>)>(&mut self, stats: &mut DecodeStats, emit: &mut F) {
        debug_assert!(self.keep_from().is_none(), "pieces left in place were not detached");
        for stream in [Stream::Stdout, Stream::Stderr] {
            let p = &mut self.pending[stream.index()];
            if p.active {
                finish(p, stream, true, self.oversize, stats, emit);
            }
        }
    }

    /// The input has a hole here (bytes lost unread): what was pending is emitted as
    /// `partial`, and so is the next message of each stream, whose head may have been
    /// in the hole.
    pub fn gap<F: FnMut(&Event<'_>)>(&mut self, stats: &mut DecodeStats, emit: &mut F) {
        self.flush_all(stats, emit);
        self.after_gap = [true; 2];
    }

    /// Where the oldest unfinished message starts: a checkpoint must not pass it.
    pub fn oldest_pending_offset(&self) -> Option<u64> {
        self.pending.iter().filter(|p| p.active).map(|p| p.start_offset).min()
    }

    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|p| p.active)
    }

    /// Where `stream`'s unfinished message starts, if it has one.
    pub fn pending_offset(&self, stream: Stream) -> Option<u64> {
        let p = &self.pending[stream.index()];
        p.active.then_some(p.start_offset)
    }

    /// [`Self::push`] of a piece read into `window` (the current line at its end), or
    /// rewritten into `own` (bytes the caller keeps as they are, appending only, while
    /// [`Self::keep_from`] is set): a piece of a split message stays where it is while
    /// it can (see the module doc).
    pub fn push_in<F: FnMut(&Event<'_>)>(&mut self, frag: Fragment<'_>, window: Window<'_>, own: &[u8], stats: &mut DecodeStats, emit: &mut F) {
        let i = frag.stream.index();
        let p = &mut self.pending[i];
        let len = frag.bytes.len();
        let stays = |p: &Pending| {
            p.escaped == frag.escaped
                && p.placed() + len <= self.max_message_bytes
                && p.places.len() < IN_PLACE_PIECES
                && window.end() - p.start_offset <= self.in_place_span
        };
        let at = place_of(frag.bytes, window, own);
        match at {
            Some(at) if !p.active && !frag.last && len <= self.max_message_bytes && window.end() - frag.offset <= self.in_place_span => {
                p.active = true;
                p.time = frag.time;
                p.start_offset = frag.offset;
                p.head_lost = std::mem::take(&mut self.after_gap[i]);
                p.escaped = frag.escaped;
                p.pieces = 1;
                p.places = take_larger(&PLACES, IN_PLACE_PIECES);
                p.places.push((at, len as u32));
            }
            Some(at) if p.active && !p.places.is_empty() && stays(p) => {
                p.pieces += 1;
                p.places.push((at, len as u32));
                if frag.last {
                    finish_in_place(p, frag.stream, window, own, stats, emit);
                }
            }
            _ => {
                detach_one(p, window, own, self.max_message_bytes);
                self.push(frag, stats, emit);
            }
        }
    }

    /// Copies each message left in place that now spreads over more than
    /// the in-place span ([`IN_PLACE_SPAN`]) of the input into a buffer of its own: call after each line
    /// decoded with [`Self::push_in`], so that the bytes kept stay bounded whatever
    /// the other stream writes meanwhile.
    pub fn bound(&mut self, window: Window<'_>, own: &[u8]) {
        for p in &mut self.pending {
            if !p.places.is_empty() && window.end() - p.start_offset > self.in_place_span {
                detach_one(p, window, own, self.max_message_bytes);
            }
        }
    }

    /// Where the oldest line holding a piece left in place starts: the caller keeps
    /// its bytes from there on, up to the line it decodes next.
    pub fn keep_from(&self) -> Option<u64> {
        self.pending.iter().filter(|p| !p.places.is_empty()).map(|p| p.start_offset).min()
    }

    /// Copies the pieces left in place into buffers of their messages' own, from
    /// `window` (which must start at or before [`Self::keep_from`]) and `own`: the
    /// caller is about to let go of those bytes.
    pub fn detach(&mut self, window: Window<'_>, own: &[u8]) {
        for p in &mut self.pending {
            detach_one(p, window, own, self.max_message_bytes);
        }
    }

}

/// Appends a piece, turning the message raw first if the piece is raw or the escaped
/// message would pass the cap.
fn append(p: &mut Pending, frag: &Fragment<'_>, max: usize, oversize: Oversize) {
    if p.overflowed {
        return;
    }
    if p.escaped && (!frag.escaped || p.buf.len() + frag.bytes.len() > max) {
        p.buf = unescaped(&p.buf);
        p.escaped = false;
    }
    if frag.escaped && !p.escaped {
        append_capped(p, &unescaped(frag.bytes), max, oversize);
    } else {
        append_capped(p, frag.bytes, max, oversize);
    }
}

/// Escaped bytes as the application wrote them (off the hot path: a message with raw
/// and escaped pieces, or past the cap).
fn unescaped(escaped: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(escaped.len());
    if super::docker::unescape(escaped, &mut raw).is_err() {
        // Not what the pass-through writes; kept as it is rather than lost.
        raw.clear();
        raw.extend_from_slice(escaped);
    }
    raw
}

fn append_capped(p: &mut Pending, bytes: &[u8], max: usize, oversize: Oversize) {
    if p.overflowed {
        return;
    }
    let room = max - p.buf.len();
    if bytes.len() <= room {
        p.buf.extend_from_slice(bytes);
        return;
    }
    p.overflowed = true;
    match oversize {
        Oversize::Truncate => p.buf.extend_from_slice(&bytes[..room]),
        Oversize::Drop => p.buf = Vec::new(),
    }
}

/// Where `piece` is, as a place of [`Message::Pieces`]: in the window, or in `own`.
fn place_of(piece: &[u8], window: Window<'_>, own: &[u8]) -> Option<u64> {
    window.offset_of(piece).or_else(|| offset_in(piece, own).map(|at| OWN | at as u64))
}

/// `p`'s message left in place, as pieces.
fn in_place<'a>(p: &'a Pending, window: Window<'a>, own: &'a [u8]) -> Message<'a> {
    Message::Pieces { window: window.bytes, offset: window.offset, own, pieces: &p.places }
}

/// Copies `p`'s pieces left in place (if any) into a buffer of its own.
fn detach_one(p: &mut Pending, window: Window<'_>, own: &[u8], max: usize) {
    if p.places.is_empty() {
        return;
    }
    // Room for what was placed and two more pieces like them.
    let placed = p.placed();
    let mut buf = take_larger(&SPARES, (placed + 2 * placed / p.pieces.max(1) as usize).min(max));
    for piece in in_place(p, window, own).pieces() {
        buf.extend_from_slice(piece);
    }
    p.buf = buf;
    keep_larger(&PLACES, std::mem::take(&mut p.places));
}

/// Emits a message left in place, its last piece just placed: never cut or dropped
/// (it stayed within the cap).
fn finish_in_place<F: FnMut(&Event<'_>)>(p: &mut Pending, stream: Stream, window: Window<'_>, own: &[u8], stats: &mut DecodeStats, emit: &mut F) {
    stats.rejoined += 1;
    stats.partial += u64::from(p.head_lost);
    stats.events += 1;
    stats.stderr_events += u64::from(stream == Stream::Stderr);
    emit(&Event { time: p.time, stream, message: in_place(p, window, own), escaped: p.escaped, truncated: false, partial: p.head_lost, lines: 1 });
    keep_larger(&PLACES, std::mem::take(&mut p.places));
    *p = Pending::default();
}

fn finish<F: FnMut(&Event<'_>)>(
    p: &mut Pending,
    stream: Stream,
    partial: bool,
    oversize: Oversize,
    stats: &mut DecodeStats,
    emit: &mut F,
) {
    let buf = std::mem::take(&mut p.buf);
    let dropped = p.overflowed && oversize == Oversize::Drop;
    if dropped {
        stats.dropped_oversize += 1;
    } else {
        let message = if p.overflowed { cut_at_char_boundary(&buf) } else { &buf[..] };
        stats.truncated += u64::from(p.overflowed);
        stats.rejoined += u64::from(p.pieces > 1);
        let partial = partial || p.head_lost;
        stats.partial += u64::from(partial);
        stats.events += 1;
        stats.stderr_events += u64::from(stream == Stream::Stderr);
        emit(&Event { time: p.time, stream, message: message.into(), escaped: p.escaped, truncated: p.overflowed, partial, lines: 1 });
    }
    give_back(buf);
    *p = Pending::default();
}

/// Emits a message that came in one piece. An escaped one past the cap is unescaped
/// first: the cap counts the application's bytes.
fn emit_whole<F: FnMut(&Event<'_>)>(
    frag: &Fragment<'_>,
    max: usize,
    oversize: Oversize,
    partial: bool,
    stats: &mut DecodeStats,
    emit: &mut F,
) {
    if frag.escaped && frag.bytes.len() > max {
        let raw = unescaped(frag.bytes);
        let frag = Fragment { bytes: &raw, escaped: false, ..*frag };
        return emit_whole(&frag, max, oversize, partial, stats, emit);
    }
    let Fragment { bytes, time, stream, escaped, .. } = *frag;
    let over = bytes.len() > max;
    if over && oversize == Oversize::Drop {
        stats.dropped_oversize += 1;
        return;
    }
    let message = if over { cut_at_char_boundary(&bytes[..max]) } else { bytes };
    stats.truncated += u64::from(over);
    stats.partial += u64::from(partial);
    stats.events += 1;
    stats.stderr_events += u64::from(stream == Stream::Stderr);
    emit(&Event { time, stream, message: message.into(), escaped, truncated: over, partial, lines: 1 });
}

/// Drops an incomplete UTF-8 sequence left at the end by a byte cut.
pub fn cut_at_char_boundary(b: &[u8]) -> &[u8] {
    // Look back at most 3 bytes for the lead byte of the last character.
    for back in 1..=b.len().min(4) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match c {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return b,
        };
        return if need > back { &b[..b.len() - back] } else { b };
    }
    b
}

#[cfg(test)]
mod tests;
