//! Metrics and health: Prometheus exposition (through `metrics-exporter-prometheus`),
//! `/healthz` and `/readyz`, on one HTTP listener.
//!
//! The stages keep plain counters (no locking on the hot path); [`Telemetry::publish`]
//! copies them into the registry about once a second. Names follow
//! `logferry_<noun>_<unit>[_total]`; labels come only from small fixed sets
//! (`sink`, `format`, `reason`, `stream`, `outcome`) — never a file path or pod name.
//! The catalogue, with what each metric means and which alert uses it, is in the
//! README.

pub mod http;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::buffer::BufferStats;
use crate::tail::stats::{TailSnapshot, TailStats};
use http::Response;

/// A tail loop silent this long is stuck: `/healthz` fails so Kubernetes restarts us.
/// (Idle, the loop still goes round every `rescan_interval`.)
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// What the sink stage counts, shared with the publisher.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
    /// Records (a Firehose record; an event for stdout and file) by outcome.
    pub records_ok: AtomicU64,
    pub records_failed: AtomicU64,
    pub records_dead_letter: AtomicU64,
    pub records_truncated: AtomicU64,
    /// CloudWatch Logs events set aside for their time.
    pub dropped_too_old: AtomicU64,
    pub dropped_too_new: AtomicU64,
    /// CloudWatch Logs events of parked log streams, set aside.
    pub dropped_parked: AtomicU64,
    /// CloudWatch Logs: log streams with a queue now, and of those, parked.
    pub streams: AtomicU64,
    pub streams_parked: AtomicU64,
    /// Calls or records refused for being over the quota.
    pub throttled: AtomicU64,
    /// Firehose: accepted records' sizes rounded up to 5 KiB, as AWS bills them.
    pub billed_bytes: AtomicU64,
    /// S3: objects written, and their bytes as stored (compressed).
    pub objects: AtomicU64,
    pub stored_bytes: AtomicU64,
    /// The pace the sink allows itself now (bytes/s, an f64's bits); 0: unpaced.
    pub rate_bytes_per_second: AtomicU64,
    /// The same in requests per second (an f64's bits); 0: unpaced.
    pub rate_requests_per_second: AtomicU64,
    /// The last attempt to write succeeded.
    pub healthy: AtomicBool,
    /// Why the sink is failing, for `/readyz`.
    pub last_error: Mutex<Option<String>>,
    /// Dead letters that cannot be written (they wait in memory meanwhile).
    pub dead_letters: Fault,
}

impl SinkCounters {
    pub fn new() -> Self {
        Self { healthy: AtomicBool::new(true), ..Self::default() }
    }

    pub fn failed(&self, why: String) {
        self.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why);
        }
    }

    pub fn succeeded(&self) {
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(true, Ordering::Relaxed);
    }

    /// Healthy again (the request itself was counted by the caller).
    pub fn succeeded_quietly(&self) {
        self.healthy.store(true, Ordering::Relaxed);
    }

    /// Unhealthy for `/readyz`, with why (the request was counted by the caller).
    pub fn report_failing(&self, why: String) {
        self.healthy.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why);
        }
    }

    /// The pace now: bytes per second (0 when bytes are not paced) and requests.
    pub fn set_rate(&self, bytes_per_second: f64, requests_per_second: f64) {
        self.rate_bytes_per_second.store(bytes_per_second.to_bits(), Ordering::Relaxed);
        self.rate_requests_per_second.store(requests_per_second.to_bits(), Ordering::Relaxed);
    }
}

/// A condition a stage reports until it clears (checkpoints that cannot be saved on a
/// full or read-only disk): `/readyz` names it meanwhile, and every occurrence is
/// counted. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    why: Mutex<Option<String>>,
    count: AtomicU64,
}

impl Fault {
    /// Records a failure; true when it is new (not the one already reported), so the
    /// caller logs each cause once.
    pub fn set(&self, why: String) -> bool {
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        let mut now = self.inner.why.lock().unwrap_or_else(|p| p.into_inner());
        let new = now.as_deref() != Some(why.as_str());
        *now = Some(why);
        new
    }

