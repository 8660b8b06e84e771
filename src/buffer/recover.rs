//! Opening the buffer: every segment scanned, each record given back to the sinks
//! that have not acknowledged it, damage cut away or skipped.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use super::cursor::Cursor;
use super::segment::{self, HEADER_LEN};
use super::seqset::SeqSet;
use super::{acks, io_err, list_segments, sinks, Buffer, BufferError, BufferOptions, BufferStats, Inner, Recovery, Segment, SinkShare, State, MAX_SINKS};

impl Buffer {
    /// Opens (creating if needed) the buffer in `dir` for one sink, named `default`,
    /// with the whole buffer as its share.
    pub fn open(dir: &Path, opts: BufferOptions) -> Result<(Buffer, Recovery), BufferError> {
        let share = SinkShare { name: crate::config::DEFAULT_SINK.to_string(), max_bytes: opts.max_bytes, when_full: opts.when_full };
        Self::open_for(dir, opts, &[share])
    }

    /// Opens (creating if needed) the buffer in `dir` for `sinks` (1 to
    /// [`MAX_SINKS`], bit `i` of a record's routing for the `i`-th) and recovers what
    /// it holds for each.
    ///
    /// A disk that refuses writes (full, read-only) does not stop it: what cannot be
    /// cleaned up is left as it is, the buffer runs from memory meanwhile
    /// ([`Self::disk_fault`] says why), and segments are created once writes work.
    pub fn open_for(dir: &Path, opts: BufferOptions, shares: &[SinkShare]) -> Result<(Buffer, Recovery), BufferError> {
        assert!((1..=MAX_SINKS).contains(&shares.len()), "1 to {MAX_SINKS} sinks");
        let mut disk_error = None;
        if let Err(e) = fs::create_dir_all(dir) {
            disk_error = Some(io_err(dir)(e).to_string());
        }
        let names: Vec<String> = shares.iter().map(|s| s.name.clone()).collect();
        let saved = sinks::read(dir).map_err(io_err(&dir.join("sinks")))?;
        let map = sinks::remap(saved.as_deref(), &names);
        let mut st = empty_state(dir, &opts, shares, disk_error)?;
        st.sinks_saved = saved.as_ref() == Some(&names);
        let found = match list_segments(dir) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound && st.disk_error.is_some() => Vec::new(),
            Err(e) => return Err(io_err(dir)(e)),
        };
        let mut rec = Recovery::default();
        let mut scan = Scanning { buf: Vec::new(), last_taken: 0, map };
        for (id, path) in found {
            st.next_segment = st.next_segment.max(id + 1);
            rec.segments += 1;
            recover_segment(&mut st, &mut rec, &mut scan, id, &path)?;
        }
        recovered(&mut st, &mut rec);
        let inner = Inner { dir: dir.to_path_buf(), opts, state: Mutex::new(st), changed: Condvar::new(), persisting: Mutex::new(()) };
        let buffer = Buffer { inner: Arc::new(inner) };
        {
            let mut st = buffer.lock();
            if let Err(e) = buffer.start_segment(&mut st) {
                tracing::error!(error = %e, "the buffer cannot create a segment; it holds records in memory until the disk takes writes again");
            }
        }
        Ok((buffer, rec))
    }
}

/// The state before any segment is read: each sink's cursor from its saved
/// acknowledgements.
fn empty_state(dir: &Path, opts: &BufferOptions, shares: &[SinkShare], disk_error: Option<String>) -> Result<State, BufferError> {
    let mut cursors = Vec::new();
    let mut next_seq = 1;
    for share in shares {
        let acked = acks::read(dir, &share.name).map_err(io_err(&acks::path(dir, &share.name)))?;
        next_seq = u64::max(next_seq, acked.end());
        cursors.push(Cursor::new(share.clone(), acked));
    }
    Ok(State {
        segments: VecDeque::new(),
        writer: None,
        next_segment: 1,
        disk_error,
        sinks_saved: false,
        shared_acks_removed: false,
        next_seq,
        held: VecDeque::new(),
        held_bytes: 0,
        spilled_seq: 0,
        durable_seq: 0,
        unsynced: 0,
        outstanding: SeqSet::default(),
        cursors,
        total_bytes: 0,
        waiting_for_room: false,
        waiting_for: None,
        closed: false,
        nudges: 0,
        quiet: false,
        unannounced: false,
        acks_saved: std::time::Instant::now(),
        acks_synced_since_start: false,
        pool: Vec::new(),
        stats: BufferStats { max_bytes: opts.max_bytes, ..BufferStats::default() },
        wake_at: 0,
        safe_waker: None,
    })
}

