//! The CloudWatch Logs delivery loop, on the shared core (`core`): chunks of JSON
//! lines in, acknowledgements out.
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
//! - A stream refused for a reason no retry fixes (access denied to its group, a group
//!   that cannot be created) for `park_after`, while other streams were accepted
//!   meanwhile, is parked: what it holds and what comes for it go to the dead letters,
//!   counted, and one batch is tried every [`PROBE_EVERY`] (or `park_after` if
//!   shorter); accepted, it flows again.
//!   So one broken stream cannot hold back the node (its records would never be
//!   acknowledged and the buffer would fill). Every stream refused (credentials) is an
//!   outage, not a broken stream: nothing is parked, the data waits in the buffer.
//! - A stream's queue exists only while it has events queued or in flight (parked
//!   ones: until idle for `park_after`), so pod churn grows neither memory nor the work
//!   of each round.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::client::{Failure, FailureKind};
use super::cloudwatch::{CloudWatchLogs, Rejected};
use super::core::{earliest, Chunk, Delivered, Failures, Ledger, Loop};
use super::pace::Pacer;
use crate::sink::backoff::{seed, Backoff};
use crate::batch::cloudwatch::{age, batch_bytes, fit_event, take_batch, Age, LogEvent, LogStreams, StreamKey, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use crate::config::CloudWatchConfig;
use crate::metrics::SinkCounters;

/// Events waiting to be sent, at most (then no more chunks are taken).
const QUEUE_BYTES: usize = 16 << 20;
/// A parked stream is tried again (one batch) this often (or every `park_after`, if
/// shorter, but not more than once a second).
pub const PROBE_EVERY: Duration = Duration::from_secs(60);
/// Idle parked streams are looked for this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One log stream's events waiting to be sent.
struct Queue {
    events: Vec<LogEvent>,
    bytes: usize,
    oldest: Option<Instant>,
    /// A put to this stream is in flight.
    busy: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Since when every put was refused for a reason retries do not fix.
    refused_since: Option<Instant>,
    /// Parked, and why: its events go to the dead letters but for a probe.
    parked: Option<Arc<str>>,
    /// When a parked stream's next batch is tried.
    probe_at: Instant,
    /// When an event last came for it.
    last_used: Instant,
}

impl Queue {
    fn new(seed: u64, cap: Duration) -> Self {
        let backoff = Backoff::try_new(Duration::from_millis(100), cap.max(Duration::from_millis(100)), seed).expect("valid bounds");
        let now = Instant::now();
        Self { events: Vec::new(), bytes: 0, oldest: None, busy: false, retry_at: None, backoff, refused_since: None, parked: None, probe_at: now, last_used: now }
    }

    /// Why its events go to the dead letters now (parked, and no probe due).
    fn parked_now(&self, now: Instant) -> Option<&Arc<str>> {
        self.parked.as_ref().filter(|_| now < self.probe_at)
    }

    /// Nothing queued, nothing in flight, nothing to remember: no refusal under way,
    /// and no parking, or one unused for `forget_parked`.
    fn idle(&self, now: Instant, forget_parked: Duration) -> bool {
        let remembered = match self.parked {
            Some(_) => now.saturating_duration_since(self.last_used) < forget_parked,
            None => self.refused_since.is_some(),
        };
        self.events.is_empty() && !self.busy && !remembered
    }
}

/// A put's answer: the stream, the batch, when it was sent, whether the stream (and
/// group) was created first, and the put's result (or the creation's failure).
type Answer = (StreamKey, Vec<LogEvent>, Instant, bool, Result<Rejected, Failure>);

/// The CloudWatch Logs delivery loop.
pub struct CloudWatchDelivery<A: FnMut(u64)> {
    logs: CloudWatchLogs,
    config: CloudWatchConfig,
    streams: LogStreams,
    pacer: Pacer,
    queues: HashMap<StreamKey, Queue>,
    queued_bytes: usize,
    /// Each chunk's events not yet accepted or set aside.
    ledger: Ledger<A>,
    in_flight: JoinSet<Answer>,
    counters: Arc<SinkCounters>,
    done: Delivered,
    failures: Failures,
    jitter: Backoff,
    /// When any stream's put was last accepted.
    last_accepted: Option<Instant>,
    last_sweep: Instant,
}

impl<A: FnMut(u64)> CloudWatchDelivery<A> {
    pub fn new(logs: CloudWatchLogs, config: CloudWatchConfig, ledger: Ledger<A>, counters: Arc<SinkCounters>) -> Self {
        let streams = LogStreams::new(config.log_group.clone(), config.log_stream.clone(), config.node.clone(), config.cluster.clone(), config.bare_message);
        let pacer = Pacer::new(config.pacing);
        counters.set_rate(0.0, pacer.requests_per_second());
        Self {
            logs,
            streams,
            pacer,
            queues: HashMap::new(),
            queued_bytes: 0,
            ledger,
            in_flight: JoinSet::new(),
            counters,
            done: Delivered::default(),
            failures: Failures::default(),
            jitter: Backoff::try_new(Duration::from_millis(100), Duration::from_secs(1), seed()).expect("valid bounds"),
            last_accepted: None,
            last_sweep: Instant::now(),
            config,
        }
    }

    fn count_dead(&mut self, too_old: bool, n: u64) {
        self.done.dead_letters += n;
        let c = if too_old { &self.counters.dropped_too_old } else { &self.counters.dropped_too_new };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Hands the dead letters set aside to their writer, and acknowledges the chunks
    /// that waited only on lines now written.
    fn write_dead(&mut self) {
        let written = self.ledger.write_dead();
        if written.is_empty() {
            return;
        }
        tracing::warn!(events = written.len(), path = %self.ledger.dead().path().display(), "events were set aside in the dead letters (refused for their time, or their log stream parked; logferry_dropped_records_total says which)");
        for seq in written {
            self.ledger.try_ack(seq, false);
        }
    }

    /// One event of chunk `seq` was accepted.
    fn settled(&mut self, seq: u64) {
        self.ledger.settle(seq);
        self.ledger.try_ack(seq, false);
    }

    fn accepted(&mut self, key: &StreamKey, batch: Vec<LogEvent>, rejected: Rejected) {
        self.counters.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.counters.succeeded_quietly();
        self.failures.succeeded();
        self.pacer.succeeded();
        self.last_accepted = Some(Instant::now());
        if let Some(q) = self.queues.get_mut(key) {
            q.backoff.reset();
            q.refused_since = None;
            if q.parked.take().is_some() {
                self.counters.streams_parked.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(group = %key.group, stream = %key.stream, "CloudWatch Logs accepts this log stream again: no longer parked");
            }
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
                    // Moved from waiting in a queue to waiting to be written.
                    self.ledger.settle(event.chunk);
                    self.ledger.set_aside(event.chunk, dead_letter_line(key, &event, reason, None));
                }
            }
        }
        self.write_dead();
    }

    fn failed(&mut self, key: &StreamKey, batch: Vec<LogEvent>, sent: Instant, failure: Failure) {
        let log = self.failures.failed(&self.counters, &failure, batch.len());
        if failure.kind == FailureKind::Permanent && self.refused_for_good(key, sent) {
            self.park(key, batch, &failure.message);
            return;
        }
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

    /// A put found its stream missing: creates it and puts the batch again, as a task
    /// in flight like any put (new pods' streams are created side by side, not one
    /// after the other in the loop, which would hold every other stream back). The
    /// stream stays busy meanwhile, so its events stay in order.
    async fn create_then_put(&mut self, key: StreamKey, batch: Vec<LogEvent>) {
        // The stream, perhaps the group and the stream again, then the put.
        self.pacer.admit(3, 0).await;
        let cap = self.config.retry_max_wait;
        self.queues.entry(key.clone()).or_insert_with(|| Queue::new(seed(), cap)).busy = true;
        let (logs, retention_days) = (self.logs.clone(), self.config.retention_days);
        self.in_flight.spawn(async move {
            let sent = Instant::now();
            let result = match create_stream(&logs, &key, retention_days).await {
                Ok(()) => logs.put(&key, &batch).await,
                Err(f) => Err(f),
            };
            (key, batch, sent, true, result)
        });
    }

    /// Whether `key` is to be parked: refused for good since `park_after` ago while
    /// another stream was accepted since, or parked already (a probe failed).
    fn refused_for_good(&mut self, key: &StreamKey, sent: Instant) -> bool {
        let (park_after, last_accepted) = (self.config.park_after, self.last_accepted);
        let Some(q) = self.queues.get_mut(key) else { return false };
        let since = *q.refused_since.get_or_insert(sent);
        q.parked.is_some() || (sent.saturating_duration_since(since) >= park_after && last_accepted.is_some_and(|t| t > since))
    }

    /// Parks `key`: the refused batch and what waits for the stream go to the dead
    /// letters, and the next batch is tried after [`PROBE_EVERY`].
    fn park(&mut self, key: &StreamKey, batch: Vec<LogEvent>, why: &str) {
        let Some(q) = self.queues.get_mut(key) else { return };
        let newly = q.parked.is_none();
        let why = q.parked.get_or_insert_with(|| why.into()).clone();
        q.probe_at = Instant::now() + self.config.park_after.clamp(Duration::from_secs(1), PROBE_EVERY);
        let waiting = std::mem::take(&mut q.events);
        self.queued_bytes -= std::mem::take(&mut q.bytes);
        (q.oldest, q.retry_at) = (None, None);
        if newly {
            self.counters.streams_parked.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                group = %key.group,
                stream = %key.stream,
                error = %why,
                park_after = ?self.config.park_after,
                "CloudWatch Logs keeps refusing this log stream while it accepts others: parked; its events go to the dead letters, and it is tried again every minute"
            );
        }
        for event in batch.into_iter().chain(waiting) {
            // From waiting to be sent to waiting to be written.
            self.ledger.settle(event.chunk);
            self.set_aside_parked(key, event, &why);
        }
        self.write_dead();
    }

    fn set_aside_parked(&mut self, key: &StreamKey, event: LogEvent, why: &str) {
        self.done.dead_letters += 1;
        self.counters.dropped_parked.fetch_add(1, Ordering::Relaxed);
        self.ledger.set_aside(event.chunk, dead_letter_line(key, &event, "parked", Some(why)));
    }

    /// Forgets the queues of streams with nothing queued or in flight (parked ones
    /// once idle for `park_after`), at most every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        let forget = self.config.park_after.max(PROBE_EVERY);
        let mut unparked = 0;
        self.queues.retain(|_, q| {
            let gone = q.idle(now, forget);
            unparked += u64::from(gone && q.parked.is_some());
            !gone
        });
        self.counters.streams_parked.fetch_sub(unparked, Ordering::Relaxed);
        self.counters.streams.store(self.queues.len() as u64, Ordering::Relaxed);
    }

    /// Forgets `key`'s queue if nothing is queued or in flight for it and nothing is
    /// to be remembered (refusals, parking).
    fn forget_if_idle(&mut self, key: &StreamKey) {
        if self.queues.get(key).is_some_and(|q| q.idle(Instant::now(), Duration::MAX)) {
            self.queues.remove(key);
        }
        self.counters.streams.store(self.queues.len() as u64, Ordering::Relaxed);
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

/// Creates `key`'s stream (and its group, with `retention_days`, if that is missing too).
async fn create_stream(logs: &CloudWatchLogs, key: &StreamKey, retention_days: u32) -> Result<(), Failure> {
    tracing::info!(group = %key.group, stream = %key.stream, "creating the missing log group and stream");
    match logs.create_stream(key).await {
        Err(f) if f.code.as_deref() == Some("ResourceNotFoundException") => {
            logs.create_group(&key.group, retention_days).await?;
            logs.create_stream(key).await
        }
        other => other,
    }
}

/// An event set aside as a dead letter: where it was going, why (and the error, for a
/// parked stream), and the event.
fn dead_letter_line(key: &StreamKey, event: &LogEvent, reason: &str, error: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "reason": reason,
        "log_group": key.group,
        "log_stream": key.stream,
        "timestamp": event.timestamp,
        "message": event.message,
    });
    if let Some(error) = error {
        v["error"] = error.into();
    }
    let mut line = serde_json::to_vec(&v).unwrap_or_default();
    line.push(b'\n');
    line
}

