//! The tailer: one thread that follows every discovered stream and hands batches of
//! encoded events, with the positions they cover, to the next stage.
//!
//! Its loop: wait for a wake-up (inotify, a timer) only when nothing is ready; rescan
//! discovery on its interval or when a watched directory changed; give every ready
//! stream one turn of at most `read_bytes_per_turn` bytes (so one hot file cannot
//! starve the others; a backlogged stream's turn may run on a helper thread beside
//! another's, see `helper`); flush split lines that went quiet; ship the batch. Sending a
//! batch blocks while the next stage is full — that is the backpressure: files stay on
//! disk, unread, until there is room.
//!
//! Positions in a batch are safe checkpoints (never inside a split line). The tailer
//! never writes checkpoints itself: whoever makes the batch durable does, so a
//! checkpoint never runs ahead of the data.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use super::discover::Discovery;
use super::follow::ReadOutcome;
use super::handoff::BatchSender;
use super::helper::{Done, Helper, Job};
use super::stats::{TailSnapshot, TailStats};
use super::turn::{take_turn, Batch, Encoded, Followed, Routed, Routing, Turn, TurnLimits};
use super::watch::{Reload, Wake, Watch};

mod hot;
mod moves;
mod streams;
use crate::config::TailConfig;
use crate::decode::DecodeOptions;
use crate::event::{time, EventEncoder, MessageFormat};
use crate::route::Router;

/// A batch is shipped once it holds this many bytes, or when nothing else is ready.
pub const BATCH_BYTES: usize = 256 << 10;

/// Batch buffers kept for reuse beyond what the next stage holds, whatever happens;
/// more are kept while they are used (see [`Spares`]).
const SPARE_BATCH_BUFFERS: usize = 4;
/// How often every file is looked at when inotify is unavailable.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// After a wake-up by a write, at least this long since the last read round before
/// the next: bounds the rounds to ~40 a second under a steady stream of small writes.
const COALESCE: Duration = Duration::from_millis(25);
/// While the next stage is full, how often the batch is offered again if no
/// [`RoomBell`] rings first.
const RETRY_WHEN_FULL: Duration = Duration::from_millis(20);
/// How often streams waiting for a descriptor try again.
const FD_RETRY: Duration = Duration::from_secs(1);

/// Settings the tailer needs, from the checked configuration.
#[derive(Clone)]
pub struct TailerSettings {
    pub tail: TailConfig,
    pub decode: DecodeOptions,
    pub message_format: MessageFormat,
    pub partial_flush_timeout: Duration,
    /// Which sinks each event goes to; a container no sink takes is not followed.
    pub router: Arc<Router>,
    /// `[[multiline]]`: the rule for each container, the first entry selecting it.
    pub multiline: Arc<Vec<crate::config::MultilineConfig>>,
}

/// How often the tailer publishes its [`TailSnapshot`] while it reads.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How often when nothing was read since the last time: the numbers have not moved,
/// and an idle node is not woken every second to say so (the heartbeat, which
/// `/readyz` finds stuck after two minutes, stays fresh).
const PUBLISH_IDLE: Duration = Duration::from_secs(10);

/// Batch buffers handed back by the next stage, reused rather than allocated. Once
/// about a second ([`Spares::trim`]), those that sat unused since the last trim are
/// freed, oldest first, beyond [`SPARE_BATCH_BUFFERS`]: a burst's buffers do not
/// linger, and a steady stream whose rounds take more keeps them. (Freed as soon as
/// more than four were held, the buffers of a round that came back together were
/// freed, and the next round allocated new ones and faulted their pages in again:
/// about 50 page faults a second on the live node.)
#[derive(Default)]
struct Spares {
    /// Most recently handed back last.
    held: Vec<Vec<u8>>,
    /// The fewest held after a take since the last trim: that many sat unused.
    unused: usize,
}

impl Spares {
    /// The most recently handed back, emptied (a helper's buffer comes back full).
    fn take(&mut self) -> Option<Vec<u8>> {
        let spare = self.held.pop().map(|mut buffer| {
            buffer.clear();
            buffer
        });
        self.unused = self.unused.min(self.held.len());
        spare
    }

