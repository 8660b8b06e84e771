//! One turn of one stream, and what turns produce: the same code on the tailer's
//! thread and on a helper's.
//!
//! A turn reads at most its budget from a [`Followed`] stream, decodes, routes each
//! event ([`Routing`]: the sinks that take its container's stream, less those whose
//! `drop_messages` match) and encodes it once into the [`Encoded`] part for those
//! sinks. A [`Batch`] is what the tailer hands to the buffer thread: the encoded parts
//! and the positions they complete.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use super::follow::{Follower, ReadOutcome};
use crate::event::{Event, EventEncoder, KubeMeta};
use crate::route::{Filtered, Mask, Router};

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
    pub fn absorb(&mut self, other: Encoded, spares: &mut Vec<Vec<u8>>) {
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

/// A followed stream (one container's log file and its rotations): its follower,
/// where its events go, and what the tailer keeps about it.
pub struct Followed {
    pub follower: Follower,
    /// The sinks taking its stdout and its stderr.
    pub routes: [Mask; 2],
    /// Its metadata, for the routes to be worked out again on a reload.
    pub kube: Option<KubeMeta>,
    pub key: Arc<Path>,
    pub dir: PathBuf,
    pub last_active: Instant,
    /// A read error was logged; not again until a read succeeds.
    pub warned: bool,
    /// Its last turn ended with more to read: it may be lent to a helper.
    pub backlogged: bool,
    /// The follower's bytes read when last looked at, and when that grew.
    pub seen_bytes: u64,
    pub last_data: Option<Instant>,
    /// Its directory is busy: read on a timer, not on inotify (see `tailer::hot`).
    pub polled: bool,
}

/// How much one turn may read, and how long a deleted file is kept open.
#[derive(Debug, Clone, Copy)]
pub struct TurnLimits {
    pub budget: usize,
    pub rotate_wait: Duration,
}

/// What one turn of one stream did.
pub struct Turn {
    pub outcome: io::Result<ReadOutcome>,
    /// The stream's file was open before the turn (for the descriptor count).
    pub was_open: bool,
    pub routed: Routed,
}

/// Events encoded for the sinks, and those their routes left out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Routed {
    pub events: u64,
    pub filtered: Filtered,
}

/// Where a stream's events go: the router, and the sinks taking each of its streams.
#[derive(Clone, Copy)]
pub struct Routing<'a> {
    pub router: &'a Router,
    pub masks: [Mask; 2],
}

impl Routing<'_> {
    /// Encodes `ev` into the part for the sinks that take it, if any, and counts it
    /// either way.
    #[inline]
    pub fn encode(self, ev: &Event<'_>, kube: &[u8], encoder: &mut EventEncoder, out: &mut Encoded, routed: &mut Routed) {
        let mask = self.masks[ev.stream.index()];
        let kept = if self.router.inspects(mask) { self.router.route(mask, encoder.text(ev)) } else { mask };
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
pub fn take_turn(
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
