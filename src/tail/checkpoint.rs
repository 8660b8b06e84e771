//! Checkpoints: where each followed stream was read up to, on disk.
//!
//! Two files in `<data_dir>`:
//!
//! - `checkpoints.json`, the snapshot: `{"version":1,"journal":G,"streams":[{"path":…,
//!   "file":{dev,ino,fingerprint},"offset":…}]}`. `path` is the stream's live log file
//!   (`…/<container>/<n>.log`); `file` is the file the offset is in — the live file, or
//!   a rotated one whose end was not reached yet. Written atomically: a temporary file,
//!   fsync, rename over the old one, fsync of the directory.
//! - `checkpoints.journal.G`, what changed since that snapshot: one JSON line per
//!   change (`{"path":…,"file":…,"offset":…}`, or `{"path":…,"gone":true}` for a
//!   stream forgotten), appended at each save and fdatasynced at most once a
//!   [`JOURNAL_SYNC_INTERVAL`] (and at a stop).
//!
//! So a save costs what changed, not what is followed: on a node with 5,000 streams of
//! which a few hundred are written to, saving every fraction of a second (positions close
//! behind acknowledgements, so a crash repeats little) stays cheap. A killed process
//! leaves every line it wrote in the page cache, so only the machine's own crash can
//! lose the lines written since the last sync: the checkpoints then load as they were
//! up to five seconds earlier, and what was read since is read again, never skipped
//! (the positions saved are durable downstream whether synced or not). Five seconds is
//! what ext4 leaves between its own commits, which write those lines out anyway; the
//! sync bounds it on any file system. The sync is the save's cost — on a quiet node it
//! was a tenth of logferry's CPU at five saves a second, and still a tenth of what was
//! left at one a second. Once the journal
//! outgrows the snapshot, the next save writes a new snapshot naming a new, empty journal
//! and deletes the old one. A crash leaves either the old or the new snapshot, each with
//! its own journal; a journal line torn by a crash is ignored (the save it belonged to
//! had not returned). A snapshot without `journal` (an older logferry's) loads alone,
//! and an older logferry reads this snapshot, ignoring the journal: it repeats, never
//! skips.
//!
//! The store records only what the caller hands it; it is the caller's job to hand it
//! positions whose data is durable downstream (see `pipeline`), and offsets that never
//! point inside a split message (see `decode::FileDecoder::checkpoint_offset`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::identity::FileId;

const VERSION: u32 = 1;
const FILE_NAME: &str = "checkpoints.json";
const JOURNAL_PREFIX: &str = "checkpoints.journal.";
/// The journal is folded into a new snapshot once it is larger than the snapshot and
/// than this (so that a small store is not rewritten at every save).
const JOURNAL_MIN_FOLD: u64 = 256 << 10;
/// The journal is fdatasynced at most this often; lines written between syncs wait
/// for the next save after it (or the stop's).
pub const JOURNAL_SYNC_INTERVAL: Duration = Duration::from_secs(5);

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
    /// The generation of the journal that goes with this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal: Option<u64>,
    streams: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    #[serde(flatten)]
    position: Position,
}

/// One line of the journal: a stream's new position, or that it is gone.
#[derive(Serialize, Deserialize)]
struct Change {
    path: PathBuf,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    position: Option<Position>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
}

/// The journal being appended to, and its length after the last complete save.
#[derive(Debug)]
struct Journal {
    file: File,
    len: u64,
}