    fn trim(&mut self) {
        let surplus = self.unused.min(self.held.len().saturating_sub(SPARE_BATCH_BUFFERS));
        self.held.drain(..surplus);
        self.unused = self.held.len();
    }
}

pub struct Tailer {
    settings: TailerSettings,
    discovery: Discovery,
    watch: Watch,
    wakes: Receiver<Wake>,
    out: BatchSender<Batch>,
    stop: Arc<AtomicBool>,
    streams: HashMap<Arc<Path>, Followed>,
    /// Streams holding lines in memory (a split message, an open multiline group):
    /// the only ones the flush timers concern, so that a wait or a round does not
    /// look at every stream of a node with thousands. Updated after every turn and
    /// flush; a key whose stream is gone or holds nothing any more is dropped when met.
    holding: HashSet<Arc<Path>>,
    /// Ready to read, in turn order.
    ready: VecDeque<Arc<Path>>,
    queued: HashSet<Arc<Path>>,
    /// The followed streams of each directory (a container's directory: its log and,
    /// for a while, the rotated ones), to route directory events and to find a
    /// directory's streams without looking through thousands.
    dirs: HashMap<PathBuf, Vec<Arc<Path>>>,
    /// Positions from the last run, consumed as their streams are found.
    resume: HashMap<PathBuf, Position>,
    first_start: bool,
    first_scan_done: bool,
    encoder: EventEncoder,
    batch: Batch,
    rescan_due: Instant,
    rescan_now: bool,
    poll_due: Instant,
    open_files: usize,
    /// Counters of streams that finished, kept for the totals.
    retired: TailStats,
    /// Read buffers shared by all streams (see `Follower::read`).
    buffers: Vec<Vec<u8>>,
    snapshot: Arc<std::sync::Mutex<TailSnapshot>>,
    published: Instant,
    /// Something was read or (re)scanned since the last publish; if not, the publish
    /// timer waits [`PUBLISH_IDLE`].
    unpublished: bool,
    /// Batch buffers handed back by the next stage, reused rather than allocated.
    returned: Receiver<Vec<u8>>,
    /// Handed back and not yet reused.
    spares: Spares,
    giver: std::sync::mpsc::Sender<Vec<u8>>,
    /// When the last read round started (see `COALESCE`).
    last_round: Instant,
    /// Streams that found no descriptor free (see `max_open_files`).
    waiting_fd: VecDeque<Arc<Path>>,
    fd_retry_due: Instant,
    /// Threads that read a backlogged stream's turn beside the tailer's own.
    helpers: Vec<Helper>,
    /// Helpers given a stream during the current turn (the first `lent`).
    lent: usize,
    turns: u64,
    helper_turns: u64,
    /// Set while a batch waits for room in the next stage (see [`RoomBell`]).
    waiting_for_room: Arc<AtomicBool>,
    /// Busy directories, read on a timer rather than on each write.
    polled: hot::Polled,
    /// Polled streams' live files, watched for renames and removals.
    moves: moves::FileMoves,
    /// The directories watched for the include globs (see `watch_include_dirs`).
    include_watches: Vec<PathBuf>,
}

/// Wakes the tailer when the next stage takes a batch while the tailer waits for room,
/// so that reading resumes the moment there is room, not at its next retry (a sink
/// that drains its memory in a few milliseconds would otherwise sit idle meanwhile).
#[derive(Clone)]
pub struct RoomBell {
    waiting: Arc<AtomicBool>,
    wake: std::sync::mpsc::Sender<Wake>,
}

impl RoomBell {
    /// Call after taking a batch from the channel.
    pub fn ring(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            let _ = self.wake.send(Wake::Room);
        }
    }
}

