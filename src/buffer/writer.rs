//! The buffer thread: appends what the tailer read, commits in groups, and moves the
//! file checkpoints forward over what is safe.
//!
//! Each batch from the tailer is appended part by part (one record per set of sinks
//! it is routed to). The buffer holds records in memory and writes to disk only what
//! the sinks have not acknowledged within `fsync_interval`; group commit fsyncs what
//! was written (every `fsync_interval` or `fsync_bytes`). A batch's file positions go
//! into the checkpoints (saved every `checkpoint_interval`) only once the batch, and
//! every one before it, is acknowledged or fsynced: a checkpoint never covers data
//! that is neither delivered nor on disk, so a crash re-reads, never skips. The thread
//! is woken when the sinks have acknowledged the last batch appended
//! ([`Buffer::wake_when_safe`]), so that positions are saved as soon as what they cover
//! is delivered rather than at the next commit: a killed logferry repeats only what
//! was delivered since (with the checkpoints saved at the commit, a tailer round's
//! whole batch was in that window for up to `fsync_interval`).
//!
//! While appending waits for room (a sink down or slow), what was appended before
//! keeps being committed and checkpointed, so a long outage leaves nothing read only
//! in memory. A disk that refuses writes pauses appending (retried with backoff); one
//! that refuses checkpoints is reported and retried.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Buffer, BufferError};
use crate::config::{BufferConfig, Config};
use crate::metrics::Fault;
use crate::route::{Mask, RouteCounters};
use crate::tail::checkpoint::Checkpoints;
use crate::tail::handoff::BatchReceiver;
use crate::tail::tailer::{RoomBell, BATCH_BYTES};
use crate::tail::turn::Batch;

/// How long an appended record may wait for room before what came before it is
/// committed and checkpointed anyway.
const PATIENCE_MIN: Duration = Duration::from_millis(50);

/// Appends batches to the buffer, commits in groups, and advances checkpoints over
/// what is safe (acknowledged or fsynced).
pub struct BufferWriter {
    buffer: Buffer,
    /// Hands batch buffers back to the tailer.
    recycle: mpsc::Sender<Vec<u8>>,
    /// Tells the tailer there is room again.
    room: RoomBell,
    /// Counts the events routed to each sink.
    routes: Arc<RouteCounters>,
    checkpoints: Checkpoints,
    /// Why checkpoints cannot be saved, for `/readyz`.
    checkpoint_fault: Fault,
    opts: BufferConfig,
    checkpoint_interval: Duration,
    /// Batches appended whose positions wait for their record to be safe.
    pending: Vec<PendingPositions>,
    last_commit: Instant,
    last_save: Instant,
}

/// A batch's positions, waiting for its record (`seq`) to be safe.
struct PendingPositions {
    seq: u64,
    batch: Batch,
}