/// The checkpoints of every stream, kept in memory and saved on demand.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    /// By path, as bytes: ordering paths by their bytes is a `memcmp`, by their
    /// components (`Path`'s order) a parse of both at every step of every lookup —
    /// which on a busy node took most of the buffer thread's time.
    streams: BTreeMap<OsString, Position>,
    /// Whether a checkpoint file existed at load: its absence means a first start.
    existed: bool,
    /// Streams changed (or removed) since the last save.
    changed: BTreeSet<OsString>,
    /// The journal generation the snapshot on disk names.
    generation: u64,
    journal: Option<Journal>,
    /// Bytes of the journal on disk (it may hold lines from before a restart).
    journal_len: u64,
    /// Size of the last snapshot written (or read).
    snapshot_len: u64,
    /// The snapshot on disk names no journal (none yet, or an older logferry's): the
    /// next save writes a snapshot.
    needs_snapshot: bool,
    /// The journal has lines written since its last fdatasync.
    unsynced: bool,
    /// When the journal (or a snapshot) was last made durable.
    last_sync: Option<Instant>,
    /// [`JOURNAL_SYNC_INTERVAL`] (other values in tests).
    sync_interval: Duration,
    /// fdatasyncs of the journal so far (for tests).
    journal_syncs: u64,
}

impl Checkpoints {
    /// Loads `<data_dir>/checkpoints.json` and its journal; a missing file is an empty
    /// store. Reads only: safe while another process writes them.
    pub fn load(data_dir: &Path) -> Result<Self, CheckpointError> {
        let path = data_dir.join(FILE_NAME);
        let mut store = Self {
            dir: data_dir.to_path_buf(),
            streams: BTreeMap::new(),
            existed: false,
            changed: BTreeSet::new(),
            generation: 0,
            journal: None,
            journal_len: 0,
            snapshot_len: 0,
            needs_snapshot: true,
            unsynced: false,
            last_sync: None,
            sync_interval: JOURNAL_SYNC_INTERVAL,
            journal_syncs: 0,
        };
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(store),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let disk: OnDisk = match serde_json::from_slice(&text) {
            Ok(d) => d,
            Err(source) => return Err(CheckpointError::Corrupt { path, source }),
        };
        if disk.version != VERSION {
            return Err(CheckpointError::Version { path, found: disk.version });
        }
        store.existed = true;
        store.snapshot_len = text.len() as u64;
        store.streams = disk.streams.into_iter().map(|e| (e.path.into_os_string(), e.position)).collect();
        if let Some(generation) = disk.journal {
            store.generation = generation;
            store.needs_snapshot = false;
            store.replay_journal()?;
        }
        Ok(store)
    }

