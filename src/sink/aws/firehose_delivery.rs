//! The Firehose delivery loop, on the shared core (`core`):
//!
//! ```text
//! chunks (buffer records) ─► aggregate into records ─► queue ─► batch ─► pace ─► PutRecordBatch ×N
//!         ▲                                              ▲                               │
//!         └──────────── ack(seq) once every record ──────┴─ refused records, at the front ┘
//!                       holding its lines is accepted
//! ```
//!
//! - A record may hold lines of several chunks and a chunk may span several records,
//!   so each chunk counts its records still unaccepted; it is acknowledged once that
//!   count is zero and no open (unsealed) record holds its lines.
//! - A batch goes when it is full (500 records, 4 MiB, or a tenth of a second's
//!   worth at the current pace) or when its oldest data has waited `linger`.
//! - A refused record (a whole call failing, or `ErrorCode` in its entry) goes back
//!   to the front of the queue and is retried after a backoff with full jitter.
//!   Accepted records are never sent again.
//! - Throttling halves the pace instead (`pace`): each throttle doubles the time
//!   between this node's requests, which is itself an exponential backoff, and a
//!   second, growing wait on top would only make unlucky nodes lose their share. So
//!   a throttled retry waits a random part of one request's time at the new pace.
//! - Memory is bounded: no more chunks are taken while the queue holds
//!   `QUEUE_BYTES` or more.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::client::{Failure, FailureKind};
use super::core::{earliest, Chunk, Delivered, Failures, Ledger, Loop};
use super::firehose::{Firehose, RecordResults, THROTTLED_CODE};
use super::pace::Pacer;
use crate::batch::firehose::{billed_bytes, take_batch, truncate_event, Aggregator, FirehoseRecord, MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::sink::backoff::{seed, Backoff};
use crate::config::{FirehoseConfig, SinkOversize};
use crate::metrics::SinkCounters;

/// Records waiting to be sent, at most (then no more chunks are taken).
const QUEUE_BYTES: usize = 16 << 20;
/// A batch holds at most what the current pace allows in this long.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// A call's records, when it was sent, its result, and its body's buffer if reclaimed.
type Answer = (Vec<FirehoseRecord>, Instant, Result<RecordResults, Failure>, Option<Vec<u8>>);

/// The Firehose delivery loop.
pub struct FirehoseDelivery<A: FnMut(u64)> {
    firehose: Firehose,
    config: FirehoseConfig,
    pacer: Pacer,
    backoff: Backoff,
    retry_at: Option<Instant>,
    aggregator: Aggregator,
    queue: VecDeque<FirehoseRecord>,
    queue_bytes: usize,
    /// When the oldest unsent data arrived.
    oldest: Option<Instant>,
    ledger: Ledger<A>,
    in_flight: JoinSet<Answer>,
    /// Buffers of bodies sent, to write the next ones into: reused rather than
    /// mapped, faulted in and unmapped per call.
    /// They exist only while calls follow each other; idle, they are freed. As many
    /// are kept as calls can be in flight: answers come back in bursts.
    body_spares: Vec<Vec<u8>>,
    /// Chunks' handles from records delivered, to hand back (see [`Loop::give_back`]).
    delivered_chunks: Vec<bytes::Bytes>,
    counters: Arc<SinkCounters>,
    done: Delivered,
    failures: Failures,
}

impl<A: FnMut(u64)> FirehoseDelivery<A> {
    pub fn new(firehose: Firehose, config: FirehoseConfig, ledger: Ledger<A>, counters: Arc<SinkCounters>) -> Self {
        let backoff = Backoff::try_new(Duration::from_millis(100), config.retry_max_wait.max(Duration::from_millis(100)), seed())
            .expect("the base is positive and the cap at least the base");
        let pacer = Pacer::new(config.pacing);
        counters.set_rate(pacer.bytes_per_second(), pacer.requests_per_second());
        Self {
            firehose,
            aggregator: Aggregator::new(config.record_max_bytes, config.aggregate).with_max_events(config.max_events_per_record),
            config,
            pacer,
            backoff,
            retry_at: None,
            queue: VecDeque::new(),
            queue_bytes: 0,
            oldest: None,
            ledger,
            in_flight: JoinSet::new(),
            body_spares: Vec::new(),
            delivered_chunks: Vec::new(),
            counters,
            done: Delivered::default(),
            failures: Failures::default(),
        }
    }

    /// Events larger than a record: cut to fit, or set aside for the dead letters.
    fn oversize(&mut self, seq: u64) {
        for line in self.aggregator.take_oversize() {
            let cut = match self.config.oversize {
                SinkOversize::Truncate => truncate_event(&line, self.aggregator.record_max()),
                SinkOversize::DeadLetter => None,
            };
            match cut {
                Some(cut) => {
                    self.aggregator.push_line(cut.into(), seq);
                    self.done.truncated += 1;
                    self.counters.records_truncated.fetch_add(1, Ordering::Relaxed);
                }
                None => self.ledger.set_aside(seq, line),
            }
        }
    }

    /// Hands the dead letters set aside to their writer, and acknowledges the chunks
    /// that waited only on lines now written.
    fn write_dead(&mut self) {
        let written = self.ledger.write_dead();
        if written.is_empty() {
            return;
        }
        tracing::warn!(events = written.len(), path = %self.ledger.dead().path().display(), "events larger than sink.record_max_bytes were set aside whole (dead letters)");
        self.done.dead_letters += written.len() as u64;
        self.counters.records_dead_letter.fetch_add(written.len() as u64, Ordering::Relaxed);
        for seq in written {
            self.try_ack(seq);
        }
    }

    /// Moves sealed records to the queue, counting them against their chunks.
    fn collect_sealed(&mut self) {
        for record in self.aggregator.take_records() {
            self.ledger.wait_range(record.first, record.last);
            self.queue_bytes += record.data.len();
            self.queue.push_back(record);
        }
    }

    /// Acknowledges `seq` if all of it is delivered and no open record holds its lines.
    fn try_ack(&mut self, seq: u64) {
        let held_open = self.aggregator.open_tags().is_some_and(|(first, last)| first <= seq && seq <= last);
        self.ledger.try_ack(seq, held_open);
    }

    /// A batch may hold what the pace allows in [`BATCH_WINDOW`], within AWS's
    /// limits, so that requests stay small and even when the pace is low (a quota
    /// shared by a fleet is then taken in many small bites, not a few large ones).
    /// But never so small that the request ceiling would hold back the byte and
    /// record pace: at least twice the pace's bytes (records) per allowed request.
    fn batch_limits(&self) -> (usize, usize) {
        let window = BATCH_WINDOW.as_secs_f64();
        let requests = self.pacer.requests_per_second();
        let limit = |per_second: f64, max: usize| ((per_second * window).max(2.0 * per_second / requests) as usize).clamp(1, max);
        (limit(self.pacer.records_per_second(), MAX_BATCH_RECORDS), limit(self.pacer.bytes_per_second(), MAX_BATCH_BYTES))
    }

    /// A call that went through: accept what was accepted, requeue the rest.
    fn partial(&mut self, batch: Vec<FirehoseRecord>, sent: Instant, results: RecordResults) {
        self.counters.requests_ok.fetch_add(1, Ordering::Relaxed);
        let mut refused = Vec::new();
        let mut throttled = false;
        let mut code_seen = None;
        for (record, code) in batch.into_iter().zip(results) {
            match code {
                None => self.accepted(record),
                Some(code) => {
                    throttled |= code == THROTTLED_CODE;
                    code_seen.get_or_insert(code);
                    refused.push(record);
                }
            }
        }
        if refused.is_empty() {
            self.backoff.reset();
            self.failures.succeeded();
            self.pacer.succeeded();
            self.counters.succeeded_quietly();
            return;
        }
        self.counters.records_failed.fetch_add(refused.len() as u64, Ordering::Relaxed);
        if throttled {
            self.throttled(sent);
        }
        tracing::debug!(refused = refused.len(), code = ?code_seen, "records refused inside a successful call; resending only those");
        self.requeue(refused, throttled);
    }

    fn failed(&mut self, batch: Vec<FirehoseRecord>, sent: Instant, failure: Failure) {
        if failure.kind == FailureKind::Throttled {
            self.throttled(sent);
        }
        if self.failures.failed(&self.counters, &failure, batch.len()) {
            let stream = self.firehose.stream();
            match failure.kind {
                FailureKind::Permanent => tracing::error!(stream, error = %failure.message, "Firehose refused the call; the data stays buffered and is retried until this is fixed"),
                _ => tracing::warn!(stream, error = %failure.message, "Firehose call failed; retrying with backoff"),
            }
        }
        self.requeue(batch, failure.kind == FailureKind::Throttled);
    }

    fn throttled(&mut self, sent: Instant) {
        self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        self.pacer.throttled(sent);
    }

    /// Puts refused records back at the front, in order, and waits before resending:
    /// after throttling, a random part of the time the new pace gives them; after
    /// other failures, the exponential backoff.
    fn requeue(&mut self, records: Vec<FirehoseRecord>, throttled: bool) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        for r in records.into_iter().rev() {
            self.queue_bytes += r.data.len();
            self.queue.push_front(r);
        }
        self.oldest.get_or_insert_with(Instant::now);
        let wait = if throttled {
            let slot = Duration::from_secs_f64(bytes as f64 / self.pacer.bytes_per_second());
            self.backoff.jitter(slot.min(self.config.retry_max_wait))
        } else {
            self.backoff.next_wait()
        };
        let at = Instant::now() + wait;
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.max(at)));
    }

    /// Frees the body buffers kept for reuse.
    fn drop_spares(&mut self) {
        self.body_spares = Vec::new();
    }

    fn accepted(&mut self, record: FirehoseRecord) {
        let len = record.data.len() as u64;
        self.done.records += 1;
        self.done.bytes += len;
        self.done.billed_bytes += billed_bytes(record.data.len());
        let c = &self.counters;
        c.records_ok.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len, Ordering::Relaxed);
        c.billed_bytes.fetch_add(billed_bytes(record.data.len()), Ordering::Relaxed);
        for seq in self.ledger.settle_range(record.first, record.last) {
            self.try_ack(seq);
        }
        self.delivered_chunks.extend(record.data.into_chunks());
    }
}

