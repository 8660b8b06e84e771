//! Splits a byte stream into lines with large reads and no per-line allocation.
//!
//! [`LineReader`] reads 256 KiB at a time into one buffer and hands out slices of it,
//! one line at a time, with each line's offset in the stream. A line longer than
//! `max_line` is not buffered whole: its head is handed out as [`LineKind::Overlong`]
//! and the rest is skipped up to the next newline, so memory stays bounded whatever
//! the input. Reading on after the end of a growing file picks up appended data, so
//! the same reader serves replay (ends for good) and following (ends for now).
//!
//! A caller may ask it to keep lines it handed out ([`LineReader::keep_from`]): the
//! pieces of a split message then stay where they were read, and each line comes with
//! the window of kept bytes before it. A refill moves what is kept to the front with
//! the incomplete line (the only copy of those bytes, and only of a message open
//! across a refill).

use std::io::{self, Read};

/// Bytes asked of the source per read.
pub const READ_SIZE: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Ended by `\n` (not included).
    Complete,
    /// The first `max_line` bytes of a longer line; the rest is skipped.
    Overlong,
    /// What was left after the last newline when the input ended for good.
    Unterminated,
}

#[derive(Debug)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// Where the line starts in the stream.
    pub offset: u64,
    pub kind: LineKind,
    /// The bytes kept ([`LineReader::keep_from`]) up to the line's end, the line
    /// included; just the line when nothing is kept.
    pub window: &'a [u8],
    /// Where `window` starts in the stream.
    pub window_offset: u64,
}

#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[start..scanned]` is known to hold no newline.
    scanned: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    max_line: usize,
    /// Discarding the tail of an overlong line up to its newline.
    skipping: bool,
    bytes_read: u64,
    /// Bytes handed out but kept from `buf[kept]` on ([`Self::keep_from`]).
    kept: Option<usize>,
    /// A read that returns less than asked means the end (a regular file's way; see
    /// [`Self::end_at_short_reads`]).
    short_read_ends: bool,
    /// What the last short read says of the end.
    short: ShortRead,
}

/// A short read and the end (see [`LineReader::end_at_short_reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShortRead {
    /// Nothing known: the next fill reads.
    Unknown,
    /// The last read was short: the next fill says "the end" without reading —
    /// unless the buffer is given back (or the source moved back) first, a turn that
    /// ended before it came to the end: more may be written by the next turn.
    Pending,
    /// The last end said was known from a short read, not from a read that found
    /// nothing.
    Said,
}

