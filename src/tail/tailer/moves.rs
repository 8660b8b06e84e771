//! Busy files' renames and removals, reported by inotify instead of looked up.
//!
//! A polled stream (see `tailer::hot`) is read twice a second, and each read that
//! catches up used to look its path up (`statx`) to notice a rotation: one path walk
//! per busy file per poll. Instead, each polled stream's live file gets a watch of
//! its own — for `IN_MOVE_SELF`, `IN_ATTRIB` (an unlink changes the link count) and
//! `IN_DELETE_SELF` only, never `IN_MODIFY`, so writes wake nothing — and the path is
//! looked up only after such an event (or every `PATH_RECHECK`, in the follower, for
//! what inotify cannot see: a parent directory renamed). The events are drained once
//! per poll, without blocking: nothing waits on this descriptor.
//!
//! A watch follows an inode: after a rotation the path names a new file, so a stream
//! whose watch fired is watched again by path (its new file), and its follower looks
//! the path up once more before trusting it (see `Follower::set_path_watched`).
//! Where inotify is unavailable or out of watches, streams keep looking paths up.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// What a watch reports: the file renamed, unlinked (or its attributes changed), or
/// gone. Writes are not reported.
const MASK: u32 = libc::IN_MOVE_SELF | libc::IN_ATTRIB | libc::IN_DELETE_SELF;

/// Size of `struct inotify_event` before its name.
const EVENT_HEADER: usize = std::mem::size_of::<libc::inotify_event>();

/// One inotify instance watching the live files of polled streams.
#[derive(Debug)]
pub(super) struct FileMoves {
    /// `None` where inotify could not be set up: every stream looks its path up.
    fd: Option<OwnedFd>,
    by_wd: HashMap<i32, Arc<Path>>,
    by_key: HashMap<Arc<Path>, i32>,
    /// The watch limit was reached: no more tries until a watch is removed.
    full: bool,
}

impl FileMoves {
    pub(super) fn new() -> Self {
        // SAFETY: a plain system call; it reads no memory of ours.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        let fd = if fd < 0 {
            tracing::info!(error = %io::Error::last_os_error(), "no inotify for busy files' renames; their paths are looked up on each poll");
            None
        } else {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Self { fd, by_wd: HashMap::new(), by_key: HashMap::new(), full: false }
    }

    /// Watches the file `key` names now; true if a watch is in place (then a rename
    /// or removal of that file will be reported by [`Self::moved`]).
    pub(super) fn watch(&mut self, key: &Arc<Path>) -> bool {
        if self.by_key.contains_key(key) {
            return true;
        }
        let Some(fd) = &self.fd else { return false };
        if self.full {
            return false;
        }
        let Ok(path) = CString::new(key.as_os_str().as_bytes()) else { return false };
        // SAFETY: `path` is a valid C string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSPC) {
                tracing::info!("inotify watch limit reached; busy files' paths are looked up on each poll");
                self.full = true;
            }
            return false;
        }
        // Two paths naming one file share its watch: the first keeps it, the other
        // looks its path up as if unwatched.
        if self.by_wd.get(&wd).is_some_and(|first| first != key) {
            return false;
        }
        self.by_wd.insert(wd, key.clone());
        self.by_key.insert(key.clone(), wd);
        true
    }

    /// Stops watching `key`'s file (the stream is no longer polled, or gone).
    pub(super) fn unwatch(&mut self, key: &Path) {
        let Some(wd) = self.by_key.remove(key) else { return };
        self.by_wd.remove(&wd);
        self.remove_watch(wd);
    }

    /// Drains what happened since the last call, without waiting: the streams whose
    /// file was renamed, unlinked or removed (all watched streams, if events were
    /// lost). Their watches are dropped; the caller watches their paths again.
    pub(super) fn moved(&mut self) -> Vec<Arc<Path>> {
        let mut moved = Vec::new();
        let Some(fd) = &self.fd else { return moved };
        let fd = fd.as_raw_fd();
        let mut buf = [0u64; 512]; // 4 KiB, aligned for the event headers
        loop {
            // SAFETY: reads into `buf`, which is valid for its whole length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf)) };
            if n <= 0 {
                break; // EAGAIN: nothing more (errors are treated the same: look again next poll)
            }
            // SAFETY: `buf` is initialised, and `n` bytes of it were just filled.
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            for (wd, mask) in events(bytes) {
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    moved.extend(self.by_key.keys().cloned());
                    let all: Vec<(Arc<Path>, i32)> = self.by_key.drain().collect();
                    self.by_wd.clear();
                    all.into_iter().for_each(|(_, wd)| self.remove_watch(wd));
                    continue;
                }
                let Some(key) = self.by_wd.remove(&wd) else { continue };
                self.by_key.remove(&key);
                if mask & libc::IN_IGNORED == 0 {
                    self.remove_watch(wd);
                }
                moved.push(key);
            }
        }
        moved.sort_unstable();
        moved.dedup();
        moved
    }

    /// How many files are watched.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    fn remove_watch(&mut self, wd: i32) {
        if let Some(fd) = &self.fd {
            // SAFETY: a plain system call; it reads no memory of ours. A watch the
            // kernel already removed (its file deleted) makes it fail harmlessly.
            unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
        }
        self.full = false;
    }
}

