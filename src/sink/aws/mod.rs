//! The AWS sinks: Amazon Data Firehose and CloudWatch Logs, on one delivery core.
//!
//! ```text
//! buffer ─read_for(cursor)─► reader thread ─chunks─► delivery loop ─► PutRecordBatch / PutLogEvents
//!   ▲                                                     │
//!   └───────────── ack_for(cursor, seq) once every line of a chunk is accepted or set aside
//! ```
//!
//! - [`core`]: what every AWS sink shares — the ledger of chunks owed an
//!   acknowledgement (with the dead letters), failure runs for `/readyz`, the loop.
//! - [`firehose_delivery`] and [`cloudwatch_delivery`]: each sink's own queueing,
//!   batching and answers; [`firehose`] and [`cloudwatch`]: their API calls.
//! - [`client`] (SDK setup, failure classes), [`pace`] (a node's share of a quota,
//!   AIMD on throttling), [`dead_letter`] (events no retry can deliver).
//!
//! [`ship`] runs one configured sink on its thread: a reader hands buffer records to
//! the loop and saves the acknowledgements every `ack_interval`. [`Background`] runs
//! a loop fed from synchronous code (`replay`).

pub mod client;
pub mod cloudwatch;
pub mod cloudwatch_delivery;
pub mod core;
pub mod dead_letter;
pub mod firehose;
pub mod firehose_delivery;
pub mod pace;
pub mod s3;
pub mod s3_delivery;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use self::cloudwatch::CloudWatchLogs;
use self::cloudwatch_delivery::CloudWatchDelivery;
use self::core::{drive, Chunk, Delivered, Ledger};
use self::dead_letter::DeadLetters;
use self::firehose::Firehose;
use self::firehose_delivery::FirehoseDelivery;
use self::s3::S3;
use self::s3_delivery::S3Delivery;
use super::{ShipSettings, ShipReport, SINK_READ_BYTES};
use crate::buffer::Buffer;
use crate::config::FirehoseConfig;
use crate::metrics::SinkCounters;

/// An AWS sink's thread: a reader hands buffer records to the delivery loop, which
/// acknowledges each once every event in it was accepted (or set aside). Says on
/// `ready` whether its client could be set up.
pub fn ship(sink: AwsSink, data_dir: &std::path::Path, letters: &str, ship: ShipSettings, ready: mpsc::SyncSender<anyhow::Result<()>>) -> anyhow::Result<ShipReport> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (buffer, writer_done, interval, cursor) = (ship.buffer.clone(), ship.writer_done.clone(), ship.ack_interval, ship.cursor);
        let reader = std::thread::Builder::new().name("sink-read".into()).spawn(move || read_chunks(&buffer, cursor, &writer_done, &tx, interval))?;
        let acks = ship.buffer.clone();
        let on_ack = move |seq| acks.ack_for(cursor, seq);
        let spares = ship.buffer.clone();
        let spent = move |data| spares.recycle(data);
        let dead = DeadLetters::new(data_dir, letters, ship.counters.dead_letters.clone());
        let delivered = deliver_to(sink, dead, ship.counters, rx, on_ack, spent, ready).await?;
        let events = reader.join().map_err(|_| anyhow::anyhow!("the sink reader panicked"))??;
        ship.buffer.persist_ack_or_retry_later();
        Ok(ShipReport { records: delivered.chunks, bytes: delivered.bytes, events })
    })
}

/// Hands every buffer record to the delivery loop, until the buffer thread is done
/// and all was read; saves which records are acknowledged every `ack_interval`
/// meanwhile (acks come from the delivery loop at any time, and a crash must not
/// forget them for long). Returns the events read.
fn read_chunks(buffer: &Buffer, cursor: usize, writer_done: &AtomicBool, tx: &tokio::sync::mpsc::Sender<Chunk>, ack_interval: Duration) -> anyhow::Result<u64> {
    let mut events = 0;
    let mut last_persist = Instant::now();
    // A nudge after this (the buffer thread finishing) ends the next wait at once.
    let mut seen = buffer.nudges();
    loop {
        if last_persist.elapsed() >= ack_interval {
            buffer.persist_ack_when_due();
            last_persist = Instant::now();
        }
        // Owing records, look every `ack_interval` (the delivery loop acknowledges
        // them meanwhile); owing nothing, until acknowledgements are due to be saved,
        // or until records come.
        let every = ack_interval.saturating_sub(last_persist.elapsed()).clamp(Duration::from_millis(1), Duration::from_millis(200));
        let wait = if writer_done.load(Ordering::Acquire) {
            // Nothing will nudge any more: look, then the check below.
            Duration::ZERO
        } else if !buffer.owes_nothing(cursor) {
            every
        } else {
            buffer.ack_save_due_in(cursor).map_or(crate::buffer::IDLE_WAIT, |due| due.max(every))
        };
        let batch = buffer.read_for_since(cursor, SINK_READ_BYTES, wait, seen)?;
        seen = buffer.nudges();
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

/// The AWS sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsSink {
    Firehose(FirehoseConfig),
    CloudWatch(crate::config::CloudWatchConfig),
    S3(crate::config::S3Config),
}

impl AwsSink {
    pub fn name(&self) -> &'static str {
        match self {
            AwsSink::Firehose(_) => "firehose",
            AwsSink::CloudWatch(_) => "cloudwatch",
            AwsSink::S3(_) => "s3",
        }
    }
}

