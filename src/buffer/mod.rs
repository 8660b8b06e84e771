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
//! `<data_dir>/buffer/` holds numbered segment files (`0000000000000001.seg`, …),
//! `sinks` (the sinks' names, in the order of a record's routing bits, see [`sinks`])
//! and one `acks.<sink>` per sink: which records that sink acknowledged, every one up
//! to a number and the ranges above it, since sinks acknowledge out of order (see
//! [`acks`]). The segment format (header, framed records with CRC-32C, the sinks each
//! record goes to, and a resync magic) is in [`segment`]. The newest segment is the
//! only one written to; it is rolled over at `segment_bytes`.
//!
//! # One log, a cursor per sink
//!
//! Every record is written once, with the set of sinks it goes to. Each sink has its
//! own [`cursor`]: where it reads, what it has not acknowledged, its share of the
//! buffer (`max_bytes`) and what happens when that share is full (`when_full`). A
//! record is released (from memory, and with its segment from disk) once every sink
//! it goes to has acknowledged it. A sink that blocks holds reading back; a sink that
//! drops its oldest does so alone — the others keep every record.
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
//! 4. A segment is deleted once every record in it is acknowledged by every sink it
//!    goes to, whatever older records still wait (a sink with `when_full =
//!    "drop_oldest"` that needs room gives up its records in its oldest segment,
//!    counted as dropped for it).
//! 5. What the buffer holds, on disk and in memory (framed as on disk), is capped at
//!    `max_bytes`, and what each sink has not acknowledged at its share: when full,
//!    [`Buffer::append_to`] waits (`block`: backpressure up to the tailer, files stay
//!    unread on disk) or that sink drops its oldest (`drop_oldest`). Memory alone is
//!    capped at `memory_bytes`, and at most a quarter of `max_bytes`.
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
//!
//! The code: appending and committing here, reading and acknowledging per sink in
//! [`cursor`], making room in `room`, opening and recovery in `recover`.

pub mod acks;
pub mod cursor;
pub mod inspect;
mod recover;
mod room;
pub mod segment;
mod disk;
mod seqset;
pub mod sinks;
pub mod writer;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cursor::Cursor;
use segment::RECORD_HEADER_LEN;
use seqset::SeqSet;

/// At most this many sinks share a buffer: a record's routing mask is a `u16`.
pub const MAX_SINKS: usize = 16;

/// What to do when a sink's share of the buffer (or the buffer) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for the sink: reading pauses, nothing is dropped.
    Block,
    /// This sink gives up its oldest records, counted as dropped; the others keep them.
    DropOldest,
}

#[derive(Debug, Clone, Copy)]
pub struct BufferOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// What the sink does when full, for [`Buffer::open`]'s one sink.
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

/// How long the buffer thread and the sinks wait when nothing is due: no timer, in
/// effect — they wake for the next batch or record, or a [`Buffer::nudge`].
pub const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

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

/// One sink's place in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkShare {
    /// Names its acknowledgements file and its routing bit across restarts.
    pub name: String,
    /// What it may leave unacknowledged.
    pub max_bytes: u64,
    pub when_full: WhenFull,
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
    /// Records some sink has not acknowledged (in memory or on disk).
    pub records: u64,
    /// When the oldest record some sink has not acknowledged was read (ns since the
    /// epoch).
    pub oldest_unacked_time: Option<i64>,
    /// Appends are waiting for room right now.
    pub backpressure: bool,
    /// Records sinks dropped for room (summed over the sinks).
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// Corrupted regions skipped, at recovery and while reading.
    pub corrupt_regions: u64,
    /// Records lost to corruption found while reading (summed over the sinks).
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
    /// Saves of the sinks' acknowledgements: synced (some record was on disk), and
    /// not (none was: see [`Buffer::persist_ack`]).
    pub ack_saves_synced: u64,
    pub ack_saves_unsynced: u64,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: u64,
    pub records: u64,
    /// Records some sink has not acknowledged.
    pub unacked: u64,
    pub corrupt_regions: u64,
    pub torn_bytes: u64,
}

