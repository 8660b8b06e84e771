//! The lines `logferry verify` writes, and recognizing them where they land.
//!
//! A marked line is `logferry-verify-<run> <seq>/<count> <bytes> <filler>`: the run's
//! token (unique per run, and the search term at the destination), its number, how
//! many lines the run wrote, and its own length in bytes; the filler is a pattern that
//! depends on the number, so a line can be compared whole with what was written.
//! Lengths go from short to well over the runtimes' 16 KiB split, so the rejoining is
//! checked too.

use std::io::Write;

/// The lengths written, in turn: short lines, a kilobyte or four, and lines around
/// and over the 16 KiB at which Docker and containerd split a line.
pub const LENGTHS: &[usize] = &[64, 180, 420, 1_000, 4_096, 16_383, 16_384, 16_385, 40_000, 70_000];

/// The piece a container runtime writes at most per log line.
pub const RUNTIME_PIECE: usize = 16 * 1024;

/// One run's marked lines.
#[derive(Debug, Clone)]
pub struct Marks {
    token: String,
    count: u32,
}

/// A marked message found at a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// Line `seq`, exactly as written.
    Whole(u32),
    /// Line `seq`, but not as written (cut, truncated, pieces missing or flagged).
    Cut(u32),
    /// The run's token with a header that does not parse (cut inside it).
    Unreadable,
}

impl Marks {
    /// A run of `count` lines with a fresh token (time and process id: unique per run).
    pub fn new(count: u32) -> Self {
        let ns = crate::event::time::now() as u64;
        let mix = ns ^ (u64::from(std::process::id()) << 40) ^ (ns >> 17).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self::with_token(format!("logferry-verify-{:016x}", mix), count)
    }

    pub fn with_token(token: String, count: u32) -> Self {
        Self { token, count }
    }

    /// What every line of the run contains (and nothing else does).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The length of line `seq`.
    pub fn length(seq: u32) -> usize {
        LENGTHS[seq as usize % LENGTHS.len()]
    }

    /// Line `seq`, without its newline.
    pub fn line(&self, seq: u32) -> String {
        let want = Self::length(seq);
        let mut line = format!("{} {seq}/{} {want} ", self.token, self.count);
        const FILL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut i = seq as usize;
        while line.len() < want {
            line.push(FILL[i % FILL.len()] as char);
            i += 1;
        }
        line
    }

    /// How many of the run's lines are over the runtimes' split.
    pub fn split_lines(&self) -> u32 {
        (0..self.count).filter(|&s| Self::length(s) > RUNTIME_PIECE).count() as u32
    }

    /// What a message holding the token is. `flagged`: the event said it was
    /// truncated or partial.
    pub fn recognize(&self, message: &str, flagged: bool) -> Sighting {
        let Some(seq) = self.seq_of(message) else { return Sighting::Unreadable };
        if !flagged && message == self.line(seq) {
            Sighting::Whole(seq)
        } else {
            Sighting::Cut(seq)
        }
    }

    fn seq_of(&self, message: &str) -> Option<u32> {
        let rest = message.strip_prefix(self.token.as_str())?.strip_prefix(' ')?;
        let (seq, rest) = rest.split_once('/')?;
        let (count, _) = rest.split_once(' ')?;
        let seq: u32 = seq.parse().ok()?;
        (count.parse::<u32>().ok()? == self.count && seq < self.count).then_some(seq)
    }

    /// Writes the lines to `out` (a container's stdout), one `write` per line as an
    /// application would; returns when each was written (ms since the epoch).
    pub fn write_plain(&self, out: &mut impl Write) -> std::io::Result<Vec<i64>> {
        let mut written = Vec::with_capacity(self.count as usize);
        for seq in 0..self.count {
            let mut line = self.line(seq);
            line.push('\n');
            out.write_all(line.as_bytes())?;
            out.flush()?;
            written.push(now_ms());
        }
        Ok(written)
    }

    /// Appends the lines to `out` as containerd writes a container's log (CRI format,
    /// a line over 16 KiB in `P` pieces ended by an `F` one): for trying verify
    /// locally against a `logferry run` following a directory laid out as
    /// `/var/log/pods`.
    pub fn write_cri(&self, out: &mut impl Write) -> std::io::Result<Vec<i64>> {
        let mut written = Vec::with_capacity(self.count as usize);
        for seq in 0..self.count {
            let line = self.line(seq);
            let mut text = Vec::with_capacity(line.len() + 64);
            let stamp = crate::event::time::format_rfc3339(crate::event::time::now());
            let mut pieces = line.as_bytes().chunks(RUNTIME_PIECE).peekable();
            while let Some(piece) = pieces.next() {
                let tag = if pieces.peek().is_some() { "P" } else { "F" };
                text.extend_from_slice(format!("{stamp} stdout {tag} ").as_bytes());
                text.extend_from_slice(piece);
                text.push(b'\n');
            }
            out.write_all(&text)?;
            out.flush()?;
            written.push(now_ms());
        }
        Ok(written)
    }
}

pub fn now_ms() -> i64 {
    crate::event::time::now().div_euclid(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_their_length_and_are_recognized_whole_or_cut() {
        let marks = Marks::with_token("logferry-verify-00000000000000ab".into(), 25);
        for seq in 0..25 {
            let line = marks.line(seq);
            assert_eq!(line.len(), Marks::length(seq), "line {seq}");
            assert_eq!(marks.recognize(&line, false), Sighting::Whole(seq));
            assert_eq!(marks.recognize(&line, true), Sighting::Cut(seq), "flagged partial");
            assert_eq!(marks.recognize(&line[..line.len() - 1], false), Sighting::Cut(seq));
        }
        assert_eq!(marks.recognize(&marks.line(3)[..20], false), Sighting::Unreadable);
        // Another run's line, or a count that does not match, is not this run's.
        let other = Marks::with_token("logferry-verify-00000000000000ab".into(), 30);
        assert_eq!(marks.recognize(&other.line(3), false), Sighting::Unreadable);
        assert_eq!(marks.split_lines(), 6, "16,385, 40,000 and 70,000 bytes, twice each in 25");
        assert_ne!(Marks::new(1).token(), Marks::new(1).token());
    }

    #[test]
    fn cri_output_splits_long_lines_as_containerd_does() {
        let marks = Marks::with_token("logferry-verify-0000000000000001".into(), 10);
        let mut out = Vec::new();
        assert_eq!(marks.write_cri(&mut out).unwrap().len(), 10);
        let text = String::from_utf8(out).unwrap();
        let pieces: Vec<&str> = text.lines().collect();
        // 16,385 → 2 pieces, 40,000 → 3, 70,000 → 5; the rest one each.
        assert_eq!(pieces.len(), 7 + 2 + 3 + 5);
        assert!(pieces.iter().all(|p| p.splitn(4, ' ').nth(3).map_or(0, str::len) <= RUNTIME_PIECE));
        assert_eq!(pieces.iter().filter(|p| p.contains(" stdout P ")).count(), 1 + 2 + 4);
    }
}
