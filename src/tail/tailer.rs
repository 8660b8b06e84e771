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
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use super::discover::{Checked, Discovery, Found};
use super::follow::{FollowStats, Follower, ReadOutcome, StartFrom};
use super::helper::{Done, Helper, Job};
use super::watch::{Reload, Wake, Watch};
use crate::config::{StartAt, TailConfig};
use crate::decode::{DecodeOptions, DecodeStats, Format};
use crate::event::{time, Event, EventEncoder, KubeMeta, MessageFormat};
use crate::route::{Filtered, Mask, Router};

/// A batch is shipped once it holds this many bytes, or when nothing else is ready.
pub const BATCH_BYTES: usize = 256 << 10;

/// Batch buffers kept for reuse beyond what the next stage holds.
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

/// Encoded events and the stream positions they complete.
#[derive(Debug, Default)]
pub struct Batch {
    /// JSON lines, by the sinks they go to.
    pub encoded: Encoded,
    /// In order; a later position for the same stream supersedes an earlier one.
    pub positions: Vec<(Arc<Path>, Position)>,
    /// Streams gone for good: forget their checkpoints once this batch is durable.
    pub finished: Vec<Arc<Path>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty() && self.positions.is_empty() && self.finished.is_empty()
    }
}

/// Encoded events for one set of sinks.
#[derive(Debug, Default)]
pub struct Part {
    pub sinks: Mask,
    pub data: Vec<u8>,
    pub events: u64,
}

/// Encoded events, one part per set of sinks they go to: one part when they all go
/// to the same sinks (one sink, or routes that select alike), so the common case is
/// one buffer as before.
#[derive(Debug, Default)]
pub struct Encoded {
    pub parts: Vec<Part>,
    /// The buffer the next new part takes (a spare handed back, with capacity).
    spare: Vec<u8>,
}

impl Encoded {
    /// Empty, with `spare` for its first part.
    pub fn with_buffer(spare: Vec<u8>) -> Self {
        Encoded { parts: Vec::new(), spare }
    }

    /// The part for `sinks`, made if there is none.
    #[inline]
    fn part(&mut self, sinks: Mask) -> &mut Part {
        // The same sinks as the last event, nearly always.
        let at = match self.parts.iter().rposition(|p| p.sinks == sinks) {
            Some(i) => i,
            None => {
                self.parts.push(Part { sinks, data: std::mem::take(&mut self.spare), events: 0 });
                self.parts.len() - 1
            }
        };
        &mut self.parts[at]
    }

    /// Encoded bytes in every part.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.data.is_empty())
    }

    pub fn events(&self) -> u64 {
        self.parts.iter().map(|p| p.events).sum()
    }

    /// Adds `other`'s events after these (copying them); its buffers go to `spares`.
    fn absorb(&mut self, other: Encoded, spares: &mut Vec<Vec<u8>>) {
        for p in other.parts {
            let into = self.part(p.sinks);
            into.data.extend_from_slice(&p.data);
            into.events += p.events;
            spares.push(p.data);
        }
        spares.push(other.spare);
    }

    /// Every buffer it holds, emptied of meaning (for reuse).
    pub fn into_buffers(self) -> impl Iterator<Item = Vec<u8>> {
        self.parts.into_iter().map(|p| p.data).chain(std::iter::once(self.spare))
    }
}

/// Settings the tailer needs, from the checked configuration.
#[derive(Clone)]
pub struct TailerSettings {
    pub tail: TailConfig,
    pub decode: DecodeOptions,
    pub message_format: MessageFormat,
    pub partial_flush_timeout: Duration,
    /// Which sinks each event goes to; a container no sink takes is not followed.
    pub router: Arc<Router>,
}

/// What the tailer has seen, for metrics and the shutdown log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailStats {
    /// Decoding counters by format: Docker, CRI, not (yet) detected.
    pub by_format: [DecodeStats; 3],
    pub follow: FollowStats,
    pub files_followed: usize,
    /// Bytes on disk not yet read, summed over open files: how far behind reading is.
    pub unread_bytes: u64,
    /// Turns read by the tailer's own thread and by its helpers.
    pub turns: u64,
    pub helper_turns: u64,
}