impl<A: FnMut(u64)> Loop for FirehoseDelivery<A> {
    type Answer = Answer;

    /// Aggregates a chunk's lines; acknowledges it at once if nothing of it waits.
    fn take(&mut self, chunk: &Chunk) -> anyhow::Result<()> {
        let seq = chunk.seq;
        self.ledger.open(seq);
        self.aggregator.push(&chunk.data, seq);
        self.oversize(seq);
        self.write_dead();
        self.collect_sealed();
        self.ledger.complete(seq);
        if !chunk.data.is_empty() {
            self.oldest.get_or_insert_with(Instant::now);
        }
        self.done.chunks += 1;
        self.try_ack(seq);
        Ok(())
    }

    /// The earliest instant something becomes due: the linger of the oldest data, the
    /// end of a retry backoff, or a look for dead letters written.
    /// (Sending is never due while the requests in flight are at the limit: only an
    /// answer helps.)
    fn deadline(&self) -> Option<Instant> {
        let send = (self.in_flight.len() < self.config.max_in_flight)
            .then(|| match self.retry_at.filter(|&r| r > Instant::now()) {
                Some(r) => Some(r),
                None => self.oldest.map(|t| t + self.config.linger),
            })
            .flatten();
        earliest(send, self.ledger.dead().poll_at())
    }

