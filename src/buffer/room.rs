//! Making room: the buffer's cap, each sink's share, memory, and writing records
//! from memory to segments.

use std::fs;
use std::io::IoSlice;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::segment::{self, RECORD_HEADER_LEN};
use super::disk::{disk_failed, write_all_vectored};
use super::{forget_acked_front, held_framed, io_err, release_range, Buffer, BufferError, State, WhenFull};

/// What stands in the way of an append.
#[derive(Clone, Copy)]
enum Full {
    /// This sink's share (or, for the buffer's cap, the sink holding its oldest
    /// records) must make room.
    Sink(usize),
    /// Nothing can be freed for now: wait.
    Wait,
}

impl Buffer {
    /// Waits until `framed` more bytes fit the buffer's cap (disk and memory, framed
    /// as on disk) and the share of every sink in `sinks`, or makes room: a sink with
    /// `drop_oldest` gives up its oldest records, one with `block` is waited for.
    pub(super) fn wait_for_room<'a>(&'a self, mut st: MutexGuard<'a, State>, framed: u64, sinks: u16, deadline: Option<Instant>) -> Result<MutexGuard<'a, State>, BufferError> {
        loop {
            if st.closed {
                st.waiting_for_room = false;
                return Err(BufferError::Closed);
            }
            let full = match self.what_is_full(&st, framed, sinks) {
                None => {
                    st.waiting_for_room = false;
                    return Ok(st);
                }
                Some(full) => full,
            };
            if let Full::Sink(c) = full {
                if st.cursors[c].share.when_full == WhenFull::DropOldest {
                    if self.drop_oldest_for(&mut st, c)? {
                        continue;
                    }
                    // Nothing of its own left to drop (larger than the share allows:
                    // the caller's record limit prevents it).
                    st.waiting_for_room = false;
                    return Ok(st);
                }
            }
            st.waiting_for_room = true;
            st.waiting_for = match full {
                Full::Sink(c) => Some(c),
                Full::Wait => None,
            };
            let now = Instant::now();
            let wait = match deadline {
                Some(d) if d <= now => return Err(BufferError::Full),
                Some(d) => (d - now).min(Duration::from_millis(200)),
                None => Duration::from_millis(200),
            };
            st = self.wait(st, wait);
        }
    }

    /// `None` when `framed` more bytes for `sinks` fit.
    fn what_is_full(&self, st: &State, framed: u64, sinks: u16) -> Option<Full> {
        // (A sink's usage is at most everything held: only near that is it counted.)
        let everything = st.total_bytes + held_framed(st) + framed;
        for (c, cur) in st.cursors.iter().enumerate() {
            if sinks & (1 << c) != 0 && everything > cur.share.max_bytes && usage(st, c) + framed > cur.share.max_bytes {
                return Some(Full::Sink(c));
            }
        }
        if st.total_bytes + held_framed(st) + framed <= self.inner.opts.max_bytes {
            return None;
        }
        // The buffer is full: whoever holds its oldest record makes room, unless one
        // of them blocks (then everyone waits for it).
        let oldest = st.outstanding.min()?;
        let holders = st.cursors.iter().enumerate().filter(|(_, c)| c.needs(oldest));
        let mut dropping = None;
        for (c, cur) in holders {
            match cur.share.when_full {
                WhenFull::Block => return Some(Full::Wait),
                WhenFull::DropOldest => dropping = dropping.or(Some(c)),
            }
        }
        Some(dropping.map_or(Full::Wait, Full::Sink))
    }

    /// `drop_oldest` for sink `c`: gives up its records in the oldest segment holding
    /// any (rolling the active segment, or writing memory out first, when that is
    /// where they are). False when it has nothing to give up.
    fn drop_oldest_for(&self, st: &mut State, c: usize) -> Result<bool, BufferError> {
        let first = st.cursors[c].outstanding.min();
        let Some(first) = first else { return Ok(false) };
        let at = st.segments.iter().position(|s| s.last_seq >= first && s.last_seq != 0);
        match at {
            Some(i) if i + 1 < st.segments.len() => {
                let (from, to, bytes) = (st.segments[i].first_seq, st.segments[i].last_seq + 1, st.segments[i].routed[c]);
                let dropped = st.cursors[c].drop_range(from.min(first), to, bytes);
                tracing::warn!(sink = %st.cursors[c].share.name, records = dropped, bytes, "the sink's share of the buffer is full: dropped its oldest records (when_full = \"drop_oldest\")");
                release_range(st, from.min(first), to);
                forget_acked_front(st);
                self.delete_acked_segments(st);
                Ok(true)
            }
            // Its oldest records are in the active segment: roll it so it can go.
            Some(_) => self.start_segment(st).map(|()| true),
            // They are in memory: write them out, so they can be dropped.
            None if !st.held.is_empty() => self.spill_front(st).map(|()| true),
            None => Ok(false),
        }
    }