impl<R: Read> LineReader<R> {
    /// `start_offset` is the stream offset of the first byte `inner` will return.
    pub fn new(inner: R, max_line: usize, start_offset: u64) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            offset: start_offset,
            max_line: max_line.max(1),
            skipping: false,
            bytes_read: 0,
            kept: None,
            short_read_ends: false,
            short: ShortRead::Unknown,
        }
    }

    /// Takes a read that returns less than it asked for as the end of what the source
    /// holds for now, rather than read again to hear "nothing": true of a regular file
    /// (a read stops short only at its end), which a follower reads to its end twice
    /// a second, so that this saves a system call each time. Wrong for a pipe or a
    /// decompressor, which may return less at any time. Where it is wrong anyway (a
    /// file system that reads short mid-file), the next read goes on where this one
    /// stopped: the end said is only early — so only for an end that is "for now": a
    /// caller about to decide that a file is finished wants a read that finds nothing
    /// after it looked (`false`).
    pub fn end_at_short_reads(&mut self, yes: bool) {
        self.short_read_ends = yes;
        if !yes {
            self.short = ShortRead::Unknown;
        }
    }

    /// Whether the last time no line was left, the end was known from a short read
    /// (the source held exactly what was read a moment before), not from a read that
    /// returned nothing (it may hold less than was read: truncated).
    pub fn ended_short(&self) -> bool {
        self.short == ShortRead::Said
    }

    /// Keeps the bytes from stream offset `from` on in the buffer (lines already
    /// handed out, which must still be there: at or after the start of the last
    /// line's [`Line::window`]) until told otherwise, and hands them out again as part
    /// of each line's window; `None` lets them go. A decoder leaves the pieces of a
    /// split message there rather than copy them; the bytes kept are its to bound.
    pub fn keep_from(&mut self, from: Option<u64>) {
        self.kept = from.map(|from| {
            let back = usize::try_from(self.offset - from).expect("kept bytes are behind the reader");
            self.start.checked_sub(back).expect("kept bytes are still in the buffer")
        });
    }

    /// The bytes kept (see [`Self::keep_from`]) that were handed out, and where they
    /// start in the stream: empty when nothing is kept.
    pub fn kept(&self) -> (&[u8], u64) {
        let from = self.kept.unwrap_or(self.start);
        (&self.buf[from..self.start], self.offset - (self.start - from) as u64)
    }

    /// The longest line handed out whole.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The next complete line, or `None` when the source has no more for now.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.next_line_reading(usize::MAX)
    }

    /// The next complete line, reading at most `up_to` more bytes from the source for
    /// it (more only while a single line is longer than the buffer; 0: only what is
    /// buffered). A turn that has used its budget hands out what it holds without
    /// reading on, so that it ends with at most an incomplete line buffered.
    pub fn next_line_reading(&mut self, up_to: usize) -> io::Result<Option<Line<'_>>> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let nl = self.scanned + pos;
                let (start, offset) = (self.start, self.offset);
                self.consume_to(nl + 1);
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                let from = self.kept.unwrap_or(start);
                let window_offset = offset - (start - from) as u64;
                let (bytes, window) = (&self.buf[start..nl], &self.buf[from..nl]);
                return Ok(Some(Line { bytes, offset, kind: LineKind::Complete, window, window_offset }));
            }
            self.scanned = self.end;
            let pending = self.end - self.start;
            if self.skipping && pending > 0 {
                self.consume_to(self.end);
            } else if pending >= self.max_line {
                let (start, offset) = (self.start, self.offset);
                self.skipping = true;
                self.consume_to(self.end);
                let bytes = &self.buf[start..start + self.max_line];
                return Ok(Some(Line { bytes, offset, kind: LineKind::Overlong, window: bytes, window_offset: offset }));
            }
            if up_to == 0 || !self.fill(up_to)? {
                return Ok(None);
            }
        }
    }

    /// At the end of input for good: what follows the last newline, if anything.
    pub fn take_unterminated(&mut self) -> Option<Line<'_>> {
        if self.end == self.start || self.skipping {
            self.skipping = false;
            self.consume_to(self.end);
            return None;
        }
        debug_assert!(self.kept.is_none(), "let go of the kept bytes first");
        let (start, end, offset) = (self.start, self.end, self.offset);
        self.consume_to(end);
        let bytes = &self.buf[start..end];
        Some(Line { bytes, offset, kind: LineKind::Unterminated, window: bytes, window_offset: offset })
    }

    /// Stream offset of the first byte not yet handed out as part of a line.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes read from the source so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Bytes read but not yet handed out (an incomplete last line).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Gives the reader a buffer to read into if it has only a small one (none, or
    /// the exact-size copy of an incomplete line that [`Self::shrink`] left): what it
    /// held moves to the front of `buf`. Returns `buf` when it was not needed.
    pub fn lend(&mut self, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        debug_assert!(self.kept.is_none(), "let go of the kept bytes first");
        if self.buf.capacity() >= READ_SIZE || buf.capacity() <= self.buf.capacity() {
            return Some(buf);
        }
        // (Its length is kept: a buffer handed back is not filled with zeros again.)
        let held = self.end - self.start;
        if buf.len() < held {
            buf.resize(held, 0);
        }
        buf[..held].copy_from_slice(&self.buf[self.start..self.end]);
        self.buf = buf;
        self.scanned -= self.start;
        (self.start, self.end) = (0, held);
        None
    }

    /// Hands this reader's buffer to `next`, a reader that has none yet (the next
    /// file of a rotation set, or a truncated file read again): what this one holds
    /// unread is dropped. A buffer dropped with its reader was one faulted in afresh
    /// by the next.
    pub fn pass_buffer_to(&mut self, next: &mut LineReader<R>) {
        self.unread_held();
        if let Some(buf) = self.reclaim() {
            let _ = next.lend(buf);
        }
    }

    /// Drops the incomplete line held (if any) so that it is read again from the
    /// source, which the caller moves back by the returned number of bytes. The
    /// stream offset is unchanged: those bytes were never handed out.
    pub fn unread_held(&mut self) -> usize {
        debug_assert!(self.kept.is_none(), "let go of the kept bytes first");
        self.short = ShortRead::Unknown;
        let held = self.end - self.start;
        self.bytes_read -= held as u64;
        self.end = self.start;
        self.scanned = self.start;
        held
    }

    /// Keeps the incomplete line held (if any) in an exact-size copy and returns the
    /// read buffer, for a source that cannot move back (gzip).
    pub fn shrink(&mut self) -> Option<Vec<u8>> {
        debug_assert!(self.kept.is_none(), "let go of the kept bytes first");
        self.short = ShortRead::Unknown;
        if self.end == self.start {
            return self.reclaim();
        }
        let held = self.buf[self.start..self.end].to_vec();
        self.scanned -= self.start;
        (self.start, self.end) = (0, held.len());
        Some(std::mem::replace(&mut self.buf, held))
    }

    /// Bytes the reader holds in memory between turns (0 once reclaimed).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Takes the buffer back when it holds nothing unconsumed, so that a caller
    /// following many files needs buffers only for those being read right now.
    pub fn reclaim(&mut self) -> Option<Vec<u8>> {
        self.short = ShortRead::Unknown;
        if self.start != self.end || self.kept.is_some() || self.buf.capacity() == 0 {
            return None;
        }
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        Some(std::mem::take(&mut self.buf))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    fn consume_to(&mut self, to: usize) {
        self.offset += (to - self.start) as u64;
        self.start = to;
        self.scanned = self.scanned.max(to);
    }

    /// Reads more; `false` at end of input. Moves an incomplete line to the front
    /// first, and grows the buffer only while a line is longer than it.
    fn fill(&mut self, up_to: usize) -> io::Result<bool> {
        if self.short == ShortRead::Pending {
            self.short = ShortRead::Said;
            return Ok(false);
        }
        self.short = ShortRead::Unknown;
        let from = self.kept.unwrap_or(self.start);
        if from == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
            self.kept = self.kept.map(|_| 0);
        } else if from > 0 {
            self.buf.copy_within(from..self.end, 0);
            self.end -= from;
            self.scanned -= from;
            self.start -= from;
            self.kept = self.kept.map(|_| 0);
        }
        // Read at least a quarter of READ_SIZE at a time; grow only for a long line
        // (an incomplete line near the end of the buffer doubles it otherwise).
        if self.buf.len() - self.end < READ_SIZE / 4 {
            let cap = self.buf.capacity();
            self.buf.resize(if self.end + READ_SIZE / 4 <= cap { cap } else { self.end + READ_SIZE }, 0);
        }
        // A line longer than `up_to` still gets the room it needs.
        let room = (self.buf.len() - self.end).min(up_to.max(READ_SIZE / 4));
        loop {
            match self.inner.read(&mut self.buf[self.end..self.end + room]) {
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                    if self.short_read_ends && n > 0 && n < room {
                        self.short = ShortRead::Pending;
                    }
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Returns at most `.1` bytes per read, to cut lines at every possible place (tests
/// of the reader and of what reads through it).
#[cfg(test)]
pub(crate) struct Trickle<'a>(pub &'a [u8], pub usize);

#[cfg(test)]
impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.1.min(out.len()).min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(input: &[u8], chunk: usize, max_line: usize) -> Vec<(Vec<u8>, u64, LineKind)> {
        let mut r = LineReader::new(Trickle(input, chunk), max_line, 0);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.bytes.to_vec(), l.offset, l.kind));
        }
        if let Some(l) = r.take_unterminated() {
            out.push((l.bytes.to_vec(), l.offset, l.kind));
        }
        assert_eq!(r.offset(), input.len() as u64);
        out
    }

    #[test]
    fn lines_and_offsets_survive_any_read_size() {
        let input = b"one\n\ntwo two\nthree\nlast";
        for chunk in 1..input.len() + 1 {
            assert_eq!(
                all_lines(input, chunk, 1 << 20),
                vec![
                    (b"one".to_vec(), 0, LineKind::Complete),
                    (b"".to_vec(), 4, LineKind::Complete),
                    (b"two two".to_vec(), 5, LineKind::Complete),
                    (b"three".to_vec(), 13, LineKind::Complete),
                    (b"last".to_vec(), 19, LineKind::Unterminated),
                ]
            );
        }
    }

    #[test]
    fn overlong_lines_yield_their_head_and_skip_the_rest() {
        let mut input = vec![b'x'; 3 * READ_SIZE];
        input.extend_from_slice(b"\nnext\n");
        let lines = all_lines(&input, 100_000, 1000);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0.len(), 1000);
        assert_eq!(lines[0].2, LineKind::Overlong);
        assert_eq!(lines[1], (b"next".to_vec(), 3 * READ_SIZE as u64 + 1, LineKind::Complete));
    }

    #[test]
    fn long_lines_under_the_cap_come_whole() {
        let mut input = vec![b'y'; READ_SIZE * 2 + 17];
        input.push(b'\n');
        let lines = all_lines(&input, 7919, 1 << 22);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0.len(), READ_SIZE * 2 + 17);
    }

    #[test]
    fn a_buffer_is_lent_and_reclaimed_between_reads() {
        let mut r = LineReader::new(io::Cursor::new(b"a\nb\n".to_vec()), 100, 0);
        r.lend(Vec::with_capacity(READ_SIZE));
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"a");
        assert!(r.reclaim().is_none(), "b is still buffered");
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"b");
        assert!(r.next_line().unwrap().is_none());
        let buf = r.reclaim().expect("nothing left");
        assert!(buf.capacity() >= READ_SIZE);
        assert!(r.next_line().unwrap().is_none(), "reads on without a buffer");
    }

    #[test]
    fn a_spent_turn_hands_out_what_it_holds_and_keeps_only_an_incomplete_line() {
        let mut input = Vec::new();
        for i in 0..1000 {
            input.extend_from_slice(format!("line {i:04}\n").as_bytes());
        }
        input.extend_from_slice(b"incomplete");
        let mut r = LineReader::new(io::Cursor::new(input.clone()), 1 << 20, 0);
        assert_eq!(r.next_line_reading(usize::MAX).unwrap().unwrap().bytes, b"line 0000");
        let mut n = 1;
        while r.next_line_reading(0).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 1000, "every buffered line, and no read");
        assert_eq!(r.buffered(), b"incomplete".len());
        // Gzip: the incomplete line is kept in an exact-size copy, the buffer given back.
        let big = r.shrink().expect("the read buffer comes back");
        assert!(big.capacity() >= READ_SIZE);
        assert_eq!(r.capacity(), b"incomplete".len());
        assert!(r.lend(big).is_none(), "the small copy makes room for a lent buffer");
        r.get_mut().get_mut().extend_from_slice(b" now\n");
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.bytes, l.offset), (&b"incomplete now"[..], 10_000));
    }

    #[test]
    fn an_incomplete_line_given_back_is_read_again_from_the_source() {
        use std::io::{Seek, SeekFrom};
        let mut r = LineReader::new(io::Cursor::new(b"a\nbcd".to_vec()), 100, 0);
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"a");
        assert!(r.next_line().unwrap().is_none());
        let held = r.unread_held();
        assert_eq!(held, 3);
        assert_eq!((r.offset(), r.bytes_read()), (2, 2));
        r.get_mut().seek(SeekFrom::Current(-(held as i64))).unwrap();
        assert!(r.reclaim().is_some(), "nothing held: the buffer can go");
        r.get_mut().get_mut().extend_from_slice(b"e\n");
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.bytes, l.offset), (&b"bcde"[..], 2));
    }

    #[test]
    fn reading_on_after_the_end_picks_up_appended_data() {
        let mut r = LineReader::new(io::Cursor::new(b"a\nb".to_vec()), 100, 0);
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"a");
        assert!(r.next_line().unwrap().is_none());
        assert_eq!(r.offset(), 2, "the incomplete line is not consumed");
        let pos = r.get_ref().position();
        r.get_mut().get_mut().extend_from_slice(b"c\n");
        r.get_mut().set_position(pos);
        let l = r.next_line().unwrap().unwrap();
        assert_eq!((l.bytes, l.offset), (&b"bc"[..], 2));
    }

    /// A source that counts its reads that found nothing.
    struct Counted(io::Cursor<Vec<u8>>, usize);

    impl Read for Counted {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(out)?;
            self.1 += usize::from(n == 0);
            Ok(n)
        }
    }

    /// Told that a short read is the end, the reader comes to the end of a file
    /// without a read that finds nothing, and says the end was known that way; the
    /// next call reads again (a file grows), and so does the first call after a turn
    /// that ended before the end (the buffer given back, or the incomplete line
    /// unread): a short read then is old news.
    #[test]
    fn a_short_read_is_the_end_once_for_a_reader_told_so() {
        let input: Vec<u8> = (0..100).flat_map(|i| format!("line {i:03}\n").into_bytes()).collect();
        let mut r = LineReader::new(Counted(io::Cursor::new(input.clone()), 0), 100, 0);
        r.end_at_short_reads(true);
        let mut n = 0;
        while r.next_line().unwrap().is_some() {
            n += 1;
        }
        assert_eq!((n, r.get_ref().1), (100, 0), "every line, and no read that found nothing");
        assert!(r.ended_short());
        r.get_mut().0.get_mut().extend_from_slice(b"late\n");
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"late", "the next call reads");
        assert!(r.next_line().unwrap().is_none());
        assert!(r.ended_short() && r.get_ref().1 == 0);
        // A turn that stops before the end: the short read is forgotten with the buffer.
        for give_back in [true, false] {
            let mut r = LineReader::new(Counted(io::Cursor::new(input.clone()), 0), 100, 0);
            r.end_at_short_reads(true);
            r.next_line().unwrap().unwrap();
            r.get_mut().0.get_mut().extend_from_slice(b"late\n");
            if give_back {
                // Everything read is handed out first, as a turn's end does.
                for _ in 1..100 {
                    r.next_line_reading(0).unwrap().unwrap();
                }
                assert!(r.reclaim().is_some());
            } else {
                let held = r.unread_held();
                let pos = r.get_ref().0.position();
                r.get_mut().0.set_position(pos - held as u64);
                for _ in 1..100 {
                    r.next_line().unwrap().unwrap();
                }
            }
            assert_eq!(r.next_line().unwrap().unwrap().bytes, b"late", "give_back={give_back}");
        }
        // Without being told, or told no more after a short read (a rotated file about
        // to be finished), the end is a read that finds nothing.
        for told_then_not in [false, true] {
            let mut r = LineReader::new(Counted(io::Cursor::new(input.clone()), 0), 100, 0);
            r.end_at_short_reads(told_then_not);
            r.next_line().unwrap().unwrap();
            r.end_at_short_reads(false);
            r.get_mut().0.get_mut().extend_from_slice(b"late\n");
            let mut n = 1;
            while r.next_line().unwrap().is_some() {
                n += 1;
            }
            assert_eq!((n, r.get_ref().1), (101, 1), "told_then_not={told_then_not}");
            assert!(!r.ended_short());
        }
    }

    /// Lines kept stay in the buffer, whatever the reads, and come with each later
    /// line's window, from where they start: a refill moves them with the incomplete
    /// line; letting go of them lets the reader drop them; the buffer is not handed
    /// back while it holds them.
    #[test]
    fn kept_lines_come_with_every_later_line_until_let_go() {
        let input: Vec<u8> = (0..200).flat_map(|i| format!("line {i:03}\n").into_bytes()).collect();
        for chunk in [1, 7, 64, 4096] {
            let mut r = LineReader::new(Trickle(&input, chunk), 100, 0);
            let mut kept_from = None;
            let mut n = 0;
            while let Some(l) = r.next_line().unwrap() {
                let from = kept_from.unwrap_or(l.offset);
                assert_eq!(l.window_offset, from, "chunk {chunk}, line {n}");
                assert_eq!(l.window, &input[from as usize..l.offset as usize + l.bytes.len()], "chunk {chunk}, line {n}");
                let offset = l.offset;
                // Keep lines 10..40 and 100..180, let go in between.
                kept_from = match n {
                    10 | 100 => Some(offset),
                    40 | 180 => None,
                    _ => kept_from,
                };
                r.keep_from(kept_from);
                if let Some(from) = kept_from {
                    assert!(r.reclaim().is_none(), "a buffer holding kept lines is not handed back");
                    assert_eq!(r.kept(), (&input[from as usize..(offset + 9) as usize], from));
                } else {
                    assert_eq!(r.kept().0, b"");
                }
                n += 1;
            }
            assert_eq!(n, 200);
        }
    }
}
