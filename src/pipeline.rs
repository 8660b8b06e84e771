//! The pipeline of `logferry run`: the one place that wires the stages.
//!
//! ```text
//! tail thread ──batches──► buffer thread ──append──► disk buffer ──read──► sink thread ──► sink
//!      ▲                       │  group commit (fsync)                        │
//!      └─ inotify wake-ups     └─► file checkpoints, once durable             └─► ack → buffer
//! ```
//!
//! - The tail thread reads and encodes (`tail::tailer`).
//! - The buffer thread appends each batch to the buffer. The buffer holds it in memory
//!   and writes it to disk only if the sink has not acknowledged it within
//!   `fsync_interval` (see `buffer`'s module doc); group commit fsyncs what was written
//!   (every `fsync_interval` or `fsync_bytes`). A batch's file positions go into the
//!   checkpoints (saved every `checkpoint_interval`) only once the batch, and every one
//!   before it, is acknowledged or fsynced. So a checkpoint never covers data that is
//!   neither delivered nor on disk: a crash re-reads, never skips.
//! - The sink thread reads records from the buffer, ships them, makes them durable
//!   (fsync for a file) and acknowledges them; acknowledged segments are deleted. A
//!   file is written on its own I/O thread while the sink stages what arrives next
//!   (see `sink::file`). A sink that keeps up is handed every batch from memory and
//!   nothing is written to the buffer's disk at all.
//!
//! When the sink is slow the buffer fills; at `max_bytes` appends wait (or, with
//! `when_full = "drop_oldest"`, the oldest segment goes), the bounded channel to the
//! tail thread fills, and reading pauses with the logs still on disk.
//!
//! SIGTERM (what Kubernetes sends) or SIGINT: stop reading, buffer and checkpoint
//! what was read, ship what the buffer holds, and exit within `shutdown_timeout`.
//! Whatever could not be shipped by then stays in the buffer for the next start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::buffer::segment::Record;
use crate::buffer::{Buffer, BufferOptions, BufferStats, SinkShare};
use crate::config::{BufferConfig, Config, WatchMode};
use crate::metrics::{http, Fault, SinkCounters, SinkTelemetry, Telemetry};
use crate::route::{Mask, RouteCounters, Router};
use crate::sink::backoff::Backoff;
use crate::sink::deliver::{deliver_to, started, AwsSink, Chunk};
use crate::sink::{JsonLines, Target};
use crate::tail::checkpoint::Checkpoints;
use crate::tail::tailer::{Batch, RoomBell, TailStats, Tailer, TailerSettings, BATCH_BYTES};
use crate::tail::watch::{Reload, Wake, Watch};

/// Batches in flight between the tail and sink threads.
const CHANNEL_BATCHES: usize = 4;

/// How often the buffer thread looks for batches made safe by acknowledgements.
const SAFE_POLL: Duration = Duration::from_millis(50);

