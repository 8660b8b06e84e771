//! What the tailer has seen, for metrics, `/healthz` and the shutdown log line.

use std::time::Instant;

use super::follow::{FollowStats, Follower};
use crate::decode::{DecodeStats, Format};

/// What the tailer has seen, for metrics and the shutdown log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailStats {
    /// Decoding counters by format: Docker, CRI, not (yet) detected.
    pub by_format: [DecodeStats; 3],
    pub follow: FollowStats,
    pub files_followed: usize,
    /// Directories read on a timer because they are busy (see `tailer::hot`).
    pub directories_polled: usize,
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

    /// Adds one stream's counters.
    pub fn add_stream(&mut self, f: &Follower) {
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

fn add_follow(t: &mut FollowStats, s: &FollowStats) {
    t.bytes_read += s.bytes_read;
    t.rotations += s.rotations;
    t.truncations += s.truncations;
    t.rotated_unread_bytes += s.rotated_unread_bytes;
    t.lost_positions += s.lost_positions;
}