    /// Writes dead letters that wait, then sends batches while there is room in flight
    /// and something is due.
    async fn dispatch(&mut self, closing: bool) {
        self.write_dead();
        loop {
            if self.queue.is_empty() && self.aggregator.open_tags().is_none() {
                self.oldest = None;
                if self.in_flight.is_empty() {
                    self.drop_spares();
                }
                return;
            }
            if self.in_flight.len() >= self.config.max_in_flight {
                return;
            }
            let now = Instant::now();
            if self.retry_at.is_some_and(|t| now < t) {
                return;
            }
            let lingered = closing || self.oldest.is_some_and(|t| now.duration_since(t) >= self.config.linger);
            if lingered && self.aggregator.open_tags().is_some() {
                self.aggregator.seal();
                self.collect_sealed();
            }
            let (max_records, max_bytes) = self.batch_limits();
            let full = self.queue.len() >= max_records || self.queue_bytes >= max_bytes;
            if self.queue.is_empty() || !(full || lingered) {
                return;
            }
            let batch = take_batch(&mut self.queue, max_records, max_bytes);
            let bytes: usize = batch.iter().map(|r| r.data.len()).sum();
            self.queue_bytes -= bytes;
            self.pacer.admit(batch.len() as u64, bytes as u64).await;
            let body = self.firehose.body(batch.iter().map(|r| r.data.pieces()), self.body_spares.pop().unwrap_or_default());
            let firehose = self.firehose.clone();
            self.in_flight.spawn(async move {
                let sent = Instant::now();
                let result = firehose.put(&body).await;
                (batch, sent, result, body.reclaim())
            });
        }
    }

    /// Handles one call's answer.
    async fn answer(&mut self, (batch, sent, result, spare): Answer) -> anyhow::Result<()> {
        if let Some(spare) = spare.filter(|_| self.body_spares.len() < self.config.max_in_flight) {
            self.body_spares.push(spare);
        }
        match result {
            Ok(results) => self.partial(batch, sent, results),
            Err(failure) => self.failed(batch, sent, failure),
        }
        self.counters.set_rate(self.pacer.bytes_per_second(), self.pacer.requests_per_second());
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.aggregator.open_tags().is_none() && self.in_flight.is_empty() && self.ledger.dead().is_empty()
    }

    fn room(&self) -> bool {
        self.queue_bytes + self.aggregator.open_bytes() + self.ledger.dead().waiting_bytes() < QUEUE_BYTES
    }

    fn in_flight(&mut self) -> &mut JoinSet<Answer> {
        &mut self.in_flight
    }

    /// The chunks of the records delivered since: the last holder of each gives its
    /// buffer back.
    fn give_back(&mut self, spent: &mut impl FnMut(bytes::Bytes)) {
        self.delivered_chunks.drain(..).for_each(spent);
    }

    fn delivered(&self) -> Delivered {
        self.done
    }
}
