//! The file sink's writer: appends JSON lines to a file, durable at each `sync`.
//!
//! Writing through the page cache costs a node twice: every byte is copied into a
//! freshly allocated cache page (on the nodes we measured, that copy cost the sink
//! more CPU than reading and encoding the same logs), and the cache then fills with
//! output nobody reads back, pushing out the log files that will be read. So the
//! writer stages what it is given in one reused, page-aligned buffer and writes whole
//! 4 KiB blocks with `O_DIRECT`, straight from that buffer to the disk. Only the last,
//! partial block of a sync goes through the page cache (an ordinary write at the
//! same offset); the next sync overwrites that block directly with more appended.
//! The file's length is always exactly the bytes written, never padded.
//!
//! Where the file system refuses `O_DIRECT` (at open, or with `EINVAL` on the first
//! write), the same staging runs over ordinary writes instead, with one log line.
//!
//! A crash can leave the file ending in part of a line (whole blocks are written
//! first); opening the file cuts that back to its last newline before appending.
//!
//! Failure: `append` only copies into memory and cannot fail. `sync` writes what is
//! staged and fdatasyncs; if any of that fails, the file is cut back to the length of
//! the last successful sync (so it never ends in half a batch) and the next call
//! reopens the path first (the disk may have been replaced or remounted), appending
//! at whatever end the file has then. Nothing staged is dropped until it is synced.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Block size and buffer alignment for direct writes (a multiple of every common
/// logical block size).
const ALIGN: usize = 4096;

/// Staging capacity allocated up front; it grows when one sync's worth is larger.
const STAGE_BYTES: usize = 4 << 20;

/// Appends to one file; see the module doc.
pub struct OutputFile {
    path: PathBuf,
    /// Ordinary descriptor: the partial last block, reads, truncation, fdatasync.
    plain: File,
    /// `O_DIRECT` descriptor for whole blocks, if the file system takes it.
    direct: Option<File>,
    stage: Stage,
    /// File offset of the stage's first byte; a multiple of `ALIGN` with `direct`.
    base: u64,
    /// File length after the last successful sync.
    durable: u64,
    /// The last sync failed: reopen before the next.
    failed: bool,
    /// Allow `O_DIRECT` (off only to test the fallback).
    try_direct: bool,
}

impl OutputFile {
    /// Opens `path` for appending (creating it; emptied first when `truncate`).
    pub fn open(path: &Path, truncate: bool) -> io::Result<Self> {
        Self::open_with(path, truncate, true)
    }

