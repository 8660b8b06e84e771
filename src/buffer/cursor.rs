//! One sink's view of the buffer: where it reads, what it has not acknowledged, and
//! its share.
//!
//! Every sink reads the same segments and memory, in sequence order, skipping the
//! records that do not go to it. Its acknowledgements are its own (saved as
//! `acks.<sink>`); a record leaves the buffer once no sink still needs it.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::segment::{self, Record, HEADER_LEN};
use super::seqset::SeqSet;
use super::disk::disk_failed;
use super::{acks, forget_acked_front, io_err, release_range, take_due_waker, Buffer, BufferError, Segment, SinkShare, State, SAMPLE_EVERY_NS};

/// A sink's reading position and what it owes.
pub(super) struct Cursor {
    pub share: SinkShare,
    /// Records that go to this sink and that it has not acknowledged.
    pub outstanding: SeqSet,
    /// The last sequence number handed out.
    pub last_read: u64,
    /// Position on disk: segment id and offset of its next record.
    pub read_seg: u64,
    pub read_offset: u64,
    read_file: Option<(u64, File)>,
    /// When this sink last acknowledged a record.
    pub last_ack: Option<Instant>,
    /// What was last saved as its acknowledgements.
    pub persisted: acks::Acked,
    /// (seq, time) of its records, at most one a second: its oldest unacknowledged
    /// record's time for the lag metric, in bounded memory.
    samples: VecDeque<(u64, i64)>,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// When `drop_oldest` last gave up records of this sink.
    pub last_drop: Option<Instant>,
    pub corrupt_records: u64,
}

/// One sink's levels, for its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records it has not acknowledged.
    pub records: u64,
    /// What they take in the buffer (whole segments holding any of them, and memory).
    pub bytes: u64,
    pub max_bytes: u64,
    /// When its oldest unacknowledged record was read (ns since the epoch).
    pub oldest_unacked_time: Option<i64>,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// When `drop_oldest` last gave up records of this sink.
    pub last_drop: Option<Instant>,
    /// Appends wait for this sink (`block`, its share full): reading is paused.
    pub blocking: bool,
}

impl Cursor {
    pub fn new(share: SinkShare, acked: acks::Acked) -> Self {
        Cursor {
            share,
            outstanding: SeqSet::default(),
            last_read: acked.through,
            read_seg: 0,
            read_offset: HEADER_LEN,
            read_file: None,
            last_ack: None,
            persisted: acked,
            samples: VecDeque::new(),
            dropped_records: 0,
            dropped_bytes: 0,
            last_drop: None,
            corrupt_records: 0,
        }
    }

    /// A record for this sink was appended (or found at recovery).
    pub fn take(&mut self, seq: u64, time: i64) {
        self.outstanding.push(seq);
        if self.outstanding.len() == 1 || self.samples.back().is_none_or(|&(_, t)| time - t >= SAMPLE_EVERY_NS) {
            self.samples.push_back((seq, time));
        }
    }

    /// It still has to acknowledge `seq`.
    pub fn needs(&self, seq: u64) -> bool {
        self.outstanding.contains(seq)
    }

    pub fn oldest_time(&self) -> Option<i64> {
        (!self.outstanding.is_empty()).then(|| self.samples.front().map(|s| s.1)).flatten()
    }