    /// Applies the journal's changes, up to the first line that does not parse (torn
    /// by a crash during a save that therefore never returned).
    fn replay_journal(&mut self) -> Result<(), CheckpointError> {
        let path = self.journal_path(self.generation);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let mut good = 0;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let Some(body) = line.strip_suffix(b"\n") else { break };
            let Ok(change) = serde_json::from_slice::<Change>(body) else { break };
            match (change.gone, change.position) {
                (false, Some(pos)) => {
                    self.streams.insert(change.path.into_os_string(), pos);
                }
                _ => {
                    self.streams.remove(change.path.as_os_str());
                }
            }
            good += line.len();
        }
        if good < bytes.len() {
            tracing::warn!(journal = %path.display(), bytes = bytes.len() - good, "the checkpoint journal ends in a torn or damaged line (a crash during a save); it is ignored from there");
        }
        // A torn tail is cut off at the next append.
        self.journal_len = good as u64;
        Ok(())
    }

    fn journal_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("{JOURNAL_PREFIX}{generation}"))
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// True when no checkpoint file existed: logferry's very first start here.
    pub fn first_start(&self) -> bool {
        !self.existed
    }

    pub fn get(&self, stream: &Path) -> Option<Position> {
        self.streams.get(stream.as_os_str()).copied()
    }

    pub fn set(&mut self, stream: &Path, position: Position) {
        let key = stream.as_os_str();
        match self.streams.get_mut(key) {
            Some(p) if *p == position => return,
            Some(p) => *p = position,
            None => {
                self.streams.insert(key.to_owned(), position);
            }
        }
        self.note_changed(key);
    }

    /// Forgets a stream whose files are gone for good.
    pub fn remove(&mut self, stream: &Path) {
        if self.streams.remove(stream.as_os_str()).is_some() {
            self.note_changed(stream.as_os_str());
        }
    }

    /// `key` is to be saved (copied only the first time since the last save).
    fn note_changed(&mut self, key: &OsStr) {
        if !self.changed.contains(key) {
            self.changed.insert(key.to_owned());
        }
    }

    /// Every stream and its position.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, Position)> {
        self.streams.iter().map(|(p, pos)| (Path::new(p), *pos))
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// When a save next has work: `None`, nothing to save; zero, positions changed;
    /// otherwise only the journal's sync is left, and it is due in this long.
    pub fn save_due_in(&self) -> Option<Duration> {
        if self.needs_snapshot || !self.changed.is_empty() {
            return Some(Duration::ZERO);
        }
        self.unsynced.then(|| self.sync_due_in())
    }

    fn sync_due_in(&self) -> Duration {
        self.last_sync.map_or(Duration::ZERO, |at| self.sync_interval.saturating_sub(at.elapsed()))
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Saves what changed since the last save: appended to the journal, or, once the
    /// journal has outgrown the snapshot (or there is no snapshot yet), as a new
    /// snapshot. Nothing changed: nothing written. A failure leaves everything to save
    /// again next time. The journal is fdatasynced when its last sync is
    /// [`JOURNAL_SYNC_INTERVAL`] old; [`Self::save_synced`] syncs it now.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        self.save_changes()?;
        if self.unsynced && self.sync_due_in().is_zero() {
            self.sync_journal()?;
        }
        Ok(())
    }

    /// [`Self::save`], and the journal made durable now (at a stop).
    pub fn save_synced(&mut self) -> Result<(), CheckpointError> {
        self.save_changes()?;
        if self.unsynced {
            self.sync_journal()?;
        }
        Ok(())
    }

    /// Writes what changed: a snapshot (synced) or journal lines (not yet).
    fn save_changes(&mut self) -> Result<(), CheckpointError> {
        if self.needs_snapshot || self.journal_len > self.snapshot_len.max(JOURNAL_MIN_FOLD) {
            return self.compact();
        }
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(self.changed.len() * 160);
        for path in &self.changed {
            let position = self.streams.get(path).copied();
            let change = Change { path: PathBuf::from(path), position, gone: position.is_none() };
            serde_json::to_writer(&mut lines, &change).expect("a change always serializes");
            lines.push(b'\n');
        }
        let path = self.journal_path(self.generation);
        self.append_journal(&lines).map_err(|source| CheckpointError::Write { path, source })?;
        self.changed.clear();
        self.unsynced = true;
        Ok(())
    }

    /// fdatasyncs the journal. A failure leaves the lines written since the last sync
    /// of unknown fate, so the next save writes a whole snapshot instead.
    fn sync_journal(&mut self) -> Result<(), CheckpointError> {
        let synced = match &self.journal {
            Some(journal) => journal.file.sync_data(),
            // Closed by a failed append since: the lines before it still want the sync.
            None => File::open(self.journal_path(self.generation)).and_then(|f| f.sync_data()),
        };
        self.unsynced = false;
        self.journal_syncs += 1;
        if let Err(source) = synced {
            self.journal = None;
            self.needs_snapshot = true;
            return Err(CheckpointError::Write { path: self.journal_path(self.generation), source });
        }
        self.last_sync = Some(Instant::now());
        Ok(())
    }

    /// Appends (the sync is [`Self::sync_journal`]'s); a failure cuts the journal back
    /// to where it was.
    fn append_journal(&mut self, lines: &[u8]) -> io::Result<()> {
        let journal = match &mut self.journal {
            Some(j) => j,
            None => {
                let file = OpenOptions::new().create(true).append(true).open(self.journal_path(self.generation))?;
                // Drop a torn tail left by a crash (or a failed append) first.
                file.set_len(self.journal_len)?;
                self.journal.insert(Journal { file, len: self.journal_len })
            }
        };
        let written = journal.file.write_all(lines);
        match written {
            Ok(()) => {
                journal.len += lines.len() as u64;
                self.journal_len = journal.len;
                Ok(())
            }
            Err(e) => {
                let _ = journal.file.set_len(journal.len);
                self.journal = None;
                Err(e)
            }
        }
    }

    /// Writes every stream as a new snapshot naming a new, empty journal, then deletes
    /// the old journals.
    pub fn compact(&mut self) -> Result<(), CheckpointError> {
        let next = self.generation + 1;
        let disk = OnDisk {
            version: VERSION,
            journal: Some(next),
            streams: self.streams.iter().map(|(p, pos)| Entry { path: PathBuf::from(p), position: *pos }).collect(),
        };
        let bytes = serde_json::to_vec(&disk).expect("checkpoints always serialize");
        let snapshot = self.snapshot_path();
        let new_journal = self.journal_path(next);
        let written = File::create(&new_journal).and_then(|_| crate::durable::replace_file(&snapshot, &bytes));
        written.map_err(|source| CheckpointError::Write { path: snapshot, source })?;
        self.remove_old_journals(next);
        self.generation = next;
        self.journal = None;
        self.journal_len = 0;
        self.snapshot_len = bytes.len() as u64;
        self.existed = true;
        self.needs_snapshot = false;
        self.changed.clear();
        self.unsynced = false;
        self.last_sync = Some(Instant::now());
        Ok(())
    }

    /// Deletes every journal but `keep`'s (best effort: a leftover is ignored at load).
    fn remove_old_journals(&self, keep: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(generation) = name.to_str().and_then(|n| n.strip_prefix(JOURNAL_PREFIX)) else { continue };
            if generation != keep.to_string() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
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

    fn files(d: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_save_appends_only_what_changed_and_a_load_replays_it() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(d.path()).unwrap();
        for i in 0..100 {
            c.set(Path::new(&format!("/var/log/pods/p{i}/c/0.log")), pos(i, 0));
        }
        c.save().unwrap();
        assert_eq!(files(d.path()), ["checkpoints.journal.1", "checkpoints.json"]);
        let snapshot = fs::read(d.path().join(FILE_NAME)).unwrap();
        c.set(Path::new("/var/log/pods/p7/c/0.log"), pos(7, 500));
        c.remove(Path::new("/var/log/pods/p8/c/0.log"));
        c.save().unwrap();
        assert_eq!(fs::read(d.path().join(FILE_NAME)).unwrap(), snapshot, "the snapshot is not rewritten");
        let journal = fs::read_to_string(d.path().join("checkpoints.journal.1")).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
        c.save().unwrap();
        assert_eq!(fs::read_to_string(d.path().join("checkpoints.journal.1")).unwrap(), journal, "nothing changed, nothing written");
        let back = Checkpoints::load(d.path()).unwrap();
        assert_eq!(back.len(), 99);
        assert_eq!(back.get(Path::new("/var/log/pods/p7/c/0.log")), Some(pos(7, 500)));
        assert_eq!(back.get(Path::new("/var/log/pods/p8/c/0.log")), None);
        assert_eq!(back.iter().collect::<Vec<_>>(), c.iter().collect::<Vec<_>>());
    }

    /// Saves write the journal every time and sync it at most once a
    /// sync interval: what was written loads at once (a killed process leaves
    /// it in the page cache), the sync left over says when it is due, and it comes
    /// with the first save after that, or a synced save.
    #[test]
    fn the_journal_is_written_at_every_save_and_synced_at_most_once_an_interval() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(d.path()).unwrap();
        // An interval no test run outlasts: nothing here depends on the clock.
        c.sync_interval = Duration::from_secs(3600);
        c.set(Path::new("/a"), pos(1, 0));
        c.save().unwrap(); // the first snapshot, synced
        assert_eq!(c.save_due_in(), None);
        c.set(Path::new("/a"), pos(1, 10));
        c.save().unwrap();
        assert_eq!(c.journal_syncs, 0, "a sync came with the snapshot just now");
        assert!(c.save_due_in().is_some(), "the sync is still to come");
        let due = c.save_due_in().expect("a sync is due");
        assert!(due > Duration::from_secs(3000) && due <= c.sync_interval, "{due:?}");
        c.set(Path::new("/a"), pos(1, 20));
        assert_eq!(c.save_due_in(), Some(Duration::ZERO), "changed positions are due at once");
        c.save().unwrap();
        assert_eq!(Checkpoints::load(d.path()).unwrap().get(Path::new("/a")), Some(pos(1, 20)), "written, if not yet synced");
        assert_eq!(c.journal_syncs, 0);
        // The interval over: the sync comes with a save that has nothing new to write.
        c.sync_interval = Duration::ZERO;
        assert_eq!(c.save_due_in(), Some(Duration::ZERO));
        c.save().unwrap();
        assert_eq!((c.journal_syncs, c.save_due_in()), (1, None));
        c.sync_interval = Duration::from_secs(3600);
        c.set(Path::new("/a"), pos(1, 30));
        c.save().unwrap();
        assert_eq!((c.journal_syncs, c.save_due_in().is_some()), (1, true));
        c.save_synced().unwrap();
        assert_eq!((c.journal_syncs, c.save_due_in()), (2, None), "a stop syncs at once");
        assert_eq!(Checkpoints::load(d.path()).unwrap().get(Path::new("/a")), Some(pos(1, 30)));
    }

    #[test]
    fn a_torn_journal_line_is_ignored_and_cut_off_at_the_next_save() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(d.path()).unwrap();
        c.set(Path::new("/a"), pos(1, 10));
        c.save().unwrap();
        c.set(Path::new("/a"), pos(1, 20));
        c.save().unwrap();
        let journal = d.path().join("checkpoints.journal.1");
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(br#"{"path":"/a","file":{"dev":1,"ino":1,"finger"#).unwrap();
        let mut back = Checkpoints::load(d.path()).unwrap();
        assert_eq!(back.get(Path::new("/a")), Some(pos(1, 20)));
        back.set(Path::new("/a"), pos(1, 30));
        back.save().unwrap();
        let again = Checkpoints::load(d.path()).unwrap();
        assert_eq!(again.get(Path::new("/a")), Some(pos(1, 30)));
        assert!(fs::read_to_string(&journal).unwrap().lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }

    #[test]
    fn a_journal_larger_than_the_snapshot_is_folded_into_a_new_one() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(d.path()).unwrap();
        c.set(Path::new("/a"), pos(1, 0));
        c.set(Path::new("/b"), pos(2, 0));
        c.save().unwrap();
        let mut offset = 0;
        while c.generation == 1 {
            offset += 1;
            c.set(Path::new("/a"), pos(1, offset));
            c.save().unwrap();
        }
        assert!(offset > 1000, "folded only past the minimum ({offset} saves)");
        assert_eq!(files(d.path()), ["checkpoints.journal.2", "checkpoints.json"]);
        let back = Checkpoints::load(d.path()).unwrap();
        assert_eq!(back.get(Path::new("/a")), Some(pos(1, offset)));
        assert_eq!(back.get(Path::new("/b")), Some(pos(2, 0)));
    }

    #[test]
    fn an_older_snapshot_without_a_journal_loads_and_is_replaced_at_the_first_save() {
        let d = tempfile::tempdir().unwrap();
        let old = r#"{"version":1,"streams":[{"path":"/a","file":{"dev":1,"ino":5,"fingerprint":9},"offset":100}]}"#;
        fs::write(d.path().join(FILE_NAME), old).unwrap();
        // A journal no snapshot names (left by a newer logferry before a rollback).
        fs::write(d.path().join("checkpoints.journal.3"), "{\"path\":\"/a\",\"gone\":true}\n").unwrap();
        let mut c = Checkpoints::load(d.path()).unwrap();
        assert!(!c.first_start());
        assert_eq!(c.get(Path::new("/a")), Some(pos(5, 100)));
        c.set(Path::new("/a"), pos(5, 200));
        c.save().unwrap();
        assert_eq!(files(d.path()), ["checkpoints.journal.1", "checkpoints.json"]);
        assert_eq!(Checkpoints::load(d.path()).unwrap().get(Path::new("/a")), Some(pos(5, 200)));
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
