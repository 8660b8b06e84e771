//! Which streams the tailer follows: new ones found by a rescan or a new link,
//! streams gone or no longer wanted, and the cap on open descriptors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{Tailer, FD_RETRY};
use crate::config::StartAt;
use crate::event::KubeMeta;
use crate::tail::discover::{Checked, Found};
use crate::tail::follow::{Follower, StartFrom};
use crate::tail::turn::Followed;

impl Tailer {
    /// A link appeared or went in an include directory. A new link to a container's
    /// log is followed at once, without a scan of every link (pod churn on a node with
    /// thousands of containers would otherwise rescan them all for each new pod); a
    /// link that went is noticed by the next rescan (its file is drained meanwhile);
    /// anything else (a new directory under a deeper glob) gets a rescan now.
    pub(super) fn link_changed(&mut self, path: &Path) {
        match self.discovery.check_one(path) {
            Checked::Follow(f) if !self.streams.contains_key(f.key.as_path()) => self.add_stream(&f, Instant::now()),
            Checked::Follow(_) | Checked::Ignore => {}
            Checked::Scan => self.rescan_now = true,
        }
    }

    /// Watches each include glob's directory, or for one not there yet its nearest
    /// existing ancestor (so that its creation triggers a rescan, after which it is
    /// watched itself); an ancestor no longer standing in for one is let go.
    pub(super) fn watch_include_dirs(&mut self) {
        let dirs = self.discovery.watch_dirs();
        for old in std::mem::take(&mut self.include_watches) {
            if !dirs.contains(&old) && !self.dirs.contains_key(&old) {
                self.watch.unwatch_dir(&old);
            }
        }
        for dir in &dirs {
            self.watch.watch_dir(dir);
        }
        self.include_watches = dirs;
    }

    /// Finds new streams, and streams that are no longer there.
    pub(super) fn rescan(&mut self, now: Instant) {
        self.rescan_now = false;
        self.watch_include_dirs();
        self.rescan_due = now + self.settings.tail.rescan_interval;
        let (found, complete) = self.discovery.scan();
        for (key, f) in &found {
            match self.streams.get_mut(key.as_path()) {
                Some(s) => s.follower.mark_present(),
                None => self.add_stream(f, now),
            }
        }
        for s in self.streams.values_mut() {
            if complete && !found.contains_key(s.key.as_ref()) {
                if s.key.exists() {
                    // Still on disk but no longer wanted (filters changed, or its
                    // link went with a container restart): finish what is there.
                    s.follower.mark_unwanted(now, self.settings.tail.rotate_wait);
                } else {
                    s.follower.mark_gone(now);
                }
            }
            s.follower.observe_rotations();
        }
        self.first_scan_done = true;
        // Checkpoints of streams whose directory is gone (pod deleted while logferry
        // was down) are dropped. Others wait: a stream can be missing from one scan
        // (a link dangling mid-rotation) and must then resume where it was.
        let gone: Vec<PathBuf> = self.resume.keys().filter(|k| k.parent().is_none_or(|d| !d.exists())).cloned().collect();
        for key in gone {
            self.resume.remove(&key);
            self.batch.finished.push(Arc::from(key.as_path()));
        }
        // The safety net: look at every file once per rescan.
        self.mark_all_ready();
    }

    pub(super) fn add_stream(&mut self, f: &Found, now: Instant) {
        let resume = self.resume.remove(&f.key);
        let start = match (self.first_start && !self.first_scan_done, self.settings.tail.start_at) {
            (true, StartAt::End) => StartFrom::End,
            _ => StartFrom::Beginning,
        };
        let kube = f.kube.as_ref().map(KubeMeta::json_fragment).unwrap_or_default();
        let routes = self.settings.router.for_container(f.kube.as_ref());
        let multiline = crate::config::multiline::rule_for(&self.settings.multiline, f.kube.as_ref());
        let follower = Follower::new(f.key.clone(), kube, &self.settings.decode, resume, start).with_multiline(multiline);
        let dir = f.key.parent().unwrap_or(Path::new("/")).to_path_buf();
        // A busy directory is read on the timer and stays unwatched.
        let polled = self.polled.contains(&dir);
        if !polled {
            self.watch.watch_dir(&dir);
        }
        let key: Arc<Path> = Arc::from(f.key.as_path());
        self.dirs.entry(dir.clone()).or_default().push(key.clone());
        tracing::debug!(file = %f.key.display(), "following");
        let seen_bytes = follower.stats.bytes_read;
        self.streams.insert(
            key.clone(),
            Followed { follower, routes, kube: f.kube.clone(), key: key.clone(), dir, last_active: now, warned: false, backlogged: false, seen_bytes, last_data: None, polled },
        );
        if polled {
            self.watch_moves(&key);
        }
        self.make_ready(key);
    }

    /// A stream is gone for good: forget it once the batch is durable.
    pub(super) fn retire(&mut self, key: &Arc<Path>) {
        let Some(s) = self.streams.remove(key) else { return };
        tracing::debug!(file = %key.display(), "stream finished");
        self.moves.unwatch(key);
        self.retired.add_stream(&s.follower);
        if let Some(keys) = self.dirs.get_mut(&s.dir) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.dirs.remove(&s.dir);
                if !self.include_watches.contains(&s.dir) {
                    self.watch.unwatch_dir(&s.dir);
                }
                self.polled.forget(&s.dir);
            }
        }
        self.batch.finished.push(key.clone());
    }

    /// Streams that found no descriptor free get another chance once a second.
    pub(super) fn retry_waiting_for_fd(&mut self, now: Instant) {
        if self.waiting_fd.is_empty() || now < self.fd_retry_due {
            return;
        }
        self.fd_retry_due = now + FD_RETRY;
        while let Some(key) = self.waiting_fd.pop_front() {
            self.make_ready(key);
        }
    }

    /// Frees a descriptor if the cap is reached, by closing the stream caught up the
    /// longest (it is reopened where it was when it is written to again).
    pub(super) fn make_room(&mut self) -> bool {
        if self.open_files < self.settings.tail.max_open_files {
            return true;
        }
        let now = Instant::now();
        let victim = self
            .streams
            .iter()
            .filter(|(_, s)| s.follower.is_open() && !s.follower.holds_lines())
            .filter(|(_, s)| s.follower.idle_for(now).is_some())
            .max_by_key(|(_, s)| s.follower.idle_for(now))
            .map(|(k, _)| k.clone());
        let parked = victim.and_then(|k| self.streams.get_mut(&k)).is_some_and(|s| s.follower.park());
        if parked {
            self.open_files -= 1;
        }
        parked
    }
}