    /// Keeps the samples from the last one at or before the oldest outstanding record.
    fn trim_samples(&mut self) {
        match self.outstanding.min() {
            None => self.samples.clear(),
            Some(first) => {
                while self.samples.len() > 1 && self.samples[1].0 <= first {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// It has handed out everything on disk: it stands at the end of the newest
    /// segment, or past it.
    pub fn past_disk(&self, segments: &VecDeque<Segment>) -> bool {
        segments.back().is_none_or(|s| self.read_seg > s.id || (self.read_seg == s.id && self.read_offset >= s.bytes))
    }

    /// A new segment `id` is created: a reader with nothing left on disk waits at its
    /// start.
    pub fn move_past_disk(&mut self, segments: &VecDeque<Segment>, id: u64) {
        if self.past_disk(segments) {
            (self.read_seg, self.read_offset) = (id, HEADER_LEN);
        }
    }

    /// Everything at or below this is acknowledged (or gone for good).
    fn watermark(&self, next_seq: u64) -> u64 {
        self.outstanding.min().map_or(next_seq - 1, |m| m - 1)
    }

    /// Gives up `from..to` (`drop_oldest`): counted as dropped for this sink.
    pub fn drop_range(&mut self, from: u64, to: u64, bytes: u64) -> u64 {
        let dropped = self.outstanding.remove_range(from, to);
        if dropped > 0 {
            self.dropped_records += dropped;
            self.dropped_bytes += bytes;
            self.last_drop = Some(Instant::now());
            self.last_read = self.last_read.max(to - 1);
            self.trim_samples();
        }
        dropped
    }
}

/// How often acknowledgements of records only ever held in memory are saved.
pub const MEMORY_ACKS_EVERY: Duration = Duration::from_secs(5);

/// See [`Buffer::ack_save_due_in`].
fn acks_due_in(st: &State, sink: usize) -> Option<Duration> {
    let c = &st.cursors[sink];
    let through = c.watermark(st.next_seq);
    let acked = acks::Acked { through, ranges: c.outstanding.gaps(through + 1, st.next_seq, acks::MAX_RANGES) };
    if acked == c.persisted {
        return None;
    }
    let on_disk = st.segments.iter().map(|s| s.last_seq).max().unwrap_or(0);
    if on_disk > c.persisted.through {
        return Some(Duration::ZERO);
    }
    Some(MEMORY_ACKS_EVERY.saturating_sub(st.acks_saved.elapsed()))
}

impl Buffer {
    /// Up to `max_bytes` of records for sink `sink` not yet handed out to it (at least
    /// one if any), in order; waits up to `wait` for the first, or until a
    /// [`Self::nudge`]. Empty once closed and drained.
    pub fn read_for(&self, sink: usize, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, BufferError> {
        self.read_records(sink, max_bytes, wait, None)
    }

    /// How many [`Self::nudge`]s there have been.
    pub fn nudges(&self) -> u64 {
        self.lock().nudges
    }

    /// [`Self::read_for`], returning at once if there was a nudge since [`Self::nudges`]
    /// said `seen` (a nudge between looking and waiting is not missed).
    pub fn read_for_since(&self, sink: usize, max_bytes: usize, wait: Duration, seen: u64) -> Result<Vec<Record>, BufferError> {
        self.read_records(sink, max_bytes, wait, Some(seen))
    }

    /// [`Self::read_for_since`]; `None`: the nudges as they stand now.
    fn read_records(&self, sink: usize, max_bytes: usize, wait: Duration, seen: Option<u64>) -> Result<Vec<Record>, BufferError> {
        let mut st = self.lock();
        let seen = seen.unwrap_or(st.nudges);
        let mut out = Vec::new();
        let mut size = 0;
        loop {
            while size < max_bytes {
                match next_record(&mut st, sink)? {
                    Some(r) => {
                        size += r.payload.len();
                        out.push(r);
                    }
                    None => break,
                }
            }
            if !out.is_empty() || st.closed || wait.is_zero() || st.nudges != seen {
                return Ok(out);
            }
            let (g, timeout) = self.inner.changed.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner());
            st = g;
            if timeout.timed_out() {
                // One last look, then give up for now.
                if let Some(r) = next_record(&mut st, sink)? {
                    out.push(r);
                }
                return Ok(out);
            }
        }
    }

    /// [`Self::read_for`] the first sink (a buffer with one sink).
    pub fn read(&self, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, BufferError> {
        self.read_for(0, max_bytes, wait)
    }

    /// True when every record for `sink` has been handed out to it.
    pub fn drained_for(&self, sink: usize) -> bool {
        let st = self.lock();
        let cur = &st.cursors[sink];
        cur.past_disk(&st.segments) && cur.outstanding.first_from(cur.last_read + 1).is_none()
    }

    /// [`Self::drained_for`] the first sink.
    pub fn drained(&self) -> bool {
        self.drained_for(0)
    }

    /// Sink `sink` has `seq`: once every sink it goes to has, it is released.
    pub fn ack_for(&self, sink: usize, seq: u64) {
        self.ack_all_for(sink, [seq]);
    }

    /// [`Self::ack_for`] each of `seqs`, under one lock, waking waiters once.
    pub fn ack_all_for(&self, sink: usize, seqs: impl IntoIterator<Item = u64>) {
        let mut st = self.lock();
        let mut released = false;
        for seq in seqs {
            if !st.cursors[sink].outstanding.remove(seq) {
                continue;
            }
            released = true;
            release_range(&mut st, seq, seq + 1);
        }
        if !released {
            return;
        }
        let cur = &mut st.cursors[sink];
        cur.last_ack = Some(Instant::now());
        cur.trim_samples();
        forget_acked_front(&mut st);
        self.delete_acked_segments(&mut st);
        let wake = take_due_waker(&mut st);
        drop(st);
        self.inner.changed.notify_all();
        if let Some(wake) = wake {
            wake();
        }
    }

    /// [`Self::ack_for`] the first sink.
    pub fn ack(&self, seq: u64) {
        self.ack_for(0, seq)
    }

    /// [`Self::persist_ack`] for the sink and pipeline threads: a disk that refuses is
    /// reported by the buffer (`/readyz`, logged once per cause) and tried again at the
    /// next call; until then a restart ships those records again.
    pub fn persist_ack_or_retry_later(&self) {
        if let Err(e) = self.persist_ack() {
            tracing::debug!(error = %e, "cannot save the acknowledged records yet");
        }
    }

    /// [`Self::persist_ack_or_retry_later`] when a sink's acknowledgements are due to
    /// be saved (see [`Self::ack_save_due_in`]): for the sinks' periodic saves.
    pub fn persist_ack_when_due(&self) {
        let due = {
            let st = self.lock();
            (0..st.cursors.len()).any(|i| acks_due_in(&st, i) == Some(Duration::ZERO))
        };
        if due {
            self.persist_ack_or_retry_later();
        }
    }

    /// Sink `sink` has acknowledged every record that goes to it.
    pub fn owes_nothing(&self, sink: usize) -> bool {
        self.lock().cursors[sink].outstanding.is_empty()
    }

    /// When sink `sink`'s acknowledgements are due to be saved: `None` if they are
    /// saved as they stand. At once when they cover a record on disk (a crash would
    /// ship it again); acknowledgements of records that only ever were in memory
    /// protect nothing (the record is gone with the process), so a sink keeping up
    /// from memory saves them only every [`MEMORY_ACKS_EVERY`] — which also finds a
    /// data_dir that became full or read-only while nothing else was written there.
    pub fn ack_save_due_in(&self, sink: usize) -> Option<Duration> {
        acks_due_in(&self.lock(), sink)
    }

    /// Saves which records each sink acknowledged, where that changed (see [`acks`]).
    /// Once every sink has its own file, what a one-sink logferry left is removed.
    ///
    /// Synced while some segment holds a record. With none on disk the saved
    /// acknowledgements protect nothing — a crash leaves no record to send again, and
    /// records written later are numbered past them — so a file a machine crash
    /// damages costs nothing (it reads as nothing acknowledged): a sink keeping up from
    /// memory saves every [`MEMORY_ACKS_EVERY`] without the two syncs (each a device
    /// cache flush), still finding a full or read-only data_dir. Saves are synced too
    /// until one was since the start: its fsync of the directory makes durable the
    /// deletion of the segments recovery found acknowledged, which a machine crash
    /// could otherwise bring back beside a damaged file. (While running, the segment
    /// being written is never deleted, so a deletion leaves a record on disk.)
    pub fn persist_ack(&self) -> Result<(), BufferError> {
        let _one_at_a_time = self.inner.persisting.lock().unwrap_or_else(|p| p.into_inner());
        let (changed, synced): (Vec<(usize, String, acks::Acked)>, bool) = {
            let st = self.lock();
            let changed = st
                .cursors
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let through = c.watermark(st.next_seq);
                    let acked = acks::Acked { through, ranges: c.outstanding.gaps(through + 1, st.next_seq, acks::MAX_RANGES) };
                    (acked != c.persisted).then(|| (i, c.share.name.clone(), acked))
                })
                .collect();
            (changed, !st.acks_synced_since_start || st.segments.iter().any(|s| s.last_seq > 0))
        };
        let dir = &self.inner.dir;
        let synced_one = synced && !changed.is_empty();
        for (i, name, acked) in changed {
            let written = if synced { acks::write(dir, &name, &acked) } else { acks::write_unsynced(dir, &name, &acked) };
            if let Err(e) = written {
                return Err(disk_failed(&mut self.lock(), io_err(&acks::path(dir, &name))(e)));
            }
            let mut st = self.lock();
            st.cursors[i].persisted = acked;
            if synced {
                st.stats.ack_saves_synced += 1;
            } else {
                st.stats.ack_saves_unsynced += 1;
            }
        }
        let mut st = self.lock();
        st.acks_synced_since_start |= synced_one;
        if !st.shared_acks_removed {
            if let Err(e) = acks::remove_shared(dir) {
                return Err(disk_failed(&mut st, io_err(dir)(e)));
            }
            st.shared_acks_removed = true;
        }
        st.acks_saved = Instant::now();
        Ok(())
    }

    /// One sink's levels.
    pub fn sink_stats(&self, sink: usize) -> SinkStats {
        let st = self.lock();
        let cur = &st.cursors[sink];
        SinkStats {
            records: cur.outstanding.len(),
            bytes: super::room::usage(&st, sink),
            max_bytes: cur.share.max_bytes,
            oldest_unacked_time: cur.oldest_time(),
            dropped_records: cur.dropped_records,
            dropped_bytes: cur.dropped_bytes,
            last_drop: cur.last_drop,
            blocking: st.waiting_for_room && st.waiting_for == Some(sink),
        }
    }
}

/// The next record for `sink`: from disk first, then from memory.
fn next_record(st: &mut State, sink: usize) -> Result<Option<Record>, BufferError> {
    if let Some(r) = next_on_disk(st, sink)? {
        return Ok(Some(r));
    }
    let cur = &st.cursors[sink];
    let from = st.held.partition_point(|h| h.seq <= cur.last_read);
    let Some(h) = st.held.range(from..).find(|h| cur.needs(h.seq)) else { return Ok(None) };
    let r = Record { seq: h.seq, time: h.time, events: h.events, payload: h.payload.clone() };
    st.cursors[sink].last_read = r.seq;
    Ok(Some(r))
}

/// The record at `sink`'s position on disk, advancing it; skips corruption and the
/// records that are not its.
fn next_on_disk(st: &mut State, sink: usize) -> Result<Option<Record>, BufferError> {
    loop {
        let cur = &mut st.cursors[sink];
        let Some(idx) = st.segments.iter().position(|s| s.id >= cur.read_seg) else { return Ok(None) };
        let s = &st.segments[idx];
        let (id, end, version, is_last) = (s.id, s.bytes, s.version, idx + 1 == st.segments.len());
        if id != cur.read_seg {
            // The segment we were in was dropped: continue at the next one.
            (cur.read_seg, cur.read_offset) = (id, HEADER_LEN);
        }
        if cur.read_offset >= end {
            if is_last {
                return Ok(None);
            }
            (cur.read_seg, cur.read_offset) = (st.segments[idx + 1].id, HEADER_LEN);
            continue;
        }
        // A segment with nothing left for this sink is stepped over unread.
        if st.segments[idx].last_seq != 0 && cur.outstanding.first_from(cur.last_read + 1).is_none_or(|o| o > st.segments[idx].last_seq) {
            if is_last {
                cur.read_offset = end;
                return Ok(None);
            }
            (cur.read_seg, cur.read_offset) = (st.segments[idx + 1].id, HEADER_LEN);
            continue;
        }
        let path = st.segments[idx].path.clone();
        if cur.read_file.as_ref().is_none_or(|(fid, _)| *fid != id) {
            cur.read_file = Some((id, File::open(&path).map_err(io_err(&path))?));
        }
        let mut payload = st.pool.pop().unwrap_or_default();
        let cur = &mut st.cursors[sink];
        let read = read_record(&cur.read_file.as_ref().unwrap().1, version, cur.read_offset, end, &mut payload);
        match read.map_err(io_err(&path))? {
            Some((r, framed)) => {
                cur.read_offset += framed;
                // Not its own, acknowledged before a restart, dropped, or handed out
                // from memory before it was written.
                if !cur.needs(r.seq) || r.seq <= cur.last_read {
                    st.pool.push(payload);
                    continue;
                }
                // Records are read in order: outstanding ones skipped over were in a
                // corrupted region. They are gone for this sink; stop waiting.
                let (from, to) = (cur.last_read + 1, r.seq);
                let lost = cur.outstanding.remove_range(from, to);
                cur.corrupt_records += lost;
                cur.last_read = r.seq;
                if lost > 0 {
                    release_range(st, from, to);
                }
                return Ok(Some(Record { payload: Bytes::from(payload), ..r }));
            }
            None => {
                st.pool.push(payload);
                skip_corruption(st, sink, &path, version, end)?;
            }
        }
    }
}

/// `sink`'s reader hit an invalid record: find the next valid one in the segment.
fn skip_corruption(st: &mut State, sink: usize, path: &Path, version: u32, end: u64) -> Result<(), BufferError> {
    let cur = &mut st.cursors[sink];
    let file = &cur.read_file.as_ref().unwrap().1;
    let mut rest = vec![0u8; (end - cur.read_offset) as usize];
    file.read_exact_at(&mut rest, cur.read_offset).map_err(io_err(path))?;
    let skip = segment::next_valid(&rest, 1, version).unwrap_or(rest.len()) as u64;
    tracing::warn!(segment = %path.display(), offset = cur.read_offset, skipped = skip, sink = %cur.share.name, "corrupted buffer record skipped");
    cur.read_offset += skip;
    st.stats.corrupt_regions += 1;
    Ok(())
}

/// Reads the record at `offset` (before `end`) of a segment of `version`, with its
/// payload straight into `payload`; `None` if it is not a valid record. Returns the
/// record (its payload left empty) and its framed length.
fn read_record(file: &File, version: u32, offset: u64, end: u64, payload: &mut Vec<u8>) -> io::Result<Option<(Record, u64)>> {
    let head_len = segment::record_header_len(version);
    if end - offset < head_len as u64 {
        return Ok(None);
    }
    let mut head = [0u8; segment::RECORD_HEADER_LEN];
    let head = &mut head[..head_len];
    file.read_exact_at(head, offset)?;
    let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap());
    let len = word(4);
    let framed = head_len as u64 + u64::from(len);
    if word(0) != segment::RECORD_MAGIC || len > segment::MAX_RECORD_LEN || offset + framed > end {
        return Ok(None);
    }
    payload.clear();
    payload.resize(len as usize, 0);
    file.read_exact_at(payload, offset + head_len as u64)?;
    if crc32c::crc32c_append(crc32c::crc32c(&head[12..]), payload) != word(8) {
        return Ok(None);
    }
    let seq = u64::from_le_bytes(head[12..20].try_into().unwrap());
    let time = i64::from_le_bytes(head[20..28].try_into().unwrap());
    let events = u32::from_le_bytes(head[28..32].try_into().unwrap());
    Ok(Some((Record { seq, time, events, payload: Bytes::new() }, framed)))
}
