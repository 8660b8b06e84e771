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
//! `ack`, the highest sequence number below which every record was acknowledged. The
//! segment format (header, framed records with CRC-32C and a resync magic) is in
//! [`segment`]. The newest segment is the only one written to; it is rolled over at
//! `segment_bytes`.
//!
//! # Invariants
//!
//! 1. Sequence numbers increase by one per record, across segments and restarts.
//!    After a crash the next number is past both the last record found and the
//!    persisted ack, so a new record can never be mistaken for an acknowledged one.
//! 2. [`Buffer::sync`] returns the highest sequence number that is on disk (fsynced):
//!    the caller advances file checkpoints only up to what that covers.
//! 3. A segment is deleted only when every record in it is acknowledged (or, with
//!    `when_full = "drop_oldest"`, when room is needed: those records are counted as
//!    dropped).
//! 4. The total size is capped at `max_bytes`: when full, [`Buffer::append`] waits
//!    (`block`: backpressure up to the tailer, files stay unread on disk) or drops the
//!    oldest segment (`drop_oldest`).
//!
//! # Recovery
//!
//! At open every segment is scanned: records at or below the ack are skipped, a torn
//! record at the end of a segment (a write cut by the crash) is truncated away, and a
//! corrupted record in the middle is skipped — found again by its magic and CRC — and
//! counted; nothing in a segment is fatal. The reader then starts at the first
//! unacknowledged record.
//!
//! Records are read back as soon as they are written, before they are fsynced: a
//! crash can then lose a record that was already shipped, which is harmless — its
//! file checkpoint had not advanced, so it is read again (a duplicate, never a loss).

pub mod inspect;
pub mod segment;
mod seqset;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

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
}

