//! Buffer: the write-ahead log on the node's disk between reading and shipping.
//!
//! # Why
//!
//! Whatever logferry has read must survive the destination being down, throttling,
//! or the pod being OOM-killed: memory buffers are lost on restart. Everything read is
//! appended here, fsynced in groups, and released only when the sink has it.
//!
//! # On disk
//!
//! `<data_dir>/buffer/` holds numbered segment files (`0000000000000001.seg`, …) and
//! `acks`, which records were acknowledged: every one up to a number, and the ranges
//! acknowledged above it, since sinks acknowledge out of order (see [`acks`]). The
//! segment format (header, framed records with CRC-32C and a resync magic) is in
//! [`segment`]. The newest segment is the only one written to; it is rolled over at
//! `segment_bytes`.
//!
//! # Invariants
//!
//! 1. Sequence numbers increase by one per record, across segments and restarts
//!    (segments have gaps where records were acknowledged before they had to be
//!    written). After a crash the next number is past both the last record found and
//!    the persisted ack, so a new record can never be mistaken for an acknowledged one.
//! 2. Records reach segments in sequence order, and every record in a segment is older
//!    than every record held in memory.
//! 3. [`Buffer::commit`] and [`Buffer::safe_seq`] return the highest sequence number
//!    at or below which every record is acknowledged or fsynced: the caller advances
//!    file checkpoints only up to what that covers.
//! 4. A segment is deleted once every record in it is acknowledged, whatever older
//!    records still wait (or, with
//!    `when_full = "drop_oldest"`, when room is needed: those records are counted as
//!    dropped).
//! 5. What the buffer holds, on disk and in memory (framed as on disk), is capped at
//!    `max_bytes`: when full, [`Buffer::append`] waits (`block`: backpressure up to
//!    the tailer, files stay unread on disk) or drops the oldest segment
//!    (`drop_oldest`). Memory alone is capped at `memory_bytes`, and at most a quarter
//!    of `max_bytes`.
//!
//! # Recovery
//!
//! At open every segment is scanned: records saved as acknowledged are skipped, a torn
//! record at the end of a segment (a write cut by the crash) is truncated away, and a
//! corrupted record in the middle is skipped — found again by its magic and CRC — and
//! counted; nothing in a segment is fatal. The reader then starts at the first
//! unacknowledged record.
//!
//! # Memory first, disk when it matters
//!
//! A record is first held in memory (up to `memory_bytes`) and handed to the sink from
//! there. It is written to a segment only if the sink has not acknowledged it within
//! `hold` (the group-commit interval), or when memory is full and the sink is not
//! taking records from memory (it acknowledged nothing within `hold`, or still has
//! records on disk to read first); while it is, a full memory makes `append` wait for
//! its acknowledgement (at most until the oldest record is `hold` old). A healthy sink therefore costs no disk writes
//! at all, and a slow or unreachable one gets the write-ahead log. This is as safe as
//! writing first: the caller advances file checkpoints only to [`Buffer::safe_seq`],
//! below which every record is acknowledged *or* fsynced, so a crash loses nothing —
//! a record still in memory is read again from its log file, exactly as a record
//! written but not yet fsynced was before. The window in which the log file itself
//! must survive is the same `hold` either way.
//!
//! Records are read back as soon as they are appended, before they are fsynced: a
//! crash can then lose a record that was already shipped, which is harmless — its
//! file checkpoint had not advanced, so it is read again (a duplicate, never a loss).

pub mod acks;
pub mod inspect;
pub mod segment;
mod seqset;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use segment::{Parsed, Record, HEADER_LEN, RECORD_HEADER_LEN};
use seqset::SeqSet;

/// What to do when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for the sink: reading pauses, nothing is dropped.
    Block,
    /// Delete the oldest segment, counting its records as dropped.
    DropOldest,
}

#[derive(Debug, Clone, Copy)]
pub struct BufferOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub when_full: WhenFull,
    /// Records held in memory before they must be written (0: write every record
    /// at the next append or commit).
    pub memory_bytes: u64,
    /// How long a record may stay in memory unacknowledged before it is written.
    pub hold: Duration,
}

/// Records held in memory by default: room for the sink's read in flight (up to 12 MiB
/// for a file) with as much again for reading to go on meanwhile.
pub const DEFAULT_MEMORY_BYTES: u64 = 16 << 20;

impl BufferOptions {
    /// Segments of 1/8 of the cap, between 1 and 64 MiB, so that `drop_oldest` frees
    /// a useful amount and a full buffer holds several segments.
    pub fn with_cap(max_bytes: u64, when_full: WhenFull) -> Self {
        let segment_bytes = (max_bytes / 8).clamp(1 << 20, 64 << 20);
        Self { max_bytes, segment_bytes, when_full, memory_bytes: DEFAULT_MEMORY_BYTES, hold: Duration::from_millis(200) }
    }

