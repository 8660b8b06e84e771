//! The local sinks: standard output and a file, written as JSON lines.
//!
//! [`JsonLines`] writes batches whole and says when they are durable (a file is
//! fsynced; see [`file`] for its I/O thread and how a torn last line is cut after a
//! crash). [`LocalShipper`] is such a sink's thread: it reads its cursor's records
//! from the buffer, writes them pipelined (one write under way while the next is
//! staged), and acknowledges each write's records once it is durable
//! (`logferry_sink_requests_total` counts the writes). Output failures
//! (disk full, a closed pipe) are retried with backoff until they work; the data
//! waits in the buffer meanwhile and `/readyz` says so.

pub mod file;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::{ShipSettings, SinkError, ShipReport, Target, SINK_READ_BYTES};
use crate::buffer::segment::Record;
use crate::buffer::Buffer;
use crate::metrics::SinkCounters;

/// At most this much goes into one write of a file sink (one fsync each): while a
/// write is under way, what arrives is staged for the next, up to this (and the
/// record that crosses it). Two writes' worth is resident in the sink's stages, so
/// this is memory too: writes of 4 MiB cost no more CPU than writes of 8 MiB and
/// keep a dense catch-up's peak ~5 MiB lower (BENCHMARKS.md).
const LOCAL_WRITE_BYTES: usize = 4 << 20;
/// While a write is under way, how long a read from the buffer waits for records at
/// most: the I/O thread nudges the buffer when the write lands (this only bounds a
/// wait that something went wrong with).
const LOOK_WHILE_WRITING: Duration = Duration::from_secs(1);
/// Writes batches of JSON lines to stdout or a file.
pub struct JsonLines {
    out: Out,
}

enum Out {
    Stdout(io::Stdout),
    /// Staged, written at `finish` or `submit` (see [`file`]); boxed, as it is large.
    File(Box<file::OutputFile>),
}

impl JsonLines {
    /// Opens the target; a file is appended to, or emptied first when `truncate`.
    pub fn open(target: &Target, truncate: bool) -> Result<Self, SinkError> {
        let out = match target {
            Target::Stdout => Out::Stdout(io::stdout()),
            Target::File(path) => Out::File(Box::new(
                file::OutputFile::open(path, truncate).map_err(|source| SinkError::Open { path: path.clone(), source })?,
            )),
            Target::Aws { sink, .. } => {
                return Err(SinkError::Remote(anyhow::anyhow!("{} is not written as JSON lines here: use sink::aws::Background", sink.name())))
            }
        };
        Ok(Self { out })
    }

    /// `hook` is called each time a file write lands (on the file's I/O thread).
    pub fn on_landed(&mut self, hook: file::LandedHook) {
        if let Out::File(f) = &mut self.out {
            f.on_landed(hook);
        }
    }