impl BufferOptions {
    /// Segments of 1/8 of the cap, between 1 and 64 MiB, so that `drop_oldest` frees
    /// a useful amount and a full buffer holds several segments.
    pub fn with_cap(max_bytes: u64, when_full: WhenFull) -> Self {
        let segment_bytes = (max_bytes / 8).clamp(1 << 20, 64 << 20);
        Self { max_bytes, segment_bytes, when_full }
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
}

/// Counters and levels, for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub bytes: u64,
    pub max_bytes: u64,
    /// Records not yet acknowledged.
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

struct State {
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending.
    writer: Option<File>,
    next_seq: u64,
    /// Everything at or below is fsynced.
    durable_seq: u64,
    /// Records held and not yet acknowledged. Below its minimum, everything is
    /// acknowledged (or was lost to corruption, or dropped).
    outstanding: SeqSet,
    /// The last sequence number handed out by the reader.
    last_read: u64,
    persisted_ack: u64,
    total_bytes: u64,
    /// Reader position: segment id and offset of its next record.
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
    scratch: Vec<u8>,
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
const POOLED_PAYLOADS: usize = 16;

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

fn read_ack(dir: &Path) -> Result<u64, BufferError> {
    let path = dir.join("ack");
    match fs::read_to_string(&path) {
        Ok(t) => t.trim().parse().map_err(|_| BufferError::BadSegment { path, why: format!("ack file holds {t:?}, not a number") }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path)(e)),
    }
}

impl Buffer {
    /// Opens (creating if needed) the buffer in `dir` and recovers what it holds.
    pub fn open(dir: &Path, opts: BufferOptions) -> Result<(Buffer, Recovery), BufferError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked = read_ack(dir)?;
        let mut rec = Recovery::default();
        let mut st = State {
            segments: VecDeque::new(),
            writer: None,
            next_seq: acked + 1,
            durable_seq: 0,
            outstanding: SeqSet::default(),
            last_read: acked,
            persisted_ack: acked,
            total_bytes: 0,
            read_seg: 0,
            read_offset: HEADER_LEN,
            read_file: None,
            samples: VecDeque::new(),
            waiting_for_room: false,
            closed: false,
            pool: Vec::new(),
            stats: BufferStats { max_bytes: opts.max_bytes, ..BufferStats::default() },
            scratch: Vec::new(),
        };
        let mut buf = Vec::new();
        let mut reader_set = false;
        for (id, path) in list_segments(dir).map_err(io_err(dir))? {
            rec.segments += 1;
            let scan = match segment::scan_file(&path, &mut buf).map_err(io_err(&path))? {
                Ok(s) => s,
                // Cut while being created (shorter than its header): nothing in it.
                Err(_) if buf.len() < HEADER_LEN as usize => {
                    rec.torn_bytes += buf.len() as u64;
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                // Not a segment we can read: set it aside (for `buffer inspect` and a
                // person), never refuse to start.
                Err(why) => {
                    let aside = path.with_extension("seg.unreadable");
                    tracing::warn!(segment = %path.display(), moved_to = %aside.display(), why, "unreadable buffer segment set aside");
                    fs::rename(&path, &aside).map_err(io_err(&path))?;
                    rec.corrupt_regions += 1;
                    continue;
                }
            };
            rec.corrupt_regions += scan.corrupt_regions;
            let mut bytes = buf.len() as u64;
            if scan.torn {
                rec.torn_bytes += bytes - scan.valid_end;
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(scan.valid_end).and_then(|()| f.sync_all()).map_err(io_err(&path))?;
                bytes = scan.valid_end;
            }
            let last_seq = scan.records.last().map_or(0, |r| r.seq);
            rec.records += scan.records.len() as u64;
            if last_seq != 0 && last_seq <= acked {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            for r in scan.records.iter().filter(|r| r.seq > acked && r.seq >= st.next_seq) {
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
        st.stats.corrupt_regions = rec.corrupt_regions;
        st.stats.torn_bytes = rec.torn_bytes;
        let inner = Inner { dir: dir.to_path_buf(), opts, state: Mutex::new(st), changed: Condvar::new() };
        let buffer = Buffer { inner: Arc::new(inner) };
        {
            let mut st = buffer.lock();
            buffer.start_segment(&mut st)?;
            if !reader_set {
                let active = st.segments.back().expect("just started").id;
                (st.read_seg, st.read_offset) = (active, HEADER_LEN);
            }
        }
        Ok((buffer, rec))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; returns its sequence number. Waits while the buffer is full
    /// (`block`), or drops the oldest segment (`drop_oldest`).
    pub fn append(&self, time: i64, events: u32, payload: &[u8]) -> Result<u64, BufferError> {
        let framed = (RECORD_HEADER_LEN + payload.len()) as u64;
        let mut st = self.lock();
        while st.total_bytes + framed > self.inner.opts.max_bytes && !st.closed {
            match self.inner.opts.when_full {
                WhenFull::DropOldest if st.segments.len() > 1 => self.drop_oldest(&mut st),
                // A single (active) segment holding everything: roll it so it can go.
                WhenFull::DropOldest => self.start_segment(&mut st)?,
                WhenFull::Block => {
                    st.waiting_for_room = true;
                    st = self.inner.changed.wait_timeout(st, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        st.waiting_for_room = false;
        if st.closed {
            return Err(BufferError::Closed);
        }
        if st.segments.back().is_some_and(|s| s.bytes >= self.inner.opts.segment_bytes) {
            self.start_segment(&mut st)?;
        }
        let seq = st.next_seq;
        let mut scratch = std::mem::take(&mut st.scratch);
        scratch.clear();
        segment::encode(seq, time, events, payload, &mut scratch);
        let active = st.segments.back().expect("a segment is always open").path.clone();
        let result = st.writer.as_mut().expect("a segment is always open").write_all(&scratch);
        if let Err(e) = result {
            // Cut back what was written of a failed append, so the segment stays whole.
            let len = st.segments.back().unwrap().bytes;
            let _ = st.writer.as_ref().unwrap().set_len(len);
            st.scratch = scratch;
            return Err(io_err(&active)(e));
        }
        st.scratch = scratch;
        st.next_seq += 1;
        st.segments.back_mut().unwrap().bytes += framed;
        st.segments.back_mut().unwrap().last_seq = seq;
        st.total_bytes += framed;
        st.outstanding.push(seq);
        if st.samples.back().is_none_or(|&(_, t)| time - t >= SAMPLE_EVERY_NS) || st.outstanding.len() == 1 {
            st.samples.push_back((seq, time));
        }
        self.inner.changed.notify_all();
        Ok(seq)
    }

    /// Makes every appended record durable; returns the highest durable seq.
    pub fn sync(&self) -> Result<u64, BufferError> {
        let (file, seq, path) = {
            let st = self.lock();
            let file = st.writer.as_ref().expect("a segment is always open").try_clone();
            let path = st.segments.back().unwrap().path.clone();
            (file.map_err(io_err(&path))?, st.next_seq - 1, path)
        };
        file.sync_data().map_err(io_err(&path))?;
        let mut st = self.lock();
        st.durable_seq = st.durable_seq.max(seq);
        Ok(st.durable_seq)
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
        let active = st.segments.back().expect("a segment is always open");
        st.read_seg == active.id && st.read_offset >= active.bytes
    }

    /// The sink has `seq`: release it.
    pub fn ack(&self, seq: u64) {
        let mut st = self.lock();
        if !st.outstanding.remove(seq) {
            return;
        }
        trim_samples(&mut st);
        self.delete_acked_segments(&mut st);
        self.inner.changed.notify_all();
    }

    /// Writes the ack position if it moved (temp file, fsync, rename).
    pub fn persist_ack(&self) -> Result<(), BufferError> {
        let acked = {
            let st = self.lock();
            let acked = watermark(&st);
            if acked == st.persisted_ack {
                return Ok(());
            }
            acked
        };
        let path = self.inner.dir.join("ack");
        let tmp = self.inner.dir.join("ack.tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(format!("{acked}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.inner.dir)?.sync_all()
        };
        write().map_err(io_err(&path))?;
        let mut st = self.lock();
        st.persisted_ack = st.persisted_ack.max(acked);
        Ok(())
    }

    /// Counts events dropped before they could be appended (too large for the buffer).
    pub fn note_dropped_too_large(&self, records: u64) {
        self.lock().stats.too_large_records += records;
    }

    /// Hands a record's payload back for reuse by later reads (saves allocating and
    /// faulting in a fresh megabyte per record).
    pub fn recycle(&self, mut payload: Vec<u8>) {
        let mut st = self.lock();
        if st.pool.len() < POOLED_PAYLOADS {
            payload.clear();
            st.pool.push(payload);
        }
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
            records: st.outstanding.len(),
            oldest_unacked_time: (!st.outstanding.is_empty()).then(|| st.samples.front().map(|s| s.1)).flatten(),
            backpressure: st.waiting_for_room,
            segments: st.segments.len() as u64,
            ..st.stats
        }
    }

    /// Closes the active segment and opens the next.
    fn start_segment(&self, st: &mut State) -> Result<(), BufferError> {
        if let Some(w) = st.writer.take() {
            let path = &st.segments.back().unwrap().path;
            w.sync_data().map_err(io_err(path))?;
            st.durable_seq = st.next_seq - 1;
        }
        let id = st.segments.back().map_or(1, |s| s.id + 1);
        let path = segment_path(&self.inner.dir, id);
        let mut f = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        // Header first, then the name: a crash never leaves a named file without one.
        f.write_all(&segment::header()).and_then(|()| f.sync_data()).map_err(io_err(&path))?;
        File::open(&self.inner.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.inner.dir))?;
        st.writer = Some(f);
        st.total_bytes += HEADER_LEN;
        st.segments.push_back(Segment { id, path, bytes: HEADER_LEN, last_seq: 0 });
        Ok(())
    }

    /// The record at the reader's position, advancing it; skips corruption.
    fn next_record(&self, st: &mut State) -> Result<Option<Record>, BufferError> {
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
                    if !st.outstanding.contains(r.seq) {
                        st.pool.push(payload);
                        continue; // acknowledged before a restart, or dropped
                    }
                    // Records are read in order: outstanding ones skipped over were
                    // in a corrupted region. They are gone; stop waiting for them.
                    let lost = st.outstanding.remove_range(st.last_read + 1, r.seq);
                    st.stats.corrupt_records += lost;
                    st.last_read = r.seq;
                    return Ok(Some(Record { payload, ..r }));
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

    fn delete_acked_segments(&self, st: &mut State) {
        let acked = watermark(st);
        while st.segments.len() > 1 {
            let s = &st.segments[0];
            if s.last_seq > acked || (s.last_seq == 0 && s.id >= st.read_seg) {
                break;
            }
            let s = st.segments.pop_front().unwrap();
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
    Ok(Some((Record { seq, time, events, payload: Vec::new() }, framed)))
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