    /// The condition is over; true when it was set.
    pub fn clear(&self) -> bool {
        self.inner.why.lock().unwrap_or_else(|p| p.into_inner()).take().is_some()
    }

    pub fn get(&self) -> Option<String> {
        self.inner.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Failures so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

/// One sink, as metrics and health checks see it.
pub struct SinkTelemetry {
    /// The operator's name: the `sink` label.
    pub name: String,
    /// Its type (`file`, `firehose`, `cloudwatch`…): which families it has.
    pub kind: &'static str,
    pub counters: Arc<SinkCounters>,
}

/// The registry and what health checks look at.
pub struct Telemetry {
    handle: PrometheusHandle,
    /// In configuration order (the buffer's cursor order).
    pub sinks: Vec<SinkTelemetry>,
    pub tail: Arc<Mutex<TailSnapshot>>,
    pub buffer: Option<crate::buffer::Buffer>,
    /// Checkpoints that cannot be saved.
    pub checkpoints: Fault,
    /// Events each sink's route left out, and those it routed.
    pub routes: Option<Arc<crate::route::RouteCounters>>,
    started: Instant,
}

/// Installs the process-wide recorder (once; later calls reuse it).
fn handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().expect("the metrics recorder installs once");
            describe_all();
            handle
        })
        .clone()
}

impl Telemetry {
    pub fn new(sinks: Vec<SinkTelemetry>, tail: Arc<Mutex<TailSnapshot>>, buffer: Option<crate::buffer::Buffer>) -> Self {
        let t = Self { handle: handle(), sinks, tail, buffer, checkpoints: Fault::default(), routes: None, started: Instant::now() };
        gauge!("logferry_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        t
    }

    /// Copies every stage's counters into the registry.
    pub fn publish(&self) {
        let snap = self.tail.lock().map(|s| *s).unwrap_or_default();
        publish_tail(&snap.stats);
        let now = crate::event::time::now();
        if let Some(b) = &self.buffer {
            publish_buffer(&b.stats());
        }
        counter!("logferry_data_dir_errors_total", "what" => "checkpoints").absolute(self.checkpoints.count());
        let dead_letter_errors = self.sinks.iter().map(|s| s.counters.dead_letters.count()).sum::<u64>();
        counter!("logferry_data_dir_errors_total", "what" => "dead_letters").absolute(dead_letter_errors);
        for (i, sink) in self.sinks.iter().enumerate() {
            publish_sink(sink);
            let name = sink.name.clone();
            if let Some(routes) = &self.routes {
                counter!("logferry_filtered_events_total", "sink" => name.clone()).absolute(routes.filtered(i));
                counter!("logferry_routed_events_total", "sink" => name.clone()).absolute(routes.routed(i));
            }
            if let Some(b) = self.buffer.as_ref().filter(|b| i < b.sinks()) {
                let s = b.sink_stats(i);
                let lag = s.oldest_unacked_time.map_or(0.0, |t| ((now - t).max(0)) as f64 / 1e9);
                gauge!("logferry_shipping_lag_seconds", "sink" => name.clone()).set(lag);
                gauge!("logferry_sink_buffer_bytes", "sink" => name.clone()).set(s.bytes as f64);
                gauge!("logferry_sink_buffer_max_bytes", "sink" => name.clone()).set(s.max_bytes as f64);
                // What `when_full = "drop_oldest"` gave up for this sink alone.
                counter!("logferry_sink_records_total", "sink" => name, "outcome" => "dropped").absolute(s.dropped_records);
            }
        }
        self.publish_dropped();
    }

    /// `logferry_dropped_records_total` by reason, summed over the sinks.
    fn publish_dropped(&self) {
        let sum = |f: fn(&SinkCounters) -> &AtomicU64| self.sinks.iter().map(|s| f(&s.counters).load(Ordering::Relaxed)).sum::<u64>();
        counter!("logferry_dropped_records_total", "reason" => "dead_letter").absolute(sum(|c| &c.records_dead_letter));
        counter!("logferry_dropped_records_total", "reason" => "too_old").absolute(sum(|c| &c.dropped_too_old));
        counter!("logferry_dropped_records_total", "reason" => "too_new").absolute(sum(|c| &c.dropped_too_new));
        if self.sinks.iter().any(|s| s.kind == "cloudwatch") {
            counter!("logferry_dropped_records_total", "reason" => "parked").absolute(sum(|c| &c.dropped_parked));
        }
        if self.sinks.iter().any(|s| s.kind == "firehose") {
            let billed = self.sinks.iter().filter(|s| s.kind == "firehose").map(|s| s.counters.billed_bytes.load(Ordering::Relaxed)).sum::<u64>();
            counter!("logferry_firehose_billed_bytes_total").absolute(billed);
        }
    }

    /// Routes the three endpoints.
    pub fn route(&self, path: &str) -> Response {
        match path {
            "/metrics" => {
                self.publish();
                Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body: self.handle.render() }
            }
            "/healthz" => self.healthz(),
            "/readyz" => self.readyz(),
            _ => Response::text(404, "not found; try /metrics, /healthz or /readyz\n"),
        }
    }