impl BufferWriter {
    pub fn run(mut self, batches: BatchReceiver<Batch>) -> anyhow::Result<()> {
        let mut last_seq = 0;
        self.buffer.set_safe_waker(batches.poker());
        loop {
            // Woken when the sinks have every batch appended (or at the next commit,
            // whichever is first), to save their positions at once — when a save is
            // due: between saves, the positions only wait for the next one.
            let ask = if self.save_due(self.slack()) { self.pending.last().map_or(0, |p| p.seq) } else { 0 };
            self.buffer.wake_when_safe(ask);
            match batches.recv_timeout(self.next_wait()) {
                Ok(batch) => {
                    // The batches queued (a tailer round's, as a rule) are appended
                    // together, and each sink is woken once for them.
                    self.buffer.hold_announcements();
                    let mut next = Some(batch);
                    while let Some(batch) = next {
                        match self.append_batch(batch, last_seq) {
                            Some(seq) => last_seq = seq,
                            // Closed while full at shutdown: not buffered, not checkpointed.
                            None => return self.finish(),
                        }
                        next = batches.try_recv();
                    }
                    self.buffer.announce();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Whatever wakes the thread, what is due within half an interval is done
            // now too: the commit, the save and the batches go together rather than
            // each waking the thread a moment after the other.
            self.commit_and_checkpoint(self.slack());
        }
        self.finish()
    }

    /// Appends a batch's parts and queues its positions behind the last of them
    /// (`last_seq` if it had none); the sequence number of that record, or `None` once
    /// the buffer is closed.
    fn append_batch(&mut self, mut batch: Batch, mut last_seq: u64) -> Option<u64> {
        self.room.ring();
        for part in &mut batch.encoded.parts {
            if part.data.is_empty() {
                continue;
            }
            let data = Bytes::from(std::mem::take(&mut part.data));
            last_seq = self.append(part.sinks, data, part.events)?;
            self.routes.add_routed(part.sinks, part.events);
            self.hand_back_spares();
        }
        self.pending.push(PendingPositions { seq: last_seq, batch });
        Some(last_seq)
    }

    /// Until the next thing due: with batches pending, the group commit (which also
    /// moves checkpoints over what acknowledgements made safe since); with checkpoints
    /// changed, their save; with neither, nothing — the thread sleeps until a batch
    /// comes (an idle node costs no wake-ups here).
    fn next_wait(&self) -> Duration {
        let until = |last: Instant, every: Duration| every.saturating_sub(last.elapsed());
        let commit = (!self.pending.is_empty()).then(|| until(self.last_commit, self.opts.fsync_interval));
        // A save with only the journal's sync left waits for that to be due.
        let save = self.checkpoints.save_due_in().map(|sync| until(self.last_save, self.checkpoint_interval).max(sync));
        // With batches pending and no save due yet: when one is, to ask the sinks'
        // acknowledgement to wake the thread (see `run`).
        let ask = (!self.pending.is_empty() && !self.save_due(self.slack())).then(|| until(self.last_save, self.checkpoint_interval.saturating_sub(self.slack())));
        [commit, save, ask].into_iter().flatten().min().unwrap_or(super::IDLE_WAIT).max(Duration::from_millis(1))
    }

    /// At the end: gives the sinks a moment to take what memory holds, then writes
    /// the rest, so that every batch read is checkpointed.
    fn finish(mut self) -> anyhow::Result<()> {
        self.buffer.announce();
        self.buffer.settle(self.opts.fsync_interval);
        let safe = self.commit(Duration::ZERO);
        self.checkpoint(safe);
        save_checkpoints(&mut self.checkpoints, &self.checkpoint_fault, Save::Synced);
        Ok(())
    }

    /// Whatever wakes the thread, what is due within this is done now too.
    fn slack(&self) -> Duration {
        self.opts.fsync_interval.min(self.checkpoint_interval) / 2
    }

    /// A save of the checkpoints is due, or due within `slack`.
    fn save_due(&self, slack: Duration) -> bool {
        self.last_save.elapsed() + slack >= self.checkpoint_interval
    }

    /// Group commit when due (or due within `slack`), checkpoints over what became
    /// safe, and a save when due (or within `slack`).
    fn commit_and_checkpoint(&mut self, slack: Duration) {
        let due = self.last_commit.elapsed() + slack >= self.opts.fsync_interval || self.buffer.unsynced_bytes() >= self.opts.fsync_bytes;
        let safe = if due {
            self.last_commit = Instant::now();
            self.commit(self.opts.fsync_interval)
        } else {
            self.buffer.safe_seq()
        };
        self.checkpoint(safe);
        // A save that would write nothing does not count against the interval: the
        // positions a sink's acknowledgement makes safe a moment later are saved then.
        let anything = self.checkpoints.save_due_in().is_some_and(|d| d.is_zero());
        if anything && self.save_due(slack) {
            save_checkpoints(&mut self.checkpoints, &self.checkpoint_fault, Save::WhenDue);
            self.last_save = Instant::now();
        }
    }

    /// Appends one batch, retrying while the disk refuses; `None` once closed. A batch
    /// is appended in pieces of at most [`Buffer::record_limit`], cut between lines, so
    /// that any batch fits and every record can be read back; a single event larger
    /// than that can never be buffered and is dropped, counted and logged.
    fn append(&mut self, sinks: Mask, data: Bytes, events: u64) -> Option<u64> {
        let limit = self.buffer.record_limit();
        if data.len() <= limit {
            return self.append_piece(sinks, data, events as u32);
        }
        let mut last = None;
        for piece in pieces(&data, limit) {
            match piece {
                Ok(chunk) => last = Some(self.append_piece(sinks, data.slice_ref(chunk), memchr::memchr_iter(b'\n', chunk).count() as u32)?),
                Err(line) => {
                    tracing::error!(bytes = line.len(), limit, "an event larger than a buffer record can hold (a quarter of buffer.max_bytes, at most 64 MiB) was dropped; lower decode.max_message_bytes");
                    self.buffer.note_dropped_too_large(1);
                }
            }
        }
        last.or_else(|| self.append_piece(sinks, Bytes::new(), 0))
    }

    /// Appends one record, retrying while the disk refuses. While the buffer is full
    /// (the sink is down or slow), what was appended before keeps being committed and
    /// checkpointed: written to disk, fsynced, its positions saved — so that a long
    /// outage does not leave what was read only in memory, where a crash or the
    /// kubelet rotating the files away would take it.
    fn append_piece(&mut self, sinks: Mask, mut data: Bytes, events: u32) -> Option<u64> {
        debug_assert_eq!(events as usize, memchr::memchr_iter(b'\n', &data).count(), "a batch's event count");
        let mut backoff = crate::sink::backoff::Backoff::try_new(Duration::from_millis(100), Duration::from_secs(5), data.len() as u64)
            .expect("constant bounds are valid");
        let mut logged = false;
        let patience = self.opts.fsync_interval.max(PATIENCE_MIN);
        loop {
            match self.buffer.try_append_for(sinks, crate::event::time::now(), events, data, patience) {
                Ok(seq) => {
                    if logged {
                        tracing::info!("the buffer accepts writes again");
                    }
                    return Some(seq);
                }
                Err((BufferError::Closed, _)) => return None,
                Err((BufferError::Full, refused)) => {
                    data = refused;
                    self.commit_and_checkpoint(Duration::ZERO);
                }
                Err((e, refused)) => {
                    data = refused;
                    if !logged {
                        tracing::error!(error = %e, "cannot write to the buffer; reading is paused until it works (is data_dir full or read-only?)");
                        logged = true;
                    }
                    thread::sleep(backoff.next_wait());
                }
            }
        }
    }

    /// Payload buffers the sink is done with go back to the tailer, which would
    /// otherwise allocate (and fault in) a fresh one per batch.
    fn hand_back_spares(&self) {
        while let Some(spare) = self.buffer.spare() {
            if spare.capacity() >= BATCH_BYTES {
                let _ = self.recycle.send(spare);
            }
        }
    }

    /// Group commit: writes what the sink has not acknowledged within `hold`, fsyncs;
    /// returns the safe sequence number. A disk that refuses leaves what it could not
    /// take in memory, unsafe: the checkpoints stop short of it, and the buffer logs
    /// and reports the cause.
    fn commit(&self, hold: Duration) -> u64 {
        self.buffer.commit(hold).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot write or fsync the buffer; checkpoints wait for what is not on disk");
            self.buffer.safe_seq()
        })
    }