/// Sets up the sink's client (saying how that went on `ready`), then delivers what
/// `input` yields until it closes; each chunk's buffer, once read, goes to `spent`.
/// Events no record can hold go to `dead`.
pub async fn deliver_to(
    sink: AwsSink,
    dead: DeadLetters,
    counters: Arc<SinkCounters>,
    input: tokio::sync::mpsc::Receiver<Chunk>,
    on_ack: impl FnMut(u64),
    spent: impl FnMut(bytes::Bytes),
    ready: std::sync::mpsc::SyncSender<anyhow::Result<()>>,
) -> anyhow::Result<Delivered> {
    match sink {
        AwsSink::Firehose(config) => match Firehose::connect(&config).await {
            Ok(firehose) => {
                tracing::info!(stream = firehose.stream(), "shipping to Firehose");
                let _ = ready.send(Ok(()));
                drive(FirehoseDelivery::new(firehose, config, Ledger::new(dead, on_ack), counters), input, spent).await
            }
            Err(e) => {
                let _ = ready.send(Err(e.context("cannot set up the Firehose sink")));
                Ok(Delivered::default())
            }
        },
        AwsSink::CloudWatch(config) => match CloudWatchLogs::connect(&config).await {
            Ok(logs) => {
                tracing::info!("shipping to CloudWatch Logs");
                let _ = ready.send(Ok(()));
                drive(CloudWatchDelivery::new(logs, config, Ledger::new(dead, on_ack), counters), input, spent).await
            }
            Err(e) => {
                let _ = ready.send(Err(e.context("cannot set up the CloudWatch Logs sink")));
                Ok(Delivered::default())
            }
        },
        AwsSink::S3(config) => match S3::connect(&config).await {
            Ok(s3) => {
                tracing::info!(bucket = s3.bucket(), "shipping to S3");
                let _ = ready.send(Ok(()));
                drive(S3Delivery::new(s3, config, Ledger::new(dead, on_ack), counters), input, spent).await
            }
            Err(e) => {
                let _ = ready.send(Err(e.context("cannot set up the S3 sink")));
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
    tx: Option<tokio::sync::mpsc::Sender<Chunk>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<Delivered>>>,
    next_seq: u64,
    /// Buffers of chunks the loop has read, emptied, for the next ones.
    spares: mpsc::Receiver<Vec<u8>>,
}

/// Spent chunk buffers waiting for reuse, at most: the chunks of a whole request
/// come back at once when a Firehose sink's call is answered (4 MiB of records
/// holding runs of some 8 to 16 chunks), not one by one as they are read.
const BACKGROUND_SPARES: usize = 32;

impl Background {
    /// Connects and starts delivering; returns once the client is set up.
    pub fn start(sink: AwsSink, data_dir: &std::path::Path, letters: &str, counters: Arc<SinkCounters>) -> anyhow::Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (spares_tx, spares) = std::sync::mpsc::sync_channel(BACKGROUND_SPARES);
        let spent = move |data| {
            if let Some(spare) = crate::buffer::reclaim(data) {
                let _ = spares_tx.try_send(spare);
            }
        };
        let (data_dir, letters) = (data_dir.to_path_buf(), letters.to_string());
        let thread = std::thread::Builder::new().name("sink".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let dead = DeadLetters::new(&data_dir, &letters, counters.dead_letters.clone());
            runtime.block_on(deliver_to(sink, dead, counters, rx, |_| {}, spent, ready_tx))
        })?;
        let thread = started(&ready_rx, thread)?;
        Ok(Self { tx: Some(tx), thread: Some(thread), next_seq: 0, spares })
    }

    /// An emptied buffer of a chunk the loop has read, if one is back: the next
    /// chunk's, instead of a fresh one whose pages are faulted in again.
    pub fn spare(&self) -> Option<Vec<u8>> {
        self.spares.try_recv().ok()
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
