//! The file sink's writer: appends JSON lines to a file, durable at each `sync`.
//!
//! Writing through the page cache costs a node twice: every byte is copied into a
//! freshly allocated cache page (on the nodes we measured, that copy cost the sink
//! more CPU than reading and encoding the same logs), and the cache then fills with
//! output nobody reads back, pushing out the log files that will be read. So the
//! writer stages what it is given in reused, page-aligned buffers and writes whole
//! 4 KiB blocks with `O_DIRECT`, straight from them to the disk. Only the last,
//! partial block of a sync goes through the page cache (an ordinary write at the
//! same offset), and so does the next sync's first block, which completes it (see
//! [`Writer::write_cached_head`]: a block a reader may have cached is never written
//! directly). The file's length is always exactly the bytes written, never padded.
//!
//! Where the file system refuses `O_DIRECT` (at open, or with `EINVAL` on the first
//! write), the same staging runs over ordinary writes instead, with one log line.
//!
//! A crash can leave the file ending in part of a line (whole blocks are written
//! first); opening the file cuts that back to its last newline before appending.
//!
//! An output that is not a regular file (`/dev/null`, a pipe, a terminal) has no
//! offsets, no blocks and no fsync: it is written in order with ordinary writes, and
//! a write that returned is as durable as it gets.
//!
//! Writes can overlap the next batch: [`OutputFile::submit`] hands the staged bytes to
//! the sink's I/O thread ("sink-io") and returns; appends meanwhile go into a second
//! stage (which starts with the partial last block, so that it too begins on a block
//! boundary); [`OutputFile::wait`] says when the write is durable. One write is in
//! flight at most, so writes land in order. [`OutputFile::sync`] does the same here
//! and now. A disk writes while the CPU copies and encodes the next batch, instead of
//! each waiting for the other.
//!
//! Failure: `append` only copies into memory and cannot fail. `sync` writes what is
//! staged and fdatasyncs; if any of that fails, the file is cut back to the length of
//! the last successful sync (so it never ends in half a batch) and the next call
//! reopens the path first (the disk may have been replaced or remounted), appending
//! at whatever end the file has then. A write that fails on the I/O thread is handled
//! the same way when it lands: what it held and what was staged since are pending
//! again. Nothing staged is dropped until it is synced.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

/// Block size and buffer alignment for direct writes (a multiple of every common
/// logical block size).
const ALIGN: usize = 4096;

/// Staging capacity allocated up front: the sink's largest write
/// ([`super::LOCAL_WRITE_BYTES`]) plus room for the record that crosses it and the
/// partial block before it, so that a stage does not grow in a catch-up (growing holds
/// the old stage and its copy at once). Only the pages written to are resident. A
/// stage still grows when one sync's worth is larger.
const STAGE_BYTES: usize = super::LOCAL_WRITE_BYTES + (2 << 20);

/// Stages this large start on a huge page and ask to be backed by huge pages
/// (see [`Stage::with_capacity`]), for their first [`HUGE_BYTES`].
const HUGE_PAGE: usize = 2 << 20;

/// The part of a stage backed by huge pages: one write's worth. A huge page is
/// resident whole once touched, so the slack past it (for the record that crosses a
/// write's end) stays in small pages.
const HUGE_BYTES: usize = super::LOCAL_WRITE_BYTES;

/// Appends to one file; see the module doc.
pub struct OutputFile {
    path: PathBuf,
    /// The descriptors; away on the I/O thread while a write is in flight.
    writer: Option<Writer>,
    stage: Stage,
    /// File offset of the stage's first byte; a multiple of `ALIGN` with `direct`.
    base: u64,
    /// File length after the last successful sync.
    durable: u64,
    /// The last sync failed: reopen before the next.
    failed: bool,
    /// Allow `O_DIRECT` (off only to test the fallback).
    try_direct: bool,
    /// The write handed to the I/O thread by [`Self::submit`], not yet landed.
    flight: Option<Flight>,
    /// Started by the first [`Self::submit`].
    io: Option<IoThread>,
    /// A stage back from the I/O thread, to stage the next write in.
    spare: Option<Stage>,
    /// The outcome of the write in flight, if it came before it was asked for.
    arrived: Option<Landed>,
    /// Called on the I/O thread each time a write lands.
    on_landed: Option<LandedHook>,
}

