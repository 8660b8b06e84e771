//! The pipeline of `logferry run`: the one place that wires the stages — it opens
//! them, starts their threads, handles signals (SIGHUP reloads), and stops them in
//! order.
//!
//! ```text
//! tail thread ──batches──► buffer thread ──append──► disk buffer ──read_for(cursor)──► sink threads ──► sinks
//!      ▲                       │  group commit (fsync)                                    │
//!      └─ inotify wake-ups     └─► file checkpoints, once durable                         └─► ack_for(cursor) → buffer
//! ```
//!
//! - The tail thread reads, decodes, routes and encodes (`tail::tailer`).
//! - The buffer thread appends and checkpoints (`buffer::writer`): a checkpoint
//!   never covers data that is neither delivered nor on disk.
//! - One thread per configured sink (`sink::spawn`) reads its own cursor of the
//!   buffer, ships, and acknowledges; a record's space is freed once every sink it is
//!   routed to has acknowledged it. A sink that keeps up is handed every batch from
//!   memory and nothing is written to the buffer's disk at all.
//!
//! When a sink is slow its share of the buffer fills; then appends for it wait (or,
//! with `when_full = "drop_oldest"`, that sink alone drops its oldest records), the
//! bounded channel to the tail thread fills, and reading pauses with the logs still
//! on disk.
//!
//! Shutdown order: SIGTERM (what Kubernetes sends) or SIGINT stops the tail thread;
//! the buffer thread buffers and checkpoints what was read, then ends; the sinks ship
//! what the buffer holds and end, within `shutdown_timeout`. Whatever could not be
//! shipped by then stays in the buffer for the next start. A sink that ends on its
//! own (failed, panicked) ends the run, non-zero.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use anyhow::Context;

use crate::buffer::writer::{save_checkpoints, BufferWriter, Save};
use crate::buffer::{Buffer, BufferOptions, BufferStats, SinkShare};
use crate::config::{Config, WatchMode};
use crate::metrics::{http, Fault, SinkCounters, SinkTelemetry, Telemetry};
use crate::route::{RouteCounters, Router};
use crate::sink::{ShipSettings, Target};
use crate::tail::checkpoint::Checkpoints;
use crate::tail::stats::TailStats;
use crate::tail::tailer::{Tailer, TailerSettings};
use crate::tail::turn::Batch;
use crate::tail::watch::{Reload, Wake, Watch};

/// Batches in flight between the tail and buffer threads.
const CHANNEL_BATCHES: usize = 4;

/// What a run did, logged at exit.
#[derive(Debug, Default)]
pub struct RunReport {
    pub tail: TailStats,
    pub buffer: BufferStats,
    pub records_shipped: u64,
    pub bytes_shipped: u64,
    pub events_shipped: u64,
    /// Shutdown ran out of time with records still in the buffer.
    pub left_in_buffer: u64,
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads `config_path`.
pub fn run(config: Config, config_path: PathBuf) -> anyhow::Result<RunReport> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(run_until(config, Some(config_path), shutdown_signal())))
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
}