    /// Every record goes to disk (at the next append or commit): no memory tier.
    pub fn write_through(mut self) -> Self {
        self.memory_bytes = 0;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("buffer segment {path} cannot be used: {why}; move it aside to start over")]
    BadSegment { path: PathBuf, why: String },
    #[error("the buffer is closed")]
    Closed,
    /// [`Buffer::try_append_for`]: still full when its patience ran out.
    #[error("the buffer is full")]
    Full,
}

/// Counters and levels, for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Size on disk.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Held in memory, not yet written (framed as it would be on disk).
    pub memory_bytes: u64,
    /// Records not yet acknowledged (in memory or on disk).
    pub records: u64,
    /// When the oldest unacknowledged record was read (ns since the epoch).
    pub oldest_unacked_time: Option<i64>,
    /// Appends are waiting for room right now.
    pub backpressure: bool,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// Corrupted regions skipped, at recovery and while reading.
    pub corrupt_regions: u64,
    /// Records lost to corruption found while reading.
    pub corrupt_records: u64,
    /// Events too large to fit the buffer, dropped before appending.
    pub too_large_records: u64,
    /// Bytes of torn records truncated at recovery.
    pub torn_bytes: u64,
    pub segments: u64,
    /// Failed writes, fsyncs and segment creations (a full or read-only disk).
    pub disk_errors: u64,
    /// Records written to segments, and their framed bytes (the rest were
    /// acknowledged while still in memory).
    pub written_records: u64,
    pub written_bytes: u64,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: u64,
    pub records: u64,
    pub unacked: u64,
    pub corrupt_regions: u64,
    pub torn_bytes: u64,
}

struct Segment {
    id: u64,
    path: PathBuf,
    /// Bytes in the file.
    bytes: u64,
    /// Highest sequence number in it (0: none yet).
    last_seq: u64,
}

/// A record held in memory, not (yet) written.
struct Held {
    seq: u64,
    time: i64,
    events: u32,
    payload: Bytes,
    since: Instant,
}

struct State {
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending; `None` until the next write creates
    /// one (at start, and after a roll, when the disk refused a new segment).
    writer: Option<File>,
    /// Id of the next segment to create: past every segment file found, even those
    /// that could not be used or deleted.
    next_segment: u64,
    /// The disk's last refusal (full, read-only, failing), until a write works again.
    disk_error: Option<String>,
    next_seq: u64,
    /// Records in memory, in sequence order, all newer than any record on disk. The
    /// front one is never acknowledged: `ack` and `write_front` let go of acknowledged
    /// records as they reach the front.
    held: VecDeque<Held>,
    held_bytes: u64,
    /// Every record at or below has left memory (written, or acknowledged first).
    spilled_seq: u64,
    /// `spilled_seq` as of the last fsync: every record at or below is acknowledged
    /// or on disk.
    durable_seq: u64,
    /// Bytes written since the last fsync.
    unsynced: u64,
    /// Records held and not yet acknowledged. Below its minimum, everything is
    /// acknowledged (or was lost to corruption, or dropped).
    outstanding: SeqSet,
    /// The last sequence number handed out by the reader.
    last_read: u64,
    /// When the sink last acknowledged a record.
    last_ack: Option<Instant>,
    /// What was last saved as acknowledged.
    persisted: acks::Acked,
    total_bytes: u64,
    /// Reader position on disk: segment id and offset of its next record.
    read_seg: u64,
    read_offset: u64,
    /// The reader's open segment.
    read_file: Option<(u64, File)>,
    /// (seq, time) of records, at most one a second: the oldest unacked record's
    /// time for the lag metric, in bounded memory.
    samples: VecDeque<(u64, i64)>,
    waiting_for_room: bool,
    closed: bool,
    /// Payload buffers handed back by the reader's caller.
    pool: Vec<Vec<u8>>,
    stats: BufferStats,
}

struct Inner {
    dir: PathBuf,
    opts: BufferOptions,
    state: Mutex<State>,
    changed: Condvar,
}

/// The disk buffer; clones share it (one writer, one reader).
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

const SAMPLE_EVERY_NS: i64 = 1_000_000_000;
/// Payload buffers kept for reuse.
const POOLED_PAYLOADS: usize = 4;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io { path: path.to_path_buf(), source }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