    /// Alive: the tail loop keeps going round.
    fn healthz(&self) -> Response {
        let beat = self.tail.lock().ok().and_then(|s| s.heartbeat).unwrap_or(self.started);
        let age = beat.elapsed();
        if age > STUCK_AFTER {
            return Response::text(503, format!("unhealthy: the tail loop has not run for {} s\n", age.as_secs()));
        }
        Response::text(200, "ok\n")
    }

    /// Ready: the sink accepts data and the buffer is not full.
    fn readyz(&self) -> Response {
        let mut problems = Vec::new();
        for sink in &self.sinks {
            if !sink.counters.healthy.load(Ordering::Relaxed) {
                let why = sink.counters.last_error.lock().ok().and_then(|e| e.clone()).unwrap_or_default();
                problems.push(format!("sink {}: failing: {why}", sink.name));
            }
        }
        if let Some(b) = &self.buffer {
            let s = b.stats();
            let blocking = self.share_problems(b, &mut problems);
            if s.backpressure && !blocking {
                problems.push(format!("buffer: full ({} of {} bytes); reading is paused", s.bytes, s.max_bytes));
            }
            if let Some(why) = b.disk_fault() {
                problems.push(format!("data_dir: the buffer cannot write to disk ({why}); records are held in memory only, reading pauses when it is full"));
            }
        }
        for sink in &self.sinks {
            if let Some(why) = sink.counters.dead_letters.get() {
                problems.push(format!("data_dir: sink {}: {why}; the events wait in memory (their records unacknowledged) and are retried", sink.name));
            }
        }
        if let Some(why) = self.checkpoints.get() {
            problems.push(format!("data_dir: {why}; positions are kept in memory and saved once it works (a restart meanwhile reads some lines again)"));
        }
        match problems.is_empty() {
            true => Response::text(200, "ready\n"),
            false => Response::text(503, problems.join("\n") + "\n"),
        }
    }
}

impl Telemetry {
    /// Sinks whose share of the buffer is full: one that blocks pauses reading, one
    /// that drops its oldest records has done so lately. Returns whether reading waits
    /// for a sink named here.
    fn share_problems(&self, b: &crate::buffer::Buffer, problems: &mut Vec<String>) -> bool {
        let mut blocking = false;
        for (i, sink) in self.sinks.iter().enumerate().filter(|(i, _)| *i < b.sinks()) {
            let s = b.sink_stats(i);
            if s.blocking {
                blocking = true;
                problems.push(format!(
                    "sink {}: its share of the buffer is full ({} of {} bytes, when_full = \"block\"); reading is paused until it takes data again",
                    sink.name, s.bytes, s.max_bytes
                ));
            }
            if s.last_drop.is_some_and(|t| t.elapsed() < DROPPING_LATELY) {
                problems.push(format!(
                    "sink {}: its share of the buffer is full ({} of {} bytes, when_full = \"drop_oldest\"); it drops its oldest records ({} so far)",
                    sink.name, s.bytes, s.max_bytes, s.dropped_records
                ));
            }
        }
        blocking
    }
}