/// After the last segment: everything recovered is durable, and a sink with nothing
/// to read on disk waits at the start of the next segment.
fn recovered(st: &mut State, rec: &mut Recovery) {
    st.durable_seq = st.next_seq - 1;
    st.spilled_seq = st.durable_seq;
    st.stats.corrupt_regions = rec.corrupt_regions;
    st.stats.torn_bytes = rec.torn_bytes;
    rec.unacked = st.outstanding.len();
    let next_segment = st.next_segment;
    for cur in &mut st.cursors {
        if cur.outstanding.is_empty() || cur.read_seg == 0 {
            (cur.read_seg, cur.read_offset) = (next_segment, HEADER_LEN);
        }
    }
}

/// What recovery carries from one segment to the next.
struct Scanning {
    buf: Vec<u8>,
    /// Sequence numbers only increase across segments: a record at or below the last
    /// one taken is a stray copy.
    last_taken: u64,
    /// The saved routing bits in today's.
    map: Vec<Option<u32>>,
}

fn recover_segment(st: &mut State, rec: &mut Recovery, scan: &mut Scanning, id: u64, path: &Path) -> Result<(), BufferError> {
    let Some(found) = scan_or_set_aside(st, rec, scan, path)? else { return Ok(()) };
    rec.corrupt_regions += found.corrupt_regions;
    let mut bytes = scan.buf.len() as u64;
    if found.torn {
        rec.torn_bytes += bytes - found.valid_end;
        // Never appended to again (new records go to a new segment): if the disk
        // refuses the cut, reading simply stops at the valid end.
        let cut = OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(found.valid_end).and_then(|()| f.sync_all()));
        if let Err(e) = cut {
            note_cleanup_failed(st, path, e);
        }
        bytes = found.valid_end;
    }
    let first_seq = found.records.first().map_or(0, |r| r.seq);
    let last_seq = found.records.last().map_or(0, |r| r.seq);
    rec.records += found.records.len() as u64;
    st.next_seq = st.next_seq.max(last_seq + 1);
    let (routed, needed) = give_back(st, scan, id, &found.records);
    if !needed {
        // Every sink it goes to has it (or it holds nothing: a new segment is started).
        if let Err(e) = fs::remove_file(path) {
            note_cleanup_failed(st, path, e);
        }
        return Ok(());
    }
    st.total_bytes += bytes;
    st.segments.push_back(Segment { id, path: path.to_path_buf(), version: found.version, bytes, first_seq, last_seq, routed });
    Ok(())
}

/// Reads a segment file; `None` when there is nothing in it to recover: cut while
/// being created (removed), or not a segment we can read (set aside for `buffer
/// inspect` and a person — never a reason to refuse to start).
fn scan_or_set_aside(st: &mut State, rec: &mut Recovery, scan: &mut Scanning, path: &Path) -> Result<Option<segment::Scan>, BufferError> {
    match segment::scan_file(path, &mut scan.buf).map_err(io_err(path))? {
        Ok(s) => Ok(Some(s)),
        Err(_) if scan.buf.len() < HEADER_LEN as usize => {
            rec.torn_bytes += scan.buf.len() as u64;
            if let Err(e) = fs::remove_file(path) {
                note_cleanup_failed(st, path, e);
            }
            Ok(None)
        }
        Err(why) => {
            let aside = path.with_extension("seg.unreadable");
            tracing::warn!(segment = %path.display(), moved_to = %aside.display(), why, "unreadable buffer segment set aside");
            if let Err(e) = fs::rename(path, &aside) {
                note_cleanup_failed(st, path, e);
            }
            rec.corrupt_regions += 1;
            Ok(None)
        }
    }
}

/// Gives each record of segment `id` back to the sinks it is routed to that have not
/// acknowledged it. Returns the bytes routed to each sink, and whether any sink still
/// needs the segment.
fn give_back(st: &mut State, scan: &mut Scanning, id: u64, records: &[segment::RecordMeta]) -> ([u64; MAX_SINKS], bool) {
    let mut routed = [0u64; MAX_SINKS];
    let mut needed = false;
    let sinks_now = st.cursors.len();
    for r in records {
        let mask = sinks::translate(r.sinks, &scan.map, sinks_now);
        if r.seq <= scan.last_taken {
            continue;
        }
        scan.last_taken = r.seq;
        let mut wanted = false;
        for (c, cur) in st.cursors.iter_mut().enumerate() {
            if mask & (1 << c) == 0 {
                continue;
            }
            routed[c] += r.framed;
            if cur.persisted.contains(r.seq) {
                continue;
            }
            if cur.outstanding.is_empty() {
                (cur.read_seg, cur.read_offset) = (id, r.offset);
            }
            cur.take(r.seq, r.time);
            wanted = true;
        }
        if wanted {
            st.outstanding.push(r.seq);
            needed = true;
        }
    }
    (routed, needed)
}

/// A file recovery could not delete, move or cut (a read-only disk): left as it is.
fn note_cleanup_failed(st: &mut State, path: &Path, e: io::Error) {
    tracing::warn!(segment = %path.display(), error = %e, "cannot clean up a buffer segment (is data_dir read-only?); leaving it as it is");
    st.stats.disk_errors += 1;
    st.disk_error.get_or_insert_with(|| io_err(path)(e).to_string());
}