/// Told when a write lands (see [`OutputFile::on_landed`]).
pub type LandedHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The descriptors of the file being appended to.
struct Writer {
    path: PathBuf,
    /// Ordinary descriptor: the partial last block, reads, truncation, fdatasync.
    plain: File,
    /// `O_DIRECT` descriptor for whole blocks, if the file system takes it.
    direct: Option<File>,
    /// A regular file (offsets, truncation, fsync); otherwise a device or a pipe,
    /// written in order.
    regular: bool,
}

/// A write on the I/O thread: its stage holds the file's bytes from `base` to `end`
/// (what follows its last whole block was copied to the start of the next stage).
struct Flight {
    end: u64,
    base: u64,
}

struct IoThread {
    jobs: SyncSender<WriteJob>,
    landed: Receiver<Landed>,
    handle: JoinHandle<()>,
}

struct WriteJob {
    writer: Writer,
    stage: Stage,
    base: u64,
    durable: u64,
}

struct Landed {
    writer: Writer,
    stage: Stage,
    result: io::Result<()>,
}

impl OutputFile {
    /// Opens `path` for appending (creating it; emptied first when `truncate`).
    pub fn open(path: &Path, truncate: bool) -> io::Result<Self> {
        Self::open_with(path, truncate, true)
    }

    /// Like [`Self::open`]; `try_direct = false` always uses ordinary writes.
    pub fn open_with(path: &Path, truncate: bool, try_direct: bool) -> io::Result<Self> {
        let plain = open_plain(path, truncate)?;
        let regular = plain.metadata()?.file_type().is_file();
        let direct = if try_direct && regular { open_direct(path)? } else { None };
        let mut file = Self {
            path: path.to_path_buf(),
            writer: Some(Writer { path: path.to_path_buf(), plain, direct, regular }),
            stage: Stage::with_capacity(STAGE_BYTES),
            base: 0,
            durable: 0,
            failed: false,
            try_direct,
            flight: None,
            io: None,
            spare: None,
            arrived: None,
            on_landed: None,
        };
        file.start_at_end()?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether whole blocks go out with `O_DIRECT` (as of the last write that landed).
    pub fn is_direct(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.direct.is_some())
    }

    /// Stages `bytes` to be written at the next [`Self::sync`] or [`Self::submit`].
    pub fn append(&mut self, bytes: &[u8]) {
        self.stage.extend(bytes);
    }