    /// Frees memory until `len` more bytes fit (or nothing is held): writes the oldest
    /// records, unless the sinks are taking records from memory and will soon have
    /// them (then waits up to `hold` for their acknowledgements).
    pub(super) fn make_room_in_memory<'a>(&'a self, mut st: MutexGuard<'a, State>, len: u64) -> Result<MutexGuard<'a, State>, BufferError> {
        let hold = self.inner.opts.hold;
        loop {
            let Some(front) = st.held.front() else { return Ok(st) };
            if st.held_bytes + len <= self.memory_cap() {
                return Ok(st);
            }
            let age = front.since.elapsed();
            let sinks_keep_up = st.cursors.iter().all(|c| c.last_ack.is_some_and(|t| t.elapsed() < hold) && c.past_disk(&st.segments));
            if sinks_keep_up && age < hold && !st.closed {
                st = self.wait(st, hold - age);
                continue;
            }
            self.spill_front(&mut st)?;
        }
    }

    /// The largest payload one record may hold: a quarter of the cap (so that a record
    /// always fits beside others), and never more than recovery reads back
    /// ([`segment::MAX_RECORD_LEN`]).
    pub fn record_limit(&self) -> usize {
        (self.inner.opts.max_bytes / 4).min(u64::from(segment::MAX_RECORD_LEN)) as usize
    }

    /// Memory may hold at most a quarter of the cap, so that the cap can always be
    /// met by dropping or waiting for what is on disk.
    fn memory_cap(&self) -> u64 {
        self.inner.opts.memory_bytes.min(self.inner.opts.max_bytes / 4)
    }

    /// Writes the oldest record held in memory to the active segment (rolling it over
    /// when full). Its room was taken when it was appended.
    pub(super) fn spill_front(&self, st: &mut State) -> Result<(), BufferError> {
        let full = st.segments.back().is_some_and(|s| s.bytes >= self.inner.opts.segment_bytes);
        if st.writer.is_none() || full {
            self.start_segment(st)?;
        }
        self.write_front(st)
    }

    /// Writes the oldest held record to the active segment and lets go of it.
    fn write_front(&self, st: &mut State) -> Result<(), BufferError> {
        let h = st.held.front().expect("called with a record held");
        let (seq, sinks, payload) = (h.seq, h.sinks, h.payload.clone());
        let frame = segment::frame(seq, h.time, h.events, sinks, &payload);
        let framed = (RECORD_HEADER_LEN + payload.len()) as u64;
        let at = st.segments.back().expect("spill_front opened a segment").bytes;
        let writer = st.writer.as_mut().expect("spill_front opened a segment");
        if let Err(e) = write_all_vectored(writer, &mut [IoSlice::new(&frame), IoSlice::new(&payload)]) {
            // Cut back what was written, so the segment stays whole.
            let _ = writer.set_len(at);
            let e = io_err(&st.segments.back().unwrap().path)(e);
            return Err(disk_failed(st, e));
        }
        let active = st.segments.back_mut().unwrap();
        // A reader that already has it (from memory), or to whom it does not go, and
        // that stands at the end of the segment steps over it rather than read it.
        for cur in &mut st.cursors {
            if (seq <= cur.last_read || !cur.needs(seq)) && cur.read_seg == active.id && cur.read_offset == at {
                cur.read_offset += framed;
            }
        }
        active.bytes += framed;
        if active.first_seq == 0 {
            active.first_seq = seq;
        }
        active.last_seq = seq;
        for (c, routed) in active.routed.iter_mut().enumerate() {
            if sinks & (1 << c) != 0 {
                *routed += framed;
            }
        }
        st.total_bytes += framed;
        st.unsynced += framed;
        st.spilled_seq = seq;
        st.stats.written_records += 1;
        st.stats.written_bytes += framed;
        st.held_bytes -= payload.len() as u64;
        st.held.pop_front();
        forget_acked_front(st);
        Ok(())
    }

    /// Deletes every segment but the newest whose records are all released, even with
    /// older records still outstanding (acknowledgements come out of order), and
    /// empty ones every reader has passed.
    pub(super) fn delete_acked_segments(&self, st: &mut State) {
        let mut i = 0;
        while i + 1 < st.segments.len() {
            let s = &st.segments[i];
            let done = match s.last_seq {
                0 => st.cursors.iter().all(|c| s.id < c.read_seg),
                last => st.outstanding.first_from(s.first_seq.max(1)).is_none_or(|o| o > last),
            };
            if !done {
                i += 1;
                continue;
            }
            let s = st.segments.remove(i).expect("i is within the segments");
            st.total_bytes -= s.bytes;
            if let Err(e) = fs::remove_file(&s.path) {
                tracing::warn!(segment = %s.path.display(), error = %e, "cannot delete an acknowledged buffer segment");
            }
        }
    }
}

/// What sink `c` holds in the buffer: every segment with a record it has not
/// acknowledged counts with all its records that go to `c`; memory with its own.
pub(super) fn usage(st: &State, c: usize) -> u64 {
    let cur = &st.cursors[c];
    let mut bytes = 0;
    for s in &st.segments {
        if s.last_seq != 0 && cur.outstanding.first_from(s.first_seq.max(1)).is_some_and(|o| o <= s.last_seq) {
            bytes += s.routed[c];
        }
    }
    for h in &st.held {
        if h.sinks & (1 << c) != 0 && cur.needs(h.seq) {
            bytes += (RECORD_HEADER_LEN + h.payload.len()) as u64;
        }
    }
    bytes
}