/// Records handed to the sink per read from the buffer.
const SINK_READ_BYTES: usize = 4 << 20;
/// At most this much goes into one write of a file sink (one fsync each): while a
/// write is under way, what arrives is staged for the next, up to this.
const LOCAL_WRITE_BYTES: usize = 8 << 20;
/// While a write is under way, how long a read from the buffer waits for records.
const LOOK_WHILE_WRITING: Duration = Duration::from_millis(1);

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
    save_checkpoints(&mut checkpoints, &checkpoint_fault);
    let buffer = open_buffer(&config)?;
    let writer_done = Arc::new(AtomicBool::new(false));
    // Each sink thread says when it ends, by its index.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut sink_threads = Vec::new();
    let mut sink_telemetry = Vec::new();
    for (cursor, sink) in config.sinks.iter().enumerate() {
        let counters = Arc::new(SinkCounters::new());
        let ship = ShipSettings {
            buffer: buffer.clone(),
            cursor,
            writer_done: writer_done.clone(),
            ack_interval: config.tail.checkpoint_interval,
            counters: counters.clone(),
            target: Target::from_config(&sink.config, &config.data_dir, &sink.name),
        };
        let thread = spawn_sink(&sink.name, ship, done_tx.clone()).with_context(|| format!("sink {}", sink.name))?;
        sink_threads.push(thread);
        sink_telemetry.push(SinkTelemetry { name: sink.name.clone(), kind: sink.config.name(), counters });
    }
    drop(done_tx);

    let router = Arc::new(Router::new(config.sinks.iter().map(|s| s.route.clone()).collect()));
    let router_counters = router.counters().clone();
    let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(CHANNEL_BATCHES);
    let (wake_tx, wake_rx) = mpsc::channel::<Wake>();
    let stop = Arc::new(AtomicBool::new(false));
    let settings = TailerSettings {
        tail: config.tail.clone(),
        decode: config.decode,
        message_format: config.message_format,
        partial_flush_timeout: config.partial_flush_timeout,
        router: router.clone(),
    };
    let watch = match config.tail.watch {
        WatchMode::Inotify => Watch::new(wake_tx.clone()),
        WatchMode::Poll => Watch::polling_only(),
    };
    let tailer = Tailer::new(settings, resume, first_start, watch, wake_rx, batch_tx, stop.clone());
    let mut telemetry = Telemetry::new(sink_telemetry, tailer.snapshot(), Some(buffer.clone()));
    telemetry.checkpoints = checkpoint_fault.clone();
    telemetry.routes = Some(router.counters().clone());
    let recycle = tailer.recycler();
    let room = tailer.room_bell(wake_tx.clone());
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, telemetry).await?;
    }
    let tail_thread = thread::Builder::new().name("tail".into()).spawn(move || tailer.run())?;

    let writer = BufferWriter {
        buffer: buffer.clone(),
        recycle,
        room,
        routes: router.counters().clone(),
        checkpoints,
        checkpoint_fault,
        opts: config.buffer,
        checkpoint_interval: config.tail.checkpoint_interval,
        pending: Vec::new(),
        // The first batch is committed at once (a pod killed early still advances),
        // later ones every `fsync_interval`; the first safe batch is checkpointed at
        // once, later ones every interval.
        last_commit: Instant::now().checked_sub(config.buffer.fsync_interval).unwrap_or_else(Instant::now),
        last_save: Instant::now().checked_sub(config.tail.checkpoint_interval).unwrap_or_else(Instant::now),
    };
    let done = writer_done.clone();
    let buffer_thread = thread::Builder::new().name("buffer".into()).spawn(move || {
        let r = writer.run(batch_rx);
        done.store(true, Ordering::Release);
        r
    })?;


    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // A sink that ends before it is asked to (it failed, or panicked) ends the run.
    let sink_ended = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            Some(i) = done_rx.recv() => {
                tracing::error!(sink = %config.sinks[i].name, "the sink stopped unexpectedly; shutting down");
                break Some(i);
            }
            _ = hangup.recv() => reload(config_path.as_deref(), &config, &router_counters, &wake_tx),
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = wake_tx.send(Wake::Stop);
    let mut ended = usize::from(sink_ended.is_some());
    let drained = sink_ended.is_some()
        || tokio::time::timeout(config.shutdown_timeout, async {
            while ended < sink_threads.len() && done_rx.recv().await.is_some() {
                ended += 1;
            }
        })
        .await
        .is_ok();
    let mut report = RunReport::default();
    if sink_ended.is_some() {
        // Nothing will drain that sink's share: appends waiting for room must not wait
        // forever. What was read is written to disk and checkpointed for the next start.
        buffer.close();
    }
    if !drained {
        // A destination is slow or down: what is left stays buffered for next time.
        buffer.close();
        report.left_in_buffer = buffer.stats().records;
        tracing::warn!(
            records = report.left_in_buffer,
            "shutdown_timeout ({:?}) reached; the rest stays in the buffer and is shipped at the next start",
            config.shutdown_timeout
        );
    }
    report.tail = tail_thread.join().map_err(|_| anyhow::anyhow!("the tail thread panicked"))?;
    buffer_thread.join().map_err(|_| anyhow::anyhow!("the buffer thread panicked"))??;
    if let Some(i) = sink_ended {
        persist_acks(&buffer);
        let name = &config.sinks[i].name;
        let thread = sink_threads.swap_remove(i);
        return Err(match thread.join() {
            Err(_) => anyhow::anyhow!("sink {name}: its thread panicked; what it had not shipped stays buffered for the next start"),
            Ok(Err(e)) => e.context(format!("sink {name} failed; what it had not shipped stays buffered for the next start")),
            Ok(Ok(_)) => anyhow::anyhow!("sink {name} stopped before it was asked to; what it had not shipped stays buffered for the next start"),
        });
    }
    if drained {
        for (thread, sink) in sink_threads.into_iter().zip(&config.sinks) {
            let shipped = thread.join().map_err(|_| anyhow::anyhow!("sink {}: its thread panicked", sink.name))??;
            report.records_shipped += shipped.0;
            report.bytes_shipped += shipped.1;
            report.events_shipped += shipped.2;
        }
    }
    persist_acks(&buffer);
    report.buffer = buffer.stats();
    Ok(report)
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

