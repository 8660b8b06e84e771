//! Sink: where encoded events go.
//!
//! Events arrive already encoded as JSON lines (see `event::encode`), in batches; a
//! sink writes a batch whole and says when it is durable. The local targets here
//! (standard output, a file fsynced on [`JsonLines::finish`]); Amazon Data Firehose in
//! [`firehose`] (one call) and [`deliver`] (the loop: aggregate, batch, pace, retry,
//! acknowledge). [`aws`], [`pace`] and [`backoff`] are shared by every AWS sink.

pub mod aws;
pub mod backoff;
pub mod dead_letter;
pub mod cloudwatch;
pub mod deliver;
pub mod deliver_logs;
pub mod firehose;
pub mod pace;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    /// Firehose or CloudWatch Logs; dead letters go under the data directory.
    Aws { sink: Box<deliver::AwsSink>, data_dir: PathBuf },
}

/// Writes batches of JSON lines to stdout or a file.
pub struct JsonLines {
    out: Out,
}

enum Out {
    Stdout(io::Stdout),
    /// The file, its path, and whether the last write failed (then the next attempt
    /// reopens the path first: the disk may have been replaced or remounted).
    File(File, PathBuf, bool),
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
    /// Where the `[sink]` of a configuration sends events; AWS dead letters go under
    /// `data_dir`.
    pub fn from_config(sink: &crate::config::SinkConfig, data_dir: &Path) -> Target {
        use crate::config::SinkConfig;
        let aws = |sink| Target::Aws { sink: Box::new(sink), data_dir: data_dir.to_path_buf() };
        match sink {
            SinkConfig::Stdout => Target::Stdout,
            SinkConfig::File { path } => Target::File(path.clone()),
            SinkConfig::Firehose(c) => aws(deliver::AwsSink::Firehose(c.clone())),
            SinkConfig::CloudWatch(c) => aws(deliver::AwsSink::CloudWatch(c.clone())),
        }
    }
}

impl JsonLines {
    /// Opens the target; a file is appended to, or emptied first when `truncate`.
    pub fn open(target: &Target, truncate: bool) -> Result<Self, SinkError> {
        let out = match target {
            Target::Stdout => Out::Stdout(io::stdout()),
            Target::File(path) => Out::File(open_file(path, truncate)?, path.clone(), false),
            Target::Aws { sink, .. } => {
                return Err(SinkError::Remote(anyhow::anyhow!("{} is not written as JSON lines here: use deliver::Background", sink.name())))
            }
        };
        Ok(Self { out })
    }

    /// Writes one batch of whole lines. If writing a file fails midway, the file is
    /// cut back to where the batch began, so a retry leaves no torn or doubled line.
    pub fn write_batch(&mut self, batch: &[u8]) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().write_all(batch),
            Out::File(f, path, failed) => {
                let r = write_file(f, path, *failed, batch);
                *failed = r.is_err();
                r
            }
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Flushes, and for a file fsyncs: after this returns, every batch is durable.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().flush(),
            Out::File(f, _, failed) => {
                let r = f.flush().and_then(|()| f.sync_data());
                *failed |= r.is_err();
                r
            }
        };
        r.map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: io::Error) -> SinkError {
        let target = match &self.out {
            Out::Stdout(_) => "standard output".to_string(),
            Out::File(_, p, _) => p.display().to_string(),
        };
        SinkError::Write { target, source }
    }
}

/// Appends `batch`, reopening the path first after a failure; a failed write is cut
/// back so the file never holds half a batch.
fn write_file(f: &mut File, path: &Path, reopen: bool, batch: &[u8]) -> io::Result<()> {
    if reopen {
        *f = OpenOptions::new().create(true).append(true).open(path)?;
    }
    let start = f.metadata().map(|m| m.len());
    f.write_all(batch).inspect_err(|_| {
        if let Ok(len) = start {
            let _ = f.set_len(len);
        }
    })
}

fn open_file(path: &Path, truncate: bool) -> Result<File, SinkError> {
    let mut opts = OpenOptions::new();
    opts.create(true);
    if truncate {
        opts.write(true).truncate(true);
    } else {
        opts.append(true);
    }
    opts.open(path)
        .map_err(|source| SinkError::Open { path: path.to_path_buf(), source })
}
