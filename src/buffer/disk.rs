//! Writing to disk: group commit (what memory held long enough is written, then one
//! fsync), and segments — each created header first with its name made durable, so a
//! crash never leaves a named file without one. A disk that refuses is a condition
//! kept for `/readyz` ([`Buffer::disk_fault`]), never a panic: records stay in memory
//! and checkpoints wait for them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::time::Duration;

use super::segment::{self, HEADER_LEN};
use super::{io_err, safe_seq, segment_path, sinks, Buffer, BufferError, Segment, State, MAX_SINKS};

impl Buffer {
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
            // fsync without the lock: the sinks keep reading and acknowledging.
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

    /// Closes the active segment (fsynced first) and opens the next. If the disk
    /// refuses, the old segment stays open when its fsync failed, or none is open
    /// (the next write tries again); the error is kept for [`Self::disk_fault`].
    pub(super) fn start_segment(&self, st: &mut State) -> Result<(), BufferError> {
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
        if !st.sinks_saved {
            // Before any record says which sinks it goes to, the bits are named.
            let names: Vec<String> = st.cursors.iter().map(|c| c.share.name.clone()).collect();
            // (The directory is gone if it could not be created at start: a read-only
            // disk since remounted.)
            if let Err(e) = fs::create_dir_all(&self.inner.dir).and_then(|()| sinks::write(&self.inner.dir, &names)) {
                return Err(disk_failed(st, io_err(&self.inner.dir)(e)));
            }
            st.sinks_saved = true;
        }
        let id = st.next_segment;
        let path = segment_path(&self.inner.dir, id);
        let f = match create_segment(&self.inner.dir, &path) {
            Ok(f) => f,
            Err(e) => return Err(disk_failed(st, e)),
        };
        for cur in &mut st.cursors {
            cur.move_past_disk(&st.segments, id);
        }
        st.next_segment += 1;
        st.writer = Some(f);
        st.total_bytes += HEADER_LEN;
        st.segments.push_back(Segment { id, path, version: segment::VERSION, bytes: HEADER_LEN, first_seq: 0, last_seq: 0, routed: [0; MAX_SINKS] });
        if st.disk_error.take().is_some() {
            tracing::info!(dir = %self.inner.dir.display(), "the buffer's disk takes writes again");
        }
        Ok(())
    }
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

/// Keeps a disk error for [`Buffer::disk_fault`] (logged when it first appears).
pub(super) fn disk_failed(st: &mut State, e: BufferError) -> BufferError {
    st.stats.disk_errors += 1;
    let text = e.to_string();
    if st.disk_error.as_deref() != Some(text.as_str()) {
        tracing::error!(error = %text, "the buffer's disk refuses writes; records stay in memory, reading pauses when it is full");
    }
    st.disk_error = Some(text);
    e
}

/// Writes every byte of `bufs`, however the kernel splits the write.
pub(super) fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
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
