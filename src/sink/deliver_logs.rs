//! Delivery to CloudWatch Logs: chunks of JSON lines in, acknowledgements out.
//!
//! ```text
//! chunks ─► route each event to its log stream (templates) ─► per-stream queues
//!    ▲          │ too old / too new: dead letters                  │ sorted batches,
//!    │          ▼                                                  ▼ one put per stream
//!    └── ack(seq) once each of its events is accepted or set aside ◄── PutLogEvents ×N
//! ```
//!
//! - Each chunk counts its events not yet accepted (or set aside); it is
//!   acknowledged when that reaches zero.
//! - Per stream, one put at a time (so a stream's events arrive in order); streams go
//!   in parallel up to `max_in_flight`, the longest-waiting first. A stream's batch
//!   goes when full (10,000 events or 1 MiB) or when its oldest event has waited
//!   `linger`.
//! - A missing group or stream (`ResourceNotFoundException`) is created when
//!   `create_missing` (the group with its retention) and the batch sent again at once.
//! - Throttling halves the pace (shared `pace`, as for Firehose); other failures back
//!   off per stream with full jitter. Events AWS refuses for their time
//!   (`rejectedLogEventsInfo`) go to the dead letters, counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::aws::{Failure, FailureKind};
use super::backoff::Backoff;
use super::cloudwatch::{CloudWatchLogs, Rejected};
use super::dead_letter::DeadLetters;
use super::backoff::seed;
use super::deliver::{earliest, Chunk, Delivered, Failures, Loop};
use super::pace::Pacer;
use crate::batch::cloudwatch::{age, batch_bytes, fit_event, take_batch, Age, LogEvent, Router, StreamKey, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use crate::config::CloudWatchConfig;
use crate::metrics::SinkCounters;

/// Events waiting to be sent, at most (then no more chunks are taken).
const QUEUE_BYTES: usize = 32 << 20;

/// One log stream's events waiting to be sent.
struct Queue {
    events: Vec<LogEvent>,
    bytes: usize,
    oldest: Option<Instant>,
    /// A put to this stream is in flight.
    busy: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Queue {
    fn new(seed: u64, cap: Duration) -> Self {
        let backoff = Backoff::try_new(Duration::from_millis(100), cap.max(Duration::from_millis(100)), seed).expect("valid bounds");
        Self { events: Vec::new(), bytes: 0, oldest: None, busy: false, retry_at: None, backoff }
    }
}

type Answer = (StreamKey, Vec<LogEvent>, Instant, Result<Rejected, Failure>);

/// The CloudWatch Logs delivery loop.
pub struct LogsDelivery<A: FnMut(u64)> {
    logs: CloudWatchLogs,
    config: CloudWatchConfig,
    router: Router,
    pacer: Pacer,
    queues: HashMap<StreamKey, Queue>,
    queued_bytes: usize,
    /// Events of each chunk not yet accepted or set aside, and whether all of it came.
    pending: BTreeMap<u64, (u64, bool)>,
    in_flight: JoinSet<Answer>,
    dead: DeadLetters,
    counters: Arc<SinkCounters>,
    on_ack: A,
    done: Delivered,
    failures: Failures,
    jitter: Backoff,
}

impl<A: FnMut(u64)> LogsDelivery<A> {
    pub fn new(logs: CloudWatchLogs, config: CloudWatchConfig, dead: DeadLetters, counters: Arc<SinkCounters>, on_ack: A) -> Self {
        let router = Router::new(config.log_group.clone(), config.log_stream.clone(), config.node.clone(), config.cluster.clone(), config.bare_message);
        let pacer = Pacer::new(config.pacing);
        counters.set_rate(0.0, pacer.requests_per_second());
        Self {
            logs,
            router,
            pacer,
            queues: HashMap::new(),
            queued_bytes: 0,
            pending: BTreeMap::new(),
            in_flight: JoinSet::new(),
            dead,
            counters,
            on_ack,
            done: Delivered::default(),
            failures: Failures::default(),
            jitter: Backoff::try_new(Duration::from_millis(100), Duration::from_secs(1), seed()).expect("valid bounds"),
            config,
        }
    }

    fn count_dead(&mut self, too_old: bool, n: u64) {
        self.done.dead_letters += n;
        let c = if too_old { &self.counters.dropped_too_old } else { &self.counters.dropped_too_new };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes the dead letters set aside (unless a failed write's backoff runs) and
    /// acknowledges the chunks that waited only on them.
    fn write_dead(&mut self) {
        let written = self.dead.flush();
        if written.is_empty() {
            return;
        }
        tracing::warn!(events = written.len(), path = %self.dead.path().display(), "events CloudWatch Logs would refuse for their time (older than 14 days or the retention, or over 2 h ahead) were set aside (dead letters)");
        for seq in written {
            self.settled(seq);
        }
    }

    /// One event of chunk `seq` was accepted or written to the dead letters.
    fn settled(&mut self, seq: u64) {
        if let Some(p) = self.pending.get_mut(&seq) {
            p.0 = p.0.saturating_sub(1);
        }
        self.try_ack(seq);
    }

    fn try_ack(&mut self, seq: u64) {
        if let Some(&(0, true)) = self.pending.get(&seq) {
            self.pending.remove(&seq);
            (self.on_ack)(seq);
        }
    }

    /// Creates the stream's group (with its retention) and the stream.
    async fn create(&mut self, key: &StreamKey) -> Result<(), Failure> {
        tracing::info!(group = %key.group, stream = %key.stream, "creating the missing log group and stream");
        self.pacer.admit(1, 0).await;
        match self.logs.create_stream(key).await {
            Err(f) if f.code.as_deref() == Some("ResourceNotFoundException") => {
                self.pacer.admit(1, 0).await;
                self.logs.create_group(&key.group, self.config.retention_days).await?;
                self.pacer.admit(1, 0).await;
                self.logs.create_stream(key).await
            }
            other => other,
        }
    }

    fn accepted(&mut self, key: &StreamKey, batch: Vec<LogEvent>, rejected: Rejected) {
        self.counters.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.counters.succeeded_quietly();
        self.failures.succeeded();
        self.pacer.succeeded();
        if let Some(q) = self.queues.get_mut(key) {
            q.backoff.reset();
        }
        for (i, event) in batch.into_iter().enumerate() {
            match rejected.reason(i) {
                None => {
                    self.done.records += 1;
                    self.done.bytes += event.message.len() as u64;
                    self.counters.records_ok.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes.fetch_add(event.message.len() as u64, Ordering::Relaxed);
                    self.settled(event.chunk);
                }
                Some(reason) => {
                    self.count_dead(reason == "too_old", 1);
                    self.dead.set_aside(event.chunk, rejected_line(key, &event, reason));
                }
            }
        }
        self.write_dead();
    }

    fn failed(&mut self, key: &StreamKey, batch: Vec<LogEvent>, sent: Instant, failure: Failure) {
        let log = self.failures.failed(&self.counters, &failure, batch.len());
        let wait = match failure.kind {
            FailureKind::Throttled => {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                self.pacer.throttled(sent);
                let slot = Duration::from_secs_f64(1.0 / self.pacer.requests_per_second());
                self.jitter.jitter(slot.min(self.config.retry_max_wait))
            }
            kind => {
                if log {
                    match kind {
                        FailureKind::Permanent => tracing::error!(group = %key.group, stream = %key.stream, error = %failure.message, "CloudWatch Logs refused the call; the data stays buffered and is retried until this is fixed"),
                        _ => tracing::warn!(group = %key.group, stream = %key.stream, error = %failure.message, "CloudWatch Logs call failed; retrying with backoff"),
                    }
                }
                self.queues.get_mut(key).map_or(Duration::ZERO, |q| q.backoff.next_wait())
            }
        };
        self.requeue(key, batch, wait);
    }

    /// Puts a batch back on its stream's queue, to go again after `wait`.
    fn requeue(&mut self, key: &StreamKey, batch: Vec<LogEvent>, wait: Duration) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let bytes = batch_bytes(&batch);
        let cap = self.config.retry_max_wait;
        let q = self.queues.entry(key.clone()).or_insert_with(|| Queue::new(seed(), cap));
        q.events.extend(batch);
        q.bytes += bytes;
        self.queued_bytes += bytes;
        q.oldest = Some(Instant::now().checked_sub(self.config.linger).unwrap_or_else(Instant::now));
        q.retry_at = Some(Instant::now() + wait);
    }
}

/// A refused event as a dead letter: where it was going, why, and the event.
fn rejected_line(key: &StreamKey, event: &LogEvent, reason: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "reason": reason,
        "log_group": key.group,
        "log_stream": key.stream,
        "timestamp": event.timestamp,
        "message": event.message,
    });
    let mut line = serde_json::to_vec(&v).unwrap_or_default();
    line.push(b'\n');
    line
}

impl<A: FnMut(u64)> Loop for LogsDelivery<A> {
    type Answer = Answer;

    /// Routes a chunk's events to their streams; the too old and too new go to the
    /// dead letters at once.
    fn take(&mut self, chunk: Chunk) -> anyhow::Result<()> {
        let now_ms = crate::event::time::now().div_euclid(1_000_000);
        let mut queued = 0;
        let cap = self.config.retry_max_wait;
        for line in chunk.data.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let (key, mut event) = self.router.route(line, chunk.seq, now_ms);
            if fit_event(&mut event.message) {
                self.done.truncated += 1;
                self.counters.records_truncated.fetch_add(1, Ordering::Relaxed);
            }
            match age(event.timestamp, now_ms, self.config.retention_days) {
                Age::Ok => {}
                too => {
                    self.count_dead(too == Age::TooOld, 1);
                    self.dead.set_aside(chunk.seq, [line, b"\n"].concat());
                    queued += 1;
                    continue;
                }
            }
            if !self.queues.contains_key(key) {
                self.queues.insert(key.clone(), Queue::new(seed() ^ queued, cap));
            }
            let q = self.queues.get_mut(key).expect("inserted above");
            q.bytes += event.size();
            self.queued_bytes += event.size();
            q.oldest.get_or_insert_with(Instant::now);
            q.events.push(event);
            queued += 1;
        }
        self.done.chunks += 1;
        self.pending.insert(chunk.seq, (queued, true));
        self.write_dead();
        self.try_ack(chunk.seq);
        Ok(())
    }

    /// When a waiting stream next becomes due (None while the puts in flight are at
    /// the limit: only an answer helps).
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.len() >= self.config.max_in_flight {
            return self.dead.retry_at();
        }
        let now = Instant::now();
        let send = self
            .queues
            .values()
            .filter(|q| !q.busy && !q.events.is_empty())
            .filter_map(|q| match q.retry_at.filter(|&r| r > now) {
                Some(r) => Some(r),
                None => q.oldest.map(|t| t + self.config.linger),
            })
            .min();
        earliest(send, self.dead.retry_at())
    }

    /// Writes dead letters that wait, then sends due streams' batches, the
    /// longest-waiting first, while there is room.
    async fn dispatch(&mut self, closing: bool) {
        self.write_dead();
        let now = Instant::now();
        let mut due: Vec<(Instant, StreamKey)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.busy && !q.events.is_empty() && q.retry_at.is_none_or(|r| r <= now))
            .filter(|(_, q)| {
                let full = q.events.len() >= MAX_BATCH_EVENTS || q.bytes >= MAX_BATCH_BYTES;
                full || closing || q.oldest.is_some_and(|t| now.duration_since(t) >= self.config.linger)
            })
            .map(|(k, q)| (q.oldest.unwrap_or(now), k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            if self.in_flight.len() >= self.config.max_in_flight {
                return;
            }
            let q = self.queues.get_mut(&key).expect("a due stream exists");
            let batch = take_batch(&mut q.events);
            let bytes = batch_bytes(&batch);
            q.bytes -= bytes;
            self.queued_bytes -= bytes;
            q.busy = true;
            q.oldest = (!q.events.is_empty()).then_some(now);
            self.pacer.admit(batch.len() as u64, bytes as u64).await;
            let logs = self.logs.clone();
            self.in_flight.spawn(async move {
                let sent = Instant::now();
                let result = logs.put(&key, &batch).await;
                (key, batch, sent, result)
            });
        }
    }

    async fn answer(&mut self, (key, batch, sent, result): Answer) -> anyhow::Result<()> {
        if let Some(q) = self.queues.get_mut(&key) {
            q.busy = false;
        }
        match result {
            Ok(rejected) => self.accepted(&key, batch, rejected),
            Err(f) if f.code.as_deref() == Some("ResourceNotFoundException") && self.config.create_missing => {
                self.counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                match self.create(&key).await {
                    Ok(()) => self.requeue(&key, batch, Duration::ZERO),
                    Err(f) => self.failed(&key, batch, sent, f),
                }
            }
            Err(f) => self.failed(&key, batch, sent, f),
        }
        self.counters.set_rate(0.0, self.pacer.requests_per_second());
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queues.values().all(|q| q.events.is_empty()) && self.in_flight.is_empty() && self.dead.is_empty()
    }

    fn room(&self) -> bool {
        self.queued_bytes + self.dead.waiting_bytes() < QUEUE_BYTES
    }

    fn in_flight(&mut self) -> &mut JoinSet<Answer> {
        &mut self.in_flight
    }

    fn delivered(&self) -> Delivered {
        self.done
    }
}