impl TailStats {
    pub const FORMATS: [&'static str; 3] = ["docker", "cri", "unknown"];

    /// Decoding counters over all formats.
    pub fn decode(&self) -> DecodeStats {
        let mut d = DecodeStats::default();
        self.by_format.iter().for_each(|f| d.add(f));
        d
    }

    fn add_stream(&mut self, f: &Follower) {
        let i = match f.format() {
            Some(Format::Docker) => 0,
            Some(Format::Cri) => 1,
            None => 2,
        };
        self.by_format[i].add(f.decode_stats());
        add_follow(&mut self.follow, &f.stats);
    }
}

/// Published by the tailer about once a second, for metrics and `/healthz`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailSnapshot {
    pub stats: TailStats,
    /// When the tailer's loop last went round.
    pub heartbeat: Option<Instant>,
}

/// How often the tailer publishes its [`TailSnapshot`].
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Stream {
    pub(super) follower: Follower,
    /// The sinks taking its stdout and its stderr.
    pub(super) routes: [Mask; 2],
    /// Its metadata, for the routes to be worked out again on a reload.
    kube: Option<KubeMeta>,
    key: Arc<Path>,
    dir: PathBuf,
    last_active: Instant,
    /// A read error was logged; not again until a read succeeds.
    warned: bool,
    /// Its last turn ended with more to read: it may be lent to a helper.
    backlogged: bool,
}

/// How much one turn may read, and how long a deleted file is kept open.
#[derive(Debug, Clone, Copy)]
pub(super) struct TurnLimits {
    pub budget: usize,
    pub rotate_wait: Duration,
}

/// What one turn of one stream did.
pub(super) struct Turn {
    pub outcome: io::Result<ReadOutcome>,
    /// The stream's file was open before the turn (for the descriptor count).
    pub was_open: bool,
    pub routed: Routed,
}

/// Events encoded for the sinks, and those their routes left out.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Routed {
    pub events: u64,
    pub filtered: Filtered,
}

/// Where a stream's events go: the router, and the sinks taking each of its streams.
#[derive(Clone, Copy)]
pub(super) struct Routing<'a> {
    pub router: &'a Router,
    pub masks: [Mask; 2],
}

impl Routing<'_> {
    /// Encodes `ev` into the part for the sinks that take it, if any, and counts it
    /// either way.
    #[inline]
    fn encode(self, ev: &Event<'_>, kube: &[u8], encoder: &mut EventEncoder, out: &mut Encoded, routed: &mut Routed) {
        let mask = self.masks[ev.stream.index()];
        let kept = self.router.route(mask, ev.message);
        routed.filtered.count(self.router.all(), kept);
        if kept != 0 {
            let part = out.part(kept);
            encoder.encode(ev, kube, &mut part.data);
            part.events += 1;
            routed.events += 1;
        }
    }
}

/// Reads one turn of `follower`, encoding the events its routes keep onto `data`:
/// the same on the tailer's thread and on a helper's.
#[allow(clippy::too_many_arguments)]
pub(super) fn take_turn(
    follower: &mut Follower,
    routing: Routing<'_>,
    limits: TurnLimits,
    now: Instant,
    read_time: i64,
    pool: &mut Vec<Vec<u8>>,
    encoder: &mut EventEncoder,
    out: &mut Encoded,
) -> Turn {
    let was_open = follower.is_open();
    let mut routed = Routed::default();
    let outcome = follower.read(limits.budget, now, read_time, limits.rotate_wait, pool, &mut |ev, kube| {
        routing.encode(ev, kube, encoder, out, &mut routed)
    });
    Turn { outcome, was_open, routed }
}

pub struct Tailer {
    settings: TailerSettings,
    discovery: Discovery,
    watch: Watch,
    wakes: Receiver<Wake>,
    out: SyncSender<Batch>,
    stop: Arc<AtomicBool>,
    streams: HashMap<Arc<Path>, Stream>,
    /// Ready to read, in turn order.
    ready: VecDeque<Arc<Path>>,
    queued: HashSet<Arc<Path>>,
    /// Followed streams per directory, to route directory events.
    dirs: HashMap<PathBuf, usize>,
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
    /// Batch buffers handed back by the next stage, reused rather than allocated.
    returned: Receiver<Vec<u8>>,
    /// Handed back and not yet reused, most recent last.
    spares: Vec<Vec<u8>>,
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
        out: SyncSender<Batch>,
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
            returned,
            spares: Vec::new(),
            giver,
            last_round: now,
            waiting_fd: VecDeque::new(),
            fd_retry_due: now,
            helpers,
            lent: 0,
            turns: 0,
            helper_turns: 0,
            waiting_for_room: Arc::default(),
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