/// Runs until `shutdown` resolves (or a stage fails), then drains. Must run inside a
/// `tokio::task::LocalSet` (the metrics listener is a local task).
///
/// Start order: checkpoints and the buffer (recovered), the sinks (each client set
/// up, so a bad region fails before anything is read), the tailer, the metrics
/// listener, the buffer thread. Stop order: the tailer, the buffer thread (everything
/// read is buffered and checkpointed), the sinks (they drain within
/// `shutdown_timeout`).
pub async fn run_until(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let mut checkpoints = Checkpoints::load(&config.data_dir)?;
    let first_start = checkpoints.first_start();
    let resume: HashMap<PathBuf, _> = checkpoints.iter().map(|(p, pos)| (p.to_path_buf(), pos)).collect();
    // Record that logferry has started here, so `start_at = "end"` applies only once.
    // A disk that refuses (full, read-only) is a condition, not an exit: a pod that
    // crash-loops ships nothing.
    let checkpoint_fault = Fault::default();
    save_checkpoints(&mut checkpoints, &checkpoint_fault, Save::Synced);
    let buffer = open_buffer(&config)?;
    let writer_done = Arc::new(AtomicBool::new(false));
    let mut sinks = Sinks::start(&config, &buffer, &writer_done)?;

    let router = Arc::new(Router::new(config.sinks.iter().map(|s| s.route.clone()).collect()));
    let (batch_tx, batch_rx) = crate::tail::handoff::batch_queue::<Batch>(CHANNEL_BATCHES);
    let (wake_tx, wake_rx) = mpsc::channel::<Wake>();
    let stop = Arc::new(AtomicBool::new(false));
    let tailer = new_tailer(&config, router.clone(), resume, first_start, (&wake_tx, wake_rx), batch_tx, &stop);
    let mut telemetry = Telemetry::new(std::mem::take(&mut sinks.telemetry), tailer.snapshot(), Some(buffer.clone()));
    telemetry.checkpoints = checkpoint_fault.clone();
    telemetry.routes = Some(router.counters().clone());
    let writer = BufferWriter::new(buffer.clone(), tailer.recycler(), tailer.room_bell(wake_tx.clone()), router.counters().clone(), checkpoints, checkpoint_fault, &config);
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, telemetry).await?;
    }
    let tail_thread = thread::Builder::new().name("tail".into()).spawn(move || tailer.run())?;
    let (done, ended) = (writer_done.clone(), buffer.clone());
    let buffer_thread = thread::Builder::new().name("buffer".into()).spawn(move || {
        let r = writer.run(batch_rx);
        done.store(true, Ordering::Release);
        // The sinks wait without a timer: tell them.
        ended.nudge();
        r
    })?;

    // Until asked to stop; a sink that ends before it is asked to (it failed, or
    // panicked) ends the run.
    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let sink_ended = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            Some(i) = sinks.done.recv() => {
                tracing::error!(sink = %config.sinks[i].name, "the sink stopped unexpectedly; shutting down");
                break Some(i);
            }
            _ = hangup.recv() => reload(config_path.as_deref(), &config, router.counters(), &wake_tx),
        }
    };

    let reading = Reading { stop, wake: wake_tx, tail_thread, buffer_thread };
    shut_down(reading, sinks, sink_ended, &buffer, &config).await
}

/// The tail and buffer threads, and how to stop them.
struct Reading {
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<Wake>,
    tail_thread: thread::JoinHandle<TailStats>,
    buffer_thread: thread::JoinHandle<anyhow::Result<()>>,
}

/// Stops reading (everything read is buffered and checkpointed), lets the sinks
/// drain within `shutdown_timeout`, and joins every thread. A sink that ended on its
/// own (`sink_ended`) makes this an error naming it.
async fn shut_down(reading: Reading, mut sinks: Sinks, sink_ended: Option<usize>, buffer: &Buffer, config: &Config) -> anyhow::Result<RunReport> {
    reading.stop.store(true, Ordering::Relaxed);
    let _ = reading.wake.send(Wake::Stop);
    let drained = sink_ended.is_none() && sinks.drained_within(config.shutdown_timeout).await;
    let mut report = RunReport::default();
    if !drained {
        // A sink failed (nothing will drain its share: appends waiting for room must
        // not wait forever), or a destination is slow or down: what was read is
        // written to disk and checkpointed, and shipped at the next start.
        buffer.close();
    }
    if sink_ended.is_none() && !drained {
        report.left_in_buffer = buffer.stats().records;
        tracing::warn!(
            records = report.left_in_buffer,
            "shutdown_timeout ({:?}) reached; the rest stays in the buffer and is shipped at the next start",
            config.shutdown_timeout
        );
    }
    report.tail = reading.tail_thread.join().map_err(|_| anyhow::anyhow!("the tail thread panicked"))?;
    reading.buffer_thread.join().map_err(|_| anyhow::anyhow!("the buffer thread panicked"))??;
    buffer.persist_ack_or_retry_later();
    if let Some(i) = sink_ended {
        return Err(sinks.why_it_ended(i, &config.sinks[i].name));
    }
    if drained {
        sinks.join(config, &mut report)?;
    }
    buffer.persist_ack_or_retry_later();
    report.buffer = buffer.stats();
    Ok(report)
}