/// Segment ids in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else { continue };
        if let Ok(id) = u64::from_str_radix(hex, 16) {
            out.push((id, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes every byte of `bufs`, however the kernel splits the write.
fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Buffer {
    /// Opens (creating if needed) the buffer in `dir` and recovers what it holds.
    ///
    /// A disk that refuses writes (full, read-only) does not stop it: what cannot be
    /// cleaned up is left as it is, the buffer runs from memory meanwhile
    /// ([`Self::disk_fault`] says why), and segments are created once writes work.
    pub fn open(dir: &Path, opts: BufferOptions) -> Result<(Buffer, Recovery), BufferError> {
        let mut disk_error = None;
        if let Err(e) = fs::create_dir_all(dir) {
            disk_error = Some(io_err(dir)(e).to_string());
        }
        let acked = acks::read(dir).map_err(io_err(&dir.join("acks")))?;
        let mut rec = Recovery::default();
        let mut st = State {
            segments: VecDeque::new(),
            writer: None,
            next_segment: 1,
            disk_error,
            next_seq: acked.end(),
            held: VecDeque::new(),
            held_bytes: 0,
            spilled_seq: 0,
            durable_seq: 0,
            unsynced: 0,
            outstanding: SeqSet::default(),
            last_read: acked.through,
            last_ack: None,
            persisted: acked.clone(),
            total_bytes: 0,
            read_seg: 0,
            read_offset: HEADER_LEN,
            read_file: None,
            samples: VecDeque::new(),
            waiting_for_room: false,
            closed: false,
            pool: Vec::new(),
            stats: BufferStats { max_bytes: opts.max_bytes, ..BufferStats::default() },
        };
        let mut buf = Vec::new();
        let mut reader_set = false;
        // Sequence numbers only increase across segments: a record at or below the
        // last one taken is a stray copy.
        let mut last_taken = 0;
        let found = match list_segments(dir) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound && st.disk_error.is_some() => Vec::new(),
            Err(e) => return Err(io_err(dir)(e)),
        };
        for (id, path) in found {
            st.next_segment = st.next_segment.max(id + 1);
            rec.segments += 1;
            let scan = match segment::scan_file(&path, &mut buf).map_err(io_err(&path))? {
                Ok(s) => s,
                // Cut while being created (shorter than its header): nothing in it.
                Err(_) if buf.len() < HEADER_LEN as usize => {
                    rec.torn_bytes += buf.len() as u64;
                    if let Err(e) = fs::remove_file(&path) {
                        note_cleanup_failed(&mut st, &path, e);
                    }
                    continue;
                }
                // Not a segment we can read: set it aside (for `buffer inspect` and a
                // person), never refuse to start.
                Err(why) => {
                    let aside = path.with_extension("seg.unreadable");
                    tracing::warn!(segment = %path.display(), moved_to = %aside.display(), why, "unreadable buffer segment set aside");
                    if let Err(e) = fs::rename(&path, &aside) {
                        note_cleanup_failed(&mut st, &path, e);
                    }
                    rec.corrupt_regions += 1;
                    continue;
                }
            };
            rec.corrupt_regions += scan.corrupt_regions;
            let mut bytes = buf.len() as u64;
            if scan.torn {
                rec.torn_bytes += bytes - scan.valid_end;
                // Never appended to again (new records go to a new segment): if the
                // disk refuses the cut, reading simply stops at the valid end.
                let cut = OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(scan.valid_end).and_then(|()| f.sync_all()));
                if let Err(e) = cut {
                    note_cleanup_failed(&mut st, &path, e);
                }
                bytes = scan.valid_end;
            }
            let last_seq = scan.records.last().map_or(0, |r| r.seq);
            rec.records += scan.records.len() as u64;
            if !scan.records.is_empty() && scan.records.iter().all(|r| acked.contains(r.seq)) {
                if let Err(e) = fs::remove_file(&path) {
                    note_cleanup_failed(&mut st, &path, e);
                }
                st.next_seq = st.next_seq.max(last_seq + 1);
                continue;
            }
            for r in &scan.records {
                if acked.contains(r.seq) || r.seq <= last_taken {
                    continue;
                }
                last_taken = r.seq;
                rec.unacked += 1;
                st.outstanding.push(r.seq);
                if !reader_set {
                    (st.read_seg, st.read_offset, reader_set) = (id, r.offset, true);
                }
                if st.samples.back().is_none_or(|&(_, t)| r.time - t >= SAMPLE_EVERY_NS) {
                    st.samples.push_back((r.seq, r.time));
                }
            }
            st.next_seq = st.next_seq.max(last_seq + 1);
            st.total_bytes += bytes;
            st.segments.push_back(Segment { id, path, bytes, last_seq });
        }
        st.durable_seq = st.next_seq - 1;
        st.spilled_seq = st.durable_seq;
        st.stats.corrupt_regions = rec.corrupt_regions;
        st.stats.torn_bytes = rec.torn_bytes;
        if !reader_set {
            // Nothing to read on disk: the reader waits at the start of the next segment.
            (st.read_seg, st.read_offset) = (st.next_segment, HEADER_LEN);
        }
        let inner = Inner { dir: dir.to_path_buf(), opts, state: Mutex::new(st), changed: Condvar::new() };
        let buffer = Buffer { inner: Arc::new(inner) };
        {
            let mut st = buffer.lock();
            if let Err(e) = buffer.start_segment(&mut st) {
                tracing::error!(error = %e, "the buffer cannot create a segment; it holds records in memory until the disk takes writes again");
            }
        }
        Ok((buffer, rec))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        self.inner.changed.wait_timeout(st, timeout).unwrap_or_else(|p| p.into_inner()).0
    }

    /// Appends a record (held in memory first); returns its sequence number. When
    /// memory is full it first makes room: it writes the oldest records the sink is
    /// not working on, and waits up to `hold` for an acknowledgement of the rest.
    /// Writing waits while the disk buffer is full (`block`), or drops its oldest
    /// segment (`drop_oldest`). On an error the record was not taken.
    pub fn append(&self, time: i64, events: u32, payload: Bytes) -> Result<u64, BufferError> {
        self.try_append(time, events, payload).map_err(|(e, _)| e)
    }

    /// [`Self::append`], handing the payload back when it was not taken (to retry
    /// without keeping a second reference meanwhile, which would stop the sink from
    /// recycling the buffer).
    pub fn try_append(&self, time: i64, events: u32, payload: Bytes) -> Result<u64, (BufferError, Bytes)> {
        self.append_within(time, events, payload, None)
    }

    /// [`Self::try_append`], but with `when_full = "block"` it waits for room at most
    /// `patience`, then hands the payload back with [`BufferError::Full`] — so that the
    /// caller can commit and checkpoint meanwhile (a long outage must not stop what was
    /// read from becoming durable).
    pub fn try_append_for(&self, time: i64, events: u32, payload: Bytes, patience: Duration) -> Result<u64, (BufferError, Bytes)> {
        self.append_within(time, events, payload, Some(Instant::now() + patience))
    }

    fn append_within(&self, time: i64, events: u32, payload: Bytes, deadline: Option<Instant>) -> Result<u64, (BufferError, Bytes)> {
        let len = payload.len() as u64;
        let mut st = self.lock();
        st = match self.wait_for_room(st, RECORD_HEADER_LEN as u64 + len, deadline) {
            Ok(st) => st,
            Err(e) => return Err((e, payload)),
        };
        st = match self.make_room_in_memory(st, len) {
            Ok(st) => st,
            Err(e) => return Err((e, payload)),
        };
        let seq = st.next_seq;
        st.next_seq += 1;
        st.held_bytes += len;
        st.held.push_back(Held { seq, time, events, payload, since: Instant::now() });
        st.outstanding.push(seq);
        if st.samples.back().is_none_or(|&(_, t)| time - t >= SAMPLE_EVERY_NS) || st.outstanding.len() == 1 {
            st.samples.push_back((seq, time));
        }
        self.inner.changed.notify_all();
        Ok(seq)
    }

    /// The cap counts what is on disk and what memory holds (as it will be on disk):
    /// waits until `framed` more bytes fit (`block`), or drops the oldest segment
    /// (`drop_oldest`).
    fn wait_for_room<'a>(&'a self, mut st: MutexGuard<'a, State>, framed: u64, deadline: Option<Instant>) -> Result<MutexGuard<'a, State>, BufferError> {
        loop {
            if st.closed {
                st.waiting_for_room = false;
                return Err(BufferError::Closed);
            }
            if st.total_bytes + held_framed(&st) + framed <= self.inner.opts.max_bytes {
                st.waiting_for_room = false;
                return Ok(st);
            }
            match self.inner.opts.when_full {
                WhenFull::DropOldest if st.segments.len() > 1 => self.drop_oldest(&mut st),
                // A single (active) segment holding everything: roll it so it can go.
                WhenFull::DropOldest if st.segments.back().is_some_and(|s| s.last_seq != 0) => self.start_segment(&mut st)?,
                // What fills the cap is in memory: write it, so it can be dropped.
                WhenFull::DropOldest if !st.held.is_empty() => self.spill_front(&mut st)?,
                WhenFull::DropOldest => return Ok(st), // larger than the cap allows: the caller's limit prevents it
                WhenFull::Block => {
                    st.waiting_for_room = true;
                    let now = Instant::now();
                    let wait = match deadline {
                        Some(d) if d <= now => return Err(BufferError::Full),
                        Some(d) => (d - now).min(Duration::from_millis(200)),
                        None => Duration::from_millis(200),
                    };
                    st = self.wait(st, wait);
                }
            }
        }
    }

    /// Frees memory until `len` more bytes fit (or nothing is held): writes the oldest
    /// records, unless the sink is taking records from memory and will soon have them
    /// (then waits up to `hold` for its acknowledgement).
    fn make_room_in_memory<'a>(&'a self, mut st: MutexGuard<'a, State>, len: u64) -> Result<MutexGuard<'a, State>, BufferError> {
        let hold = self.inner.opts.hold;
        loop {
            let Some(front) = st.held.front() else { return Ok(st) };
            if st.held_bytes + len <= self.memory_cap() {
                return Ok(st);
            }
            let age = front.since.elapsed();
            let sink_keeps_up = st.last_ack.is_some_and(|t| t.elapsed() < hold) && reader_past_disk(&st);
            if sink_keeps_up && age < hold && !st.closed {
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
    fn spill_front(&self, st: &mut State) -> Result<(), BufferError> {
        let full = st.segments.back().is_some_and(|s| s.bytes >= self.inner.opts.segment_bytes);
        if st.writer.is_none() || full {
            self.start_segment(st)?;
        }
        self.write_front(st)
    }

    /// Writes the oldest held record to the active segment and lets go of it.
    fn write_front(&self, st: &mut State) -> Result<(), BufferError> {
        let h = st.held.front().expect("called with a record held");
        let (seq, payload) = (h.seq, h.payload.clone());
        let frame = segment::frame(seq, h.time, h.events, &payload);
        let framed = (RECORD_HEADER_LEN + payload.len()) as u64;
        let at = st.segments.back().expect("spill_front opened a segment").bytes;
        let writer = st.writer.as_mut().expect("spill_front opened a segment");
        if let Err(e) = write_all_vectored(writer, &mut [IoSlice::new(&frame), IoSlice::new(&payload)]) {
            // Cut back what was written, so the segment stays whole.
            let _ = writer.set_len(at);
            let e = io_err(&st.segments.back().unwrap().path)(e);
            return Err(disk_failed(st, e));
        }
        // The reader already handed it out from memory and stands at the end of the
        // segment: step over it rather than read it back.
        let active = st.segments.back_mut().unwrap();
        if seq <= st.last_read && st.read_seg == active.id && st.read_offset == at {
            st.read_offset += framed;
        }
        active.bytes += framed;
        active.last_seq = seq;
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

    /// Group commit: writes every record held in memory for `hold` or longer and not
    /// acknowledged, fsyncs what was written, and returns [`Self::safe_seq`].
    ///
    /// While the disk is refusing writes, each commit first tries a new segment, so
    /// that [`Self::disk_fault`] clears as soon as space returns.
    pub fn commit(&self, hold: Duration) -> Result<u64, BufferError> {
        let mut st = self.lock();
        if st.disk_error.is_some() {
            let _ = self.start_segment(&mut st);
        }
        loop {
            match st.held.front() {
                Some(h) if h.since.elapsed() >= hold => self.spill_front(&mut st)?,
                _ => break,
            }
        }
        let spilled = st.spilled_seq;
        if st.unsynced > 0 {
            // Written bytes are synced before a segment is closed: a writer is open.
            let path = st.segments.back().unwrap().path.clone();
            let file = st.writer.as_ref().expect("unsynced bytes are in the open segment").try_clone().map_err(io_err(&path))?;
            st.unsynced = 0;
            drop(st);
            // fsync without the lock: the sink keeps reading and acknowledging.
            if let Err(e) = file.sync_data() {
                let mut st = self.lock();
                st.unsynced += 1; // try again next time
                return Err(disk_failed(&mut st, io_err(&path)(e)));
            }
            st = self.lock();
        }
        st.durable_seq = st.durable_seq.max(spilled);
        Ok(safe_seq(&st))
    }

    /// Makes every record appended and not acknowledged durable (writes what memory
    /// holds, fsyncs); returns [`Self::safe_seq`].
    pub fn sync(&self) -> Result<u64, BufferError> {
        self.commit(Duration::ZERO)
    }

    /// Bytes written to disk since the last fsync.
    pub fn unsynced_bytes(&self) -> u64 {
        self.lock().unsynced
    }

    /// The highest sequence number at or below which every record is acknowledged or
    /// fsynced: file checkpoints may cover everything up to it.
    pub fn safe_seq(&self) -> u64 {
        safe_seq(&self.lock())
    }

    /// Waits up to `wait` for the sink to acknowledge what memory holds (at shutdown,
    /// so that little has to be written).
    pub fn settle(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if st.held.is_empty() || now >= deadline || st.closed {
                return;
            }
            st = self.wait(st, deadline - now);
        }
    }

    /// Up to `max_bytes` of records not yet handed out (at least one if any), in
    /// order; waits up to `wait` for the first. Empty once closed and drained.
    pub fn read(&self, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, BufferError> {
        let mut st = self.lock();
        let mut out = Vec::new();
        let mut size = 0;
        loop {
            while size < max_bytes {
                match self.next_record(&mut st)? {
                    Some(r) => {
                        size += r.payload.len();
                        out.push(r);
                    }
                    None => break,
                }
            }
            if !out.is_empty() || st.closed || wait.is_zero() {
                return Ok(out);
            }
            let (g, timeout) = self.inner.changed.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner());
            st = g;
            if timeout.timed_out() {
                // One last look, then give up for now.
                if let Some(r) = self.next_record(&mut st)? {
                    out.push(r);
                }
                return Ok(out);
            }
        }
    }

    /// True when every appended record has been handed out by [`Self::read`].
    pub fn drained(&self) -> bool {
        let st = self.lock();
        reader_past_disk(&st) && st.held.back().is_none_or(|h| h.seq <= st.last_read)
    }

    /// The sink has `seq`: release it.
    pub fn ack(&self, seq: u64) {
        let mut st = self.lock();
        if !st.outstanding.remove(seq) {
            return;
        }
        st.last_ack = Some(Instant::now());
        forget_acked_front(&mut st);
        trim_samples(&mut st);
        self.delete_acked_segments(&mut st);
        self.inner.changed.notify_all();
    }

    /// Saves which records are acknowledged, if that changed (see [`acks`]).
    pub fn persist_ack(&self) -> Result<(), BufferError> {
        let acked = {
            let st = self.lock();
            let through = watermark(&st);
            let acked = acks::Acked { through, ranges: st.outstanding.gaps(through + 1, st.next_seq, acks::MAX_RANGES) };
            if acked == st.persisted {
                return Ok(());
            }
            acked
        };
        if let Err(e) = acks::write(&self.inner.dir, &acked) {
            return Err(disk_failed(&mut self.lock(), io_err(&self.inner.dir.join("acks"))(e)));
        }
        self.lock().persisted = acked;
        Ok(())
    }

    /// Counts events dropped before they could be appended (too large for the buffer).
    pub fn note_dropped_too_large(&self, records: u64) {
        self.lock().stats.too_large_records += records;
    }

    /// Hands a record's payload back for reuse (saves allocating and faulting in a
    /// fresh megabyte per record); kept only if nobody else holds it.
    pub fn recycle(&self, payload: Bytes) {
        let Ok(mut payload) = payload.try_into_mut() else { return };
        // Emptied first, so that taking the vector back copies nothing.
        payload.clear();
        let payload = Vec::from(payload);
        let mut st = self.lock();
        if st.pool.len() < POOLED_PAYLOADS && payload.capacity() > 0 {
            st.pool.push(payload);
        }
    }

    /// A payload buffer for the next batch, if one was handed back.
    pub fn spare(&self) -> Option<Vec<u8>> {
        self.lock().pool.pop()
    }

    /// Wakes every waiter; appends fail and reads return what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.changed.notify_all();
    }

    pub fn stats(&self) -> BufferStats {
        let st = self.lock();
        BufferStats {
            bytes: st.total_bytes,
            memory_bytes: held_framed(&st),
            records: st.outstanding.len(),
            oldest_unacked_time: (!st.outstanding.is_empty()).then(|| st.samples.front().map(|s| s.1)).flatten(),
            backpressure: st.waiting_for_room,
            segments: st.segments.len() as u64,
            ..st.stats
        }
    }

    /// Closes the active segment (fsynced first) and opens the next. If the disk
    /// refuses, the old segment stays open when its fsync failed, or none is open
    /// (the next write tries again); the error is kept for [`Self::disk_fault`].
    fn start_segment(&self, st: &mut State) -> Result<(), BufferError> {
        if let Some(w) = &st.writer {
            let path = &st.segments.back().expect("an open writer has its segment").path;
            if let Err(e) = w.sync_data() {
                let e = io_err(path)(e);
                return Err(disk_failed(st, e));
            }
            st.writer = None;
            st.unsynced = 0;
            st.durable_seq = st.durable_seq.max(st.spilled_seq);
        }
        let reader_at_end = reader_past_disk(st);
        let id = st.next_segment;
        let path = segment_path(&self.inner.dir, id);
        let f = match create_segment(&self.inner.dir, &path) {
            Ok(f) => f,
            Err(e) => return Err(disk_failed(st, e)),
        };
        st.next_segment += 1;
        st.writer = Some(f);
        st.total_bytes += HEADER_LEN;
        st.segments.push_back(Segment { id, path, bytes: HEADER_LEN, last_seq: 0 });
        if reader_at_end {
            (st.read_seg, st.read_offset) = (id, HEADER_LEN);
        }
        if st.disk_error.take().is_some() {
            tracing::info!(dir = %self.inner.dir.display(), "the buffer's disk takes writes again");
        }
        Ok(())
    }

    /// Why the disk refuses the buffer's writes (full, read-only, failing), while it
    /// does: records are then held in memory only, and files are not checkpointed
    /// past them.
    pub fn disk_fault(&self) -> Option<String> {
        self.lock().disk_error.clone()
    }

    /// The next record to hand out: from disk first, then from memory.
    fn next_record(&self, st: &mut State) -> Result<Option<Record>, BufferError> {
        if let Some(r) = self.next_on_disk(st)? {
            return Ok(Some(r));
        }
        let from = st.held.partition_point(|h| h.seq <= st.last_read);
        let Some(h) = st.held.range(from..).find(|h| st.outstanding.contains(h.seq)) else { return Ok(None) };
        let r = Record { seq: h.seq, time: h.time, events: h.events, payload: h.payload.clone() };
        st.last_read = r.seq;
        Ok(Some(r))
    }

    /// The record at the reader's position on disk, advancing it; skips corruption.
    fn next_on_disk(&self, st: &mut State) -> Result<Option<Record>, BufferError> {
        loop {
            let Some(idx) = st.segments.iter().position(|s| s.id >= st.read_seg) else { return Ok(None) };
            let (id, end, path, is_last) = {
                let s = &st.segments[idx];
                (s.id, s.bytes, s.path.clone(), idx + 1 == st.segments.len())
            };
            if id != st.read_seg {
                // The segment we were in was dropped: continue at the next one.
                (st.read_seg, st.read_offset) = (id, HEADER_LEN);
            }
            if st.read_offset >= end {
                if is_last {
                    return Ok(None);
                }
                (st.read_seg, st.read_offset) = (st.segments[idx + 1].id, HEADER_LEN);
                continue;
            }
            if st.read_file.as_ref().is_none_or(|(fid, _)| *fid != id) {
                st.read_file = Some((id, File::open(&path).map_err(io_err(&path))?));
            }
            let mut payload = st.pool.pop().unwrap_or_default();
            let read = read_record(&st.read_file.as_ref().unwrap().1, st.read_offset, end, &mut payload);
            match read.map_err(io_err(&path))? {
                Some((r, framed)) => {
                    st.read_offset += framed;
                    // Acknowledged before a restart, dropped, or handed out from memory
                    // before it was written.
                    if !st.outstanding.contains(r.seq) || r.seq <= st.last_read {
                        st.pool.push(payload);
                        continue;
                    }
                    // Records are read in order: outstanding ones skipped over were
                    // in a corrupted region. They are gone; stop waiting for them.
                    let lost = st.outstanding.remove_range(st.last_read + 1, r.seq);
                    st.stats.corrupt_records += lost;
                    st.last_read = r.seq;
                    return Ok(Some(Record { payload: Bytes::from(payload), ..r }));
                }
                None => {
                    st.pool.push(payload);
                    self.skip_corruption(st, &path, end)?;
                }
            }
        }
    }
    /// The reader hit an invalid record: find the next valid one in the segment.
    fn skip_corruption(&self, st: &mut State, path: &Path, end: u64) -> Result<(), BufferError> {
        let file = &st.read_file.as_ref().unwrap().1;
        let mut rest = vec![0u8; (end - st.read_offset) as usize];
        file.read_exact_at(&mut rest, st.read_offset).map_err(io_err(path))?;
        let mut i = 1;
        let skip = loop {
            match segment::find_magic(&rest, i) {
                Some(m) if matches!(segment::parse(&rest[m..]), Parsed::Record(..)) => break m as u64,
                Some(m) => i = m + 1,
                None => break rest.len() as u64,
            }
        };
        tracing::warn!(segment = %path.display(), offset = st.read_offset, skipped = skip, "corrupted buffer record skipped");
        st.stats.corrupt_regions += 1;
        st.read_offset += skip;
        Ok(())
    }

    /// Deletes every segment but the newest whose records are all acknowledged, even
    /// with older records still outstanding (acknowledgements come out of order), and
    /// empty ones the reader has passed.
    fn delete_acked_segments(&self, st: &mut State) {
        let mut i = 0;
        // The last record of the segments before `i`: its records are all above.
        let mut below = 0;
        while i + 1 < st.segments.len() {
            let s = &st.segments[i];
            let done = match s.last_seq {
                0 => s.id < st.read_seg,
                last => st.outstanding.first_from(below + 1).is_none_or(|o| o > last),
            };
            below = below.max(s.last_seq);
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

    /// `drop_oldest`: deletes the oldest segment to make room, counting what it held.
    fn drop_oldest(&self, st: &mut State) {
        let s = st.segments.pop_front().expect("more than one segment");
        let dropped = st.outstanding.remove_range(0, s.last_seq + 1);
        st.last_read = st.last_read.max(s.last_seq);
        st.stats.dropped_records += dropped;
        st.stats.dropped_bytes += s.bytes - HEADER_LEN;
        st.total_bytes -= s.bytes;
        trim_samples(st);
        tracing::warn!(records = dropped, bytes = s.bytes, "buffer full: dropped its oldest segment (when_full = \"drop_oldest\")");
        let _ = fs::remove_file(&s.path);
    }
}

/// Reads the record at `offset` (before `end`) with its payload straight into
/// `payload`; `None` if it is not a valid record. Returns the record (its payload
/// left empty) and its framed length.
fn read_record(file: &File, offset: u64, end: u64, payload: &mut Vec<u8>) -> io::Result<Option<(Record, u64)>> {
    if end - offset < RECORD_HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut head = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut head, offset)?;
    let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap());
    let len = word(4);
    let framed = RECORD_HEADER_LEN as u64 + u64::from(len);
    if word(0) != segment::RECORD_MAGIC || len > segment::MAX_RECORD_LEN || offset + framed > end {
        return Ok(None);
    }
    payload.clear();
    payload.resize(len as usize, 0);
    file.read_exact_at(payload, offset + RECORD_HEADER_LEN as u64)?;
    if crc32c::crc32c_append(crc32c::crc32c(&head[12..]), payload) != word(8) {
        return Ok(None);
    }
    let seq = u64::from_le_bytes(head[12..20].try_into().unwrap());
    let time = i64::from_le_bytes(head[20..28].try_into().unwrap());
    let events = u32::from_le_bytes(head[28..32].try_into().unwrap());
    Ok(Some((Record { seq, time, events, payload: Bytes::new() }, framed)))
}

/// Creates a segment file: header first, then the name made durable, so a crash
/// never leaves a named file without one. A file left from a failed attempt is cut.
fn create_segment(dir: &Path, path: &Path) -> Result<File, BufferError> {
    let made = (|| {
        // (Gone if it could not be created at start: a read-only disk since remounted.)
        fs::create_dir_all(dir)?;
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        f.set_len(0)?;
        f.write_all(&segment::header())?;
        f.sync_data()?;
        Ok(f)
    })();
    let f = made.map_err(|e| {
        let _ = fs::remove_file(path);
        io_err(path)(e)
    })?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    Ok(f)
}

/// The reader has handed out every record on disk (it stands at the end of the newest
/// segment, or past it at one not created yet).
fn reader_past_disk(st: &State) -> bool {
    st.segments.back().is_none_or(|s| st.read_seg > s.id || (st.read_seg == s.id && st.read_offset >= s.bytes))
}

/// Keeps a disk error for [`Buffer::disk_fault`] (logged when it first appears).
fn disk_failed(st: &mut State, e: BufferError) -> BufferError {
    st.stats.disk_errors += 1;
    let text = e.to_string();
    if st.disk_error.as_deref() != Some(text.as_str()) {
        tracing::error!(error = %text, "the buffer's disk refuses writes; records stay in memory, reading pauses when it is full");
    }
    st.disk_error = Some(text);
    e
}

/// A file recovery could not delete, move or cut (a read-only disk): left as it is.
fn note_cleanup_failed(st: &mut State, path: &Path, e: io::Error) {
    tracing::warn!(segment = %path.display(), error = %e, "cannot clean up a buffer segment (is data_dir read-only?); leaving it as it is");
    st.stats.disk_errors += 1;
    st.disk_error.get_or_insert_with(|| io_err(path)(e).to_string());
}

/// Lets go of acknowledged records at the front of memory.
fn forget_acked_front(st: &mut State) {
    while let Some(h) = st.held.front() {
        if st.outstanding.contains(h.seq) {
            break;
        }
        st.held_bytes -= h.payload.len() as u64;
        st.held.pop_front();
    }
}

/// What memory holds, framed as it would be on disk.
fn held_framed(st: &State) -> u64 {
    st.held_bytes + (RECORD_HEADER_LEN * st.held.len()) as u64
}

/// See [`Buffer::safe_seq`]: just below the oldest outstanding record that is not
/// known to be on disk.
fn safe_seq(st: &State) -> u64 {
    st.outstanding.first_from(st.durable_seq + 1).map_or(st.next_seq - 1, |s| s - 1)
}

/// Everything at or below this is acknowledged (or gone for good).
fn watermark(st: &State) -> u64 {
    st.outstanding.min().map_or(st.next_seq - 1, |m| m - 1)
}

/// Keeps the samples from the last one at or before the oldest outstanding record.
fn trim_samples(st: &mut State) {
    match st.outstanding.min() {
        None => st.samples.clear(),
        Some(first) => {
            while st.samples.len() > 1 && st.samples[1].0 <= first {
                st.samples.pop_front();
            }
        }
    }
}