impl<A: FnMut(u64)> Loop for CloudWatchDelivery<A> {
    type Answer = Answer;

    /// Routes a chunk's events to their streams; the too old and too new go to the
    /// dead letters at once.
    fn take(&mut self, chunk: &Chunk) -> anyhow::Result<()> {
        let now_ms = crate::event::time::now().div_euclid(1_000_000);
        let now = Instant::now();
        let mut queued = 0;
        let cap = self.config.retry_max_wait;
        self.ledger.open(chunk.seq);
        for line in crate::batch::lines(&chunk.data) {
            let (key, mut event) = self.streams.route(line, chunk.seq, now_ms);
            if fit_event(&mut event.message) {
                self.done.truncated += 1;
                self.counters.records_truncated.fetch_add(1, Ordering::Relaxed);
            }
            match age(event.timestamp, now_ms, self.config.retention_days) {
                Age::Ok => {}
                too => {
                    self.count_dead(too == Age::TooOld, 1);
                    self.ledger.set_aside(chunk.seq, [line, b"\n"].concat());
                    continue;
                }
            }
            if !self.queues.contains_key(key) {
                self.queues.insert(key.clone(), Queue::new(seed() ^ queued, cap));
            }
            let q = self.queues.get_mut(key).expect("inserted above");
            q.last_used = now;
            if let Some(why) = q.parked_now(now).cloned() {
                let key = key.clone();
                self.set_aside_parked(&key, event, &why);
                continue;
            }
            q.bytes += event.size();
            self.queued_bytes += event.size();
            q.oldest.get_or_insert_with(Instant::now);
            q.events.push(event);
            self.ledger.wait(chunk.seq);
            queued += 1;
        }
        self.done.chunks += 1;
        self.ledger.complete(chunk.seq);
        self.write_dead();
        self.ledger.try_ack(chunk.seq, false);
        self.counters.streams.store(self.queues.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// When a waiting stream next becomes due (None while the puts in flight are at
    /// the limit: only an answer helps).
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.len() >= self.config.max_in_flight {
            return self.ledger.dead().poll_at();
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
        earliest(send, self.ledger.dead().poll_at())
    }

    /// Writes dead letters that wait, then sends due streams' batches, the
    /// longest-waiting first, while there is room.
    async fn dispatch(&mut self, closing: bool) {
        self.write_dead();
        let now = Instant::now();
        self.sweep(now);
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
                (key, batch, sent, false, result)
            });
        }
    }

    async fn answer(&mut self, (key, batch, sent, created, result): Answer) -> anyhow::Result<()> {
        if let Some(q) = self.queues.get_mut(&key) {
            q.busy = false;
        }
        match result {
            Ok(rejected) => self.accepted(&key, batch, rejected),
            Err(f) if f.code.as_deref() == Some("ResourceNotFoundException") && self.config.create_missing && !created => {
                self.counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                self.create_then_put(key.clone(), batch).await;
            }
            Err(f) => self.failed(&key, batch, sent, f),
        }
        self.forget_if_idle(&key);
        self.counters.set_rate(0.0, self.pacer.requests_per_second());
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queues.values().all(|q| q.events.is_empty()) && self.in_flight.is_empty() && self.ledger.dead().is_empty()
    }

    fn room(&self) -> bool {
        self.queued_bytes + self.ledger.dead().waiting_bytes() < QUEUE_BYTES
    }

    fn in_flight(&mut self) -> &mut JoinSet<Answer> {
        &mut self.in_flight
    }

    fn delivered(&self) -> Delivered {
        self.done
    }
}