/// The sink threads, one per configured sink, in configuration (cursor) order.
struct Sinks {
    threads: Vec<thread::JoinHandle<anyhow::Result<crate::sink::ShipReport>>>,
    /// Their counters, for the metrics (taken once the registry is made).
    telemetry: Vec<SinkTelemetry>,
    /// Each sink thread says when it ends, by its index.
    done: tokio::sync::mpsc::UnboundedReceiver<usize>,
}

impl Sinks {
    /// Starts every sink's thread (an AWS sink's once its client is set up).
    fn start(config: &Config, buffer: &Buffer, writer_done: &Arc<AtomicBool>) -> anyhow::Result<Self> {
        let (done_tx, done) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let (mut threads, mut telemetry) = (Vec::new(), Vec::new());
        for (cursor, sink) in config.sinks.iter().enumerate() {
            let counters = Arc::new(SinkCounters::new());
            // Shown from the first scrape, before the sink's thread has set itself up.
            let (bytes, requests) = sink.config.starting_rate();
            counters.set_rate(bytes, requests);
            let ship = ShipSettings {
                buffer: buffer.clone(),
                cursor,
                writer_done: writer_done.clone(),
                ack_interval: config.tail.checkpoint_interval,
                counters: counters.clone(),
                target: Target::from_config(&sink.config, &config.data_dir, &sink.name),
            };
            threads.push(crate::sink::spawn(&sink.name, ship, done_tx.clone()).with_context(|| format!("sink {}", sink.name))?);
            telemetry.push(SinkTelemetry { name: sink.name.clone(), kind: sink.config.name(), counters });
        }
        Ok(Self { threads, telemetry, done })
    }

    /// Whether every sink ended (drained the buffer) within `timeout`.
    async fn drained_within(&mut self, timeout: std::time::Duration) -> bool {
        let (all, done) = (self.threads.len(), &mut self.done);
        let mut ended = 0;
        tokio::time::timeout(timeout, async {
            while ended < all && done.recv().await.is_some() {
                ended += 1;
            }
        })
        .await
        .is_ok()
    }

    /// Why sink `i` ended before it was asked to.
    fn why_it_ended(mut self, i: usize, name: &str) -> anyhow::Error {
        let later = "what it had not shipped stays buffered for the next start";
        match self.threads.swap_remove(i).join() {
            Err(_) => anyhow::anyhow!("sink {name}: its thread panicked; {later}"),
            Ok(Err(e)) => e.context(format!("sink {name} failed; {later}")),
            Ok(Ok(_)) => anyhow::anyhow!("sink {name} stopped before it was asked to; {later}"),
        }
    }

    /// Joins every sink thread, adding what each shipped to `report`.
    fn join(self, config: &Config, report: &mut RunReport) -> anyhow::Result<()> {
        for (thread, sink) in self.threads.into_iter().zip(&config.sinks) {
            let shipped = thread.join().map_err(|_| anyhow::anyhow!("sink {}: its thread panicked", sink.name))??;
            report.records_shipped += shipped.records;
            report.bytes_shipped += shipped.bytes;
            report.events_shipped += shipped.events;
        }
        Ok(())
    }
}

/// The tailer, reading from the checkpoints' positions (`resume`), woken on `wake`
/// (inotify, unless `tail.watch = "poll"`), handing batches to `batches`.
fn new_tailer(
    config: &Config,
    router: Arc<Router>,
    resume: HashMap<PathBuf, crate::tail::checkpoint::Position>,
    first_start: bool,
    (wake_tx, wake_rx): (&mpsc::Sender<Wake>, mpsc::Receiver<Wake>),
    batches: crate::tail::handoff::BatchSender<Batch>,
    stop: &Arc<AtomicBool>,
) -> Tailer {
    let settings = TailerSettings {
        tail: config.tail.clone(),
        decode: config.decode,
        message_format: config.message_format,
        partial_flush_timeout: config.partial_flush_timeout,
        router,
        multiline: Arc::new(config.multiline.clone()),
    };
    let watch = match config.tail.watch {
        WatchMode::Inotify => Watch::new(wake_tx.clone()),
        WatchMode::Poll => Watch::polling_only(),
    };
    Tailer::new(settings, resume, first_start, watch, wake_rx, batches, stop.clone())
}