    /// Writes everything staged and makes it durable, here and now.
    pub fn sync(&mut self) -> io::Result<()> {
        self.land()?;
        if self.failed {
            self.reopen()?;
        }
        let writer = self.writer.as_mut().expect("nothing is in flight after land");
        match writer.write_synced(self.stage.bytes(), self.base, self.durable) {
            Ok(whole) => {
                self.failed = false;
                self.durable = self.base + self.stage.len() as u64;
                self.base += whole as u64;
                self.stage.consume(whole);
                Ok(())
            }
            Err(e) => {
                // The staged bytes stay for the retry.
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Starts writing everything staged on the sink's I/O thread and returns at once;
    /// [`Self::wait`] says when it is durable. Appends meanwhile are staged for the
    /// next write (so that copying the next batch overlaps writing this one). Waits
    /// first for a write still in flight. Without an I/O thread, this is `sync`.
    pub fn submit(&mut self) -> io::Result<()> {
        self.land()?;
        if self.failed || self.io_thread().is_none() {
            return self.sync();
        }
        if self.base + self.stage.len() as u64 == self.durable {
            return Ok(()); // nothing new
        }
        let writer = self.writer.take().expect("nothing is in flight after land");
        let staged = self.stage.len();
        let whole = writer.whole_blocks(staged);
        let mut next = self.spare.take().unwrap_or_else(|| Stage::with_capacity(STAGE_BYTES));
        next.clear();
        next.extend(&self.stage.bytes()[whole..]);
        let stage = std::mem::replace(&mut self.stage, next);
        let job = WriteJob { writer, stage, base: self.base, durable: self.durable };
        self.flight = Some(Flight { end: self.base + staged as u64, base: self.base });
        self.base += whole as u64;
        let io = self.io.as_ref().expect("started above");
        // The thread ends only with a panic, which `land` passes on.
        io.jobs.send(job).expect("the file sink's I/O thread is running");
        Ok(())
    }

    /// Waits until everything submitted is durable (retrying a failed write first,
    /// like [`Self::sync`]).
    pub fn wait(&mut self) -> io::Result<()> {
        self.land()?;
        if self.failed {
            return self.sync();
        }
        Ok(())
    }

    /// Whether a submitted write is still under way (without waiting for it).
    pub fn busy(&mut self) -> bool {
        if self.flight.is_none() || self.arrived.is_some() {
            return false;
        }
        let io = self.io.as_ref().expect("a write in flight has a thread");
        match io.landed.try_recv() {
            Ok(landed) => {
                self.arrived = Some(landed);
                false
            }
            Err(mpsc::TryRecvError::Empty) => true,
            Err(mpsc::TryRecvError::Disconnected) => false, // `land` reports it
        }
    }

    /// Takes back the write in flight, if any, with its outcome.
    fn land(&mut self) -> io::Result<()> {
        if self.flight.is_none() {
            return Ok(());
        }
        if let Some(landed) = self.arrived.take() {
            return self.landed(landed);
        }
        let io = self.io.as_ref().expect("a write in flight has a thread");
        let Ok(landed) = io.landed.recv() else {
            // Only a panic ends the thread with a write in flight: pass it on (what was
            // in flight is not acknowledged, so it is written again after a restart).
            let io = self.io.take().expect("checked above");
            let panic = io.handle.join().err();
            std::panic::resume_unwind(panic.unwrap_or_else(|| Box::new("the file sink's I/O thread ended with a write in flight")));
        };
        self.landed(landed)
    }

    fn landed(&mut self, Landed { writer, stage, result }: Landed) -> io::Result<()> {
        let flight = self.flight.take().expect("a write was in flight");
        self.writer = Some(writer);
        match result {
            Ok(()) => {
                self.durable = flight.end;
                self.spare = Some(stage);
                Ok(())
            }
            Err(e) => {
                // The file was cut back to `durable`: what the write held, then what was
                // staged since, is all pending again, for the retry.
                let carried = (flight.end - self.base) as usize;
                let mut pending = stage;
                pending.extend(&self.stage.bytes()[carried..]);
                self.stage = pending;
                self.base = flight.base;
                self.failed = true;
                Err(e)
            }
        }
    }

    /// `hook` is called (on the I/O thread) after each write lands, so that whoever
    /// waits for it can sleep rather than poll [`Self::busy`].
    pub fn on_landed(&mut self, hook: LandedHook) {
        self.on_landed = Some(hook);
    }

    /// The I/O thread, started on first use; `None` if it cannot be started.
    fn io_thread(&mut self) -> Option<&IoThread> {
        if self.io.is_none() {
            let (jobs, inbox) = mpsc::sync_channel::<WriteJob>(1);
            let (outbox, landed) = mpsc::sync_channel::<Landed>(1);
            let hook = self.on_landed.clone();
            let spawned = thread::Builder::new().name("sink-io".into()).spawn(move || {
                for job in inbox {
                    if outbox.send(job.run()).is_err() {
                        break;
                    }
                    if let Some(hook) = &hook {
                        hook();
                    }
                }
            });
            match spawned {
                Ok(handle) => self.io = Some(IoThread { jobs, landed, handle }),
                Err(e) => tracing::warn!(error = %e, "cannot start the file sink's I/O thread; writing from the sink thread"),
            }
        }
        self.io.as_ref()
    }

    /// Opens the path again and stages what was not yet synced after its end.
    fn reopen(&mut self) -> io::Result<()> {
        let pending = self.stage.bytes()[(self.durable - self.base) as usize..].to_vec();
        let direct = self.try_direct && self.is_direct();
        let mut fresh = Self::open_with(&self.path, false, direct)?;
        fresh.append(&pending);
        fresh.io = self.io.take();
        fresh.on_landed = self.on_landed.take();
        *self = fresh;
        Ok(())
    }

    /// Positions the stage at the file's end; a partial last block is read back into
    /// it so that whole blocks can be rewritten.
    fn start_at_end(&mut self) -> io::Result<()> {
        let writer = self.writer.as_ref().expect("opened, nothing in flight");
        let len = writer.cut_torn_line()?;
        self.durable = len;
        self.base = writer.whole_blocks(len as usize) as u64;
        let tail = (len - self.base) as usize;
        if tail > 0 {
            let mut head = vec![0; tail];
            writer.plain.read_exact_at(&mut head, self.base)?;
            self.stage.extend(&head);
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    /// A write in flight is finished (and its outcome dropped): the descriptors are
    /// not closed under it.
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            drop(io.jobs);
            let _ = io.handle.join();
        }
    }
}

impl WriteJob {
    fn run(self) -> Landed {
        let WriteJob { mut writer, stage, base, durable } = self;
        let result = writer.write_synced(stage.bytes(), base, durable).map(|_| ());
        Landed { writer, stage, result }
    }
}

impl Writer {
    /// How much of `staged` bytes goes out as whole blocks (all of it, written plainly).
    fn whole_blocks(&self, staged: usize) -> usize {
        if self.direct.is_some() {
            staged / ALIGN * ALIGN
        } else {
            staged
        }
    }

    /// Writes `bytes` at `base` and fdatasyncs; returns how many went out as whole
    /// blocks. On failure the file is cut back to `durable`, never left ending in half
    /// a batch.
    fn write_synced(&mut self, bytes: &[u8], base: u64, durable: u64) -> io::Result<usize> {
        if !self.regular {
            return self.write_in_order(bytes);
        }
        let r = self.write_at_base(bytes, base, durable);
        if r.is_err() {
            let _ = self.plain.set_len(durable);
        }
        r
    }

    /// `bytes` start at `base`; the file's length before is `durable`.
    fn write_at_base(&mut self, bytes: &[u8], base: u64, durable: u64) -> io::Result<usize> {
        let whole = self.whole_blocks(bytes.len());
        let mut from = 0;
        if whole > 0 && durable > base {
            self.write_cached_head(&bytes[..ALIGN], base)?;
            from = ALIGN;
        }
        if whole > from {
            self.write_blocks(&bytes[from..whole], base + from as u64)?;
        }
        if bytes.len() > whole {
            self.plain.write_all_at(&bytes[whole..], base + whole as u64)?;
        }
        self.plain.sync_data()?;
        Ok(whole)
    }

    /// Writes the block holding the file's old end (the last sync's partial block,
    /// completed) through the page cache, and waits until it is on its way to the
    /// disk, before the whole blocks after it go out directly.
    ///
    /// Not directly: a reader may hold that block in the page cache, and a direct
    /// write over a cached block is not coherent with buffered reads — Linux grows the
    /// file's size before it drops the cached copy, so a reader in between reads the
    /// file's new length with zeros where the new bytes are (a stress test of a
    /// reader following the file saw NULs within a second). The wait keeps the order a
    /// crash needs: the direct blocks after it (and the length covering them) never
    /// reach the disk before it does.
    fn write_cached_head(&mut self, block: &[u8], at: u64) -> io::Result<()> {
        self.plain.write_all_at(block, at)?;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: a plain system call on a descriptor we own; it reads no memory of ours.
        let r = unsafe { libc::sync_file_range(self.plain.as_raw_fd(), at as i64, block.len() as i64, flags) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A device or a pipe: no offsets to write at, nothing to cut back or fsync.
    fn write_in_order(&mut self, bytes: &[u8]) -> io::Result<usize> {
        (&self.plain).write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_blocks(&mut self, bytes: &[u8], base: u64) -> io::Result<()> {
        let Some(direct) = &self.direct else {
            return self.plain.write_all_at(bytes, base);
        };
        match direct.write_all_at(bytes, base) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %self.path.display(), "the file system refuses direct writes here; writing through the page cache");
                self.direct = None;
                self.plain.write_all_at(bytes, base)
            }
            r => r,
        }
    }

    /// A file written by this sink ends with a newline unless a crash cut a write
    /// short (whole blocks are written before the partial last one). What follows
    /// the last newline was never acknowledged and will be sent again, so it is cut
    /// off rather than left to be glued to the next line. Returns the length after.
    fn cut_torn_line(&self) -> io::Result<u64> {
        if !self.regular {
            return Ok(0);
        }
        let len = self.plain.metadata()?.len();
        let whole = end_of_last_line(&self.plain, len)?;
        if whole < len {
            tracing::warn!(path = %self.path.display(), bytes = len - whole, "cutting a torn last line left by an interrupted write (it is sent again)");
            self.plain.set_len(whole)?;
            self.plain.sync_data()?;
        }
        Ok(whole)
    }
}

/// The length of `file` up to and including its last newline (0 if it has none).
fn end_of_last_line(file: &File, len: u64) -> io::Result<u64> {
    let mut chunk = vec![0u8; 64 << 10];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - start) as usize];
        file.read_exact_at(piece, start)?;
        if let Some(i) = memchr::memrchr(b'\n', piece) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Read and write, so that a torn last line can be found and cut; a device or a pipe
/// that cannot be opened for reading (a FIFO with no writer to read from) is opened
/// write-only.
fn open_plain(path: &Path, truncate: bool) -> io::Result<File> {
    let regular = std::fs::metadata(path).map_or(true, |m| m.file_type().is_file());
    OpenOptions::new().read(regular).write(true).create(regular).truncate(truncate && regular).open(path)
}

fn open_direct(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::info!(path = %path.display(), "the file system does not take direct writes; writing through the page cache");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A growable byte buffer whose first byte is `ALIGN`-aligned (a `Vec` with slack in
/// front), backed by huge pages where it can be.
struct Stage {
    vec: Vec<u8>,
    /// Index of the aligned first byte in `vec`.
    start: usize,
    len: usize,
}

impl Stage {
    /// A stage of at least [`HUGE_PAGE`] starts on a huge page boundary and asks the
    /// kernel to back it with huge pages (`MADV_HUGEPAGE`; a hint, ignored where
    /// transparent huge pages are off). A direct write pins every page of the memory
    /// it writes from, one 4 KiB page at a time, and the copy into the stage walks
    /// the page tables once per page; in a virtual machine each of those walks is a
    /// nested one. With 2 MiB pages, pinning and copying on the live node took 40 %
    /// less (BENCHMARKS.md). The slack before the aligned start is allocated zeroed
    /// and never written, so it is not resident.
    ///
    /// Only the first [`HUGE_BYTES`] ask for huge pages: a huge page is resident
    /// whole once touched, and the end of a stage is not always filled, while the
    /// live node's writes fit in the first pages.
    fn with_capacity(capacity: usize) -> Self {
        let align = if capacity >= HUGE_PAGE { HUGE_PAGE } else { ALIGN };
        let vec = vec![0u8; capacity + align];
        let start = vec.as_ptr().align_offset(align);
        if align == HUGE_PAGE {
            let whole_pages = (vec.len() - start).min(HUGE_BYTES) / HUGE_PAGE * HUGE_PAGE;
            // SAFETY: advice about memory `vec` owns (from `start`, a page boundary, for
            // whole huge pages within it); it changes neither contents nor mappings.
            let _ = unsafe { libc::madvise(vec.as_ptr().add(start) as *mut libc::c_void, whole_pages, libc::MADV_HUGEPAGE) };
        }
        Self { vec, start, len: 0 }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }

    fn extend(&mut self, bytes: &[u8]) {
        let needed = self.len + bytes.len();
        if self.start + needed > self.vec.len() {
            // Whole MiB with one to spare, not the next power of two: a stage of one
            // write plus a record would otherwise double (memory is budgeted).
            let mut bigger = Self::with_capacity(needed.next_multiple_of(1 << 20) + (1 << 20));
            bigger.vec[bigger.start..bigger.start + self.len].copy_from_slice(self.bytes());
            bigger.len = self.len;
            *self = bigger;
        }
        let at = self.start + self.len;
        self.vec[at..at + bytes.len()].copy_from_slice(bytes);
        self.len = needed;
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the first `n` bytes (a multiple of `ALIGN` when writing directly).
    fn consume(&mut self, n: usize) {
        let (start, len) = (self.start, self.len);
        self.vec.copy_within(start + n..start + len, start);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests;
