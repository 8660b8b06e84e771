//! Delivery to the AWS sinks: chunks of JSON lines in, acknowledgements out.
//!
//! Shared by both sinks: [`Chunk`], [`Delivered`], [`deliver_to`] (set up the client,
//! say whether that worked, run the loop), `drive` (the loop itself, over a
//! `Loop`) and [`Background`] (a loop on its own thread, for `replay`). The
//! Firehose loop, [`Delivery`], is here; CloudWatch Logs' is `deliver_logs`.
//!
//! The Firehose loop:
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

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::aws::{Failure, FailureKind};
use super::backoff::{seed, Backoff};
use super::dead_letter::DeadLetters;
use super::firehose::{Firehose, RecordResults, THROTTLED_CODE};
use super::pace::Pacer;
use crate::batch::firehose::{billed_bytes, take_batch, truncate_event, Aggregator, Record, MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::config::{FirehoseConfig, SinkOversize};
use crate::metrics::SinkCounters;

/// Records waiting to be sent, at most (then no more chunks are taken).
const QUEUE_BYTES: usize = 16 << 20;
/// Consecutive transient failures before `/readyz` reports the sink failing.
const UNREADY_AFTER: u32 = 3;
/// A batch holds at most what the current pace allows in this long.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
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
    pub truncated: u64,
    pub dead_letters: u64,
}

impl Delivered {
    pub fn add(&mut self, o: &Delivered) {
        self.chunks += o.chunks;
        self.records += o.records;
        self.bytes += o.bytes;
        self.billed_bytes += o.billed_bytes;
        self.truncated += o.truncated;
        self.dead_letters += o.dead_letters;
    }
}

/// A chunk whose lines are not all accepted yet.
#[derive(Debug, Default)]
struct Pending {
    /// Sealed records holding its lines, not yet accepted.
    records: u32,
    /// Its lines set aside as dead letters, not yet written.
    dead: u32,
    /// All its lines were handed to the aggregator.
    complete: bool,
}

type Answer = (Vec<Record>, Instant, Result<RecordResults, Failure>);

/// The Firehose delivery loop.
pub struct Delivery<A: FnMut(u64)> {
    firehose: Firehose,
    config: FirehoseConfig,
    pacer: Pacer,
    backoff: Backoff,
    retry_at: Option<Instant>,
    aggregator: Aggregator,
    queue: VecDeque<Record>,
    queue_bytes: usize,
    /// When the oldest unsent data arrived.
    oldest: Option<Instant>,
    pending: BTreeMap<u64, Pending>,
    in_flight: JoinSet<Answer>,
    dead: DeadLetters,
    counters: Arc<SinkCounters>,
    on_ack: A,
    done: Delivered,
    failures: Failures,
}

/// A run of failed calls, for either sink: when `/readyz` should say so and when to
/// log.
#[derive(Debug, Default)]
pub(super) struct Failures {
    in_a_row: u32,
    last_log: Option<Instant>,
}

impl Failures {
    pub(super) fn succeeded(&mut self) {
        self.in_a_row = 0;
    }

    /// Counts a failed call of `records` records. `/readyz` reports the sink failing
    /// when the failure is permanent, or transient [`UNREADY_AFTER`] times in a row
    /// (throttling never: pacing deals with it). Returns whether to log it now: not
    /// throttling; the first of a run, then every [`LOG_EVERY`].
    pub(super) fn failed(&mut self, counters: &SinkCounters, failure: &Failure, records: usize) -> bool {
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

impl<A: FnMut(u64)> Delivery<A> {
    pub fn new(firehose: Firehose, config: FirehoseConfig, dead: DeadLetters, counters: Arc<SinkCounters>, on_ack: A) -> Self {
        let backoff = Backoff::try_new(Duration::from_millis(100), config.retry_max_wait.max(Duration::from_millis(100)), seed())
            .expect("the base is positive and the cap at least the base");
        let pacer = Pacer::new(config.pacing);
        counters.set_rate(pacer.bytes_per_second(), pacer.requests_per_second());
        Self {
            firehose,
            aggregator: Aggregator::new(config.record_max_bytes, config.aggregate),
            config,
            pacer,
            backoff,
            retry_at: None,
            queue: VecDeque::new(),
            queue_bytes: 0,
            oldest: None,
            pending: BTreeMap::new(),
            in_flight: JoinSet::new(),
            dead,
            counters,
            on_ack,
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
                    self.aggregator.push_line(&cut, seq);
                    self.done.truncated += 1;
                    self.counters.records_truncated.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    if let Some(p) = self.pending.get_mut(&seq) {
                        p.dead += 1;
                    }
                    self.dead.set_aside(seq, line);
                }
            }
        }
    }