/// How long after its last drop a `drop_oldest` sink is reported by `/readyz`.
const DROPPING_LATELY: Duration = Duration::from_secs(60);

/// One sink's families, labelled with its name.
fn publish_sink(sink: &SinkTelemetry) {
    let s = &sink.counters;
    let name = || sink.name.clone();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter!("logferry_sink_requests_total", "sink" => name(), "outcome" => "ok").absolute(get(&s.requests_ok));
    counter!("logferry_sink_requests_total", "sink" => name(), "outcome" => "error").absolute(get(&s.requests_failed));
    counter!("logferry_sink_records_total", "sink" => name(), "outcome" => "ok").absolute(get(&s.records_ok));
    counter!("logferry_sink_records_total", "sink" => name(), "outcome" => "failed").absolute(get(&s.records_failed));
    counter!("logferry_sink_records_total", "sink" => name(), "outcome" => "dead_letter").absolute(get(&s.records_dead_letter));
    counter!("logferry_sink_records_total", "sink" => name(), "outcome" => "truncated").absolute(get(&s.records_truncated));
    counter!("logferry_sink_bytes_total", "sink" => name()).absolute(get(&s.bytes));
    counter!("logferry_sink_retries_total", "sink" => name()).absolute(get(&s.retries));
    counter!("logferry_sink_throttled_total", "sink" => name()).absolute(get(&s.throttled));
    gauge!("logferry_sink_rate_bytes_per_second", "sink" => name()).set(f64::from_bits(get(&s.rate_bytes_per_second)));
    gauge!("logferry_sink_rate_requests_per_second", "sink" => name()).set(f64::from_bits(get(&s.rate_requests_per_second)));
    if sink.kind == "s3" {
        counter!("logferry_sink_objects_total", "sink" => name()).absolute(get(&s.objects));
        counter!("logferry_sink_stored_bytes_total", "sink" => name()).absolute(get(&s.stored_bytes));
    }
    if sink.kind == "cloudwatch" {
        gauge!("logferry_sink_streams", "sink" => name(), "state" => "active").set(get(&s.streams).saturating_sub(get(&s.streams_parked)) as f64);
        gauge!("logferry_sink_streams", "sink" => name(), "state" => "parked").set(get(&s.streams_parked) as f64);
    }
}

fn publish_tail(t: &TailStats) {
    for (i, format) in TailStats::FORMATS.iter().enumerate() {
        let d = &t.by_format[i];
        counter!("logferry_lines_rejoined_total", "format" => *format).absolute(d.rejoined);
        counter!("logferry_malformed_lines_total", "format" => *format).absolute(d.malformed);
    }
    let d = t.decode();
    counter!("logferry_events_total", "stream" => "stdout").absolute(d.events - d.stderr_events);
    counter!("logferry_events_total", "stream" => "stderr").absolute(d.stderr_events);
    counter!("logferry_lines_truncated_total").absolute(d.truncated);
    counter!("logferry_partial_lines_total").absolute(d.partial);
    counter!("logferry_multiline_events_total").absolute(d.groups);
    counter!("logferry_multiline_lines_total").absolute(d.grouped_lines);
    counter!("logferry_multiline_flushed_total").absolute(d.groups_flushed);
    counter!("logferry_multiline_capped_total").absolute(d.groups_capped);
    counter!("logferry_dropped_records_total", "reason" => "oversize").absolute(d.dropped_oversize);
    counter!("logferry_read_bytes_total").absolute(t.follow.bytes_read);
    counter!("logferry_rotations_total").absolute(t.follow.rotations);
    counter!("logferry_truncations_total").absolute(t.follow.truncations);
    counter!("logferry_rotated_unread_bytes_total").absolute(t.follow.rotated_unread_bytes);
    counter!("logferry_lost_positions_total").absolute(t.follow.lost_positions);
    gauge!("logferry_files_followed").set(t.files_followed as f64);
    gauge!("logferry_directories_polled").set(t.directories_polled as f64);
    gauge!("logferry_file_unread_bytes").set(t.unread_bytes as f64);
    counter!("logferry_read_turns_total", "thread" => "tailer").absolute(t.turns);
    counter!("logferry_read_turns_total", "thread" => "helper").absolute(t.helper_turns);
}

