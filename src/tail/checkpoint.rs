//! Checkpoints: where each followed stream was read up to, on disk.
//!
//! One JSON file, `<data_dir>/checkpoints.json`, versioned:
//! `{"version":1,"streams":[{"path":…,"file":{dev,ino,fingerprint},"offset":…}]}`.
//! `path` is the stream's live log file (`…/<container>/<n>.log`); `file` is the file
//! the offset is in — the live file, or a rotated one whose end was not reached yet.
//!
//! Writes are atomic: a temporary file, fsync, rename over the old one, fsync of the
//! directory. A crash leaves either the old or the new checkpoints, never a torn mix.
//!
//! The store records only what the caller hands it; it is the caller's job to hand it
//! positions whose data is durable downstream (see `pipeline`), and offsets that never
//! point inside a split message (see `decode::FileDecoder::checkpoint_offset`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::FileId;

const VERSION: u32 = 1;
const FILE_NAME: &str = "checkpoints.json";

/// Where one stream was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub file: FileId,
    /// Offset in `file` (uncompressed, if it has since been gzipped).
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoints {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("checkpoints {path} are not valid ({source}); move the file aside to start over")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("checkpoints {path} have version {found}; this logferry reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write checkpoints {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    streams: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    #[serde(flatten)]
    position: Position,
}

/// The checkpoints of every stream, kept in memory and saved on demand.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    streams: BTreeMap<PathBuf, Position>,
    /// Whether a checkpoint file existed at load: its absence means a first start.
    existed: bool,
    dirty: bool,
}

impl Checkpoints {
    /// Loads `<data_dir>/checkpoints.json`; a missing file is an empty store.
    pub fn load(data_dir: &Path) -> Result<Self, CheckpointError> {
        let path = data_dir.join(FILE_NAME);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self { path, streams: BTreeMap::new(), existed: false, dirty: false });
            }
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let disk: OnDisk = match serde_json::from_slice(&text) {
            Ok(d) => d,
            Err(source) => return Err(CheckpointError::Corrupt { path, source }),
        };
        if disk.version != VERSION {
            return Err(CheckpointError::Version { path, found: disk.version });
        }
        let streams = disk.streams.into_iter().map(|e| (e.path, e.position)).collect();
        Ok(Self { path, streams, existed: true, dirty: false })
    }

    /// True when no checkpoint file existed: logferry's very first start here.
    pub fn first_start(&self) -> bool {
        !self.existed
    }

    pub fn get(&self, stream: &Path) -> Option<Position> {
        self.streams.get(stream).copied()
    }

    pub fn set(&mut self, stream: &Path, position: Position) {
        if self.streams.get(stream) != Some(&position) {
            self.streams.insert(stream.to_path_buf(), position);
            self.dirty = true;
        }
    }

    /// Forgets a stream whose files are gone for good.
    pub fn remove(&mut self, stream: &Path) {
        self.dirty |= self.streams.remove(stream).is_some();
    }

    /// Every stream and its position.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, Position)> {
        self.streams.iter().map(|(p, pos)| (p.as_path(), *pos))
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Writes the store if anything changed since the last save.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty && self.existed {
            return Ok(());
        }
        let disk = OnDisk {
            version: VERSION,
            streams: self.streams.iter().map(|(p, pos)| Entry { path: p.clone(), position: *pos }).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&disk).expect("checkpoints always serialize");
        write_atomically(&self.path, &bytes).map_err(|source| CheckpointError::Write { path: self.path.clone(), source })?;
        self.dirty = false;
        self.existed = true;
        Ok(())
    }
}

/// temp file → fsync → rename → fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(ino: u64, offset: u64) -> Position {
        Position { file: FileId { dev: 1, ino, fingerprint: Some(9) }, offset }
    }

    #[test]
    fn round_trips_and_knows_a_first_start() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(d.path()).unwrap();
        assert!(c.first_start());
        c.set(Path::new("/var/log/pods/a/c/0.log"), pos(5, 100));
        c.set(Path::new("/var/log/pods/b/c/0.log"), pos(6, 0));
        c.save().unwrap();
        let mut back = Checkpoints::load(d.path()).unwrap();
        assert!(!back.first_start());
        assert_eq!(back.get(Path::new("/var/log/pods/a/c/0.log")), Some(pos(5, 100)));
        back.remove(Path::new("/var/log/pods/a/c/0.log"));
        back.save().unwrap();
        assert_eq!(Checkpoints::load(d.path()).unwrap().len(), 1);
        assert!(!d.path().join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn an_empty_store_is_saved_so_the_next_start_is_not_a_first_start() {
        let d = tempfile::tempdir().unwrap();
        Checkpoints::load(d.path()).unwrap().save().unwrap();
        assert!(!Checkpoints::load(d.path()).unwrap().first_start());
    }

    #[test]
    fn corrupt_and_future_files_are_refused_with_the_path() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(FILE_NAME), b"{not json").unwrap();
        let e = Checkpoints::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("checkpoints.json") && e.contains("move the file aside"), "{e}");
        fs::write(d.path().join(FILE_NAME), br#"{"version":99,"streams":[]}"#).unwrap();
        let e = Checkpoints::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
    }
}
