//! Busy directories are read on a timer, not on each write.
//!
//! inotify reports every `write()`: a container logging many times a second would
//! wake logferry (notify's thread, then the tailer, then the buffer and sink threads)
//! as often, each time for a few hundred bytes. Once a stream reads data twice within
//! [`HOT_GAP`], its directory stops being watched and every stream in it is read every
//! `tail.busy_poll_interval` (500 ms) instead — one read gathers all the writes since
//! the last, and the stages after reading get one batch, not one per write. After
//! [`COOL_AFTER`] without new data the directory is watched again, and its streams are
//! read once more right after, so that a write between the last poll and the new
//! watch is not missed.
//!
//! Each stream also carries its directory's state (`Followed::polled`), so that the
//! timer finds the polled streams among thousands without hashing every one's
//! directory twice a second.
//!
//! Nothing else changes for a polled stream: rotation and truncation are noticed by
//! its reads (the live path is checked whenever a read catches up), as when inotify is
//! unavailable. Only the container's own directory is unwatched; the include
//! directories (new and removed links) stay watched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Tailer;

/// Two reads with data this close make a stream's directory polled.
pub(super) const HOT_GAP: Duration = Duration::from_millis(500);
/// A polled directory without new data for this long is watched again.
pub(super) const COOL_AFTER: Duration = Duration::from_secs(2);

/// Polled directories: when each last had new data.
#[derive(Debug, Default)]
pub(super) struct Polled {
    dirs: std::collections::HashMap<PathBuf, Instant>,
    due: Option<Instant>,
}

impl Polled {
    pub(super) fn contains(&self, dir: &Path) -> bool {
        self.dirs.contains_key(dir)
    }

    pub(super) fn len(&self) -> usize {
        self.dirs.len()
    }

    /// When the polled streams are read next, if any are.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// A stream of `dir` read new data.
    fn touch(&mut self, dir: &Path, now: Instant) {
        if let Some(at) = self.dirs.get_mut(dir) {
            *at = now;
        }
    }

    pub(super) fn forget(&mut self, dir: &Path) {
        self.dirs.remove(dir);
        if self.dirs.is_empty() {
            self.due = None;
        }
    }
}

impl Tailer {
    /// After a stream's turn: did it read data, and does its directory turn hot?
    pub(super) fn note_reads(&mut self, key: &Arc<Path>, now: Instant) {
        if self.watch.polling() {
            return;
        }
        let Some(s) = self.streams.get_mut(key) else { return };
        let read = s.follower.stats.bytes_read;
        if read == s.seen_bytes {
            return;
        }
        s.seen_bytes = read;
        let previous = s.last_data.replace(now);
        if s.polled {
            self.polled.touch(&s.dir, now);
            return;
        }
        // An include glob's own directory stays watched (new links appear there).
        if previous.is_some_and(|t| now.saturating_duration_since(t) < HOT_GAP) && !self.include_watches.contains(&s.dir) {
            let dir = s.dir.clone();
            self.poll_dir(dir, now);
        }
    }

    /// Stops watching `dir`; its streams are read on the timer from now on.
    pub(super) fn poll_dir(&mut self, dir: PathBuf, now: Instant) {
        self.watch.unwatch_dir(&dir);
        for key in self.dirs.get(&dir).into_iter().flatten() {
            if let Some(s) = self.streams.get_mut(key) {
                s.polled = true;
                s.follower.set_path_watched(self.moves.watch(key));
            }
        }
        tracing::debug!(dir = %dir.display(), "busy: read on a timer");
        self.polled.dirs.insert(dir, now);
        self.polled.due.get_or_insert(now + self.settings.tail.busy_poll_interval);
    }

    /// On the timer: every polled stream is made ready; directories quiet for
    /// [`COOL_AFTER`] are watched again (and read once more).
    pub(super) fn poll_hot(&mut self, now: Instant) {
        if self.polled.due.is_none_or(|due| now < due) {
            return;
        }
        let cooled: Vec<PathBuf> = self.polled.dirs.iter().filter(|(_, at)| now.saturating_duration_since(**at) >= COOL_AFTER).map(|(d, _)| d.clone()).collect();
        for dir in &cooled {
            self.polled.dirs.remove(dir);
            // Watched before the read below: a write after the read wakes us.
            self.watch.watch_dir(dir);
            tracing::debug!(dir = %dir.display(), "quiet: read on writes again");
        }
        // Every polled stream is read, the cooled directories' ones for the last time.
        let keys: Vec<Arc<Path>> = self.streams.iter().filter(|(_, s)| s.polled).map(|(k, _)| k.clone()).collect();
        for key in cooled.iter().filter_map(|dir| self.dirs.get(dir)).flatten() {
            if let Some(s) = self.streams.get_mut(key) {
                s.polled = false;
                // A fresh start: the next pair of reads with data decides again.
                s.last_data = None;
                self.moves.unwatch(key);
                s.follower.set_path_watched(false);
            }
        }
        self.note_moves(&keys);
        keys.into_iter().for_each(|k| self.make_ready(k));
        self.polled.due = (!self.polled.dirs.is_empty()).then(|| now + self.settings.tail.busy_poll_interval);
    }

    /// Watches a polled stream's live file for renames and removals (`tailer::moves`).
    pub(super) fn watch_moves(&mut self, key: &Arc<Path>) {
        if let Some(s) = self.streams.get_mut(key) {
            s.follower.set_path_watched(self.moves.watch(key));
        }
    }

    /// Before a poll: the streams whose file was renamed or removed since the last
    /// are watched again by path (their new file), and look their path up at their
    /// end; so do the polled streams not watched yet (mid-rotation, no file to watch).
    fn note_moves(&mut self, polled: &[Arc<Path>]) {
        for key in self.moves.moved() {
            self.watch_moves(&key);
        }
        for key in polled {
            if let Some(s) = self.streams.get_mut(key).filter(|s| s.polled && !s.follower.path_watched()) {
                s.follower.set_path_watched(self.moves.watch(key));
            }
        }
    }
}
