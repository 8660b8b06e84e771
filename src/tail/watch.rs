//! Wake-ups: inotify (through `notify`) tells the tailer which files changed, so it
//! reads only when there is something to read and never polls while idle.
//!
//! Each followed file's directory is watched (writes, renames for rotation, creations),
//! and so is the fixed prefix of each include glob (new and removed links). If the
//! kernel refuses more watches (`fs.inotify.max_user_watches`) or inotify is
//! unavailable, the watcher falls back to polling and says so once, with the fix.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::{RecursiveMode, Watcher};

/// Why the tailer woke up.
#[derive(Debug)]
/// What SIGHUP changes while running.
pub struct Reload {
    pub tail: crate::config::TailConfig,
    /// The sinks' new routes (same sinks, same order), if they changed.
    pub router: Option<std::sync::Arc<crate::route::Router>>,
}

pub enum Wake {
    /// Something changed at this path (a file, or an entry of a watched directory).
    Changed(PathBuf),
    /// Events may have been lost (queue overflow): look at everything.
    Rescan,
    /// Shut down.
    Stop,
    /// Follow these files, with these routes if they changed, from now on (SIGHUP).
    Reload(Box<Reload>),
    /// The next stage took a batch after refusing one: there is room to ship again
    /// (see `tailer::RoomBell`).
    Room,
}

pub struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    polling: bool,
}

impl Watch {
    /// Polling only, no inotify.
    pub fn polling_only() -> Self {
        Self { watcher: None, watched: HashSet::new(), polling: true }
    }

    pub fn new(tx: Sender<Wake>) -> Self {
        let handler = move |res: notify::Result<notify::Event>| {
            let wake = match res {
                Ok(ev) if ev.need_rescan() => vec![Wake::Rescan],
                // Opens and closes change nothing; our own rescans cause them, so
                // reacting would rescan forever.
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => return,
                Ok(ev) => ev.paths.into_iter().map(Wake::Changed).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "file watch error; rescanning");
                    vec![Wake::Rescan]
                }
            };
            for w in wake {
                let _ = tx.send(w);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(w) => Self { watcher: Some(w), watched: HashSet::new(), polling: false },
            Err(e) => {
                tracing::warn!(error = %e, "inotify is unavailable; polling files instead (more CPU, slower to notice writes)");
                Self { watcher: None, watched: HashSet::new(), polling: true }
            }
        }
    }

    /// True once inotify failed: the tailer must look at every file periodically.
    pub fn polling(&self) -> bool {
        self.polling
    }

    pub fn watch_dir(&mut self, dir: &Path) {
        if self.polling || self.watched.contains(dir) {
            return;
        }
        let Some(w) = &mut self.watcher else { return };
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) || is_enospc(&e) => {
                tracing::warn!(
                    "the kernel refused more inotify watches; polling files from now on. Raise fs.inotify.max_user_watches (sysctl) to fix this"
                );
                self.polling = true;
                self.watcher = None;
                self.watched.clear();
            }
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch"),
        }
    }

    pub fn unwatch_dir(&mut self, dir: &Path) {
        if self.watched.remove(dir) {
            if let Some(w) = &mut self.watcher {
                let _ = w.unwatch(dir);
            }
        }
    }

    pub fn is_watched(&self, dir: &Path) -> bool {
        self.watched.contains(dir)
    }
}

fn is_enospc(e: &notify::Error) -> bool {
    matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28))
}