    /// Hands the dead letters set aside to their writer, and acknowledges the chunks
    /// that waited only on lines now written.
    fn write_dead(&mut self) {
        let written = self.dead.flush();
        if written.is_empty() {
            return;
        }
        tracing::warn!(events = written.len(), path = %self.dead.path().display(), "events larger than sink.record_max_bytes were set aside whole (dead letters)");
        self.done.dead_letters += written.len() as u64;
        self.counters.records_dead_letter.fetch_add(written.len() as u64, Ordering::Relaxed);
        for seq in written {
            if let Some(p) = self.pending.get_mut(&seq) {
                p.dead -= 1;
            }
            self.try_ack(seq);
        }
    }

    /// Moves sealed records to the queue, counting them against their chunks.
    fn collect_sealed(&mut self) {
        for record in self.aggregator.take_records() {
            for (_, p) in self.pending.range_mut(record.first..=record.last) {
                p.records += 1;
            }
            self.queue_bytes += record.data.len();
            self.queue.push_back(record);
        }
    }

    /// Acknowledges `seq` if all of it is delivered.
    fn try_ack(&mut self, seq: u64) {
        let Some(p) = self.pending.get(&seq) else { return };
        let held_open = self.aggregator.open_tags().is_some_and(|(first, last)| first <= seq && seq <= last);
        if p.complete && p.records == 0 && p.dead == 0 && !held_open {
            self.pending.remove(&seq);
            (self.on_ack)(seq);
        }
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
    fn partial(&mut self, batch: Vec<Record>, sent: Instant, results: RecordResults) {
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

    fn failed(&mut self, batch: Vec<Record>, sent: Instant, failure: Failure) {
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
    fn requeue(&mut self, records: Vec<Record>, throttled: bool) {
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

    fn accepted(&mut self, record: Record) {
        let len = record.data.len() as u64;
        self.done.records += 1;
        self.done.bytes += len;
        self.done.billed_bytes += billed_bytes(record.data.len());
        let c = &self.counters;
        c.records_ok.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len, Ordering::Relaxed);
        c.billed_bytes.fetch_add(billed_bytes(record.data.len()), Ordering::Relaxed);
        let seqs: Vec<u64> = self
            .pending
            .range_mut(record.first..=record.last)
            .map(|(seq, p)| {
                p.records = p.records.saturating_sub(1);
                *seq
            })
            .collect();
        for seq in seqs {
            self.try_ack(seq);
        }
    }
}

/// What a delivery loop does; `drive` runs one.
pub(super) trait Loop {
    type Answer: Send + 'static;
    /// Takes in a chunk.
    fn take(&mut self, chunk: Chunk) -> anyhow::Result<()>;
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
}

/// The loop both AWS sinks run: take chunks while there is room, send what is due,
/// handle answers, and once the input has closed, finish what is left.
pub(super) async fn drive<L: Loop>(mut l: L, mut input: mpsc::Receiver<Chunk>) -> anyhow::Result<Delivered> {
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
                Some(chunk) => l.take(chunk)?,
                None => open = false,
            },
            Some(answer) = l.in_flight().join_next(), if busy => {
                l.answer(answer.expect("a put task never panics")).await?;
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
}

impl<A: FnMut(u64)> Loop for Delivery<A> {
    type Answer = Answer;

    /// Aggregates a chunk's lines; acknowledges it at once if nothing of it waits.
    fn take(&mut self, chunk: Chunk) -> anyhow::Result<()> {
        let seq = chunk.seq;
        self.pending.insert(seq, Pending::default());
        self.aggregator.push(&chunk.data, seq);
        self.oversize(seq);
        self.write_dead();
        self.collect_sealed();
        if let Some(p) = self.pending.get_mut(&seq) {
            p.complete = true;
        }
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
        earliest(send, self.dead.poll_at())
    }

    /// Writes dead letters that wait, then sends batches while there is room in flight
    /// and something is due.
    async fn dispatch(&mut self, closing: bool) {
        self.write_dead();
        loop {
            if self.queue.is_empty() && self.aggregator.open_tags().is_none() {
                self.oldest = None;
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
            let firehose = self.firehose.clone();
            self.in_flight.spawn(async move {
                let sent = Instant::now();
                let data = batch.iter().map(|r| r.data.clone()).collect();
                let result = firehose.put(data).await;
                (batch, sent, result)
            });
        }
    }

    /// Handles one call's answer.
    async fn answer(&mut self, (batch, sent, result): Answer) -> anyhow::Result<()> {
        match result {
            Ok(results) => self.partial(batch, sent, results),
            Err(failure) => self.failed(batch, sent, failure),
        }
        self.counters.set_rate(self.pacer.bytes_per_second(), self.pacer.requests_per_second());
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.aggregator.open_tags().is_none() && self.in_flight.is_empty() && self.dead.is_empty()
    }

    fn room(&self) -> bool {
        self.queue_bytes + self.aggregator.open_bytes() + self.dead.waiting_bytes() < QUEUE_BYTES
    }

    fn in_flight(&mut self) -> &mut JoinSet<Answer> {
        &mut self.in_flight
    }

    fn delivered(&self) -> Delivered {
        self.done
    }
}

/// The earlier of two optional instants.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sleeps until `at`; never resolves for `None` (a `select!` branch guarded off).
pub(super) async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// The AWS sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsSink {
    Firehose(FirehoseConfig),
    CloudWatch(crate::config::CloudWatchConfig),
}

impl AwsSink {
    pub fn name(&self) -> &'static str {
        match self {
            AwsSink::Firehose(_) => "firehose",
            AwsSink::CloudWatch(_) => "cloudwatch",
        }
    }
}

/// Sets up the sink's client (saying how that went on `ready`), then delivers what
/// `input` yields until it closes. Dead letters go to
/// `<data_dir>/dead-letter/<letters>.jsonl`.
pub async fn deliver_to(
    sink: AwsSink,
    data_dir: &std::path::Path,
    letters: &str,
    counters: Arc<SinkCounters>,
    input: mpsc::Receiver<Chunk>,
    on_ack: impl FnMut(u64),
    ready: std::sync::mpsc::SyncSender<anyhow::Result<()>>,
) -> anyhow::Result<Delivered> {
    let dead = DeadLetters::new(data_dir, letters, counters.dead_letters.clone());
    match sink {
        AwsSink::Firehose(config) => match Firehose::connect(&config).await {
            Ok(firehose) => {
                tracing::info!(stream = firehose.stream(), "shipping to Firehose");
                let _ = ready.send(Ok(()));
                drive(Delivery::new(firehose, config, dead, counters, on_ack), input).await
            }
            Err(e) => {
                let _ = ready.send(Err(e.context("cannot set up the Firehose sink")));
                Ok(Delivered::default())
            }
        },
        AwsSink::CloudWatch(config) => match super::cloudwatch::CloudWatchLogs::connect(&config).await {
            Ok(logs) => {
                tracing::info!("shipping to CloudWatch Logs");
                let _ = ready.send(Ok(()));
                drive(super::deliver_logs::LogsDelivery::new(logs, config, dead, counters, on_ack), input).await
            }
            Err(e) => {
                let _ = ready.send(Err(e.context("cannot set up the CloudWatch Logs sink")));
                Ok(Delivered::default())
            }
        },
    }
}

/// Waits for a sink thread's word on setting up its client: then its handle, or why it
/// could not (said on `ready`, or the thread's own error if it ended first).
pub fn started<T>(
    ready: &std::sync::mpsc::Receiver<anyhow::Result<()>>,
    thread: std::thread::JoinHandle<anyhow::Result<T>>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
    match ready.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(e),
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(anyhow::anyhow!("the sink thread ended before it was set up")),
            Err(_) => Err(anyhow::anyhow!("the sink thread panicked")),
        },
    }
}