    /// Writes one batch of whole lines (to a file: stages it for [`Self::finish`]).
    pub fn write_batch(&mut self, batch: &[u8]) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().write_all(batch),
            Out::File(f) => {
                f.append(batch);
                Ok(())
            }
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Flushes, and for a file fsyncs: after this returns, every batch is durable.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().flush(),
            Out::File(f) => f.sync(),
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Starts making every batch durable without waiting (a file: written on its I/O
    /// thread while the next batches are staged); [`Self::wait`] waits for it.
    /// Standard output is flushed here and now.
    pub fn submit(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().flush(),
            Out::File(f) => f.submit(),
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Whether a submitted write is still under way.
    pub fn busy(&mut self) -> bool {
        match &mut self.out {
            Out::Stdout(_) => false,
            Out::File(f) => f.busy(),
        }
    }

    /// After this returns, every batch submitted is durable.
    pub fn wait(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(_) => Ok(()),
            Out::File(f) => f.wait(),
        };
        r.map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: io::Error) -> SinkError {
        let target = match &self.out {
            Out::Stdout(_) => "standard output".to_string(),
            Out::File(f) => f.path().display().to_string(),
        };
        SinkError::Write { target, source }
    }
}

/// Ships what the buffer holds to stdout or a file and acknowledges it.
pub struct LocalShipper {
    buffer: Buffer,
    /// This sink's cursor in the buffer.
    cursor: usize,
    sink: JsonLines,
    /// The buffer thread has finished: once the buffer is drained, so are we.
    writer_done: Arc<AtomicBool>,
    ack_interval: Duration,
    counters: Arc<SinkCounters>,
}

impl LocalShipper {
    /// Opens the sink's output (a file is appended to).
    pub fn open(ship: ShipSettings) -> Result<Self, SinkError> {
        let mut sink = JsonLines::open(&ship.target, false)?;
        let buffer = ship.buffer.clone();
        sink.on_landed(Arc::new(move || buffer.nudge()));
        Ok(Self {
            sink,
            buffer: ship.buffer,
            cursor: ship.cursor,
            writer_done: ship.writer_done,
            ack_interval: ship.ack_interval,
            counters: ship.counters,
        })
    }
}

impl LocalShipper {
    /// Returns (records, bytes, events) shipped. Writing is pipelined: while one write
    /// is under way (on the file's I/O thread), what arrives is staged for the next,
    /// so that the disk is kept busy with few, large writes (one fsync each); what
    /// comes while nothing is under way is written at once; each write's records are
    /// acknowledged once it is durable.
    pub fn run(mut self) -> anyhow::Result<ShipReport> {
        let mut shipped = ShipReport::default();
        let (mut in_flight, mut staged): (Vec<Record>, Vec<Record>) = (Vec::new(), Vec::new());
        let mut staged_bytes = 0;
        let mut last_persist = Instant::now().checked_sub(self.ack_interval).unwrap_or_else(Instant::now);
        // Nudges seen: one after this (a write landing, the buffer thread finishing)
        // ends the next wait at once.
        let mut seen = self.buffer.nudges();
        loop {
            // Waits for records, or for the write under way to land (not at all if it
            // has: standard output, or a file write already done); with nothing in
            // flight, until acknowledgements are due to be saved, or for records only
            // — except once the buffer thread has finished: then nothing will nudge,
            // and the end is near (a look, then the check below).
            let wait = if !in_flight.is_empty() {
                if self.sink.busy() {
                    LOOK_WHILE_WRITING
                } else {
                    Duration::ZERO
                }
            } else if self.writer_done.load(Ordering::Acquire) {
                Duration::ZERO
            } else {
                match self.buffer.ack_save_due_in(self.cursor) {
                    None => crate::buffer::IDLE_WAIT,
                    Some(due) => due.max(self.ack_interval.saturating_sub(last_persist.elapsed())).max(Duration::from_millis(1)),
                }
            };
            let room = LOCAL_WRITE_BYTES.saturating_sub(staged_bytes).max(1);
            let batch = self.buffer.read_for_since(self.cursor, room.min(SINK_READ_BYTES), wait, seen)?;
            seen = self.buffer.nudges();
            if batch.is_empty() && in_flight.is_empty() && staged.is_empty() && self.writer_done.load(Ordering::Acquire) && self.buffer.drained_for(self.cursor) {
                break;
            }
            let was_writing = !in_flight.is_empty();
            for r in batch {
                retry(&self.counters, || self.sink.write_batch(&r.payload));
                staged_bytes += r.payload.len();
                staged.push(r);
            }
            if was_writing {
                if staged_bytes < LOCAL_WRITE_BYTES && self.sink.busy() {
                    continue;
                }
                retry(&self.counters, || self.sink.wait());
                self.acknowledge(std::mem::take(&mut in_flight), &mut shipped);
            }
            // What is staged goes at once: the buffer thread announces a tailer
            // round's records together, so they are one write already.
            if !staged.is_empty() {
                retry(&self.counters, || self.sink.submit());
                in_flight = std::mem::take(&mut staged);
                staged_bytes = 0;
            }
            if last_persist.elapsed() >= self.ack_interval {
                self.buffer.persist_ack_when_due();
                last_persist = Instant::now();
            }
        }
        retry(&self.counters, || self.sink.finish());
        self.buffer.persist_ack_or_retry_later();
        Ok(shipped)
    }

    /// Releases records whose write is durable; counts them in `shipped`, and the
    /// write as the sink's request.
    fn acknowledge(&self, records: Vec<Record>, shipped: &mut ShipReport) {
        self.counters.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.buffer.ack_all_for(self.cursor, records.iter().map(|r| r.seq));
        for r in &records {
            shipped.records += 1;
            shipped.bytes += r.payload.len() as u64;
            shipped.events += u64::from(r.events);
            self.counters.records_ok.fetch_add(u64::from(r.events), Ordering::Relaxed);
            self.counters.bytes.fetch_add(r.payload.len() as u64, Ordering::Relaxed);
        }
        records.into_iter().for_each(|r| self.buffer.recycle(r.payload));
    }
}

#[cfg(test)]
mod tests;

/// Output failures (disk full, a closed pipe) are retried with backoff: the data
/// waits in the buffer and, behind it, unread in the log files. `/readyz` says so.
/// Each failed try counts as a failed request; a request that works is counted by
/// [`LocalShipper::acknowledge`], once per write.
fn retry<E: std::fmt::Display>(counters: &SinkCounters, mut f: impl FnMut() -> Result<(), E>) {
    let mut backoff = Backoff::try_new(Duration::from_millis(100), Duration::from_secs(5), crate::event::time::now() as u64)
        .expect("constant bounds are valid");
    let mut logged = false;
    while let Err(e) = f() {
        counters.failed(e.to_string());
        counters.retries.fetch_add(1, Ordering::Relaxed);
        if !logged {
            tracing::error!(error = %e, "output failed; retrying until it works");
            logged = true;
        }
        thread::sleep(backoff.next_wait());
    }
    counters.succeeded_quietly();
    if logged {
        tracing::info!("output works again");
    }
}
