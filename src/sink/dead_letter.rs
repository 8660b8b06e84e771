//! Dead letters: events a sink can never deliver (larger than its limit, or refused
//! by AWS as permanently invalid), kept whole in `<data_dir>/dead-letter/<sink>.jsonl`
//! so that nothing leaves the node uncounted and unrecoverable.
//!
//! A set-aside event waits in memory until it is written and fsynced; only then is the
//! buffer record holding it acknowledged (the caller counts it as outstanding until
//! [`DeadLetters::flush`] names its record). A write that fails (a full or read-only
//! disk, a directory that cannot be created) is undone, reported on `/readyz` and
//! retried after a backoff: it never ends the delivery loop, and a crash meanwhile
//! only sends the record through the sink again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::backoff::{seed, Backoff};
use crate::metrics::Fault;

/// First and longest wait before writing again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// An append-only file of JSON lines, opened when the first line comes, and the lines
/// set aside but not written yet.
pub struct DeadLetters {
    path: PathBuf,
    file: Option<Open>,
    /// Lines not written yet, each with the tag of the record it came from.
    waiting: Vec<(u64, Vec<u8>)>,
    waiting_bytes: usize,
    retry_at: Option<Instant>,
    backoff: Backoff,
    fault: Fault,
}

/// The open file and its length after the last complete write.
struct Open {
    file: File,
    len: u64,
}

impl DeadLetters {
    /// Dead letters of `sink` under `data_dir`; write failures are reported on `fault`.
    pub fn new(data_dir: &Path, sink: &str, fault: Fault) -> Self {
        Self {
            path: data_dir.join("dead-letter").join(format!("{sink}.jsonl")),
            file: None,
            waiting: Vec::new(),
            waiting_bytes: 0,
            retry_at: None,
            backoff: Backoff::try_new(RETRY_FIRST, RETRY_MAX, seed()).expect("valid bounds"),
            fault,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets `line` (ending in `\n`) of record `tag` aside, to be written by the next
    /// [`flush`](Self::flush).
    pub fn set_aside(&mut self, tag: u64, line: Vec<u8>) {
        self.waiting_bytes += line.len();
        self.waiting.push((tag, line));
    }

    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Bytes waiting to be written (they count against the sink's memory bound).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// When a failed write is next tried, while lines wait.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| !self.is_empty())
    }

    /// Writes and fsyncs every waiting line, unless a failed write's backoff has not
    /// ended yet. Returns the tags of the lines written, one per line (empty when
    /// nothing was written); on failure the lines keep waiting.
    pub fn flush(&mut self) -> Vec<u64> {
        if self.waiting.is_empty() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Vec::new();
        }
        match self.write_waiting() {
            Ok(()) => {
                self.retry_at = None;
                self.backoff.reset();
                if self.fault.clear() {
                    tracing::info!(path = %self.path.display(), "dead letters are written again");
                }
                self.waiting_bytes = 0;
                self.waiting.drain(..).map(|(tag, _)| tag).collect()
            }
            Err(e) => {
                self.file = None;
                let wait = RETRY_FIRST.max(self.backoff.next_wait());
                self.retry_at = Some(Instant::now() + wait);
                let why = format!("cannot write dead letters to {}: {e}", self.path.display());
                if self.fault.set(why.clone()) {
                    tracing::error!(error = %why, events = self.waiting.len(), "dead letters wait in memory and are retried; is data_dir full or read-only?");
                }
                Vec::new()
            }
        }
    }

    /// Appends the waiting lines and fsyncs; a failure cuts the file back to where it
    /// was, so a retry never leaves a torn or doubled line.
    fn write_waiting(&mut self) -> io::Result<()> {
        let open = match &mut self.file {
            Some(open) => open,
            None => self.file.insert(open_for_append(&self.path)?),
        };
        let written = (|| {
            for (_, line) in &self.waiting {
                open.file.write_all(line)?;
            }
            open.file.sync_data()
        })();
        match written {
            Ok(()) => {
                open.len += self.waiting_bytes as u64;
                Ok(())
            }
            Err(e) => {
                let _ = open.file.set_len(open.len);
                Err(e)
            }
        }
    }
}

/// Opens (creating it and its directory) the file for appending; a last line torn by
/// a crash is ended, so that the next line starts on a line of its own.
fn open_for_append(path: &Path) -> io::Result<Open> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
    let mut len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            len += 1;
        }
    }
    Ok(Open { file, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_lines_and_a_later_one_writes_them_once() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: creating it fails.
        std::fs::write(dir.path().join("dead-letter"), b"in the way").unwrap();
        let fault = Fault::default();
        let mut dead = DeadLetters::new(dir.path(), "s", fault.clone());
        dead.set_aside(3, b"{\"a\":1}\n".to_vec());
        dead.set_aside(4, b"{\"b\":2}\n".to_vec());
        assert!(dead.flush().is_empty());
        assert!(!dead.is_empty());
        assert_eq!(dead.waiting_bytes(), 16);
        assert!(fault.get().unwrap().contains("cannot write dead letters"), "{:?}", fault.get());
        assert!(dead.retry_at().is_some());
        // Within the backoff nothing is tried.
        std::fs::remove_file(dir.path().join("dead-letter")).unwrap();
        assert!(dead.flush().is_empty());
        std::thread::sleep(dead.retry_at().unwrap() - Instant::now());
        assert_eq!(dead.flush(), vec![3, 4]);
        assert!(dead.is_empty() && dead.retry_at().is_none());
        assert_eq!(fault.get(), None);
        assert_eq!(fault.count(), 1);
        assert_eq!(std::fs::read(dead.path()).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn a_torn_last_line_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dead-letter")).unwrap();
        std::fs::write(dir.path().join("dead-letter/s.jsonl"), b"{\"whole\":1}\n{\"to").unwrap();
        let mut dead = DeadLetters::new(dir.path(), "s", Fault::default());
        dead.set_aside(0, b"{\"next\":2}\n".to_vec());
        assert_eq!(dead.flush(), vec![0]);
        assert_eq!(std::fs::read(dead.path()).unwrap(), b"{\"whole\":1}\n{\"to\n{\"next\":2}\n");
    }
}