fn publish_buffer(b: &BufferStats) {
    gauge!("logferry_buffer_bytes").set((b.bytes + b.memory_bytes) as f64);
    gauge!("logferry_buffer_memory_bytes").set(b.memory_bytes as f64);
    counter!("logferry_buffer_written_bytes_total").absolute(b.written_bytes);
    gauge!("logferry_buffer_max_bytes").set(b.max_bytes as f64);
    gauge!("logferry_buffer_records").set(b.records as f64);
    gauge!("logferry_backpressure_active").set(if b.backpressure { 1.0 } else { 0.0 });
    counter!("logferry_dropped_records_total", "reason" => "buffer_full").absolute(b.dropped_records);
    counter!("logferry_dropped_records_total", "reason" => "corrupt").absolute(b.corrupt_records);
    counter!("logferry_dropped_records_total", "reason" => "too_large").absolute(b.too_large_records);
    counter!("logferry_buffer_corrupt_regions_total").absolute(b.corrupt_regions);
    counter!("logferry_data_dir_errors_total", "what" => "buffer").absolute(b.disk_errors);
}

fn describe_all() {
    describe_gauge!("logferry_build_info", "Always 1; the version label says which logferry runs.");
    describe_counter!("logferry_lines_rejoined_total", "Events put back together from lines the runtime split.");
    describe_counter!("logferry_malformed_lines_total", "Lines that fit no log format, shipped raw.");
    describe_counter!("logferry_events_total", "Events read, by stream.");
    describe_counter!("logferry_lines_truncated_total", "Events cut at decode.max_message_bytes.");
    describe_counter!("logferry_multiline_events_total", "Events grouped by a [[multiline]] rule from more than one line (a stack trace).");
    describe_counter!("logferry_multiline_lines_total", "Lines that went into multiline events.");
    describe_counter!("logferry_multiline_flushed_total", "Multiline groups closed because the file went quiet for flush_timeout, or ended, rather than by a line that does not continue them.");
    describe_counter!("logferry_multiline_capped_total", "Multiline groups closed at max_lines or decode.max_message_bytes (the rest of the trace goes line by line).");
    describe_counter!("logferry_sink_objects_total", "S3: objects written.");
    describe_counter!("logferry_sink_stored_bytes_total", "S3: bytes of the objects written, as stored (compressed); logferry_sink_bytes_total has them before compression.");
    describe_counter!("logferry_partial_lines_total", "Messages emitted flagged partial: a split line unfinished when its file ended or went quiet, or the first message of a stream after input lost unread (its head may be missing).");
    describe_counter!("logferry_dropped_records_total", "Records dropped by policy, by reason (oversize, buffer_full, corrupt, too_large, dead_letter, too_old, too_new, parked).");
    describe_gauge!("logferry_sink_streams", "CloudWatch Logs: log streams with events queued or in flight (state=active), and those parked after refusing permanently (state=parked).");
    describe_counter!("logferry_read_bytes_total", Unit::Bytes, "Bytes read from log files.");
    describe_counter!("logferry_rotations_total", "Rotated files read to their end and left for the next.");
    describe_counter!("logferry_truncations_total", "Files truncated in place (copytruncate) and read again from 0.");
    describe_counter!("logferry_rotated_unread_bytes_total", Unit::Bytes, "Bytes the kubelet deleted by rotation before logferry read them.");
    describe_counter!("logferry_lost_positions_total", "Streams whose saved position pointed into a file deleted meanwhile.");
    describe_counter!("logferry_routed_events_total", "Events buffered for a sink (its route took them).");
    describe_gauge!("logferry_sink_buffer_bytes", Unit::Bytes, "What a sink holds in the buffer (segments with records it has not acknowledged, and memory), against its share.");
    describe_gauge!("logferry_sink_buffer_max_bytes", Unit::Bytes, "A sink's share of the buffer (its max_bytes).");
    describe_counter!("logferry_filtered_events_total", "Events a sink's route left out (its streams, or its drop_messages); containers no route selects are not read at all.");
    describe_gauge!("logferry_files_followed", "Log files followed now.");
    describe_gauge!("logferry_directories_polled", "Busy containers' log directories read on a timer (every tail.busy_poll_interval) rather than on each write.");
    describe_counter!("logferry_read_turns_total", "Turns of reading one file (up to tail.read_bytes_per_turn), by the thread that read it: the tailer, or a helper reading a backlogged file beside it.");
    describe_gauge!("logferry_file_unread_bytes", Unit::Bytes, "Bytes written to followed files and not yet read: how far reading is behind.");
    describe_gauge!("logferry_buffer_bytes", Unit::Bytes, "What the buffer holds against its cap: on disk, and in memory not yet written.");
    describe_counter!("logferry_buffer_written_bytes_total", Unit::Bytes, "Bytes written to the disk buffer: what the sink did not acknowledge while it was held in memory.");
    describe_gauge!("logferry_buffer_memory_bytes", Unit::Bytes, "What the buffer holds in memory, not written to disk (the sink has not acknowledged it yet).");
    describe_gauge!("logferry_buffer_max_bytes", Unit::Bytes, "The disk buffer's cap (buffer.max_bytes).");
    describe_gauge!("logferry_buffer_records", "Records in the disk buffer not yet acknowledged by the sink.");
    describe_gauge!("logferry_shipping_lag_seconds", Unit::Seconds, "Per sink: age of the oldest record it has not acknowledged, by when it was read.");
    describe_gauge!("logferry_backpressure_active", "1 while the buffer is full and reading is paused.");
    describe_counter!("logferry_buffer_corrupt_regions_total", "Corrupted regions skipped in the disk buffer.");
    describe_counter!("logferry_data_dir_errors_total", "Writes to data_dir that failed (a full, read-only or failing disk), by what was written: buffer, checkpoints, dead_letters. Retried until they work.");
    describe_counter!("logferry_sink_requests_total", "Requests (batches) sent to the sink, by outcome.");
    describe_counter!("logferry_sink_records_total", "Records by outcome (ok, failed and retried, dead_letter, truncated, dropped by when_full = drop_oldest): a Firehose record, or an event for stdout and file.");
    describe_counter!("logferry_sink_throttled_total", "Calls or records the destination refused for being over its quota.");
    describe_gauge!("logferry_sink_rate_bytes_per_second", "The pace the sink allows itself now (AIMD below the configured ceiling); 0 when unpaced.");
    describe_gauge!("logferry_sink_rate_requests_per_second", "The request pace the sink allows itself now (AIMD below max_requests_per_second); 0 when unpaced.");
    describe_counter!("logferry_firehose_billed_bytes_total", Unit::Bytes, "Accepted Firehose records' sizes rounded up to 5 KiB, as AWS bills them.");
    describe_counter!("logferry_sink_bytes_total", Unit::Bytes, "Bytes delivered to the sink.");
    describe_counter!("logferry_sink_retries_total", "Sink requests retried.");
}
