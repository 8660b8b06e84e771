//! Dead letters: events a sink can never deliver (larger than its limit, or refused
//! by AWS as permanently invalid), kept whole in `<data_dir>/dead-letter/<sink>.jsonl`
//! so that nothing leaves the node uncounted and unrecoverable.
//!
//! Written and fsynced before the buffer record holding them is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only file of JSON lines, opened when the first line comes.
pub struct DeadLetters {
    path: PathBuf,
    file: Option<File>,
}

impl DeadLetters {
    pub fn new(data_dir: &Path, sink: &str) -> Self {
        Self { path: data_dir.join("dead-letter").join(format!("{sink}.jsonl")), file: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (each ending in `\n`) and fsyncs.
    pub fn write(&mut self, lines: &[Vec<u8>]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                self.file.insert(OpenOptions::new().create(true).append(true).open(&self.path)?)
            }
        };
        for line in lines {
            file.write_all(line)?;
        }
        file.sync_data()
    }
}
