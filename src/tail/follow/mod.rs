//! Following one container's log stream through rotation, truncation and deletion.
//!
//! A [`Follower`] owns one stream: the live file `…/<container>/<n>.log` and, while a
//! rotation is in progress, the rotated files before it. It reads with one descriptor
//! at a time and keeps that descriptor across renames, so the kubelet renaming,
//! compressing or deleting a file under it never loses what was written.
//!
//! # Rotation, step by step
//!
//! The kubelet renames `0.log` to `0.log.<stamp>` and asks the runtime to reopen,
//! which creates a new `0.log`. At the end of its data the follower stats the live
//! path:
//!
//! 1. Same inode: nothing happened; caught up.
//! 2. No file, and our descriptor's link count is above 0: renamed, reopen pending;
//!    wait (the runtime may still append to our descriptor).
//! 3. A different inode: the runtime has reopened, so our file gets no more writes.
//!    Learn its rotated name (its stamp: by inode if still plain, else by the
//!    fingerprint of each `.gz`), read it to its end for the last time, then move to
//!    the next file of the set — the next newer rotated file if the kubelet rotated
//!    more than once meanwhile (read from `.gz` if already compressed), else the new
//!    live file.
//! 4. Link count 0: deleted. Drain, then forget the stream after `rotate_wait`.
//!
//! A file smaller than what was read from it was truncated in place (copytruncate):
//! reading restarts at 0, counted.
//!
//! # Offsets across files
//!
//! A line split across a rotation must be rejoined, and while it is pending the
//! checkpoint must point at its first piece — in the previous file. Offsets given to
//! the decoder are therefore *chain* offsets: each file opened starts where the
//! previous one ended. [`Follower::position`] maps the decoder's safe chain offset
//! back to (file, offset).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use super::identity::{self, FileId};
use super::lines::{LineReader, READ_SIZE};
use super::rotation::SetMember;
use members::{find_stamp, list_members, live_member, open_member, rotated_exists, successor, uncompressed_size, Current, Source};

mod members;
mod read;
mod resume;
use read::{drain_lines, give_back, release_buffer, Drained, IN_PLACE_SPAN};
use crate::decode::{DecodeOptions, FileDecoder};
use crate::event::{Event, Nanos};

/// Reads while finishing a split message past a turn's budget are this small.
const FINISH_STEP: u64 = 16 * 1024;

/// Read buffers kept for reuse across streams.
const MAX_POOLED_BUFFERS: usize = 4;
/// A read buffer larger than this (grown for a long line) is not kept for reuse.
const MAX_POOLED_CAPACITY: usize = 2 * READ_SIZE;

/// Counters a follower keeps; summed by the tailer into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowStats {
    pub bytes_read: u64,
    pub rotations: u64,
    pub truncations: u64,
    /// Bytes of rotated files deleted before they were read.
    pub rotated_unread_bytes: u64,
    /// Positions that could not be found again (their file was gone).
    pub lost_positions: u64,
}

/// What a read turn ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The turn's byte budget ran out; more is waiting.
    More,
    /// Everything written so far has been read.
    CaughtUp,
    /// The stream is gone for good (deleted, or dropped from discovery) and drained.
    Finished,
}

/// Where to start a stream that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Beginning,
    End,
}

/// One followed stream.
pub struct Follower {
    /// The live file, symlinks resolved: the stream's name in checkpoints.
    pub key: PathBuf,
    /// The `kubernetes` fragment for its events.
    kube: Vec<u8>,
    decoder: FileDecoder,
    max_line: usize,
    cur: Option<Current>,
    /// Where to open when `cur` is `None`.
    resume: Option<Position>,
    /// Parked at the end of its live file: that file as it was then (see
    /// [`Self::parked_unchanged`]).
    parked: Option<FileState>,
    start: StartFrom,
    /// (file, chain base) of files the pending message may have started in.
    chain: Vec<(FileId, u64)>,
    /// Chain offset where the next opened file starts.
    chain_end: u64,
    caught_up_since: Option<Instant>,
    /// Deleted, or no longer discovered: drained, then forgotten after `rotate_wait`.
    gone_since: Option<Instant>,
    /// No file to open (mid-rotation, or deleted before it was opened).
    missing_since: Option<Instant>,
    /// Rotated files seen and not yet read: stamp → size, to count losses.
    seen_rotated: std::collections::BTreeMap<String, u64>,
    /// Input before the next file to read was lost unread (its position's file was
    /// gone, rotated files were deleted): that file starts after a gap.
    lost_ahead: bool,
    /// Whether the tailer watches the live file for renames and removals
    /// (`tailer::moves`), and what the path was found to name since.
    path: PathWatch,
    pub stats: FollowStats,
}

