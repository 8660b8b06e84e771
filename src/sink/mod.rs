//! Sink: where encoded events go, one thread per configured sink.
//!
//! Events arrive already encoded as JSON lines (see `event::encode`), in buffer
//! records; each sink reads its own cursor of the buffer and acknowledges a record
//! once all of it is delivered. [`local`]: standard output and a file; [`aws`]:
//! Firehose and CloudWatch Logs on one delivery core. [`spawn`] starts a sink's thread
//! from its [`ShipSettings`].

pub mod aws;
pub mod backoff;
pub mod local;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

pub use local::JsonLines;

use crate::buffer::Buffer;
use crate::metrics::SinkCounters;

/// Records handed to a sink per read from the buffer, at most.
const SINK_READ_BYTES: usize = 4 << 20;

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    /// Firehose or CloudWatch Logs; dead letters go to
    /// `<data_dir>/dead-letter/<letters>.jsonl`.
    Aws { sink: Box<aws::AwsSink>, data_dir: PathBuf, letters: String },
}

/// A write that failed, with the destination named.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open output file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("writing to {target} failed: {source}")]
    Write { target: String, source: io::Error },
    #[error("{0:#}")]
    Remote(anyhow::Error),
}

impl Target {
    /// Where the sink `name` of a configuration sends events; AWS dead letters go
    /// under `data_dir`: `dead-letter/<type>.jsonl` for the sink named `default` (a
    /// lone `[sink]`), `dead-letter/<name>.<type>.jsonl` for the others.
    pub fn from_config(sink: &crate::config::SinkConfig, data_dir: &Path, name: &str) -> Target {
        use crate::config::SinkConfig;
        let letters = match name {
            crate::config::DEFAULT_SINK => sink.name().to_string(),
            _ => format!("{name}.{}", sink.name()),
        };
        let aws = |sink| Target::Aws { sink: Box::new(sink), data_dir: data_dir.to_path_buf(), letters: letters.clone() };
        match sink {
            SinkConfig::Stdout => Target::Stdout,
            SinkConfig::File { path } => Target::File(path.clone()),
            SinkConfig::Firehose(c) => aws(aws::AwsSink::Firehose(c.clone())),
            SinkConfig::CloudWatch(c) => aws(aws::AwsSink::CloudWatch(c.clone())),
            SinkConfig::S3(c) => aws(aws::AwsSink::S3(c.clone())),
        }
    }
}

/// What every sink thread needs.
pub struct ShipSettings {
    pub buffer: Buffer,
    /// This sink's cursor in the buffer.
    pub cursor: usize,
    /// The buffer thread has finished: once the buffer is drained, so are we.
    pub writer_done: Arc<AtomicBool>,
    /// How often the acknowledged records are saved.
    pub ack_interval: Duration,
    pub counters: Arc<SinkCounters>,
    pub target: Target,
}

/// What a sink shipped: buffer records, their bytes, and the events in them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShipReport {
    pub records: u64,
    pub bytes: u64,
    pub events: u64,
}

/// Starts sink `name`'s thread; it sends its cursor on `done` when it ends. For an
/// AWS sink, returns once its client is set up (or with why it cannot be: no region,
/// say).
pub fn spawn(name: &str, ship: ShipSettings, done: tokio::sync::mpsc::UnboundedSender<usize>) -> anyhow::Result<thread::JoinHandle<anyhow::Result<ShipReport>>> {
    let builder = thread::Builder::new().name(format!("sink-{name}"));
    let cursor = ship.cursor;
    match ship.target.clone() {
        Target::Aws { sink, data_dir, letters } => {
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let handle = builder.spawn(move || {
                let r = aws::ship(*sink, &data_dir, &letters, ship, ready_tx);
                let _ = done.send(cursor);
                r
            })?;
            aws::started(&ready_rx, handle)
        }
        _ => {
            let shipper = local::LocalShipper::open(ship)?;
            Ok(builder.spawn(move || {
                let r = shipper.run();
                let _ = done.send(cursor);
                r
            })?)
        }
    }
}