/// SIGHUP: reads the configuration file again and applies what can change without a
/// restart: which files to follow (include/exclude globs, namespace/pod/container
/// filters) and the sinks' routes (`drop_messages` included). A file that is no longer
/// wanted is read to its current end and then dropped; a newly wanted one is followed
/// like any new file; new routes apply from the next event read. A configuration with
/// problems is refused and the running one kept.
fn reload(path: Option<&std::path::Path>, running: &Config, counters: &Arc<RouteCounters>, wake: &mpsc::Sender<Wake>) {
    let Some(path) = path else { return };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(config = %path.display(), "SIGHUP: the new configuration is refused, the running one stays:\n{e}");
            return;
        }
    };
    // The sinks themselves (which there are, in which order, what they are and their
    // shares) change only with a restart; their routes change now.
    let same_sinks = new.sinks.len() == running.sinks.len()
        && new.sinks.iter().zip(&running.sinks).all(|(n, r)| n.name == r.name && n.config == r.config && n.max_bytes == r.max_bytes && n.when_full == r.when_full);
    let needs_restart: Vec<&str> = [
        ("data_dir", new.data_dir != running.data_dir),
        ("sinks", !same_sinks),
        ("metrics.listen", new.metrics_listen != running.metrics_listen),
        ("buffer", new.buffer.max_bytes != running.buffer.max_bytes || new.buffer.when_full != running.buffer.when_full || new.buffer.memory_bytes != running.buffer.memory_bytes),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, "SIGHUP: these settings change only with a restart (sinks added, removed or changed; routes are applied now when the sinks are the same); the rest is applied now");
    }
    let routes_changed = same_sinks && new.sinks.iter().zip(&running.sinks).any(|(n, r)| n.route != r.route);
    let router = routes_changed.then(|| Arc::new(Router::with_counters(new.sinks.iter().map(|s| s.route.clone()).collect(), counters.clone())));
    tracing::info!(config = %path.display(), routes_changed, "SIGHUP: reloading which files to follow and the sinks' routes");
    let _ = wake.send(Wake::Reload(Box::new(Reload { tail: new.tail, router })));
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from now on.
async fn serve_metrics(addr: std::net::SocketAddr, telemetry: Telemetry) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics (metrics.listen); is the port taken?"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let telemetry = std::rc::Rc::new(telemetry);
    let route = move |path: &str| telemetry.route(path);
    tokio::task::spawn_local(http::serve(listener, route, std::future::pending()));
    Ok(())
}

fn open_buffer(config: &Config) -> anyhow::Result<Buffer> {
    let dir = config.data_dir.join("buffer");
    let opts = BufferOptions {
        memory_bytes: config.buffer.memory_bytes,
        hold: config.buffer.fsync_interval,
        ..BufferOptions::with_cap(config.buffer.max_bytes, config.buffer.when_full)
    };
    let shares: Vec<SinkShare> = config.sinks.iter().map(|s| SinkShare { name: s.name.clone(), max_bytes: s.max_bytes, when_full: s.when_full }).collect();
    let (buffer, rec) = Buffer::open_for(&dir, opts, &shares)?;
    if rec.corrupt_regions > 0 || rec.torn_bytes > 0 {
        tracing::warn!(
            corrupted_regions = rec.corrupt_regions,
            torn_bytes = rec.torn_bytes,
            "the buffer was damaged (a crash, or the disk); the damaged records were skipped"
        );
    }
    if rec.unacked > 0 {
        tracing::info!(records = rec.unacked, "shipping what the buffer held from the last run");
    }
    Ok(buffer)
}