struct Segment {
    id: u64,
    path: PathBuf,
    /// Format version (older segments are read, never written).
    version: u32,
    /// Bytes in the file.
    bytes: u64,
    /// Lowest and highest sequence number in it (0: none yet).
    first_seq: u64,
    last_seq: u64,
    /// Framed bytes of its records that go to each sink: that sink's usage while it
    /// has any of them unacknowledged.
    routed: [u64; MAX_SINKS],
}

/// A record held in memory, not (yet) written.
struct Held {
    seq: u64,
    time: i64,
    events: u32,
    sinks: u16,
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
    /// The `sinks` file says what this run's routing bits mean.
    sinks_saved: bool,
    /// Every sink has saved its own acknowledgements, and what a one-sink logferry
    /// saved is gone.
    shared_acks_removed: bool,
    next_seq: u64,
    /// Records in memory, in sequence order, all newer than any record on disk. The
    /// front one is never released: `ack` and `write_front` let go of released
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
    /// Records some sink they go to has not acknowledged: the union of the cursors'.
    /// Below its minimum, everything is released (or was lost to corruption, or
    /// dropped).
    outstanding: SeqSet,
    /// One per sink, in routing-bit order.
    cursors: Vec<Cursor>,
    total_bytes: u64,
    waiting_for_room: bool,
    /// The sink appends wait for (`block`, its share full); `None`: the whole buffer.
    waiting_for: Option<usize>,
    closed: bool,
    /// Counts [`Buffer::nudge`]s: a reader waiting when it changes returns.
    nudges: u64,
    /// Appends wake no reader until [`Buffer::announce`] (see
    /// [`Buffer::hold_announcements`]).
    quiet: bool,
    /// Records appended quietly that no reader was woken for yet.
    unannounced: bool,
    /// When acknowledgements were last saved.
    acks_saved: Instant,
    /// Acknowledgements were saved with syncs since the start (until then, every save
    /// is: see [`Buffer::persist_ack`]).
    acks_synced_since_start: bool,
    /// Payload buffers handed back by the readers' callers.
    pool: Vec<Vec<u8>>,
    stats: BufferStats,
    /// See [`Buffer::wake_when_safe`]: the record whose safety calls `safe_waker`
    /// (0: none asked for).
    wake_at: u64,
    safe_waker: Option<Arc<dyn Fn() + Send + Sync>>,
}

struct Inner {
    dir: PathBuf,
    opts: BufferOptions,
    state: Mutex<State>,
    changed: Condvar,
    /// One saver of acknowledgements at a time (every sink's thread saves them).
    persisting: Mutex<()>,
}

/// The disk buffer; clones share it (one writer, one reader per sink).
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

/// Every sink of `n`.
/// The buffer under `data`, emptied, if nothing else holds it: to fill again rather
/// than allocate (and fault in) a fresh one. Emptied first, so that taking the vector
/// back copies nothing.
pub fn reclaim(data: Bytes) -> Option<Vec<u8>> {
    let mut data = data.try_into_mut().ok()?;
    data.clear();
    Some(Vec::from(data))
}

