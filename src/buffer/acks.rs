//! What one sink has acknowledged, as it is saved in `<data_dir>/buffer/acks.<sink>`:
//! every sequence number up to `through`, and the ranges acknowledged above it (a
//! record not routed to the sink counts as acknowledged by it).
//!
//! The sinks acknowledge out of order (CloudWatch Logs finishes one log stream's
//! batch before another's; Firehose retries a refused record while later ones go
//! through), so a watermark alone would send everything acknowledged above the oldest
//! outstanding record again after a crash. The ranges make that nothing.
//!
//! ```text
//! logferry-acks 1
//! through 1200
//! 1203 1210
//! 1215 1300
//! end
//! ```
//!
//! Ranges are `start end` with `end` exclusive. The file is replaced atomically; one
//! that does not parse (damaged, or cut) is reported and ignored: the records are then
//! sent again, never lost. Older logferrys, with one sink, wrote `acks` (or `ack`, a
//! number): a sink without a file of its own reads those, which are removed once
//! every sink has saved its own.

use std::fs;
use std::io;
use std::path::Path;

const HEADER: &str = "logferry-acks 1";
/// One sink's file is `acks.<sink>`.
const FILE_PREFIX: &str = "acks.";
/// What logferry wrote when it had one sink.
const SHARED_FILE_NAME: &str = "acks";
const OLD_FILE_NAME: &str = "ack";
/// At most this many ranges are saved (the lowest); beyond, the rest is sent again
/// after a crash. Acknowledgements out of order leave a handful in practice.
pub const MAX_RANGES: usize = 4096;

/// Acknowledged sequence numbers: `1..=through` and each range (end exclusive).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acked {
    pub through: u64,
    pub ranges: Vec<(u64, u64)>,
}

impl Acked {
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.through || {
            let i = self.ranges.partition_point(|&(start, _)| start <= seq);
            i > 0 && seq < self.ranges[i - 1].1
        }
    }

    /// One past the highest number acknowledged.
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(self.through + 1, |&(_, end)| end.max(self.through + 1))
    }

    fn encode(&self) -> String {
        let mut text = format!("{HEADER}\nthrough {}\n", self.through);
        for (start, end) in &self.ranges {
            text.push_str(&format!("{start} {end}\n"));
        }
        text.push_str("end\n");
        text
    }

    fn decode(text: &str) -> Result<Self, String> {
        if !text.ends_with("\nend\n") {
            return Err("cut short (it does not end in an \"end\" line)".into());
        }
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("does not start with {HEADER:?}"));
        }
        let through = lines
            .next()
            .and_then(|l| l.strip_prefix("through "))
            .and_then(|n| n.parse().ok())
            .ok_or("no \"through N\" line")?;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for line in lines {
            if line == "end" {
                return Ok(Self { through, ranges });
            }
            let range = line
                .split_once(' ')
                .and_then(|(s, e)| Some((s.parse::<u64>().ok()?, e.parse::<u64>().ok()?)))
                .filter(|&(s, e)| s < e && s > through && ranges.last().is_none_or(|&(_, prev)| prev < s))
                .ok_or_else(|| format!("bad range line {line:?}"))?;
            ranges.push(range);
        }
        Err("cut short (no \"end\" line)".into())
    }
}