    fn publish(&mut self, now: Instant) {
        if now.saturating_duration_since(self.published) < PUBLISH_EVERY {
            return;
        }
        self.published = now;
        let mut stats = self.totals();
        stats.unread_bytes = self.streams.values().map(|s| s.follower.unread_bytes()).sum();
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = TailSnapshot { stats, heartbeat: Some(now) };
        }
    }

    /// Runs until `stop` is set; ships what it has read, then returns its totals.
    pub fn run(mut self) -> TailStats {
        for dir in self.discovery.watch_dirs() {
            self.watch.watch_dir(&dir);
        }
        while !self.stop.load(Ordering::Relaxed) {
            // Backpressure: the next stage is full and so is our batch. Read nothing
            // more; keep watching (rescans count files rotated away meanwhile).
            let paused = self.batch.encoded.len() >= BATCH_BYTES && self.try_ship() == Shipped::Full;
            self.wait_for_work(paused);
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            self.publish(now);
            if self.rescan_now || now >= self.rescan_due {
                self.rescan(now);
            }
            if paused {
                continue;
            }
            if self.watch.polling() && now >= self.poll_due {
                self.mark_all_ready();
                self.poll_due = now + POLL_INTERVAL;
            }
            self.retry_waiting_for_fd(now);
            self.read_round(now);
            self.flush_quiet_partials(Instant::now());
            // Ship every round: a busy stream must not hold back the others' positions.
            if self.try_ship() == Shipped::Gone {
                break;
            }
        }
        // Stopping: complete events and their positions are shipped (waiting for
        // room if need be); a split line still pending is not — its checkpoint points
        // before it, so it is read again at the next start.
        if !self.batch.is_empty() {
            let _ = self.out.send(std::mem::take(&mut self.batch));
        }
        self.totals()
    }

    pub fn totals(&self) -> TailStats {
        let mut t = self.retired;
        for s in self.streams.values() {
            t.add_stream(&s.follower);
        }
        t.files_followed = self.streams.len();
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
        let mut next = self.rescan_due.min(self.published + PUBLISH_EVERY);
        if !self.waiting_fd.is_empty() {
            next = next.min(self.fd_retry_due);
        }
        if self.watch.polling() {
            next = next.min(self.poll_due);
        }
        let timeout = self.settings.partial_flush_timeout;
        let now = Instant::now();
        for s in self.streams.values() {
            if let (true, Some(idle)) = (s.follower.has_pending(), s.follower.idle_for(now)) {
                next = next.min(now + timeout.saturating_sub(idle));
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
                for dir in self.discovery.watch_dirs() {
                    self.watch.watch_dir(&dir);
                }
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
                if self.dirs.contains_key(dir) {
                    // A rename or creation beside a followed file: rotation, most likely.
                    let keys: Vec<_> = self.streams.iter().filter(|(_, s)| s.dir == dir).map(|(k, _)| k.clone()).collect();
                    keys.into_iter().for_each(|k| self.make_ready(k));
                } else {
                    self.link_changed(&path);
                }
            }
        }
    }

    /// A link appeared or went in an include directory. A new link to a container's
    /// log is followed at once, without a scan of every link (pod churn on a node with
    /// thousands of containers would otherwise rescan them all for each new pod); a
    /// link that went is noticed by the next rescan (its file is drained meanwhile);
    /// anything else (a new directory under a deeper glob) gets a rescan now.
    fn link_changed(&mut self, path: &Path) {
        match self.discovery.check_one(path) {
            Checked::Follow(f) if !self.streams.contains_key(f.key.as_path()) => self.add_stream(&f, Instant::now()),
            Checked::Follow(_) | Checked::Ignore => {}
            Checked::Scan => self.rescan_now = true,
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

    /// Finds new streams, and streams that are no longer there.
    fn rescan(&mut self, now: Instant) {
        self.rescan_now = false;
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

    fn add_stream(&mut self, f: &Found, now: Instant) {
        let resume = self.resume.remove(&f.key);
        let start = match (self.first_start && !self.first_scan_done, self.settings.tail.start_at) {
            (true, StartAt::End) => StartFrom::End,
            _ => StartFrom::Beginning,
        };
        let kube = f.kube.as_ref().map(KubeMeta::json_fragment).unwrap_or_default();
        let routes = self.settings.router.for_container(f.kube.as_ref());
        let follower = Follower::new(f.key.clone(), kube, &self.settings.decode, resume, start);
        let dir = f.key.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.watch.watch_dir(&dir);
        *self.dirs.entry(dir.clone()).or_default() += 1;
        let key: Arc<Path> = Arc::from(f.key.as_path());
        tracing::debug!(file = %f.key.display(), "following");
        self.streams.insert(key.clone(), Stream { follower, routes, kube: f.kube.clone(), key: key.clone(), dir, last_active: now, warned: false, backlogged: false });
        self.make_ready(key);
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
            if self.batch.encoded.len() >= BATCH_BYTES && self.try_ship() != Shipped::Sent {
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
            if self.try_ship() == Shipped::Sent {
                let fresh = std::mem::replace(&mut self.batch.encoded, data);
                self.spares.extend(fresh.into_buffers().filter(|b| b.capacity() > 0));
            } else {
                // The next stage is full: this batch grows instead (a copy, rare).
                self.batch.encoded.absorb(data, &mut self.spares);
                self.spares.retain(|b| b.capacity() > 0);
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
        let Some(s) = self.streams.get_mut(&key) else { return };
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

    /// A stream is gone for good: forget it once the batch is durable.
    fn retire(&mut self, key: &Arc<Path>) {
        let Some(s) = self.streams.remove(key) else { return };
        tracing::debug!(file = %key.display(), "stream finished");
        self.retired.add_stream(&s.follower);
        if let Some(n) = self.dirs.get_mut(&s.dir) {
            *n -= 1;
            if *n == 0 {
                self.dirs.remove(&s.dir);
                self.watch.unwatch_dir(&s.dir);
            }
        }
        self.batch.finished.push(key.clone());
    }

    /// Streams that found no descriptor free get another chance once a second.
    fn retry_waiting_for_fd(&mut self, now: Instant) {
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
    fn make_room(&mut self) -> bool {
        if self.open_files < self.settings.tail.max_open_files {
            return true;
        }
        let now = Instant::now();
        let victim = self
            .streams
            .iter()
            .filter(|(_, s)| s.follower.is_open() && !s.follower.has_pending())
            .filter(|(_, s)| s.follower.idle_for(now).is_some())
            .max_by_key(|(_, s)| s.follower.idle_for(now))
            .map(|(k, _)| k.clone());
        let parked = victim.and_then(|k| self.streams.get_mut(&k)).is_some_and(|s| s.follower.park());
        if parked {
            self.open_files -= 1;
        }
        parked
    }

    fn flush_quiet_partials(&mut self, now: Instant) {
        let timeout = self.settings.partial_flush_timeout;
        let (encoder, batch, router) = (&mut self.encoder, &mut self.batch, &self.settings.router);
        let mut flushed = Vec::new();
        let mut routed = Routed::default();
        for (key, s) in self.streams.iter_mut() {
            if !s.follower.has_pending() {
                continue;
            }
            let routing = Routing { router, masks: s.routes };
            if s.follower.flush_stale(now, timeout, &mut |ev, kube| routing.encode(ev, kube, encoder, &mut batch.encoded, &mut routed)) {
                flushed.push(key.clone());
            }
        }
        router.add_filtered(&routed.filtered);
        for key in flushed {
            self.record_position(&key);
        }
    }

    /// The most recently handed-back batch buffer: the one most likely still in cache.
    /// Older ones beyond a few are freed, so that a burst's buffers do not linger.
    fn spare_batch_buffer(&mut self) -> Option<Vec<u8>> {
        self.spares.extend(self.returned.try_iter());
        if self.spares.len() > SPARE_BATCH_BUFFERS {
            self.spares.drain(..self.spares.len() - SPARE_BATCH_BUFFERS);
        }
        // Emptied here, whoever handed it back (a helper's buffer comes back full).
        self.spares.pop().map(|mut buffer| {
            buffer.clear();
            buffer
        })
    }

    /// Offers the batch to the next stage without waiting.
    fn try_ship(&mut self) -> Shipped {
        if self.batch.is_empty() {
            return Shipped::Sent;
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
                Shipped::Sent
            }
            Err(TrySendError::Full(batch)) => {
                // Keep the buffer taken for nothing for the next try.
                let unused = std::mem::replace(&mut self.batch, batch);
                for buffer in unused.encoded.into_buffers().filter(|b| b.capacity() > 0) {
                    let _ = self.giver.send(buffer);
                }
                Shipped::Full
            }
            Err(TrySendError::Disconnected(_)) => Shipped::Gone,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shipped {
    Sent,
    /// The next stage is full: backpressure.
    Full,
    /// The next stage is gone (shutting down).
    Gone,
}

fn turn_limits(settings: &TailerSettings) -> TurnLimits {
    TurnLimits { budget: settings.tail.read_bytes_per_turn, rotate_wait: settings.tail.rotate_wait }
}

fn add_follow(t: &mut FollowStats, s: &FollowStats) {
    t.bytes_read += s.bytes_read;
    t.rotations += s.rotations;
    t.truncations += s.truncations;
    t.rotated_unread_bytes += s.rotated_unread_bytes;
    t.lost_positions += s.lost_positions;
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::config::{Config, EnvView};

    #[test]
    fn the_room_bell_rings_once_per_refusal() {
        let (wake, wakes) = mpsc::channel();
        let bell = RoomBell { waiting: Arc::default(), wake };
        bell.ring();
        assert!(wakes.try_recv().is_err(), "nobody waits: no wake-up");
        bell.waiting.store(true, Ordering::Release);
        bell.ring();
        bell.ring();
        assert!(matches!(wakes.try_recv(), Ok(Wake::Room)));
        assert!(wakes.try_recv().is_err(), "one wake-up per wait");
    }

    const STREAMS: usize = 4;
    const LINES: usize = 20_000;

    fn write_pods(root: &Path) {
        for i in 0..STREAMS {
            let dir = root.join(format!("var/log/pods/ns_pod{i}_uid{i}/app"));
            std::fs::create_dir_all(&dir).unwrap();
            let lines: String =
                (0..LINES).map(|n| format!("2026-11-22T00:00:00.000000000Z stdout F s{i}-{n:06} with some padding to fill turns\n")).collect();
            std::fs::write(dir.join("0.log"), lines).unwrap();
        }
    }

    /// The stream number and line number of each event, in the order shipped.
    fn shipped(data: &[u8]) -> Vec<(usize, usize)> {
        data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let msg = v["message"].as_str().unwrap();
            let (stream, rest) = msg[1..].split_once('-').unwrap();
            (stream.parse().unwrap(), rest[..6].parse().unwrap())
        }).collect()
    }

    #[test]
    fn helper_turns_keep_every_stream_whole_and_in_order_while_the_next_stage_is_slow() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_pods(root);
        let text = format!(
            "data_dir = \"{r}/data\"\n[tail]\ninclude = [\"{r}/var/log/pods/*/*/*.log\"]\nroots = [\"{r}/var/log/pods\"]\nread_bytes_per_turn = 65536\nwatch = \"poll\"\n[sink]\ntype = \"stdout\"\n",
            r = root.display()
        );
        let config = Config::from_toml_str_with_env(&text, &EnvView::default()).unwrap();
        let settings = TailerSettings {
            tail: config.tail.clone(),
            decode: config.decode,
            message_format: config.message_format,
            partial_flush_timeout: config.partial_flush_timeout,
            router: Arc::new(crate::route::Router::everything()),
        };
        // A next stage with room for one batch that takes its time: helpers' turns
        // often come back to a full channel.
        let (batch_tx, batch_rx) = mpsc::sync_channel(1);
        let (_wake_tx, wake_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let tailer = Tailer::new(settings, HashMap::new(), true, Watch::polling_only(), wake_rx, batch_tx, stop.clone());
        let tail = std::thread::spawn(move || tailer.run());
        let mut data = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while data.iter().filter(|&&b| b == b'\n').count() < STREAMS * LINES {
            assert!(Instant::now() < deadline, "not everything arrived");
            if let Ok(batch) = batch_rx.recv_timeout(Duration::from_millis(100)) {
                batch.encoded.parts.iter().for_each(|p| data.extend_from_slice(&p.data));
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        stop.store(true, Ordering::Relaxed);
        while let Ok(batch) = batch_rx.recv() {
            batch.encoded.parts.iter().for_each(|p| data.extend_from_slice(&p.data));
        }
        let stats = tail.join().unwrap();
        let got = shipped(&data);
        for i in 0..STREAMS {
            let lines: Vec<usize> = got.iter().filter(|(s, _)| *s == i).map(|(_, n)| *n).collect();
            assert!(lines.iter().copied().eq(0..LINES), "stream {i}: {} events, not 0..{LINES} in order", lines.len());
        }
        assert_eq!(got.len(), STREAMS * LINES);
        assert!(stats.helper_turns > 0 && stats.turns > 0, "turns: {} own, {} by the helper", stats.turns, stats.helper_turns);
    }
}
