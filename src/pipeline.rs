//! The pipeline of `logferry run`: the one place that wires the stages.
//!
//! ```text
//! tail thread ──batches──► sink thread ──► stdout / file
//!      ▲                       │
//!      └─ inotify wake-ups     └─ after the batch is durable: checkpoints
//! ```
//!
//! The tail thread reads and encodes; the sink thread writes each batch, makes it
//! durable (fsync for a file, when no further batch is waiting: group commit), and
//! only then records the batch's positions in the checkpoints, which it saves every
//! `checkpoint_interval` and at shutdown. A checkpoint therefore never covers data the
//! sink has not kept: a crash re-reads, it never skips. The channel between the two
//! is bounded: a slow sink stops the reading, and files wait on disk.
//!
//! SIGTERM (what Kubernetes sends) or SIGINT: stop reading, ship what was read, save
//! checkpoints, exit — within `shutdown_timeout`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, SinkConfig, WatchMode};
use crate::sink::{JsonLines, Target};
use crate::tail::checkpoint::Checkpoints;
use crate::tail::tailer::{Batch, TailStats, Tailer, TailerSettings};
use crate::tail::watch::{Wake, Watch};

/// Batches in flight between the tail and sink threads.
const CHANNEL_BATCHES: usize = 4;

/// What a run did, logged at exit.
#[derive(Debug, Default)]
pub struct RunReport {
    pub tail: TailStats,
    pub batches: u64,
    pub bytes_shipped: u64,
    pub events_shipped: u64,
}

/// Runs until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<RunReport> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run_until(config, shutdown_signal()))
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

/// Runs until `shutdown` resolves (or a stage fails), then drains.
pub async fn run_until(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let mut checkpoints = Checkpoints::load(&config.data_dir)?;
    let first_start = checkpoints.first_start();
    let resume: HashMap<PathBuf, _> = checkpoints.iter().map(|(p, pos)| (p.to_path_buf(), pos)).collect();
    // Record that logferry has started here, so `start_at = "end"` applies only once.
    checkpoints.save()?;
    let target = match &config.sink {
        SinkConfig::Stdout => Target::Stdout,
        SinkConfig::File { path } => Target::File(path.clone()),
    };
    let sink = JsonLines::open(&target, false)?;

    let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(CHANNEL_BATCHES);
    let (wake_tx, wake_rx) = mpsc::channel::<Wake>();
    let stop = Arc::new(AtomicBool::new(false));
    let settings = TailerSettings {
        tail: config.tail.clone(),
        decode: config.decode,
        message_format: config.message_format,
        partial_flush_timeout: config.partial_flush_timeout,
    };
    let watch = match config.tail.watch {
        WatchMode::Inotify => Watch::new(wake_tx.clone()),
        WatchMode::Poll => Watch::polling_only(),
    };
    let tailer = Tailer::new(settings, resume, first_start, watch, wake_rx, batch_tx, stop.clone());
    let tail_thread = thread::Builder::new().name("tail".into()).spawn(move || tailer.run())?;

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let interval = config.tail.checkpoint_interval;
    let sink_thread = thread::Builder::new().name("sink".into()).spawn(move || {
        let r = ship_batches(batch_rx, sink, checkpoints, interval);
        let _ = done_tx.send(());
        r
    })?;

    tokio::pin!(shutdown);
    let mut done_rx = done_rx;
    let sink_ended_early = tokio::select! {
        _ = &mut shutdown => false,
        _ = &mut done_rx => true,
    };
    stop.store(true, Ordering::Relaxed);
    let _ = wake_tx.send(Wake::Stop);
    if !sink_ended_early {
        tokio::time::timeout(config.shutdown_timeout, done_rx).await.map_err(|_| {
            anyhow::anyhow!(
                "shutdown took longer than shutdown_timeout ({:?}); what was not checkpointed will be read again at the next start",
                config.shutdown_timeout
            )
        })?
        .ok();
    }
    let tail = tail_thread.join().map_err(|_| anyhow::anyhow!("the tail thread panicked"))?;
    let mut report = sink_thread.join().map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
    report.tail = tail;
    Ok(report)
}

/// Writes batches, makes them durable, then advances checkpoints.
fn ship_batches(batches: Receiver<Batch>, mut sink: JsonLines, mut checkpoints: Checkpoints, interval: Duration) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let mut written: Vec<Batch> = Vec::new();
    // The first commit is saved at once; later ones at most every `interval`.
    let mut last_save = Instant::now().checked_sub(interval).unwrap_or_else(Instant::now);
    loop {
        let batch = if written.is_empty() {
            // Nothing awaits durability: wait for the next batch, saving on the way.
            match batches.recv_timeout(interval) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => {
                    save_checkpoints(&mut checkpoints);
                    last_save = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        } else {
            batches.try_recv().ok()
        };
        match batch {
            Some(b) => {
                write_with_retry(&mut sink, &b.data);
                report.batches += 1;
                report.bytes_shipped += b.data.len() as u64;
                report.events_shipped += b.events;
                written.push(b);
                continue;
            }
            None if written.is_empty() => break,
            None => {}
        }
        // The channel is empty: commit the group.
        finish_with_retry(&mut sink);
        for b in written.drain(..) {
            for (key, pos) in b.positions {
                checkpoints.set(&key, pos);
            }
            for key in b.finished {
                checkpoints.remove(&key);
            }
        }
        if last_save.elapsed() >= interval {
            save_checkpoints(&mut checkpoints);
            last_save = Instant::now();
        }
    }
    finish_with_retry(&mut sink);
    save_checkpoints(&mut checkpoints);
    Ok(report)
}

fn save_checkpoints(checkpoints: &mut Checkpoints) {
    if let Err(e) = checkpoints.save() {
        tracing::error!(error = %e, "saving checkpoints failed; will retry");
    }
}

/// Output failures (disk full, a closed pipe) are retried with backoff: the data
/// waits in memory and, behind it, unread in the log files.
fn write_with_retry(sink: &mut JsonLines, data: &[u8]) {
    retry(|| sink.write_batch(data));
}

fn finish_with_retry(sink: &mut JsonLines) {
    retry(|| sink.finish());
}

fn retry<E: std::fmt::Display>(mut f: impl FnMut() -> Result<(), E>) {
    let mut wait = Duration::from_millis(100);
    let mut logged = false;
    while let Err(e) = f() {
        if !logged {
            tracing::error!(error = %e, "output failed; retrying until it works");
            logged = true;
        }
        thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    if logged {
        tracing::info!("output works again");
    }
}