impl Tailer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: TailerSettings,
        resume: HashMap<PathBuf, Position>,
        first_start: bool,
        watch: Watch,
        wakes: Receiver<Wake>,
        out: BatchSender<Batch>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        let helpers = (1..settings.tail.read_threads)
            .map_while(|_| {
                Helper::spawn(settings.message_format, turn_limits(&settings))
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot start a reading thread; reading with fewer"))
                    .ok()
            })
            .collect();
        let (giver, returned) = std::sync::mpsc::channel();
        Self {
            discovery: Discovery::new(&settings.tail, settings.router.clone()),
            encoder: EventEncoder::new(settings.message_format),
            settings,
            watch,
            wakes,
            out,
            stop,
            streams: HashMap::new(),
            holding: HashSet::new(),
            ready: VecDeque::new(),
            queued: HashSet::new(),
            dirs: HashMap::new(),
            resume,
            first_start,
            first_scan_done: false,
            batch: Batch::default(),
            rescan_due: now,
            rescan_now: true,
            poll_due: now + POLL_INTERVAL,
            open_files: 0,
            retired: TailStats::default(),
            buffers: Vec::new(),
            snapshot: Arc::default(),
            published: now,
            unpublished: true,
            returned,
            spares: Spares::default(),
            giver,
            last_round: now,
            waiting_fd: VecDeque::new(),
            fd_retry_due: now,
            helpers,
            lent: 0,
            turns: 0,
            helper_turns: 0,
            waiting_for_room: Arc::default(),
            polled: hot::Polled::default(),
            moves: moves::FileMoves::new(),
            include_watches: Vec::new(),
        }
    }

    /// What the next stage rings after each batch it takes; `wake` is the sender of
    /// this tailer's wake-ups.
    pub fn room_bell(&self, wake: std::sync::mpsc::Sender<Wake>) -> RoomBell {
        RoomBell { waiting: self.waiting_for_room.clone(), wake }
    }

    /// Where the next stage hands batch buffers back once it has copied them.
    pub fn recycler(&self) -> std::sync::mpsc::Sender<Vec<u8>> {
        self.giver.clone()
    }

    /// Where the tailer publishes its counters (about once a second).
    pub fn snapshot(&self) -> Arc<std::sync::Mutex<TailSnapshot>> {
        self.snapshot.clone()
    }

    /// Publishes the snapshot when it is half a period old: a wake-up for reading
    /// (a busy node's polls come twice a second) does it before its timer is due,
    /// which then never wakes the thread for it alone.
    fn publish(&mut self, now: Instant) {
        if now.saturating_duration_since(self.published) < PUBLISH_EVERY / 2 {
            return;
        }
        self.published = now;
        self.unpublished = false;
        self.trim_spares();
        let mut stats = self.totals();
        // Asked only of streams that may have something unread: one caught up with,
        // not queued and watched (a write would have queued it) has nothing, and a
        // `stat` of each of thousands of idle files every second is not free.
        let (queued, streams) = (&self.queued, &self.streams);
        let maybe_behind = |(key, s): &(&Arc<Path>, &Followed)| s.follower.idle_for(now).is_none() || s.polled || queued.contains(*key);
        stats.unread_bytes = streams.iter().filter(maybe_behind).map(|(_, s)| s.follower.unread_bytes()).sum();
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = TailSnapshot { stats, heartbeat: Some(now) };
        }
    }

    /// Runs until `stop` is set; ships what it has read, then returns its totals.
    pub fn run(mut self) -> TailStats {
        self.watch_include_dirs();
        while !self.stop.load(Ordering::Relaxed) {
            // Backpressure: the next stage is full and so is our batch. Read nothing
            // more; keep watching (rescans count files rotated away meanwhile).
            let paused = self.batch.encoded.len() >= BATCH_BYTES && self.try_ship() == Handoff::Full;
            self.wait_for_work(paused);
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            if self.rescan_now || now >= self.rescan_due {
                self.rescan(now);
                self.unpublished = true;
            }
            self.publish(now);
            if paused {
                continue;
            }
            if self.watch.polling() && now >= self.poll_due {
                self.mark_all_ready();
                self.poll_due = now + POLL_INTERVAL;
            }
            self.retry_waiting_for_fd(now);
            self.poll_hot(now);
            self.unpublished |= !self.ready.is_empty();
            self.read_round(now);
            self.flush_quiet_partials(Instant::now());
            // Ship every round: a busy stream must not hold back the others' positions.
            // The round's batches wake the buffer thread once, now.
            let shipped = self.try_ship();
            self.out.ring();
            if shipped == Handoff::Gone {
                break;
            }
        }
        // Stopping: complete events and their positions are shipped (waiting for
        // room if need be); a split line still pending is not — its checkpoint points
        // before it, so it is read again at the next start.
        if !self.batch.is_empty() {
            let _ = self.out.send(std::mem::take(&mut self.batch));
        }
        self.out.ring();
        self.totals()
    }

    pub fn totals(&self) -> TailStats {
        let mut t = self.retired;
        for s in self.streams.values() {
            t.add_stream(&s.follower);
        }
        t.files_followed = self.streams.len();
        t.directories_polled = self.polled.len();
        (t.turns, t.helper_turns) = (self.turns, self.helper_turns);
        t
    }

    /// Blocks until a wake-up or the next timer, unless something is ready already;
    /// while paused, until it is time to offer the batch again.
    fn wait_for_work(&mut self, paused: bool) {
        let timeout = if paused {
            RETRY_WHEN_FULL.min(self.next_deadline().saturating_duration_since(Instant::now()))
        } else if self.ready.is_empty() {
            self.next_deadline().saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        match self.wakes.recv_timeout(timeout) {
            Ok(Wake::Room) => {}
            Ok(w) => {
                self.on_wake(w);
                // Woken by a write: let the writes of the next few milliseconds
                // arrive too, so that many small writes cost one round, not one
                // round each. (A busy node writes to hundreds of files at once.)
                let since = self.last_round.elapsed();
                if since < COALESCE && !self.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(COALESCE - since);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.stop.store(true, Ordering::Relaxed),
        }
        while let Ok(w) = self.wakes.try_recv() {
            self.on_wake(w);
        }
    }

    fn next_deadline(&self) -> Instant {
        let publish_every = if self.unpublished { PUBLISH_EVERY } else { PUBLISH_IDLE };
        let mut next = self.rescan_due.min(self.published + publish_every);
        if !self.waiting_fd.is_empty() {
            next = next.min(self.fd_retry_due);
        }
        if self.watch.polling() {
            next = next.min(self.poll_due);
        }
        if let Some(due) = self.polled.due() {
            next = next.min(due);
        }
        let timeout = self.settings.partial_flush_timeout;
        let now = Instant::now();
        for s in self.holding.iter().filter_map(|k| self.streams.get(k)) {
            if let (Some(after), Some(idle)) = (s.follower.flush_after(timeout), s.follower.idle_for(now)) {
                next = next.min(now + after.saturating_sub(idle));
            }
        }
        next
    }

    fn on_wake(&mut self, w: Wake) {
        match w {
            Wake::Stop => self.stop.store(true, Ordering::Relaxed),
            Wake::Room => {}
            Wake::Reload(reload) => {
                let Reload { tail, router } = *reload;
                if let Some(router) = router {
                    // New routes apply to the next event read; what was encoded before
                    // goes where the old ones said (nothing lost, nothing twice).
                    for s in self.streams.values_mut() {
                        s.routes = router.for_container(s.kube.as_ref());
                    }
                    self.settings.router = router;
                }
                self.discovery = Discovery::new(&tail, self.settings.router.clone());
                self.watch_include_dirs();
                self.settings.tail = tail;
                self.rescan_now = true;
            }
            Wake::Rescan => {
                self.rescan_now = true;
                self.mark_all_ready();
            }
            Wake::Changed(path) => {
                if let Some(key) = self.streams.get_key_value(path.as_path()).map(|(k, _)| k.clone()) {
                    self.make_ready(key);
                    return;
                }
                let dir = path.parent().unwrap_or(Path::new("/"));
                if let Some(keys) = self.dirs.get(dir) {
                    // A rename or creation beside a followed file: rotation, most likely.
                    keys.clone().into_iter().for_each(|k| self.make_ready(k));
                } else {
                    self.link_changed(&path);
                }
            }
        }
    }

    fn make_ready(&mut self, key: Arc<Path>) {
        if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn mark_all_ready(&mut self) {
        let keys: Vec<_> = self.streams.keys().cloned().collect();
        keys.into_iter().for_each(|k| self.make_ready(k));
    }

    /// One turn for every stream ready at the start of the round.
    fn read_round(&mut self, now: Instant) {
        self.last_round = now;
        let read_time = time::now();
        let mut left = self.ready.len();
        while left > 0 {
            left -= 1;
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(key) = self.ready.pop_front() else { break };
            self.queued.remove(&key);
            if self.streams.get(&key).is_some_and(|s| s.follower.parked_unchanged()) {
                // Closed for the open-files cap and not written since: reopening it
                // (and closing another for room) would read nothing.
                continue;
            }
            if !self.streams.get(&key).is_some_and(|s| s.follower.is_open()) && !self.make_room() {
                // No descriptor free: wait (not spin) until one may be.
                if !self.waiting_fd.contains(&key) {
                    self.waiting_fd.push_back(key);
                }
                continue;
            }
            if self.streams.get(&key).is_some_and(|s| s.backlogged) {
                left -= self.lend_to_helpers(left, now, read_time);
            }
            self.read_turn(key, now, read_time);
            self.take_back_lent(now);
            if self.batch.encoded.len() >= BATCH_BYTES && self.try_ship() != Handoff::Sent {
                return;
            }
        }
    }

    fn read_turn(&mut self, key: Arc<Path>, now: Instant, read_time: i64) {
        let limits = turn_limits(&self.settings);
        let Some(s) = self.streams.get_mut(&key) else { return };
        let routing = Routing { router: &self.settings.router, masks: s.routes };
        let turn = take_turn(&mut s.follower, routing, limits, now, read_time, &mut self.buffers, &mut self.encoder, &mut self.batch.encoded);
        self.turns += 1;
        self.after_turn(key, turn, now);
    }

    /// Lends each helper the next backlogged, open stream among the first `left` in
    /// the ready queue; returns how many it took from there.
    fn lend_to_helpers(&mut self, left: usize, now: Instant, read_time: i64) -> usize {
        while self.lent < self.helpers.len() {
            let Some(at) = self.ready.iter().take(left - self.lent).position(|k| {
                self.streams.get(k).is_some_and(|s| s.backlogged && s.follower.is_open())
            }) else {
                break;
            };
            let key = self.ready.remove(at).expect("position is within the queue");
            self.queued.remove(&key);
            let stream = self.streams.remove(&key).expect("a ready backlogged stream exists");
            let data = self.spare_batch_buffer().unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + 2 * self.settings.tail.read_bytes_per_turn));
            let router = self.settings.router.clone();
            self.helpers[self.lent].start(Job { stream, router, data: Encoded::with_buffer(data), now, read_time });
            self.lent += 1;
        }
        self.lent
    }

    /// Takes back the streams lent for this turn; each helper's events go out as a
    /// batch of their own, after what the tailer read.
    fn take_back_lent(&mut self, now: Instant) {
        for helper in 0..std::mem::take(&mut self.lent) {
            let Done { stream, data, turn } = self.helpers[helper].finish();
            let key = stream.key.clone();
            self.streams.insert(key.clone(), stream);
            if self.try_ship() == Handoff::Sent {
                let fresh = std::mem::replace(&mut self.batch.encoded, data);
                self.spares.held.extend(fresh.into_buffers().filter(|b| b.capacity() > 0));
            } else {
                // The next stage is full: this batch grows instead (a copy, rare).
                self.batch.encoded.absorb(data, &mut self.spares.held);
                self.spares.held.retain(|b| b.capacity() > 0);
            }
            self.helper_turns += 1;
            self.after_turn(key, turn, now);
        }
    }

    /// Bookkeeping after a stream's turn, wherever it was read.
    fn after_turn(&mut self, key: Arc<Path>, Turn { outcome, was_open, routed }: Turn, now: Instant) {
        if !routed.filtered.is_zero() {
            self.settings.router.add_filtered(&routed.filtered);
        }
        self.note_reads(&key, now);
        let Some(s) = self.streams.get_mut(&key) else { return };
        if s.follower.holds_lines() {
            self.holding.insert(key.clone());
        }
        match (was_open, s.follower.is_open()) {
            (false, true) => self.open_files += 1,
            (true, false) => self.open_files -= 1,
            _ => {}
        }
        if outcome.is_ok() {
            s.warned = false;
        }
        s.backlogged = matches!(outcome, Ok(ReadOutcome::More));
        match outcome {
            Ok(ReadOutcome::More) => {
                s.last_active = now;
                self.record_position(&key);
                self.make_ready(key);
            }
            Ok(ReadOutcome::CaughtUp) => self.record_position(&key),
            Ok(ReadOutcome::Finished) => self.retire(&key),
            Err(e) => {
                if !std::mem::replace(&mut s.warned, true) {
                    tracing::warn!(file = %key.display(), error = %e, "cannot read; will retry at each rescan (logged once)");
                }
                if s.follower.park() {
                    self.open_files -= 1;
                }
            }
        }
    }

    fn record_position(&mut self, key: &Arc<Path>) {
        if let Some(pos) = self.streams.get_mut(key).and_then(|s| s.follower.position()) {
            self.batch.positions.push((key.clone(), pos));
        }
    }

    fn flush_quiet_partials(&mut self, now: Instant) {
        let timeout = self.settings.partial_flush_timeout;
        let (encoder, batch, router) = (&mut self.encoder, &mut self.batch, &self.settings.router);
        let mut flushed = Vec::new();
        let mut routed = Routed::default();
        let streams = &mut self.streams;
        for key in &self.holding {
            let Some(s) = streams.get_mut(key).filter(|s| s.follower.holds_lines()) else { continue };
            let routing = Routing { router, masks: s.routes };
            if s.follower.flush_stale(now, timeout, &mut |ev, kube| routing.encode(ev, kube, encoder, &mut batch.encoded, &mut routed)) {
                flushed.push(key.clone());
            }
        }
        router.add_filtered(&routed.filtered);
        let streams = &self.streams;
        self.holding.retain(|key| streams.get(key).is_some_and(|s| s.follower.holds_lines()));
        for key in flushed {
            self.record_position(&key);
        }
    }

    /// The most recently handed-back batch buffer: the one most likely still in cache.
    fn spare_batch_buffer(&mut self) -> Option<Vec<u8>> {
        self.spares.held.extend(self.returned.try_iter());
        self.spares.take()
    }

    fn trim_spares(&mut self) {
        self.spares.held.extend(self.returned.try_iter());
        self.spares.trim();
    }

    /// Offers the batch to the next stage without waiting.
    fn try_ship(&mut self) -> Handoff {
        if self.batch.is_empty() {
            return Handoff::Sent;
        }
        // A batch buffer the next stage is done with, or a new one large enough for a
        // turn's events on top of a full batch (untouched capacity costs no memory;
        // growing would copy).
        let turn = self.settings.tail.read_bytes_per_turn;
        let data = self.spare_batch_buffer().unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + 2 * turn));
        let batch = std::mem::replace(&mut self.batch, Batch { encoded: Encoded::with_buffer(data), ..Batch::default() });
        // Raised before the try, so that a batch taken right after a refusal rings.
        self.waiting_for_room.store(true, Ordering::Release);
        match self.out.try_send(batch) {
            Ok(()) => {
                self.waiting_for_room.store(false, Ordering::Release);
                Handoff::Sent
            }
            Err(TrySendError::Full(batch)) => {
                // Keep the buffer taken for nothing for the next try.
                let unused = std::mem::replace(&mut self.batch, batch);
                for buffer in unused.encoded.into_buffers().filter(|b| b.capacity() > 0) {
                    let _ = self.giver.send(buffer);
                }
                Handoff::Full
            }
            Err(TrySendError::Disconnected(_)) => Handoff::Gone,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handoff {
    Sent,
    /// The next stage is full: backpressure.
    Full,
    /// The next stage is gone (shutting down).
    Gone,
}

fn turn_limits(settings: &TailerSettings) -> TurnLimits {
    TurnLimits { budget: settings.tail.read_bytes_per_turn, rotate_wait: settings.tail.rotate_wait }
}

#[cfg(test)]
mod tests;