    /// Like [`Self::open`]; `try_direct = false` always uses ordinary writes.
    pub fn open_with(path: &Path, truncate: bool, try_direct: bool) -> io::Result<Self> {
        let plain = OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(path)?;
        let direct = if try_direct { open_direct(path)? } else { None };
        let mut file = Self {
            path: path.to_path_buf(),
            plain,
            direct,
            stage: Stage::with_capacity(STAGE_BYTES),
            base: 0,
            durable: 0,
            failed: false,
            try_direct,
        };
        file.start_at_end()?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether whole blocks go out with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Stages `bytes` to be written at the next [`Self::sync`].
    pub fn append(&mut self, bytes: &[u8]) {
        self.stage.extend(bytes);
    }

    /// Writes everything staged and makes it durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.failed {
            self.reopen()?;
        }
        match self.write_staged() {
            Ok(()) => {
                self.failed = false;
                Ok(())
            }
            Err(e) => {
                // Never leave half a batch behind; the staged bytes stay for the retry.
                let _ = self.plain.set_len(self.durable);
                self.failed = true;
                Err(e)
            }
        }
    }

    fn write_staged(&mut self) -> io::Result<()> {
        let staged = self.stage.len();
        let whole = if self.direct.is_some() { staged / ALIGN * ALIGN } else { staged };
        if whole > 0 {
            self.write_blocks(whole)?;
        }
        if staged > whole {
            self.plain.write_all_at(&self.stage.bytes()[whole..], self.base + whole as u64)?;
        }
        self.plain.sync_data()?;
        self.durable = self.base + staged as u64;
        self.base += whole as u64;
        self.stage.consume(whole);
        Ok(())
    }

    fn write_blocks(&mut self, whole: usize) -> io::Result<()> {
        let bytes = &self.stage.bytes()[..whole];
        let Some(direct) = &self.direct else {
            return self.plain.write_all_at(bytes, self.base);
        };
        match direct.write_all_at(bytes, self.base) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %self.path.display(), "the file system refuses direct writes here; writing through the page cache");
                self.direct = None;
                self.plain.write_all_at(bytes, self.base)
            }
            r => r,
        }
    }

    /// Opens the path again and stages what was not yet synced after its end.
    fn reopen(&mut self) -> io::Result<()> {
        let pending = self.stage.bytes()[(self.durable - self.base) as usize..].to_vec();
        let mut fresh = Self::open_with(&self.path, false, self.try_direct && self.direct.is_some())?;
        fresh.append(&pending);
        *self = fresh;
        Ok(())
    }

    /// Positions the stage at the file's end; a partial last block is read back into
    /// it so that whole blocks can be rewritten.
    fn start_at_end(&mut self) -> io::Result<()> {
        let len = self.cut_torn_line()?;
        self.durable = len;
        self.base = if self.direct.is_some() { len / ALIGN as u64 * ALIGN as u64 } else { len };
        let tail = (len - self.base) as usize;
        if tail > 0 {
            let mut head = vec![0; tail];
            self.plain.read_exact_at(&mut head, self.base)?;
            self.stage.extend(&head);
        }
        Ok(())
    }

    /// A file written by this sink ends with a newline unless a crash cut a write
    /// short (whole blocks are written before the partial last one). What follows
    /// the last newline was never acknowledged and will be sent again, so it is cut
    /// off rather than left to be glued to the next line. Returns the length after.
    fn cut_torn_line(&mut self) -> io::Result<u64> {
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
/// front; no unsafe code).
struct Stage {
    vec: Vec<u8>,
    /// Index of the aligned first byte in `vec`.
    start: usize,
    len: usize,
}

impl Stage {
    fn with_capacity(capacity: usize) -> Self {
        let vec = vec![0u8; capacity + ALIGN];
        let start = vec.as_ptr().align_offset(ALIGN);
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
            let mut bigger = Self::with_capacity(needed.next_power_of_two());
            bigger.vec[bigger.start..bigger.start + self.len].copy_from_slice(self.bytes());
            bigger.len = self.len;
            *self = bigger;
        }
        let at = self.start + self.len;
        self.vec[at..at + bytes.len()].copy_from_slice(bytes);
        self.len = needed;
    }

    /// Drops the first `n` bytes (a multiple of `ALIGN` when writing directly).
    fn consume(&mut self, n: usize) {
        let (start, len) = (self.start, self.len);
        self.vec.copy_within(start + n..start + len, start);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(file: &mut OutputFile, pieces: &[&[u8]]) {
        for p in pieces {
            file.append(p);
            file.sync().unwrap();
        }
    }

    #[test]
    fn appends_exactly_what_it_is_given_across_partial_blocks() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.jsonl");
            let mut f = OutputFile::open_with(&path, false, direct).unwrap();
            let mut want = Vec::new();
            for (i, n) in [1usize, 4095, 1, 4096, 10_000, 3, 70_000, 12_289].into_iter().enumerate() {
                let piece: Vec<u8> = (0..n).map(|j| b'a' + ((i + j) % 26) as u8).collect();
                f.append(&piece);
                want.extend_from_slice(&piece);
                if i % 2 == 1 {
                    f.sync().unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), want, "direct={direct} after piece {i}");
                }
            }
            f.sync().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), want);
        }
    }

    #[test]
    fn reopening_an_existing_file_appends_after_its_unaligned_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut existing = vec![b'x'; 4999];
        existing.push(b'\n');
        std::fs::write(&path, &existing).unwrap();
        let mut f = OutputFile::open(&path, false).unwrap();
        let mut ys = vec![b'y'; 8999];
        ys.push(b'\n');
        write_all(&mut f, &[b"first\n", &ys]);
        drop(f);
        let mut f = OutputFile::open(&path, false).unwrap();
        write_all(&mut f, &[b"again\n"]);
        let mut want = existing;
        want.extend_from_slice(b"first\n");
        want.extend_from_slice(&ys);
        want.extend_from_slice(b"again\n");
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(OutputFile::open(&path, true).unwrap().durable, 0, "truncate empties the file");
        assert!(std::fs::read(&path).unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_line_left_by_a_crash_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut torn = b"{\"a\":1}\n".repeat(10_000);
        torn.extend_from_slice(&[b'x'; 70_000]); // a half-written line, longer than a read-back chunk
        std::fs::write(&path, &torn).unwrap();
        let mut f = OutputFile::open(&path, false).unwrap();
        write_all(&mut f, &[b"{\"b\":2}\n"]);
        let mut want = b"{\"a\":1}\n".repeat(10_000);
        want.extend_from_slice(b"{\"b\":2}\n");
        assert_eq!(std::fs::read(&path).unwrap(), want);

        std::fs::write(&path, b"no newline at all").unwrap();
        let mut f = OutputFile::open(&path, false).unwrap();
        write_all(&mut f, &[b"line\n"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"line\n");
    }

    #[test]
    fn a_staged_batch_larger_than_the_stage_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut f = OutputFile::open(&path, false).unwrap();
        let big: Vec<u8> = (0..STAGE_BYTES * 2 + 123).map(|i| (i % 251) as u8).collect();
        write_all(&mut f, &[b"head\n", &big]);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..5], b"head\n");
        assert_eq!(&got[5..], &big[..]);
    }

    /// What the file holds after synced appends, restarts (a reopen cuts a partial last
    /// line) and unsynced appends lost to a restart.
    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Sync,
        Restart,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0usize..20_000).prop_map(Op::Append),
            2 => Just(Op::Sync),
            1 => Just(Op::Restart),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn the_file_holds_exactly_what_was_synced(ops in proptest::collection::vec(op(), 1..40), direct: bool) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.jsonl");
            let mut f = OutputFile::open_with(&path, false, direct).unwrap();
            let (mut synced, mut staged) = (Vec::new(), Vec::new());
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Append(n) => {
                        let piece: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
                        f.append(&piece);
                        staged.extend_from_slice(&piece);
                    }
                    Op::Sync => {
                        f.sync().unwrap();
                        synced.append(&mut staged);
                        proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), synced.clone());
                    }
                    Op::Restart => {
                        drop(f);
                        staged.clear();
                        // Reopening cuts what follows the last newline.
                        synced.truncate(synced.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
                        f = OutputFile::open_with(&path, false, direct).unwrap();
                    }
                }
            }
            f.sync().unwrap();
            synced.append(&mut staged);
            proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), synced);
        }
    }

    #[test]
    fn after_a_failed_sync_the_path_is_reopened_and_nothing_staged_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut f = OutputFile::open(&path, false).unwrap();
        write_all(&mut f, &[b"one\n"]);
        // Make the next sync fail as a vanished disk would: the descriptors go bad.
        f.failed = true;
        std::fs::remove_file(&path).unwrap();
        f.append(b"two\n");
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n", "a replaced file gets what was not yet synced");
    }
}