/// Appends batches to the buffer, commits in groups, and advances checkpoints over
/// what is safe (acknowledged or fsynced).
struct BufferWriter {
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
    fn run(mut self, batches: Receiver<Batch>) -> anyhow::Result<()> {
        let mut last_seq = 0;
        loop {
            // With batches pending, acknowledgements can make them safe at any time:
            // look again soon. Otherwise sleep until the next checkpoint save.
            let wait = if self.pending.is_empty() {
                self.checkpoint_interval
            } else {
                self.opts.fsync_interval.saturating_sub(self.last_commit.elapsed()).min(SAFE_POLL)
            };
            match batches.recv_timeout(wait) {
                Ok(mut batch) => {
                    self.room.ring();
                    for part in &mut batch.encoded.parts {
                        if part.data.is_empty() {
                            continue;
                        }
                        let data = Bytes::from(std::mem::take(&mut part.data));
                        match self.append(part.sinks, data, part.events) {
                            Some(seq) => last_seq = seq,
                            // Closed while full at shutdown: not buffered, not checkpointed.
                            None => return self.finish(),
                        }
                        self.routes.add_routed(part.sinks, part.events);
                        self.hand_back_spares();
                    }
                    self.pending.push(PendingPositions { seq: last_seq, batch });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.commit_and_checkpoint();
        }
        self.finish()
    }

    /// At the end: gives the sinks a moment to take what memory holds, then writes
    /// the rest, so that every batch read is checkpointed.
    fn finish(mut self) -> anyhow::Result<()> {
        self.buffer.settle(self.opts.fsync_interval);
        let safe = self.commit(Duration::ZERO);
        self.checkpoint(safe);
        save_checkpoints(&mut self.checkpoints, &self.checkpoint_fault);
        Ok(())
    }

    /// Group commit when due, checkpoints over what became safe, and a save when due.
    fn commit_and_checkpoint(&mut self) {
        let due = self.last_commit.elapsed() >= self.opts.fsync_interval || self.buffer.unsynced_bytes() >= self.opts.fsync_bytes;
        let safe = if due {
            self.last_commit = Instant::now();
            self.commit(self.opts.fsync_interval)
        } else {
            self.buffer.safe_seq()
        };
        self.checkpoint(safe);
        if self.last_save.elapsed() >= self.checkpoint_interval {
            save_checkpoints(&mut self.checkpoints, &self.checkpoint_fault);
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
        let mut backoff = Backoff::try_new(Duration::from_millis(100), Duration::from_secs(5), data.len() as u64)
            .expect("constant bounds are valid");
        let mut logged = false;
        let patience = self.opts.fsync_interval.max(SAFE_POLL);
        loop {
            match self.buffer.try_append_for(sinks, crate::event::time::now(), events, data, patience) {
                Ok(seq) => {
                    if logged {
                        tracing::info!("the buffer accepts writes again");
                    }
                    return Some(seq);
                }
                Err((crate::buffer::BufferError::Closed, _)) => return None,
                Err((crate::buffer::BufferError::Full, refused)) => {
                    data = refused;
                    self.commit_and_checkpoint();
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

/// What every sink thread needs.
struct ShipSettings {
    buffer: Buffer,
    /// This sink's cursor in the buffer.
    cursor: usize,
    /// The buffer thread has finished: once the buffer is drained, so are we.
    writer_done: Arc<AtomicBool>,
    /// How often the acknowledged records are saved.
    ack_interval: Duration,
    counters: Arc<SinkCounters>,
    target: Target,
}

type Shipped = anyhow::Result<(u64, u64, u64)>;

/// Starts sink `name`'s thread; it sends its cursor on `done` when it ends. For an
/// AWS sink, returns once its client is set up (or with why it cannot be: no region,
/// say).
fn spawn_sink(name: &str, ship: ShipSettings, done: tokio::sync::mpsc::UnboundedSender<usize>) -> anyhow::Result<thread::JoinHandle<Shipped>> {
    let builder = thread::Builder::new().name(format!("sink-{name}"));
    let cursor = ship.cursor;
    match ship.target.clone() {
        Target::Aws { sink, data_dir, letters } => {
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let handle = builder.spawn(move || {
                let r = ship_to_aws(*sink, &data_dir, &letters, ship, ready_tx);
                let _ = done.send(cursor);
                r
            })?;
            started(&ready_rx, handle)
        }
        local => {
            let shipper = Shipper {
                sink: JsonLines::open(&local, false)?,
                buffer: ship.buffer,
                cursor,
                writer_done: ship.writer_done,
                ack_interval: ship.ack_interval,
                counters: ship.counters,
            };
            Ok(builder.spawn(move || {
                let r = shipper.run();
                let _ = done.send(cursor);
                r
            })?)
        }
    }
}

/// An AWS sink's thread: a reader hands buffer records to the delivery loop, which
/// acknowledges each once every event in it was accepted (or set aside).
fn ship_to_aws(sink: AwsSink, data_dir: &std::path::Path, letters: &str, ship: ShipSettings, ready: mpsc::SyncSender<anyhow::Result<()>>) -> Shipped {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (buffer, writer_done, interval, cursor) = (ship.buffer.clone(), ship.writer_done.clone(), ship.ack_interval, ship.cursor);
        let reader = thread::Builder::new().name("sink-read".into()).spawn(move || read_chunks(&buffer, cursor, &writer_done, &tx, interval))?;
        let acks = ship.buffer.clone();
        let on_ack = move |seq| acks.ack_for(cursor, seq);
        let delivered = deliver_to(sink, data_dir, letters, ship.counters, rx, on_ack, ready).await?;
        let events = reader.join().map_err(|_| anyhow::anyhow!("the sink reader panicked"))??;
        persist_acks(&ship.buffer);
        Ok((delivered.chunks, delivered.bytes, events))
    })
}

/// Hands every buffer record to the delivery loop, until the buffer thread is done
/// and all was read; saves which records are acknowledged every `ack_interval` meanwhile (acks come
/// from the delivery loop at any time, and a crash must not forget them for long).
/// Returns the events read.
fn read_chunks(buffer: &Buffer, cursor: usize, writer_done: &AtomicBool, tx: &tokio::sync::mpsc::Sender<Chunk>, ack_interval: Duration) -> anyhow::Result<u64> {
    let mut events = 0;
    let mut last_persist = Instant::now();
    loop {
        if last_persist.elapsed() >= ack_interval {
            persist_acks(buffer);
            last_persist = Instant::now();
        }
        let batch = buffer.read_for(cursor, SINK_READ_BYTES, ack_interval.min(Duration::from_millis(200)))?;
        if batch.is_empty() && writer_done.load(Ordering::Acquire) && buffer.drained_for(cursor) {
            return Ok(events);
        }
        for r in batch {
            events += u64::from(r.events);
            if tx.blocking_send(Chunk { seq: r.seq, data: r.payload }).is_err() {
                return Ok(events);
            }
        }
    }
}

/// Ships what the buffer holds to stdout or a file and acknowledges it.
struct Shipper {
    buffer: Buffer,
    /// This sink's cursor in the buffer.
    cursor: usize,
    sink: JsonLines,
    /// The buffer thread has finished: once the buffer is drained, so are we.
    writer_done: Arc<AtomicBool>,
    ack_interval: Duration,
    counters: Arc<SinkCounters>,
}

impl Shipper {
    /// Returns (records, bytes, events) shipped. Writing is pipelined: while one write
    /// is under way (on the file's I/O thread), what arrives is staged for the next,
    /// so that the disk is kept busy with few, large writes (one fsync each); each
    /// write's records are acknowledged once it is durable.
    fn run(mut self) -> anyhow::Result<(u64, u64, u64)> {
        let mut shipped = (0, 0, 0);
        let (mut in_flight, mut staged): (Vec<Record>, Vec<Record>) = (Vec::new(), Vec::new());
        let mut staged_bytes = 0;
        let mut last_persist = Instant::now().checked_sub(self.ack_interval).unwrap_or_else(Instant::now);
        loop {
            // With a write under way, look for more only briefly: it may land any moment.
            let wait = if in_flight.is_empty() { Duration::from_millis(200) } else { LOOK_WHILE_WRITING };
            let room = LOCAL_WRITE_BYTES.saturating_sub(staged_bytes).max(1);
            let batch = self.buffer.read_for(self.cursor, room.min(SINK_READ_BYTES), wait)?;
            if batch.is_empty() && in_flight.is_empty() && staged.is_empty() && self.writer_done.load(Ordering::Acquire) && self.buffer.drained_for(self.cursor) {
                break;
            }
            for r in batch {
                retry(&self.counters, || self.sink.write_batch(&r.payload));
                staged_bytes += r.payload.len();
                staged.push(r);
            }
            if !in_flight.is_empty() {
                if staged_bytes < LOCAL_WRITE_BYTES && self.sink.busy() {
                    continue;
                }
                retry(&self.counters, || self.sink.wait());
                self.acknowledge(std::mem::take(&mut in_flight), &mut shipped);
            }
            if !staged.is_empty() {
                retry(&self.counters, || self.sink.submit());
                in_flight = std::mem::take(&mut staged);
                staged_bytes = 0;
            }
            if last_persist.elapsed() >= self.ack_interval {
                persist_acks(&self.buffer);
                last_persist = Instant::now();
            }
        }
        retry(&self.counters, || self.sink.finish());
        persist_acks(&self.buffer);
        Ok(shipped)
    }

    /// Releases records whose write is durable; counts them in `shipped`.
    fn acknowledge(&self, records: Vec<Record>, (n, bytes, events): &mut (u64, u64, u64)) {
        for r in &records {
            self.buffer.ack_for(self.cursor, r.seq);
            *n += 1;
            *bytes += r.payload.len() as u64;
            *events += u64::from(r.events);
            self.counters.records_ok.fetch_add(u64::from(r.events), Ordering::Relaxed);
            self.counters.bytes.fetch_add(r.payload.len() as u64, Ordering::Relaxed);
        }
        records.into_iter().for_each(|r| self.buffer.recycle(r.payload));
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

/// Saves which records were acknowledged. A disk that refuses is reported by the
/// buffer (`/readyz`, logged once per cause) and tried again at the next call; until
/// then a restart ships those records again.
fn persist_acks(buffer: &Buffer) {
    if let Err(e) = buffer.persist_ack() {
        tracing::debug!(error = %e, "cannot save the acknowledged records yet");
    }
}

/// Saves the checkpoints; a failure is kept for `/readyz` (logged once per cause) and
/// the save is tried again at the next interval.
fn save_checkpoints(checkpoints: &mut Checkpoints, fault: &Fault) {
    match checkpoints.save() {
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

/// Output failures (disk full, a closed pipe) are retried with backoff: the data
/// waits in the buffer and, behind it, unread in the log files. `/readyz` says so.
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
    counters.succeeded();
    if logged {
        tracing::info!("output works again");
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