    /// Checkpoints the batches at or below `safe`.
    fn checkpoint(&mut self, safe: u64) {
        let done = self.pending.iter().take_while(|p| p.seq <= safe).count();
        for p in self.pending.drain(..done) {
            for (key, pos) in p.batch.positions {
                self.checkpoints.set(&key, pos);
            }
            for key in p.batch.finished {
                self.checkpoints.remove(&key);
            }
        }
    }
}

impl BufferWriter {
    /// A writer for `buffer` that advances `checkpoints` (a failed save is reported
    /// on `checkpoint_fault`); `recycle` and `room` go to the tailer (batch buffers
    /// back, and a wake-up when there is room again).
    pub fn new(buffer: Buffer, recycle: mpsc::Sender<Vec<u8>>, room: RoomBell, routes: Arc<RouteCounters>, checkpoints: Checkpoints, checkpoint_fault: Fault, config: &Config) -> Self {
        let (opts, checkpoint_interval) = (config.buffer, config.tail.checkpoint_interval);
        // The first batch is committed at once (a pod killed early still advances),
        // later ones every `fsync_interval`; the first safe batch is checkpointed at
        // once, later ones every interval.
        let ago = |d: Duration| Instant::now().checked_sub(d).unwrap_or_else(Instant::now);
        Self {
            buffer,
            recycle,
            room,
            routes,
            checkpoints,
            checkpoint_fault,
            last_commit: ago(opts.fsync_interval),
            last_save: ago(checkpoint_interval),
            opts,
            checkpoint_interval,
            pending: Vec::new(),
        }
    }
}

/// `data` (JSON lines) in pieces of at most `limit` bytes, cut after a newline; a line
/// longer than `limit` on its own comes as an `Err`.
fn pieces(data: &[u8], limit: usize) -> impl Iterator<Item = Result<&[u8], &[u8]>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= limit {
            return Some(Ok(std::mem::take(&mut rest)));
        }
        let cut = memchr::memrchr(b'\n', &rest[..limit]).map(|i| i + 1);
        let (piece, ok) = match cut {
            Some(at) => (&rest[..at], true),
            // No newline within the limit: one line too long; it ends at the next one.
            None => {
                let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                (&rest[..end], false)
            }
        };
        rest = &rest[piece.len()..];
        Some(if ok { Ok(piece) } else { Err(piece) })
    })
}

/// How a save treats the checkpoint journal's fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Save {
    /// At most once a [`crate::tail::checkpoint::JOURNAL_SYNC_INTERVAL`].
    WhenDue,
    /// Now: at a start and a stop.
    Synced,
}

/// Saves the checkpoints; a failure is kept for `/readyz` (logged once per cause) and
/// the save is tried again at the next interval.
pub fn save_checkpoints(checkpoints: &mut Checkpoints, fault: &Fault, how: Save) {
    let saved = match how {
        Save::WhenDue => checkpoints.save(),
        Save::Synced => checkpoints.save_synced(),
    };
    match saved {
        Ok(()) => {
            if fault.clear() {
                tracing::info!("checkpoints are saved again");
            }
        }
        Err(e) => {
            if fault.set(e.to_string()) {
                tracing::error!(error = %e, "cannot save checkpoints; keeps them in memory and tries again every checkpoint_interval");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn batches_are_cut_between_lines_and_overlong_lines_set_apart() {
        let got: Vec<Result<&[u8], &[u8]>> = pieces(b"aa\nbb\ncccccccc\ndd\n", 6).collect();
        assert_eq!(got, vec![Ok(&b"aa\nbb\n"[..]), Err(&b"cccccccc\n"[..]), Ok(&b"dd\n"[..])]);
        let got: Vec<_> = pieces(b"short\n", 100).collect();
        assert_eq!(got, vec![Ok(&b"short\n"[..])]);
        assert_eq!(pieces(b"", 10).count(), 0);
    }
}
