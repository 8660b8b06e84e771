//! Dead letters: events a sink can never deliver (larger than its limit, or refused
//! by AWS as permanently invalid), kept whole in `<data_dir>/dead-letter/<sink>.jsonl`
//! so that nothing leaves the node uncounted and unrecoverable.
//!
//! A set-aside event waits until it is written and fsynced; only then is the buffer
//! record holding it acknowledged (the caller counts it as outstanding until
//! [`DeadLetters::flush`] names its record). The file is written on a thread of its own,
//! so that a slow or failing disk never stalls the delivery loop that sets events
//! aside. A write that fails (a full or read-only disk, a directory that cannot be
//! created) is undone, reported on `/readyz` and retried after a backoff: it never
//! ends the delivery loop, and a crash meanwhile only sends the record through the
//! sink again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::sink::backoff::{seed, Backoff};
use crate::metrics::Fault;

/// First and longest wait before writing again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// While lines are with the writer, the delivery loop looks for its word this often.
const POLL: Duration = Duration::from_millis(20);

/// Letters for the writer, each with the tag of the record it came from.
type Letters = Vec<(u64, Vec<u8>)>;
/// The writer's word: the tags of the lines written, and their bytes.
type Written = (Vec<u64>, usize);

/// The lines set aside, and the thread that writes them (started with the first).
pub struct DeadLetters {
    path: PathBuf,
    fault: Fault,
    /// Letters not handed to the writer yet.
    waiting: Letters,
    /// Letters set aside and not yet written (waiting, or with the writer), and bytes.
    unwritten: usize,
    unwritten_bytes: usize,
    writer: Option<(Sender<Letters>, Receiver<Written>)>,
}