/// A delivery loop on a thread of its own, fed from synchronous code (`replay`).
pub struct Background {
    tx: Option<mpsc::Sender<Chunk>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<Delivered>>>,
    next_seq: u64,
}

impl Background {
    /// Connects and starts delivering; returns once the client is set up.
    pub fn start(sink: AwsSink, data_dir: &std::path::Path, letters: &str, counters: Arc<SinkCounters>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(4);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (data_dir, letters) = (data_dir.to_path_buf(), letters.to_string());
        let thread = std::thread::Builder::new().name("sink".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(deliver_to(sink, &data_dir, &letters, counters, rx, |_| {}, ready_tx))
        })?;
        let thread = started(&ready_rx, thread)?;
        Ok(Self { tx: Some(tx), thread: Some(thread), next_seq: 0 })
    }

    /// Hands over JSON lines; waits while the loop's queue is full.
    pub fn send(&mut self, data: Vec<u8>) -> anyhow::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent = self.tx.as_ref().is_some_and(|tx| tx.blocking_send(Chunk { seq, data: data.into() }).is_ok());
        if sent {
            return Ok(());
        }
        self.finish().and_then(|_| Err(anyhow::anyhow!("the sink stopped")))
    }

    /// Delivers what is left and says what was done.
    pub fn finish(&mut self) -> anyhow::Result<Delivered> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the sink thread panicked"))?,
            None => Err(anyhow::anyhow!("the sink already stopped")),
        }
    }
}