/// A watched path is looked up again after this long even without an event: inotify
/// does not report what happens to a parent directory (renamed, a mount over it).
pub const PATH_RECHECK: Duration = Duration::from_secs(10);

impl Follower {
    pub fn new(key: PathBuf, kube: Vec<u8>, opts: &DecodeOptions, resume: Option<Position>, start: StartFrom) -> Self {
        Self {
            key,
            kube,
            decoder: FileDecoder::new(opts).with_in_place_span(IN_PLACE_SPAN),
            max_line: (opts.max_message_bytes + 64 * 1024).max(256 * 1024),
            cur: None,
            resume,
            parked: None,
            start,
            chain: Vec::new(),
            chain_end: 0,
            caught_up_since: None,
            gone_since: None,
            missing_since: None,
            seen_rotated: Default::default(),
            lost_ahead: false,
            path: PathWatch::Off,
            stats: FollowStats::default(),
        }
    }

    /// Whether a watch reports a rename or removal of the file the path names now (set
    /// by the tailer after adding or losing one, and after each report). Either way
    /// the path is looked up at the next end of the live file; while watched, what it
    /// finds is then trusted until the next report.
    pub fn set_path_watched(&mut self, watched: bool) {
        self.path = if watched { PathWatch::Unverified } else { PathWatch::Off };
    }

    /// What [`Self::set_path_watched`] was last told.
    pub fn path_watched(&self) -> bool {
        self.path != PathWatch::Off
    }

    pub fn is_open(&self) -> bool {
        self.cur.is_some()
    }

    pub fn decode_stats(&self) -> &crate::decode::DecodeStats {
        &self.decoder.stats
    }

    /// The log format, once detected.
    pub fn format(&self) -> Option<crate::decode::Format> {
        self.decoder.format()
    }