/// Reads what `sink` acknowledged from `dir`: `acks.<sink>`, else what a logferry
/// with one sink left (`acks`, else `ack`), else nothing. A file that does not parse
/// is logged and counts as nothing acknowledged.
pub fn read(dir: &Path, sink: &str) -> io::Result<Acked> {
    for name in [format!("{FILE_PREFIX}{sink}"), SHARED_FILE_NAME.to_string()] {
        let path = dir.join(&name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                return Ok(Acked::decode(&text).unwrap_or_else(|why| {
                    tracing::warn!(file = %path.display(), why, "the saved acknowledgements are damaged; records in the buffer are sent again");
                    Acked::default()
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match fs::read_to_string(dir.join(OLD_FILE_NAME)) {
        Ok(text) => Ok(Acked { through: text.trim().parse().unwrap_or(0), ranges: Vec::new() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Acked::default()),
        Err(e) => Err(e),
    }
}

/// The path `sink`'s acknowledgements are saved to.
pub fn path(dir: &Path, sink: &str) -> std::path::PathBuf {
    dir.join(format!("{FILE_PREFIX}{sink}"))
}

/// Replaces `dir/acks.<sink>` atomically (temp file, fsync, rename, fsync of the
/// directory).
pub fn write(dir: &Path, sink: &str, acked: &Acked) -> io::Result<()> {
    crate::durable::replace_file(&path(dir, sink), acked.encode().as_bytes())
}

/// [`write`] without the syncs, for a save that protects nothing on disk (see
/// `Buffer::persist_ack`): a crash may leave the file damaged, which reads as
/// nothing acknowledged.
pub fn write_unsynced(dir: &Path, sink: &str, acked: &Acked) -> io::Result<()> {
    crate::durable::replace_file_unsynced(&path(dir, sink), acked.encode().as_bytes())
}

/// Removes what a logferry with one sink saved, once every sink has its own file.
pub fn remove_shared(dir: &Path) -> io::Result<()> {
    for name in [SHARED_FILE_NAME, OLD_FILE_NAME] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The sinks with a file in `dir`, for `buffer inspect`.
pub fn saved_sinks(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(sink) = name.strip_prefix(FILE_PREFIX).filter(|s| !s.ends_with(".tmp")) {
            names.push(sink.to_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_answers_membership() {
        let d = tempfile::tempdir().unwrap();
        let a = Acked { through: 10, ranges: vec![(12, 14), (20, 21)] };
        write(d.path(), "archive", &a).unwrap();
        let back = read(d.path(), "archive").unwrap();
        assert_eq!(back, a);
        assert_eq!(read(d.path(), "other").unwrap(), Acked::default(), "each sink has its own");
        let members: Vec<u64> = (0..25).filter(|&s| back.contains(s)).collect();
        assert_eq!(members, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 20]);
        assert_eq!(back.end(), 21);
        assert_eq!(Acked { through: 7, ranges: vec![] }.end(), 8);
        assert_eq!(saved_sinks(d.path()).unwrap(), ["archive"]);
    }

    #[test]
    fn a_damaged_or_cut_file_counts_as_nothing_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let whole = Acked { through: 10, ranges: vec![(12, 14)] }.encode();
        let file = path(d.path(), "s");
        for cut in 0..whole.len() {
            fs::write(&file, &whole[..cut]).unwrap();
            assert_eq!(read(d.path(), "s").unwrap(), Acked::default(), "cut at {cut}");
        }
        for bad in ["logferry-acks 1\nthrough 10\n9 12\nend\n", "logferry-acks 1\nthrough 1\n5 3\nend\n", "logferry-acks 1\nthrough 1\n3 5\n4 6\nend\n"] {
            fs::write(&file, bad).unwrap();
            assert_eq!(read(d.path(), "s").unwrap(), Acked::default(), "{bad:?}");
        }
    }

    /// A logferry with one sink saved `acks` (and before that `ack`, a number): every
    /// sink reads it until it has saved its own, then it is removed.
    #[test]
    fn what_a_one_sink_logferry_saved_is_read_by_every_sink() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(OLD_FILE_NAME), "42\n").unwrap();
        assert_eq!(read(d.path(), "default").unwrap(), Acked { through: 42, ranges: vec![] });
        fs::write(d.path().join(SHARED_FILE_NAME), Acked { through: 45, ranges: vec![] }.encode()).unwrap();
        assert_eq!(read(d.path(), "a").unwrap().through, 45);
        write(d.path(), "a", &Acked { through: 50, ranges: vec![] }).unwrap();
        assert_eq!(read(d.path(), "a").unwrap().through, 50);
        assert_eq!(read(d.path(), "b").unwrap().through, 45);
        remove_shared(d.path()).unwrap();
        assert!(!d.path().join(OLD_FILE_NAME).exists() && !d.path().join(SHARED_FILE_NAME).exists());
        assert_eq!(read(d.path(), "b").unwrap(), Acked::default());
    }
}