fn all_sinks(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change; records appended quietly are announced first (a reader
    /// may be what the wait is for).
    fn wait<'a>(&self, mut st: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        if std::mem::take(&mut st.unannounced) {
            self.inner.changed.notify_all();
        }
        self.inner.changed.wait_timeout(st, timeout).unwrap_or_else(|p| p.into_inner()).0
    }

    /// How many sinks read this buffer.
    pub fn sinks(&self) -> usize {
        self.lock().cursors.len()
    }

    /// Appends a record for every sink (held in memory first); returns its sequence
    /// number. See [`Self::append_to`].
    pub fn append(&self, time: i64, events: u32, payload: Bytes) -> Result<u64, BufferError> {
        let every = all_sinks(self.sinks());
        self.append_within(every, time, events, payload, None).map_err(|(e, _)| e)
    }

    /// Appends a record for the sinks of `sinks` (bit `i`: the `i`-th; bits past the
    /// last sink are ignored); returns its sequence number. When memory is full it first makes room: it writes the oldest
    /// records the sinks are not working on, and waits up to `hold` for an
    /// acknowledgement of the rest. While a sink's share (or the buffer) is full it
    /// waits (`block`), or that sink drops its oldest (`drop_oldest`). On an error
    /// the record was not taken.
    pub fn append_to(&self, sinks: u16, time: i64, events: u32, payload: Bytes) -> Result<u64, BufferError> {
        self.append_within(sinks, time, events, payload, None).map_err(|(e, _)| e)
    }

    /// [`Self::append`], handing the payload back when it was not taken (to retry
    /// without keeping a second reference meanwhile, which would stop the sink from
    /// recycling the buffer).
    pub fn try_append(&self, time: i64, events: u32, payload: Bytes) -> Result<u64, (BufferError, Bytes)> {
        let every = all_sinks(self.sinks());
        self.append_within(every, time, events, payload, None)
    }

    /// [`Self::append_to`], but while a share with `when_full = "block"` is full it
    /// waits for room at most `patience`, then hands the payload back with
    /// [`BufferError::Full`] — so that the caller can commit and checkpoint meanwhile
    /// (a long outage must not stop what was read from becoming durable).
    pub fn try_append_for(&self, sinks: u16, time: i64, events: u32, payload: Bytes, patience: Duration) -> Result<u64, (BufferError, Bytes)> {
        self.append_within(sinks, time, events, payload, Some(Instant::now() + patience))
    }

    fn append_within(&self, sinks: u16, time: i64, events: u32, payload: Bytes, deadline: Option<Instant>) -> Result<u64, (BufferError, Bytes)> {
        let len = payload.len() as u64;
        let mut st = self.lock();
        let sinks = sinks & all_sinks(st.cursors.len());
        assert!(sinks != 0, "a record goes to at least one sink");
        st = match self.wait_for_room(st, RECORD_HEADER_LEN as u64 + len, sinks, deadline) {
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
        st.held.push_back(Held { seq, time, events, sinks, payload, since: Instant::now() });
        st.outstanding.push(seq);
        for (i, cur) in st.cursors.iter_mut().enumerate() {
            if sinks & (1 << i) != 0 {
                cur.take(seq, time);
            }
        }
        if st.quiet {
            st.unannounced = true;
            return Ok(seq);
        }
        // After unlocking: a reader woken while the lock is held would only block on it.
        drop(st);
        self.inner.changed.notify_all();
        Ok(seq)
    }

    /// Appends from now on wake no reader until [`Self::announce`]: the buffer thread
    /// appends a tailer round's batches and wakes each sink once for them all, not
    /// once each. (Any wait inside the buffer announces what was appended first.)
    pub fn hold_announcements(&self) {
        self.lock().quiet = true;
    }

    /// Wakes the readers for what was appended since [`Self::hold_announcements`],
    /// and appends announce themselves again.
    pub fn announce(&self) {
        let mut st = self.lock();
        st.quiet = false;
        let wake = std::mem::take(&mut st.unannounced);
        drop(st);
        if wake {
            self.inner.changed.notify_all();
        }
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

    /// What [`Self::wake_when_safe`] calls (on the thread of the sink whose
    /// acknowledgement made the record safe).
    pub fn set_safe_waker(&self, waker: impl Fn() + Send + Sync + 'static) {
        self.lock().safe_waker = Some(Arc::new(waker));
    }

    /// Calls the safe waker once every record up to `seq` is safe (see
    /// [`Self::safe_seq`]) by a sink's acknowledgement; replaces an earlier request,
    /// and 0 withdraws it. The buffer thread asks for this before it sleeps, so that
    /// the positions of what the sinks have are saved as soon as they have it, not at
    /// its next commit: a killed logferry repeats only what was delivered since.
    pub fn wake_when_safe(&self, seq: u64) {
        let mut st = self.lock();
        st.wake_at = seq;
        // Safe already (acknowledged since the caller looked): now.
        let wake = take_due_waker(&mut st);
        drop(st);
        if let Some(wake) = wake {
            wake();
        }
    }

    /// Waits up to `wait` for the sinks to acknowledge what memory holds (at
    /// shutdown, so that little has to be written).
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

    /// Counts events dropped before they could be appended (too large for the buffer).
    pub fn note_dropped_too_large(&self, records: u64) {
        self.lock().stats.too_large_records += records;
    }

    /// Hands a record's payload back for reuse (saves allocating and faulting in a
    /// fresh megabyte per record); kept only if nobody else holds it.
    pub fn recycle(&self, payload: Bytes) {
        let Some(payload) = reclaim(payload) else { return };
        let mut st = self.lock();
        if st.pool.len() < POOLED_PAYLOADS && payload.capacity() > 0 {
            st.pool.push(payload);
        }
    }

    /// A payload buffer for the next batch, if one was handed back.
    pub fn spare(&self) -> Option<Vec<u8>> {
        self.lock().pool.pop()
    }

    /// Makes every [`Self::read_for`] waiting now return with what it has: for a
    /// reader that also waits for something else (its own write landing, the buffer
    /// thread finishing), so that it can wait without a timer.
    pub fn nudge(&self) {
        self.lock().nudges += 1;
        self.inner.changed.notify_all();
    }

    /// Wakes every waiter; appends fail and reads return what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.changed.notify_all();
    }

    pub fn stats(&self) -> BufferStats {
        let st = self.lock();
        let (mut dropped_records, mut dropped_bytes, mut corrupt_records) = (0, 0, 0);
        for c in &st.cursors {
            dropped_records += c.dropped_records;
            dropped_bytes += c.dropped_bytes;
            corrupt_records += c.corrupt_records;
        }
        BufferStats {
            bytes: st.total_bytes,
            memory_bytes: held_framed(&st),
            records: st.outstanding.len(),
            oldest_unacked_time: st.cursors.iter().filter_map(Cursor::oldest_time).min(),
            backpressure: st.waiting_for_room,
            segments: st.segments.len() as u64,
            dropped_records,
            dropped_bytes,
            corrupt_records,
            ..st.stats
        }
    }

    /// Why the disk refuses the buffer's writes (full, read-only, failing), while it
    /// does: records are then held in memory only, and files are not checkpointed
    /// past them.
    pub fn disk_fault(&self) -> Option<String> {
        self.lock().disk_error.clone()
    }
}

/// Lets go of released records at the front of memory.
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

/// The safe waker, if the record [`Buffer::wake_when_safe`] asked for is safe now
/// (the request is then done); to be called after unlocking.
fn take_due_waker(st: &mut State) -> Option<Arc<dyn Fn() + Send + Sync>> {
    if st.wake_at == 0 || safe_seq(st) < st.wake_at {
        return None;
    }
    st.wake_at = 0;
    st.safe_waker.clone()
}

/// See [`Buffer::safe_seq`]: just below the oldest outstanding record that is not
/// known to be on disk.
fn safe_seq(st: &State) -> u64 {
    st.outstanding.first_from(st.durable_seq + 1).map_or(st.next_seq - 1, |s| s - 1)
}

/// Records in `from..to` that no sink needs any more leave the buffer's set (after a
/// sink acknowledged, dropped or lost them).
fn release_range(st: &mut State, from: u64, to: u64) {
    let mut seq = from;
    while let Some(s) = st.outstanding.first_from(seq).filter(|&s| s < to) {
        if !st.cursors.iter().any(|c| c.needs(s)) {
            st.outstanding.remove(s);
        }
        seq = s + 1;
    }
}
