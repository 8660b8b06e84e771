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
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use super::identity::{self, FileId};
use super::lines::{LineKind, LineReader, READ_SIZE};
use super::rotation::{self, SetMember};
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

enum Source {
    Plain(File),
    Gz(Box<flate2::read::MultiGzDecoder<BufReader<File>>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(f) => f.read(buf),
            Source::Gz(g) => g.read(buf),
        }
    }
}

struct Current {
    reader: LineReader<Source>,
    id: FileId,
    /// Chain offset of this file's byte 0.
    base: u64,
    /// The live file (may still grow) as opposed to a rotated, final one.
    live: bool,
    /// Rotation stamp, once known.
    stamp: Option<String>,
    /// File offset the reader started at.
    opened_at: u64,
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
    pub stats: FollowStats,
}

impl Follower {
    pub fn new(key: PathBuf, kube: Vec<u8>, opts: &DecodeOptions, resume: Option<Position>, start: StartFrom) -> Self {
        Self {
            key,
            kube,
            decoder: FileDecoder::new(opts),
            max_line: (opts.max_message_bytes + 64 * 1024).max(256 * 1024),
            cur: None,
            resume,
            start,
            chain: Vec::new(),
            chain_end: 0,
            caught_up_since: None,
            gone_since: None,
            missing_since: None,
            seen_rotated: Default::default(),
            lost_ahead: false,
            stats: FollowStats::default(),
        }
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

    pub fn has_pending(&self) -> bool {
        self.decoder.has_pending()
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
    /// incomplete line from a `.gz` (which cannot be read again).
    pub fn held_bytes(&self) -> usize {
        self.cur.as_ref().map_or(0, |c| c.reader.capacity())
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
    /// while a split message is pending, since its pieces are only in memory.
    pub fn park(&mut self) -> bool {
        if self.cur.is_none() || self.has_pending() {
            return false;
        }
        self.resume = self.position();
        self.cur = None;
        self.chain.clear();
        true
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
        if let Some(cur) = &mut self.cur {
            if let Some(unused) = cur.reader.lend(pool.pop().unwrap_or_default()) {
                give_back(pool, unused);
            }
        }
        let outcome = self.read_turn(budget, now, read_time, rotate_wait, emit);
        if let Some(buf) = self.cur.as_mut().and_then(release_buffer) {
            give_back(pool, buf);
        }
        self.decoder.release_scratch();
        outcome
    }

    fn read_turn<F: FnMut(&Event<'_>, &[u8])>(
        &mut self,
        budget: usize,
        now: Instant,
        read_time: Nanos,
        rotate_wait: Duration,
        emit: &mut F,
    ) -> io::Result<ReadOutcome> {
        if self.cur.is_none() {
            if !self.open()? {
                return Ok(self.when_nothing_to_read(now, rotate_wait, emit));
            }
            self.missing_since = None;
            self.mark_gap(emit);
        }
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
                // A rotated file is final once the runtime writes elsewhere: a newer
                // file exists. Until then (renamed, reopen pending) it may still grow.
                let members = list_members(&self.key)?;
                let Some(next) = successor(&members, cur) else {
                    self.caught_up_since.get_or_insert(now);
                    if self.gone_since.is_some_and(|t| now.saturating_duration_since(t) >= rotate_wait) {
                        return Ok(self.finish_stream(emit));
                    }
                    return Ok(ReadOutcome::CaughtUp);
                };
                let next = next.clone();
                self.finish_file(read_time, emit);
                if !self.advance(&next, &members, emit)? {
                    // It vanished as we looked (compressed, renamed): look again next turn.
                    return Ok(ReadOutcome::CaughtUp);
                }
                continue;
            }
            match self.check_live(now)? {
                LiveState::Unchanged | LiveState::Waiting => {
                    self.caught_up_since.get_or_insert(now);
                    if self.gone_since.is_some_and(|t| now.saturating_duration_since(t) >= rotate_wait) {
                        return Ok(self.finish_stream(emit));
                    }
                    return Ok(ReadOutcome::CaughtUp);
                }
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

    /// Finds the file a checkpoint points into — the live file, a plain rotated one
    /// (same inode) or a compressed one (same fingerprint) — and opens it there.
    ///
    /// A listing taken while the kubelet compresses that very file (the most recently
    /// rotated one, where a restart often resumes) can name the plain file that is gone
    /// by the time it is looked at, or miss both names: the position is lost only when
    /// nothing vanished while looking and two listings in a row agree.
    fn open_at(&mut self, pos: Position) -> io::Result<bool> {
        let mut previous: Option<Vec<SetMember>> = None;
        for _ in 0..OPEN_AT_LOOKS {
            let members = list_members(&self.key)?;
            match self.find_position(&members, &pos)? {
                Found::Opened => return Ok(true),
                Found::Vanished => {}
                Found::Nowhere if previous.as_ref() == Some(&members) => return self.resume_after_loss(&members, &pos),
                Found::Nowhere => {}
            }
            previous = Some(members);
            std::thread::sleep(Duration::from_millis(10));
        }
        let members = list_members(&self.key)?;
        self.resume_after_loss(&members, &pos)
    }

    /// Looks for `pos` among `members` and opens it there.
    fn find_position(&mut self, members: &[SetMember], pos: &Position) -> io::Result<Found> {
        let mut vanished = false;
        for m in members {
            match matches_position(m, pos) {
                Ok(Match::Yes) => {}
                Ok(Match::No) => continue,
                Ok(Match::Vanished) => {
                    vanished = true;
                    continue;
                }
                // One unreadable member (a torn .gz after a node crash) is not this one.
                Err(e) => {
                    tracing::debug!(file = %m.path.display(), error = %e, "cannot identify");
                    continue;
                }
            }
            match open_member(m, self.chain_end, self.max_line, pos.offset)? {
                Some(cur) => {
                    tracing::debug!(stream = %self.key.display(), file = %m.path.display(), offset = pos.offset, "resuming");
                    self.install(cur);
                    return Ok(Found::Opened);
                }
                None => vanished = true,
            }
        }
        Ok(if vanished { Found::Vanished } else { Found::Nowhere })
    }

    /// The file is gone: rotation or deletion outran us while we were away. Reading
    /// goes on from the oldest file left, after a gap.
    fn resume_after_loss(&mut self, members: &[SetMember], pos: &Position) -> io::Result<bool> {
        self.stats.lost_positions += 1;
        self.lost_ahead = true;
        tracing::warn!(
            stream = %self.key.display(),
            offset = pos.offset,
            "the file this stream was being read from was deleted before logferry got back to it (down too long, or too far behind the kubelet's rotation); continuing with the oldest file left"
        );
        match members.first() {
            Some(m) => match open_member(m, self.chain_end, self.max_line, 0)? {
                Some(cur) => {
                    self.install(cur);
                    Ok(true)
                }
                None => Ok(false),
            },
            None => Ok(false),
        }
    }

    fn install(&mut self, cur: Current) {
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
        let Some(cur) = open_member(next, self.chain_end, self.max_line, 0)? else { return Ok(false) };
        let done = self.cur.take().expect("a file was open");
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
    fn check_live(&mut self, now: Instant) -> io::Result<LiveState> {
        let cur = self.cur.as_mut().expect("a file is open");
        let Source::Plain(file) = cur.reader.get_ref() else { return Ok(LiveState::Unchanged) };
        let md = file.metadata()?;
        let read_to = cur.opened_at + cur.reader.bytes_read();
        if md.len() < read_to {
            self.stats.truncations += 1;
            tracing::info!(file = %self.key.display(), size = md.len(), read = read_to, "file truncated in place; reading it again from the start");
            return Ok(LiveState::Truncated);
        }
        match fs::metadata(&self.key) {
            Ok(now_md) if now_md.dev() == md.dev() && now_md.ino() == md.ino() => Ok(LiveState::Unchanged),
            Ok(_) => {
                // The runtime reopened: no more writes to ours. Read its tail, then move on.
                cur.live = false;
                cur.stamp = find_stamp(&self.key, &cur.id)?;
                if cur.stamp.is_none() {
                    tracing::warn!(file = %self.key.display(), "rotated file not found by inode or fingerprint; continuing with the live file");
                }
                Ok(LiveState::Rotated)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if md.nlink() == 0 {
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
        *cur = Current { reader: LineReader::new(Source::Plain(f), self.max_line, 0), id, base, live: true, stamp: None, opened_at: 0 };
        self.chain.clear();
        self.chain.push((id, base));
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveState {
    Unchanged,
    Waiting,
    Rotated,
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// No line was available.
    None,
    /// Lines were read until the file had no more.
    Some,
    /// The budget ran out first.
    Budget,
}

fn drain_lines<F: FnMut(&Event<'_>, &[u8])>(
    cur: &mut Current,
    decoder: &mut FileDecoder,
    kube: &[u8],
    budget: usize,
    read_time: Nanos,
    emit: &mut F,
) -> io::Result<Drained> {
    // The budget counts what is handed out; reads are sized to what is left of it, so
    // little is read past the end of a turn (and read again at the next).
    let start = cur.reader.offset();
    let mut any = Drained::None;
    let emit = &mut |e: &Event<'_>| emit(e, kube);
    // A message the runtime split is read to its last piece before the turn ends, so
    // that no stream holds one between turns (on a node catching up, nearly every turn
    // would end inside one: most bytes are in long lines). That may take the turn past
    // its budget by about one message, at most by `overrun` (pieces of two streams
    // interleaving for longer wait for the next turn).
    let overrun = (4 * cur.reader.max_line()) as u64;
    let budget = budget as u64;
    // Once the budget is spent, the lines already read are handed out and no more is
    // read — but for a split message open then, which is finished, and ends the turn:
    // what was read past it is read again next turn (see `release_buffer`).
    let mut finishing = false;
    loop {
        let spent = cur.reader.offset() - start;
        let open = decoder.has_pending();
        if spent >= budget {
            if open {
                finishing = true;
            } else if finishing {
                return Ok(Drained::Budget);
            }
        }
        // (Finishing a message past the budget reads in small steps: what follows it
        // is read again next turn.)
        let left = if spent < budget {
            budget - spent
        } else if open {
            (budget + overrun).saturating_sub(spent).min(FINISH_STEP)
        } else {
            0
        } as usize;
        let Some(line) = cur.reader.next_line_reading(left)? else {
            return Ok(if left == 0 { Drained::Budget } else { any });
        };
        any = Drained::Some;
        let offset = cur.base + line.offset;
        match line.kind {
            LineKind::Overlong => decoder.overlong_line(line.bytes, read_time, emit),
            _ => decoder.line(line.bytes, offset, read_time, emit),
        }
    }
}

/// At the end of a turn, the read buffer goes back to the pool, so that a stream
/// holds none between turns whatever the number of streams: an incomplete last line
/// is read again next turn from a plain file (the descriptor moves back over it), or
/// kept in an exact-size copy from a gzip stream (which cannot move back).
fn release_buffer(cur: &mut Current) -> Option<Vec<u8>> {
    if cur.reader.buffered() > 0 {
        if let Source::Plain(f) = cur.reader.get_ref() {
            let held = cur.reader.buffered() as i64;
            let mut f: &File = f;
            if f.seek(SeekFrom::Current(-held)).is_ok() {
                cur.reader.unread_held();
                return cur.reader.reclaim();
            }
        }
        return cur.reader.shrink();
    }
    cur.reader.reclaim()
}

/// Keeps a read buffer for the next turn, unless enough are kept or it grew for a long
/// line (the memory a burst of long lines took is given back).
fn give_back(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < MAX_POOLED_BUFFERS && (READ_SIZE..=MAX_POOLED_CAPACITY).contains(&buf.capacity()) {
        pool.push(buf);
    }
}

/// The file after `cur` in its rotation set: the next newer rotated file, or the live
/// file if it is not `cur` itself. `None` while nothing newer exists.
fn successor<'a>(members: &'a [SetMember], cur: &Current) -> Option<&'a SetMember> {
    match &cur.stamp {
        Some(stamp) => members.iter().find(|m| m.stamp.as_deref().is_none_or(|s| s > stamp.as_str())),
        None => members.last().filter(|m| {
            m.stamp.is_none() && fs::metadata(&m.path).is_ok_and(|md| md.ino() != cur.id.ino || md.dev() != cur.id.dev)
        }),
    }
}

/// A rotated file's size as log data: its length, or for `.gz` the size gzip
/// records in its last four bytes (modulo 4 GiB, plenty for a 10 MiB log).
fn uncompressed_size(m: &SetMember) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(&m.path).ok()?;
    let len = f.metadata().ok()?.len();
    if !m.gzipped {
        return Some(len);
    }
    let mut isize = [0u8; 4];
    f.read_exact_at(&mut isize, len.checked_sub(4)?).ok()?;
    Some(u64::from(u32::from_le_bytes(isize)))
}

fn live_member(key: &Path) -> SetMember {
    SetMember { path: key.to_path_buf(), stamp: None, gzipped: false }
}

fn list_members(key: &Path) -> io::Result<Vec<SetMember>> {
    match rotation::list_set(key) {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Whether the rotated file `<live>.<stamp>` of `live` is there, plain or compressed.
/// The plain one is looked at first: the kubelet writes the `.gz` before it removes the
/// plain file, so one of the two is always seen.
fn rotated_exists(live: &Path, stamp: &str) -> bool {
    let plain = format!("{}.{stamp}", live.display());
    fs::symlink_metadata(&plain).is_ok() || fs::symlink_metadata(format!("{plain}.gz")).is_ok()
}

/// Opens a member at `offset` (uncompressed); `None` if it vanished meanwhile.
fn open_member(m: &SetMember, chain_base: u64, max_line: usize, offset: u64) -> io::Result<Option<Current>> {
    let mut file = match File::open(&m.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let (source, id) = if m.gzipped {
        let fp = identity::fingerprint_path(&m.path, true)?;
        let mut gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(128 * 1024, file));
        io::copy(&mut (&mut gz).take(offset), &mut io::sink())?;
        (Source::Gz(Box::new(gz)), FileId::from_metadata(&md, fp))
    } else {
        let id = identity::identify(&file)?;
        file.seek(SeekFrom::Start(offset))?;
        (Source::Plain(file), id)
    };
    Ok(Some(Current {
        reader: LineReader::new(source, max_line, offset),
        id,
        base: chain_base,
        live: m.stamp.is_none(),
        stamp: m.stamp.clone(),
        opened_at: offset,
    }))
}

/// Whether the member is the file a position was taken in.
fn matches_position(m: &SetMember, pos: &Position) -> io::Result<Match> {
    let vanished = |e: io::Error| if e.kind() == io::ErrorKind::NotFound { Ok(Match::Vanished) } else { Err(e) };
    if m.gzipped {
        if pos.file.fingerprint.is_none() {
            return Ok(Match::No);
        }
        return match identity::fingerprint_path(&m.path, true) {
            Ok(fp) => Ok(if fp == pos.file.fingerprint { Match::Yes } else { Match::No }),
            Err(e) => vanished(e),
        };
    }
    let md = match fs::metadata(&m.path) {
        Ok(md) => md,
        Err(e) => return vanished(e),
    };
    let fp = match identity::fingerprint_path(&m.path, false) {
        Ok(fp) => fp,
        Err(e) => return vanished(e),
    };
    Ok(if FileId::from_metadata(&md, fp).same_file(&pos.file) && md.len() >= pos.offset { Match::Yes } else { Match::No })
}

/// Whether a member of a listing is the file a position points into.
enum Match {
    Yes,
    No,
    /// It was listed but is gone now (compressed or deleted as we looked).
    Vanished,
}

/// What looking for a position among one listing found.
enum Found {
    Opened,
    /// Not there, but a listed file vanished meanwhile: look again.
    Vanished,
    Nowhere,
}

/// How many listings [`Follower::open_at`] takes before it calls a position lost.
const OPEN_AT_LOOKS: usize = 5;

/// The rotation stamp of a file that was just renamed away from the live path.
fn find_stamp(key: &Path, id: &FileId) -> io::Result<Option<String>> {
    let members = list_members(key)?;
    for m in members.iter().filter(|m| m.stamp.is_some() && !m.gzipped) {
        if let Ok(md) = fs::metadata(&m.path) {
            if md.dev() == id.dev && md.ino() == id.ino {
                return Ok(m.stamp.clone());
            }
        }
    }
    if id.fingerprint.is_some() {
        for m in members.iter().filter(|m| m.gzipped) {
            if identity::fingerprint_path(&m.path, true)? == id.fingerprint {
                return Ok(m.stamp.clone());
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri_lines(n: usize, tail: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout F line {i:06} {}\n", "x".repeat(100)).as_bytes());
        }
        out.extend_from_slice(tail.as_bytes());
        out
    }

    /// Regression: a stream whose turn ended mid-buffer kept its read buffer (256 KiB
    /// to ~1.3 MiB) until its next turn; with a thousand streams after downtime that
    /// was over 600 MiB. Every turn now ends holding nothing.
    #[test]
    fn a_turn_ends_holding_no_read_buffer_and_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let data = cri_lines(20_000, "2026-11-21T10:00:00.000000001Z stdout F incompl");
        std::fs::write(&path, &data).unwrap();
        let mut f = Follower::new(path.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
        let mut pool = Vec::new();
        let mut got = Vec::new();
        let now = Instant::now();
        let mut turns = 0;
        loop {
            turns += 1;
            let outcome = f.read(100_000, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| got.push(e.message.to_vec())).unwrap();
            assert_eq!(f.held_bytes(), 0, "turn {turns} ended holding a buffer");
            assert!(pool.len() <= MAX_POOLED_BUFFERS);
            if outcome != ReadOutcome::More {
                break;
            }
        }
        assert!(turns > 10, "the budget ended turns ({turns})");
        assert_eq!(got.len(), 20_000);
        assert!(got.iter().enumerate().all(|(i, m)| m.starts_with(format!("line {i:06} ").as_bytes())));
        // The incomplete line is read again, whole, once it is finished.
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, b"ete\n").unwrap();
        f.read(100_000, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| got.push(e.message.to_vec())).unwrap();
        assert_eq!(got.last().unwrap(), b"incomplete");
        assert_eq!(f.position().unwrap().offset, data.len() as u64 + 4);
    }

    /// A rotated file deleted before it was read leaves a hole: the message pending
    /// before it is flushed `partial` (not joined to pieces of another message), and
    /// the first message after it is flagged `partial` too, its head may be lost.
    #[test]
    fn rotated_files_deleted_unread_leave_a_marked_gap() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("0.log");
        let cri = |tag: &str, msg: &str| format!("2026-11-21T10:00:00.000000001Z stdout {tag} {msg}\n");
        std::fs::write(&live, cri("F", "a1") + &cri("P", "head-")).unwrap();
        let mut f = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
        let (mut pool, mut got, now) = (Vec::new(), Vec::new(), Instant::now());
        let mut read = |f: &mut Follower, got: &mut Vec<(String, bool)>| {
            f.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| {
                got.push((String::from_utf8(e.message.to_vec()).unwrap(), e.partial))
            })
            .unwrap()
        };
        read(&mut f, &mut got);
        // Two rotations while the follower is away; the middle file is seen, then
        // deleted unread (the kubelet keeping too few files for a slow reader).
        std::fs::rename(&live, dir.path().join("0.log.20261121-100001")).unwrap();
        std::fs::write(&live, cri("P", "middle-") + &cri("F", "end")).unwrap();
        std::fs::rename(&live, dir.path().join("0.log.20261121-100002")).unwrap();
        std::fs::write(&live, cri("F", "tail") + &cri("F", "next")).unwrap();
        f.observe_rotations();
        std::fs::remove_file(dir.path().join("0.log.20261121-100002")).unwrap();
        read(&mut f, &mut got);
        let want = [("a1", false), ("head-", true), ("tail", true), ("next", false)];
        assert_eq!(got, want.map(|(m, p)| (m.to_string(), p)));
        assert_eq!(f.stats.rotated_unread_bytes, (cri("P", "middle-") + &cri("F", "end")).len() as u64);
    }

    /// A directory listing taken while the kubelet compresses can lack a rotated file
    /// that is there (its plain name already removed as the listing reached it, its
    /// `.gz` created after the listing passed): only a file not on disk is lost.
    #[test]
    fn a_rotated_file_is_looked_for_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("0.log");
        std::fs::write(dir.path().join("0.log.20261121-100002.gz"), b"").unwrap();
        std::fs::write(dir.path().join("0.log.20261121-100004"), b"").unwrap();
        assert!(rotated_exists(&live, "20261121-100002"));
        assert!(rotated_exists(&live, "20261121-100004"));
        assert!(!rotated_exists(&live, "20261121-100003"));
    }

    /// Regression (a SIGKILL test on CI): a restart resuming in the most recently
    /// rotated file while the kubelet compressed it listed the plain file, found it gone
    /// when it looked, and called the position lost — the next message flagged partial
    /// and everything before it in the file sent again. It is looked for again.
    #[test]
    fn a_position_in_a_file_compressed_while_looking_is_found_in_its_gz() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("0.log");
        let cri = |msg: &str| format!("2026-11-21T10:00:00.000000001Z stdout F {msg}\n");
        std::fs::write(&live, cri("first") + &cri("second")).unwrap();
        let mut f = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
        let (mut pool, now) = (Vec::new(), Instant::now());
        f.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |_, _| {}).unwrap();
        let pos = f.position().unwrap();
        std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&live).unwrap(), cri("after").as_bytes()).unwrap();
        let rotated = dir.path().join("0.log.20261121-100001");
        std::fs::rename(&live, &rotated).unwrap();
        std::fs::write(&live, cri("live")).unwrap();
        let stale = list_members(&live).unwrap();
        // The kubelet compresses the rotated file between the listing and the look.
        let plain = std::fs::read(&rotated).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        std::fs::write(dir.path().join("0.log.20261121-100001.gz"), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(&rotated).unwrap();

        let mut g = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
        assert!(matches!(g.find_position(&stale, &pos).unwrap(), Found::Vanished));
        assert!(g.open_at(pos).unwrap());
        assert_eq!(g.stats.lost_positions, 0);
        let mut got = Vec::new();
        for _ in 0..3 {
            g.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| {
                got.push((String::from_utf8(e.message.to_vec()).unwrap(), e.partial))
            })
            .unwrap();
        }
        assert_eq!(got, [("after".to_string(), false), ("live".to_string(), false)]);
    }

    /// Regression: a turn that spent its budget inside a message the runtime split
    /// ended there, and the stream held the pieces read so far until its next turn —
    /// on a node catching up (most bytes in long lines) nearly every stream did, tens
    /// of MiB across a thousand. A turn now reads such a message to its last piece.
    #[test]
    fn a_turn_ends_between_messages_not_inside_a_split_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut data = Vec::new();
        let piece = "p".repeat(16 * 1024);
        for i in 0..200 {
            for _ in 0..4 {
                data.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout P {piece}\n").as_bytes());
            }
            data.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout F end {i}\n").as_bytes());
        }
        std::fs::write(&path, &data).unwrap();
        let mut f = Follower::new(path, b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
        let (mut pool, mut got, now) = (Vec::new(), Vec::new(), Instant::now());
        let mut turns = 0;
        loop {
            turns += 1;
            // A budget of a piece and a half: every turn would end inside a message.
            let outcome = f.read(24 * 1024, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| got.push(e.message.len())).unwrap();
            assert!(!f.has_pending(), "turn {turns} ended inside a split message");
            if outcome != ReadOutcome::More {
                break;
            }
        }
        let want: Vec<usize> = (0..200).map(|i: usize| 4 * 16 * 1024 + format!("end {i}").len()).collect();
        assert_eq!(got, want, "every message whole");
        assert!(turns >= 100, "about one message per turn ({turns} turns)");
    }
}