/// The (watch, mask) of each event in `bytes`, as read from an inotify descriptor.
fn events(bytes: &[u8]) -> impl Iterator<Item = (i32, u32)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = bytes.get(at..at + EVENT_HEADER)?;
        let wd = i32::from_ne_bytes(header[0..4].try_into().expect("four bytes"));
        let mask = u32::from_ne_bytes(header[4..8].try_into().expect("four bytes"));
        let name_len = u32::from_ne_bytes(header[12..16].try_into().expect("four bytes")) as usize;
        at += EVENT_HEADER + name_len;
        Some((wd, mask))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn key(p: &Path) -> Arc<Path> {
        Arc::from(p)
    }

    #[test]
    fn writes_are_not_reported_renames_and_removals_are() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(&dir.path().join("a.log")), key(&dir.path().join("b.log")));
        fs::write(&a, b"x\n").unwrap();
        fs::write(&b, b"y\n").unwrap();
        let mut moves = FileMoves::new();
        assert!(moves.watch(&a) && moves.watch(&b), "this test needs inotify");
        let mut f = fs::OpenOptions::new().append(true).open(&a).unwrap();
        for _ in 0..100 {
            f.write_all(b"more\n").unwrap();
        }
        assert!(moves.moved().is_empty(), "writes are not reported");

        fs::rename(&a, dir.path().join("a.log.1")).unwrap();
        assert_eq!(moves.moved(), vec![a.clone()]);
        assert!(moves.moved().is_empty(), "reported once");
        assert_eq!(moves.len(), 1, "the moved file's watch is dropped");

        // Watched again by path: the new file at it.
        fs::write(&a, b"new\n").unwrap();
        assert!(moves.watch(&a));
        fs::remove_file(&b).unwrap();
        fs::remove_file(&a).unwrap();
        let mut got = moves.moved();
        got.sort();
        assert_eq!(got, vec![a.clone(), b.clone()], "unlinking is reported");
        assert_eq!(moves.len(), 0);
    }

    #[test]
    fn a_second_path_to_a_watched_file_is_not_watched() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(&dir.path().join("a.log")), key(&dir.path().join("b.log")));
        fs::write(&a, b"x\n").unwrap();
        fs::hard_link(&a, &b).unwrap();
        let mut moves = FileMoves::new();
        assert!(moves.watch(&a));
        assert!(!moves.watch(&b), "b names a's file: a keeps the watch");
        assert!(moves.watch(&a), "still watched");
        fs::rename(&a, dir.path().join("a.log.1")).unwrap();
        assert_eq!(moves.moved(), vec![a.clone()]);
    }

    #[test]
    fn an_unwatched_file_is_not_reported_and_a_missing_one_is_not_watched() {
        let dir = tempfile::tempdir().unwrap();
        let a = key(&dir.path().join("a.log"));
        fs::write(&a, b"x\n").unwrap();
        let mut moves = FileMoves::new();
        assert!(moves.watch(&a));
        moves.unwatch(&a);
        fs::rename(&a, dir.path().join("a.log.1")).unwrap();
        assert!(moves.moved().is_empty());
        assert!(!moves.watch(&a), "nothing to watch at the path mid-rotation");
        assert_eq!(moves.len(), 0);
    }

    #[test]
    fn events_are_split_by_their_name_lengths() {
        let mut bytes = Vec::new();
        for (wd, mask, name) in [(3i32, libc::IN_MOVE_SELF, 0u32), (7, libc::IN_ATTRIB, 16), (9, libc::IN_IGNORED, 0)] {
            bytes.extend(wd.to_ne_bytes());
            bytes.extend(mask.to_ne_bytes());
            bytes.extend(0u32.to_ne_bytes());
            bytes.extend(name.to_ne_bytes());
            bytes.extend(std::iter::repeat_n(0u8, name as usize));
        }
        let got: Vec<(i32, u32)> = events(&bytes).collect();
        assert_eq!(got, vec![(3, libc::IN_MOVE_SELF), (7, libc::IN_ATTRIB), (9, libc::IN_IGNORED)]);
    }
}
