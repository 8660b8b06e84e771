//! The delivery core every AWS sink plugs its calls into: chunks of JSON lines in,
//! acknowledgements out.
//!
//! - [`Chunk`]: a buffer record handed to a sink, tagged with its sequence number.
//! - [`Ledger`]: what each chunk still waits on — records or events queued or in
//!   flight, dead letters not yet written — and the acknowledgement the moment nothing
//!   does. Dead letters go through it, so setting an event aside counts as settling it
//!   only once it is written.
//! - [`Failures`]: a run of failed calls: when `/readyz` says the sink is failing, and
//!   when to log.
//! - [`Loop`] and [`drive`]: the loop itself — take chunks while there is room, send
//!   what is due, handle answers, and once the input has closed finish what is left.
//!
//! A sink (`firehose_delivery`, `cloudwatch_delivery`) keeps only what is its own:
//! how it queues and batches, its API call, and what its answers mean.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::client::{Failure, FailureKind};
use super::dead_letter::DeadLetters;
use crate::metrics::SinkCounters;

/// Consecutive transient failures before `/readyz` reports the sink failing.
const UNREADY_AFTER: u32 = 3;
/// A failing sink logs at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// A piece of input: JSON lines, tagged with a number that is acknowledged once
/// every line in it is delivered (or dead-lettered). Tags increase.
#[derive(Debug)]
pub struct Chunk {
    pub seq: u64,
    pub data: bytes::Bytes,
}

/// What a delivery did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    pub chunks: u64,
    pub records: u64,
    pub bytes: u64,
    pub billed_bytes: u64,
    /// S3: the objects' bytes as stored (compressed).
    pub stored_bytes: u64,
    pub truncated: u64,
    pub dead_letters: u64,
}

impl Delivered {
    pub fn add(&mut self, o: &Delivered) {
        self.chunks += o.chunks;
        self.records += o.records;
        self.bytes += o.bytes;
        self.billed_bytes += o.billed_bytes;
        self.stored_bytes += o.stored_bytes;
        self.truncated += o.truncated;
        self.dead_letters += o.dead_letters;
    }
}

/// What one chunk still waits on.
#[derive(Debug, Default)]
struct Owed {
    /// Units (records, events, dead letters) not yet accepted or written.
    waiting: u64,
    /// All of it has been taken in.
    complete: bool,
}

/// The chunks a delivery loop owes an acknowledgement, and the dead letters it set
/// aside. A chunk is acknowledged (`on_ack`) once all of it was taken in and nothing
/// of it waits; the loops count units their own way (a Firehose record may hold lines
/// of several chunks, a CloudWatch event belongs to one).
pub struct Ledger<A: FnMut(u64)> {
    owed: BTreeMap<u64, Owed>,
    dead: DeadLetters,
    on_ack: A,
}

impl<A: FnMut(u64)> Ledger<A> {
    pub fn new(dead: DeadLetters, on_ack: A) -> Self {
        Self { owed: BTreeMap::new(), dead, on_ack }
    }

    /// Chunk `seq` comes in: owed until [`Self::complete`] and every unit settled.
    pub fn open(&mut self, seq: u64) {
        self.owed.insert(seq, Owed::default());
    }

    /// All of `seq` was taken in.
    pub fn complete(&mut self, seq: u64) {
        if let Some(o) = self.owed.get_mut(&seq) {
            o.complete = true;
        }
    }

    /// One more unit of `seq` waits.
    pub fn wait(&mut self, seq: u64) {
        if let Some(o) = self.owed.get_mut(&seq) {
            o.waiting += 1;
        }
    }

    /// One more unit of every chunk in `first..=last` waits (a record holding lines of
    /// each).
    pub fn wait_range(&mut self, first: u64, last: u64) {
        for o in self.owed.range_mut(first..=last).map(|(_, o)| o) {
            o.waiting += 1;
        }
    }

    /// A unit of `seq` was accepted (or written aside).
    pub fn settle(&mut self, seq: u64) {
        if let Some(o) = self.owed.get_mut(&seq) {
            o.waiting = o.waiting.saturating_sub(1);
        }
    }

    /// A unit of every chunk in `first..=last` was accepted; returns those chunks.
    pub fn settle_range(&mut self, first: u64, last: u64) -> Vec<u64> {
        self.owed
            .range_mut(first..=last)
            .map(|(seq, o)| {
                o.waiting = o.waiting.saturating_sub(1);
                *seq
            })
            .collect()
    }

    /// Acknowledges `seq` if all of it came and nothing of it waits, unless `held`
    /// (its lines are still in a record being filled).
    pub fn try_ack(&mut self, seq: u64, held: bool) {
        let done = self.owed.get(&seq).is_some_and(|o| o.complete && o.waiting == 0);
        if done && !held {
            self.owed.remove(&seq);
            (self.on_ack)(seq);
        }
    }

    /// Sets `line` of chunk `seq` aside as a dead letter: it waits until written.
    pub fn set_aside(&mut self, seq: u64, line: Vec<u8>) {
        self.wait(seq);
        self.dead.set_aside(seq, line);
    }

    /// Hands the dead letters set aside to their writer and settles those written;
    /// returns their chunks (one per letter), for the caller to count and acknowledge.
    pub fn write_dead(&mut self) -> Vec<u64> {
        let written = self.dead.flush();
        for &seq in &written {
            self.settle(seq);
        }
        written
    }

