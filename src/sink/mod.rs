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
pub mod file;
pub mod firehose;
pub mod pace;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    /// Firehose or CloudWatch Logs; dead letters go to
    /// `<data_dir>/dead-letter/<letters>.jsonl`.
    Aws { sink: Box<deliver::AwsSink>, data_dir: PathBuf, letters: String },
}

/// Writes batches of JSON lines to stdout or a file.
pub struct JsonLines {
    out: Out,
}

enum Out {
    Stdout(io::Stdout),
    /// Staged, written at `finish` or `submit` (see [`file`]); boxed, as it is large.
    File(Box<file::OutputFile>),
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
            Target::File(path) => Out::File(Box::new(
                file::OutputFile::open(path, truncate).map_err(|source| SinkError::Open { path: path.clone(), source })?,
            )),
            Target::Aws { sink, .. } => {
                return Err(SinkError::Remote(anyhow::anyhow!("{} is not written as JSON lines here: use deliver::Background", sink.name())))
            }
        };
        Ok(Self { out })
    }

    /// Writes one batch of whole lines (to a file: stages it for [`Self::finish`]).
    pub fn write_batch(&mut self, batch: &[u8]) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().write_all(batch),
            Out::File(f) => {
                f.append(batch);
                Ok(())
            }
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Flushes, and for a file fsyncs: after this returns, every batch is durable.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().flush(),
            Out::File(f) => f.sync(),
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Starts making every batch durable without waiting (a file: written on its I/O
    /// thread while the next batches are staged); [`Self::wait`] waits for it.
    /// Standard output is flushed here and now.
    pub fn submit(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(s) => s.lock().flush(),
            Out::File(f) => f.submit(),
        };
        r.map_err(|source| self.write_error(source))
    }

    /// Whether a submitted write is still under way.
    pub fn busy(&mut self) -> bool {
        match &mut self.out {
            Out::Stdout(_) => false,
            Out::File(f) => f.busy(),
        }
    }

    /// After this returns, every batch submitted is durable.
    pub fn wait(&mut self) -> Result<(), SinkError> {
        let r = match &mut self.out {
            Out::Stdout(_) => Ok(()),
            Out::File(f) => f.wait(),
        };
        r.map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: io::Error) -> SinkError {
        let target = match &self.out {
            Out::Stdout(_) => "standard output".to_string(),
            Out::File(f) => f.path().display().to_string(),
        };
        SinkError::Write { target, source }
    }
}