impl DeadLetters {
    /// Dead letters of `sink` under `data_dir`; write failures are reported on `fault`.
    pub fn new(data_dir: &Path, sink: &str, fault: Fault) -> Self {
        Self {
            path: data_dir.join("dead-letter").join(format!("{sink}.jsonl")),
            fault,
            waiting: Vec::new(),
            unwritten: 0,
            unwritten_bytes: 0,
            writer: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets `line` (ending in `\n`) of record `tag` aside, to be written.
    pub fn set_aside(&mut self, tag: u64, line: Vec<u8>) {
        self.unwritten += 1;
        self.unwritten_bytes += line.len();
        self.waiting.push((tag, line));
    }

    /// Every line set aside is written.
    pub fn is_empty(&self) -> bool {
        self.unwritten == 0
    }

    /// Bytes set aside and not written yet (they count against the sink's memory bound).
    pub fn waiting_bytes(&self) -> usize {
        self.unwritten_bytes
    }

    /// When to look for the writer's word again, while lines are unwritten.
    pub fn poll_at(&self) -> Option<Instant> {
        (!self.is_empty()).then(|| Instant::now() + POLL)
    }

    /// Hands the lines set aside to the writer, and returns the tags of the lines
    /// written (and fsynced) since the last call, one per line. Never blocks.
    pub fn flush(&mut self) -> Vec<u64> {
        if !self.waiting.is_empty() && self.writer.is_none() {
            match spawn_writer(self.path.clone(), self.fault.clone()) {
                Ok(w) => self.writer = Some(w),
                Err(e) => {
                    if self.fault.set(format!("cannot start the dead-letter writer for {}: {e}", self.path.display())) {
                        tracing::error!(error = %e, "cannot start a thread to write dead letters; they wait in memory");
                    }
                }
            }
        }
        let mut done = Vec::new();
        let Some((lines, written)) = &self.writer else { return done };
        if !self.waiting.is_empty() && lines.send(std::mem::take(&mut self.waiting)).is_err() {
            tracing::error!("the dead-letter writer stopped; dead letters wait in memory");
        }
        while let Ok((tags, bytes)) = written.try_recv() {
            self.unwritten -= tags.len();
            self.unwritten_bytes -= bytes;
            done.extend(tags);
        }
        done
    }
}

/// Starts the thread that appends lines to `path`, retrying failed writes with backoff.
fn spawn_writer(path: PathBuf, fault: Fault) -> io::Result<(Sender<Letters>, Receiver<Written>)> {
    let (lines_tx, lines_rx) = mpsc::channel::<Letters>();
    let (written_tx, written_rx) = mpsc::channel::<Written>();
    std::thread::Builder::new().name("dead-letter".into()).spawn(move || write_forever(&path, &fault, &lines_rx, &written_tx))?;
    Ok((lines_tx, written_rx))
}

/// The writer's loop: takes what came, writes and fsyncs it, says so; a failure is
/// undone and retried after a backoff. Ends when the delivery loop is gone.
fn write_forever(path: &Path, fault: &Fault, lines: &Receiver<Letters>, written: &Sender<Written>) {
    let mut file = None;
    let mut pending = Letters::new();
    let mut backoff = Backoff::try_new(RETRY_FIRST, RETRY_MAX, seed()).expect("valid bounds");
    loop {
        if pending.is_empty() {
            match lines.recv() {
                Ok(more) => pending = more,
                Err(_) => return,
            }
        }
        pending.extend(lines.try_iter().flatten());
        match write_lines(&mut file, path, &pending) {
            Ok(bytes) => {
                backoff.reset();
                if fault.clear() {
                    tracing::info!(path = %path.display(), "dead letters are written again");
                }
                let tags = pending.drain(..).map(|(tag, _)| tag).collect();
                if written.send((tags, bytes)).is_err() {
                    return;
                }
            }
            Err(e) => {
                file = None;
                let why = format!("cannot write dead letters to {}: {e}", path.display());
                if fault.set(why.clone()) {
                    tracing::error!(error = %why, events = pending.len(), "dead letters wait in memory and are retried; is data_dir full or read-only?");
                }
                std::thread::sleep(RETRY_FIRST.max(backoff.next_wait()));
            }
        }
    }
}

/// The open file and its length after the last complete write.
struct Open {
    file: File,
    len: u64,
}

/// Appends `lines` and fsyncs; returns their bytes. A failure cuts the file back to
/// where it was, so a retry never leaves a torn or doubled line.
fn write_lines(file: &mut Option<Open>, path: &Path, lines: &Letters) -> io::Result<usize> {
    let open = match file {
        Some(open) => open,
        None => file.insert(open_for_append(path)?),
    };
    let mut bytes = 0;
    let written = (|| {
        for (_, line) in lines {
            open.file.write_all(line)?;
            bytes += line.len();
        }
        open.file.sync_data()
    })();
    match written {
        Ok(()) => {
            open.len += bytes as u64;
            Ok(bytes)
        }
        Err(e) => {
            let _ = open.file.set_len(open.len);
            Err(e)
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

    /// Flushes until `n` tags came back (or 10 s passed).
    fn flush_until(dead: &mut DeadLetters, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(dead.flush());
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

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
        let deadline = Instant::now() + Duration::from_secs(10);
        while fault.get().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(fault.get().unwrap().contains("cannot write dead letters"), "{:?}", fault.get());
        assert!(!dead.is_empty() && dead.poll_at().is_some());
        assert_eq!(dead.waiting_bytes(), 16);
        // Letters set aside meanwhile go out with the next try.
        dead.set_aside(5, b"{\"c\":3}\n".to_vec());
        assert!(dead.flush().is_empty());
        std::fs::remove_file(dir.path().join("dead-letter")).unwrap();
        let mut tags = flush_until(&mut dead, 3);
        tags.sort();
        assert_eq!(tags, vec![3, 4, 5]);
        assert!(dead.is_empty() && dead.poll_at().is_none() && dead.waiting_bytes() == 0);
        assert_eq!(fault.get(), None);
        assert!(fault.count() >= 1);
        assert_eq!(std::fs::read(dead.path()).unwrap(), b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }

    #[test]
    fn a_torn_last_line_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dead-letter")).unwrap();
        std::fs::write(dir.path().join("dead-letter/s.jsonl"), b"{\"whole\":1}\n{\"to").unwrap();
        let mut dead = DeadLetters::new(dir.path(), "s", Fault::default());
        dead.set_aside(0, b"{\"next\":2}\n".to_vec());
        assert_eq!(flush_until(&mut dead, 1), vec![0]);
        assert_eq!(std::fs::read(dead.path()).unwrap(), b"{\"whole\":1}\n{\"to\n{\"next\":2}\n");
    }
}