    /// Caught up with the file's end, and for how long.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.caught_up_since.map(|t| now.saturating_duration_since(t))
    }

    /// A split message is pending (its pieces are in memory).
    pub fn has_pending(&self) -> bool {
        self.decoder.has_pending()
    }

    /// Lines are held in memory: a split message, or an open multiline group.
    pub fn holds_lines(&self) -> bool {
        self.decoder.holds_lines()
    }

    /// How long after catching up what it holds is flushed (`timeout` for a split
    /// message; the rule's `flush_timeout` for a group).
    pub fn flush_after(&self, timeout: Duration) -> Option<Duration> {
        self.decoder.flush_after(timeout)
    }

    /// Groups stack traces by `multiline`'s rule.
    pub fn with_multiline(mut self, multiline: Option<&crate::decode::Multiline>) -> Self {
        self.decoder.set_multiline(multiline);
        self
    }

    /// Bytes on disk not yet read in the current file (0 when unknown).
    pub fn unread_bytes(&self) -> u64 {
        match &self.cur {
            Some(c) => match c.reader.get_ref() {
                Source::Plain(f) => f.metadata().map_or(0, |m| m.len().saturating_sub(c.opened_at + c.reader.bytes_read())),
                Source::Gz(_) => 0,
            },
            None => 0,
        }
    }

    /// Bytes of read buffer the stream holds between turns: 0, or the exact size of an
    /// incomplete line from a `.gz` (which cannot be read again); plus an open
    /// multiline group's.
    pub fn held_bytes(&self) -> usize {
        self.cur.as_ref().map_or(0, |c| c.reader.capacity()) + self.decoder.group_bytes()
    }

    /// Marks the stream as no longer discovered (container restarted, pod gone,
    /// filtered out): it is drained and forgotten after `rotate_wait`.
    pub fn mark_gone(&mut self, now: Instant) {
        self.gone_since.get_or_insert(now);
    }

    /// The stream's file is still there but no longer wanted: it is read to its
    /// current end and then forgotten, without waiting `rotate_wait`.
    pub fn mark_unwanted(&mut self, now: Instant, rotate_wait: Duration) {
        self.gone_since.get_or_insert(now.checked_sub(rotate_wait).unwrap_or(now));
    }

    /// The stream is discovered again.
    pub fn mark_present(&mut self) {
        self.gone_since = None;
    }

    /// Closes the descriptor, keeping the position (for the open-files cap). Refused
    /// while lines are held (a split message, a group): they are only in memory.
    pub fn park(&mut self) -> bool {
        if self.cur.is_none() || self.holds_lines() {
            return false;
        }
        self.resume = self.position();
        self.parked = self.cur.as_ref().zip(self.resume).and_then(|(cur, pos)| FileState::at_end(cur, pos));
        self.cur = None;
        self.chain.clear();
        true
    }

    /// Parked at the end of its live file, and that file is still there with the same
    /// size and modification time (one `stat`): a turn would open it, list its
    /// directory and find the position again only to read nothing. A stream on its way
    /// out (gone, unwanted, missing) is never skipped: its turn finishes it.
    pub fn parked_unchanged(&self) -> bool {
        let Some(then) = &self.parked else { return false };
        self.cur.is_none()
            && self.gone_since.is_none()
            && self.missing_since.is_none()
            && fs::metadata(&self.key).is_ok_and(|md| FileState::of(&md) == *then)
    }

    /// The checkpoint for everything handed out so far: never inside a pending message.
    pub fn position(&mut self) -> Option<Position> {
        let Some(cur) = &mut self.cur else { return self.resume };
        if cur.id.fingerprint.is_none() && cur.reader.offset() > 0 {
            if let Source::Plain(f) = cur.reader.get_ref() {
                cur.id.fingerprint = identity::fingerprint_open(f).ok().flatten();
                if let Some(entry) = self.chain.iter_mut().rev().find(|(id, _)| id.ino == cur.id.ino) {
                    entry.0 = cur.id;
                }
            }
        }
        let safe = self.decoder.checkpoint_offset(cur.base + cur.reader.offset());
        let at = self.chain.iter().rposition(|&(_, base)| base <= safe)?;
        self.chain.drain(..at);
        let (file, base) = self.chain[0];
        Some(Position { file, offset: safe - base })
    }

    /// Reads up to `budget` bytes, emitting finished events. `read_time` stamps lines
    /// without a usable time. Read buffers come from `pool` and go back to it when the
    /// turn ends with no incomplete line held, so idle streams hold no buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn read<F: FnMut(&Event<'_>, &[u8])>(
        &mut self,
        budget: usize,
        now: Instant,
        read_time: Nanos,
        rotate_wait: Duration,
        pool: &mut Vec<Vec<u8>>,
        emit: &mut F,
    ) -> io::Result<ReadOutcome> {
        let outcome = self.read_turn(budget, now, read_time, rotate_wait, pool, emit);
        if let Some(buf) = self.cur.as_mut().and_then(release_buffer) {
            give_back(pool, buf);
        }
        self.decoder.release_scratch();
        outcome
    }

    /// Gives the file being read a pooled read buffer, if it has none.
    fn lend_buffer(&mut self, pool: &mut Vec<Vec<u8>>) {
        if let Some(cur) = &mut self.cur {
            if let Some(unused) = cur.reader.lend(pool.pop().unwrap_or_default()) {
                give_back(pool, unused);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_turn<F: FnMut(&Event<'_>, &[u8])>(
        &mut self,
        budget: usize,
        now: Instant,
        read_time: Nanos,
        rotate_wait: Duration,
        pool: &mut Vec<Vec<u8>>,
        emit: &mut F,
    ) -> io::Result<ReadOutcome> {
        if self.cur.is_none() {
            if !self.open()? {
                return Ok(self.when_nothing_to_read(now, rotate_wait, emit));
            }
            self.missing_since = None;
            self.mark_gap(emit);
        }
        // Read into a pooled buffer (a file just opened has none), not a fresh one.
        self.lend_buffer(pool);
        let start_bytes = self.stats.bytes_read;
        loop {
            let Some(cur) = self.cur.as_mut() else {
                // The next file vanished as we moved to it: look again next turn.
                return Ok(ReadOutcome::CaughtUp);
            };
            let before = cur.reader.bytes_read();
            let got_line = drain_lines(cur, &mut self.decoder, &self.kube, budget, read_time, emit)?;
            self.stats.bytes_read += cur.reader.bytes_read() - before;
            if got_line == Drained::Budget || self.stats.bytes_read - start_bytes >= budget as u64 {
                self.caught_up_since = None;
                return Ok(ReadOutcome::More);
            }
            if got_line == Drained::Some {
                self.caught_up_since = None;
            }
            // At the end of what the current file holds right now.
            if !cur.live {
                match self.next_after_rotated(now, read_time, rotate_wait, emit)? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            match self.check_live(now)? {
                LiveState::Unchanged | LiveState::Waiting => return Ok(self.caught_up(now, rotate_wait, emit)),
                LiveState::Rotated => continue,
                LiveState::Truncated => {
                    // What was pending belonged to the old content, and what was
                    // written between our last read and the truncation is gone.
                    self.lost_ahead = true;
                    self.mark_gap(emit);
                    self.restart_truncated()?;
                }
            }
        }
    }

    /// At the end of a rotated file: moves to the next file of the set (`None`: read
    /// on). A rotated file is final once the runtime writes elsewhere — a newer file
    /// exists; until then (renamed, reopen pending) it may still grow.
    fn next_after_rotated<F: FnMut(&Event<'_>, &[u8])>(&mut self, now: Instant, read_time: Nanos, rotate_wait: Duration, emit: &mut F) -> io::Result<Option<ReadOutcome>> {
        let members = list_members(&self.key)?;
        let Some(next) = self.cur.as_ref().and_then(|cur| successor(&members, cur)) else {
            return Ok(Some(self.caught_up(now, rotate_wait, emit)));
        };
        let next = next.clone();
        self.finish_file(read_time, emit);
        if !self.advance(&next, &members, emit)? {
            // It vanished as we looked (compressed, renamed): look again next turn.
            return Ok(Some(ReadOutcome::CaughtUp));
        }
        Ok(None)
    }

    /// Caught up with what is written; a stream gone for `rotate_wait` is finished.
    fn caught_up<F: FnMut(&Event<'_>, &[u8])>(&mut self, now: Instant, rotate_wait: Duration, emit: &mut F) -> ReadOutcome {
        self.caught_up_since.get_or_insert(now);
        if self.gone_since.is_some_and(|t| now.saturating_duration_since(t) >= rotate_wait) {
            return self.finish_stream(emit);
        }
        ReadOutcome::CaughtUp
    }

    /// Emits a pending split message as partial once the stream has been caught up
    /// and quiet for `timeout` (never while unread data may hold its continuation).
    pub fn flush_stale<F: FnMut(&Event<'_>, &[u8])>(&mut self, now: Instant, timeout: Duration, emit: &mut F) -> bool {
        let kube = &self.kube;
        self.decoder.flush_stale(self.caught_up_since.map(|t| now.saturating_duration_since(t)), timeout, &mut |e| emit(e, kube))
    }

    fn when_nothing_to_read<F: FnMut(&Event<'_>, &[u8])>(&mut self, now: Instant, rotate_wait: Duration, emit: &mut F) -> ReadOutcome {
        self.caught_up_since.get_or_insert(now);
        let missing = *self.missing_since.get_or_insert(now);
        let since = self.gone_since.map_or(missing, |g| g.min(missing));
        if now.saturating_duration_since(since) >= rotate_wait {
            self.finish_stream(emit)
        } else {
            ReadOutcome::CaughtUp
        }
    }

    fn finish_stream<F: FnMut(&Event<'_>, &[u8])>(&mut self, emit: &mut F) -> ReadOutcome {
        let kube = &self.kube;
        self.decoder.finish(&mut |e| emit(e, kube));
        self.cur = None;
        ReadOutcome::Finished
    }

    /// A rotated file's end is final: a last line without a newline is a line.
    fn finish_file<F: FnMut(&Event<'_>, &[u8])>(&mut self, read_time: Nanos, emit: &mut F) {
        let cur = self.cur.as_mut().expect("a file is open");
        if let Some(line) = cur.reader.take_unterminated() {
            let kube = &self.kube;
            self.decoder.line(line.bytes, cur.base + line.offset, read_time, &mut |e| emit(e, kube));
        }
        self.chain_end = cur.base + cur.reader.offset();
    }

    /// Opens the stream where it should resume; `false` when there is no file.
    fn open(&mut self) -> io::Result<bool> {
        match self.resume {
            // The position is dropped only once it has been opened: an error here
            // (a damaged .gz, no descriptor free) must not lose it.
            Some(pos) => {
                let opened = self.open_at(pos)?;
                if opened {
                    self.resume = None;
                }
                Ok(opened)
            }
            None => {
                let start = std::mem::replace(&mut self.start, StartFrom::Beginning);
                let offset = match (start, fs::metadata(&self.key)) {
                    (StartFrom::End, Ok(md)) => md.len(),
                    _ => 0,
                };
                match open_member(&live_member(&self.key), self.chain_end, self.max_line, offset)? {
                    Some(cur) => {
                        self.install(cur);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
        }
    }

    fn install(&mut self, cur: Current) {
        self.parked = None;
        // Opened: from here on this file and older ones cannot be lost to deletion.
        if let Some(stamp) = &cur.stamp {
            self.seen_rotated = self.seen_rotated.split_off(&format!("{stamp}\u{1}"));
        }
        self.chain.push((cur.id, cur.base));
        self.cur = Some(cur);
    }

    /// Moves from a finished rotated file to `next`, the following file of the set.
    /// The finished file stays current until `next` is open, so a failure or a race
    /// (the kubelet compressing `next` right now) is retried, never skipped.
    fn advance<F: FnMut(&Event<'_>, &[u8])>(&mut self, next: &SetMember, members: &[SetMember], emit: &mut F) -> io::Result<bool> {
        let Some(mut cur) = open_member(next, self.chain_end, self.max_line, 0)? else { return Ok(false) };
        let mut done = self.cur.take().expect("a file was open");
        done.reader.pass_buffer_to(&mut cur.reader);
        self.count_skipped(members, done.stamp.as_deref());
        self.mark_gap(emit);
        self.stats.rotations += 1;
        self.install(cur);
        Ok(true)
    }

    /// If input was lost before the file about to be read, tells the decoder: a
    /// message cut by the hole is emitted `partial`, never joined to unrelated pieces
    /// nor passed off as whole.
    fn mark_gap<F: FnMut(&Event<'_>, &[u8])>(&mut self, emit: &mut F) {
        if std::mem::take(&mut self.lost_ahead) {
            let kube = &self.kube;
            self.decoder.gap(&mut |e| emit(e, kube));
        }
    }

    /// Looks at the stream's rotated files (on each rescan): remembers the ones
    /// newer than the file being read, and counts those that vanished unread — the
    /// kubelet deleted them while logferry was behind.
    pub fn observe_rotations(&mut self) {
        let Some(cur) = &mut self.cur else { return };
        if cur.stamp.is_none() {
            // Renamed under us while we are still inside it (behind, or paused)?
            let moved = fs::metadata(&self.key).is_ok_and(|md| md.ino() != cur.id.ino || md.dev() != cur.id.dev);
            if moved {
                cur.stamp = find_stamp(&self.key, &cur.id).ok().flatten();
            }
        }
        let Some(reading) = cur.stamp.clone() else { return }; // reading the live file
        if let Ok(members) = list_members(&self.key) {
            self.count_skipped(&members, Some(&reading));
        }
    }

    /// Counts remembered rotated files newer than `after` that are gone, and
    /// remembers the ones present.
    fn count_skipped(&mut self, members: &[SetMember], after: Option<&str>) {
        let present: BTreeSet<&str> = members.iter().filter_map(|m| m.stamp.as_deref()).collect();
        let mut lost = 0;
        let key = &self.key;
        self.seen_rotated.retain(|stamp, size| {
            // A directory listing taken while the kubelet compresses can miss both the
            // plain file and its `.gz`: only a file that is not there now is gone.
            let gone = !present.contains(stamp.as_str()) && !rotated_exists(key, stamp);
            lost += if gone { *size } else { 0 };
            !gone
        });
        if lost > 0 {
            tracing::warn!(stream = %self.key.display(), bytes = lost, "the kubelet deleted rotated log files before logferry read them (it is too far behind: see the buffer and sink)");
            self.stats.rotated_unread_bytes += lost;
            self.lost_ahead = true;
        }
        for m in members {
            let Some(stamp) = &m.stamp else { continue };
            if after.is_some_and(|a| stamp.as_str() <= a) {
                continue;
            }
            if let Some(size) = uncompressed_size(m) {
                self.seen_rotated.entry(stamp.clone()).or_insert(size);
            }
        }
    }

    /// At the end of the live file: has it been rotated, truncated or deleted?
    ///
    /// A file whose last read stopped short just now ended exactly where it was read
    /// to: not truncated, and its size is not asked for again (two reads a second of
    /// each busy file, each a system call saved). A path watched for renames and
    /// found naming the open file since is not looked up either
    /// ([`Self::set_path_watched`]).
    fn check_live(&mut self, now: Instant) -> io::Result<LiveState> {
        let cur = self.cur.as_mut().expect("a file is open");
        let Source::Plain(file) = cur.reader.get_ref() else { return Ok(LiveState::Unchanged) };
        let md = if cur.reader.ended_short() { None } else { Some(file.metadata()?) };
        let read_to = cur.opened_at + cur.reader.bytes_read();
        if let Some(md) = md.as_ref().filter(|md| md.len() < read_to) {
            self.stats.truncations += 1;
            tracing::info!(file = %self.key.display(), size = md.len(), read = read_to, "file truncated in place; reading it again from the start");
            return Ok(LiveState::Truncated);
        }
        if let PathWatch::Names { dev, ino, at } = self.path {
            if dev == cur.id.dev && ino == cur.id.ino && now.saturating_duration_since(at) < PATH_RECHECK {
                return Ok(LiveState::Unchanged);
            }
        }
        match fs::metadata(&self.key) {
            Ok(now_md) if now_md.dev() == cur.id.dev && now_md.ino() == cur.id.ino => {
                if self.path != PathWatch::Off {
                    self.path = PathWatch::Names { dev: cur.id.dev, ino: cur.id.ino, at: now };
                }
                Ok(LiveState::Unchanged)
            }
            Ok(_) => {
                // The runtime reopened: no more writes to ours. Read its tail, then move
                // on — once a read after this finds nothing (the runtime's last write
                // may have landed while the lines of the last read were handed out).
                cur.reader.end_at_short_reads(false);
                cur.live = false;
                cur.stamp = find_stamp(&self.key, &cur.id)?;
                if cur.stamp.is_none() {
                    tracing::warn!(file = %self.key.display(), "rotated file not found by inode or fingerprint; continuing with the live file");
                }
                Ok(LiveState::Rotated)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let nlink = match md {
                    Some(md) => md.nlink(),
                    None => file.metadata()?.nlink(),
                };
                if nlink == 0 {
                    self.gone_since.get_or_insert(now);
                }
                Ok(LiveState::Waiting)
            }
            Err(e) => Err(e),
        }
    }

    /// Reopens a truncated live file from its start, as a new file in the chain.
    fn restart_truncated(&mut self) -> io::Result<()> {
        let cur = self.cur.as_mut().expect("a file is open");
        let Source::Plain(file) = cur.reader.get_ref() else { return Ok(()) };
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        let base = cur.base + cur.opened_at + cur.reader.bytes_read();
        let id = FileId::from_metadata(&f.metadata()?, None);
        let mut reader = LineReader::new(Source::Plain(f), self.max_line, 0);
        reader.end_at_short_reads(true);
        // (copytruncate rotates this way every time)
        cur.reader.pass_buffer_to(&mut reader);
        *cur = Current { reader, id, base, live: true, stamp: None, opened_at: 0 };
        self.chain.clear();
        self.chain.push((id, base));
        Ok(())
    }
}

/// A watch on the live file (see [`Follower::set_path_watched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathWatch {
    /// No watch: the path is looked up at every end of the live file.
    Off,
    /// Watched, not looked up since: the next end looks.
    Unverified,
    /// Watched, and found at `at` to name this file (device, inode): trusted until a
    /// report, or for [`PATH_RECHECK`].
    Names { dev: u64, ino: u64, at: Instant },
}

/// What says a file is as it was: which file, its size, when it was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileState {
    fn of(md: &fs::Metadata) -> Self {
        Self { dev: md.dev(), ino: md.ino(), len: md.len(), mtime: (md.mtime(), md.mtime_nsec()) }
    }

    /// The state of `cur` if it is the live file and `pos` is at its end (nothing in it
    /// unread, no unterminated line read again on reopening).
    fn at_end(cur: &Current, pos: Position) -> Option<Self> {
        let Source::Plain(f) = cur.reader.get_ref() else { return None };
        if !cur.live || cur.stamp.is_some() || pos.file.ino != cur.id.ino || pos.file.dev != cur.id.dev {
            return None;
        }
        let state = Self::of(&f.metadata().ok()?);
        (state.len == pos.offset).then_some(state)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveState {
    Unchanged,
    Waiting,
    Rotated,
    Truncated,
}

#[cfg(test)]
mod tests;