    pub fn dead(&self) -> &DeadLetters {
        &self.dead
    }
}

/// A run of failed calls, for any AWS sink: when `/readyz` should say so and when to
/// log.
#[derive(Debug, Default)]
pub struct Failures {
    in_a_row: u32,
    last_log: Option<Instant>,
}

impl Failures {
    pub fn succeeded(&mut self) {
        self.in_a_row = 0;
    }

    /// Counts a failed call of `records` records. `/readyz` reports the sink failing
    /// when the failure is permanent, or transient [`UNREADY_AFTER`] times in a row
    /// (throttling never: pacing deals with it). Returns whether to log it now: not
    /// throttling; the first of a run, then every [`LOG_EVERY`].
    pub fn failed(&mut self, counters: &SinkCounters, failure: &Failure, records: usize) -> bool {
        counters.requests_failed.fetch_add(1, Ordering::Relaxed);
        counters.records_failed.fetch_add(records as u64, Ordering::Relaxed);
        self.in_a_row += 1;
        let failing = match failure.kind {
            FailureKind::Throttled => false,
            FailureKind::Permanent => true,
            FailureKind::Transient => self.in_a_row >= UNREADY_AFTER,
        };
        if failing {
            counters.report_failing(failure.message.clone());
        }
        let log = failure.kind != FailureKind::Throttled && (self.in_a_row == 1 || self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY));
        if log {
            self.last_log = Some(Instant::now());
        }
        log
    }
}

/// What a delivery loop does; [`drive`] runs one.
pub(super) trait Loop {
    type Answer: Send + 'static;
    /// Takes in a chunk's lines: copying what it keeps (the chunk's buffer then goes
    /// back to whoever can reuse it), or keeping handles of the chunk's buffer to hand
    /// back through [`Self::give_back`] once done with them.
    fn take(&mut self, chunk: &Chunk) -> anyhow::Result<()>;
    /// Sends what is due, while there is room in flight (`closing`: everything).
    async fn dispatch(&mut self, closing: bool);
    /// Handles one put's answer.
    async fn answer(&mut self, answer: Self::Answer) -> anyhow::Result<()>;
    /// Nothing waits and nothing is in flight.
    fn idle(&self) -> bool;
    /// Room for another chunk (memory bound).
    fn room(&self) -> bool;
    /// When something next becomes due, if anything.
    fn deadline(&self) -> Option<Instant>;
    fn in_flight(&mut self) -> &mut JoinSet<Self::Answer>;
    fn delivered(&self) -> Delivered;
    /// Hands `spent` the chunks' handles it kept and no longer needs.
    fn give_back(&mut self, _spent: &mut impl FnMut(bytes::Bytes)) {}
}

/// The loop every AWS sink runs: take chunks while there is room, send what is due,
/// handle answers, and once the input has closed, finish what is left. A chunk's
/// buffer, once taken, goes to `spent`, and so do the handles the loop kept of it
/// once it gives them back (its last holder can reuse the buffer).
pub(super) async fn drive<L: Loop>(mut l: L, mut input: mpsc::Receiver<Chunk>, mut spent: impl FnMut(bytes::Bytes)) -> anyhow::Result<Delivered> {
    let mut open = true;
    loop {
        l.dispatch(!open).await;
        if !open && l.idle() {
            return Ok(l.delivered());
        }
        let wake = l.deadline();
        let room = open && l.room();
        let busy = !l.in_flight().is_empty();
        tokio::select! {
            chunk = input.recv(), if room => match chunk {
                Some(chunk) => {
                    l.take(&chunk)?;
                    spent(chunk.data);
                }
                None => open = false,
            },
            Some(answer) = l.in_flight().join_next(), if busy => {
                l.answer(answer.expect("a put task never panics")).await?;
                l.give_back(&mut spent);
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sleeps until `at`; never resolves for `None` (a `select!` branch guarded off).
async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk is acknowledged once complete and every unit settled, not before, and
    /// not while held; a range settles every chunk in it; dead letters settle once
    /// written.
    #[test]
    fn a_chunk_is_acknowledged_once_nothing_of_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        let acked = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let a = acked.clone();
        let dead = DeadLetters::new(dir.path(), "test", crate::metrics::Fault::default());
        let mut l = Ledger::new(dead, move |seq| a.borrow_mut().push(seq));
        for seq in 1..=3 {
            l.open(seq);
        }
        l.wait_range(1, 2);
        l.try_ack(1, false);
        assert!(acked.borrow().is_empty(), "not complete yet");
        for seq in 1..=3 {
            l.complete(seq);
        }
        l.try_ack(3, true);
        assert!(acked.borrow().is_empty(), "held in an open record");
        l.try_ack(3, false);
        assert_eq!(*acked.borrow(), [3]);
        l.set_aside(2, b"{\"message\":\"too large\"}\n".to_vec());
        for seq in l.settle_range(1, 2) {
            l.try_ack(seq, false);
        }
        assert_eq!(*acked.borrow(), [3, 1], "2 waits on its dead letter");
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked.borrow().len() < 3 {
            assert!(Instant::now() < deadline, "the dead letter was never written");
            for seq in l.write_dead() {
                l.try_ack(seq, false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*acked.borrow(), [3, 1, 2]);
    }
}
