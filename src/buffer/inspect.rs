//! `logferry buffer inspect`: what the disk buffer holds, for an operator on a node
//! at 3 a.m. Reads only; changes nothing.

use std::fmt;
use std::path::Path;

use super::{acks, list_segments, segment, sinks, BufferError};

/// What one sink acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    pub acked: u64,
    pub acked_above: usize,
}

/// One segment's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub name: String,
    pub bytes: u64,
    pub records: u64,
    pub unacked: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub corrupt_regions: u64,
    pub torn_bytes: u64,
    /// Why it cannot be read at all, if so.
    pub unreadable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub dir: String,
    /// Per sink (by the names its files carry): acknowledged up to, and ranges
    /// acknowledged above that (out of order).
    pub sinks: Vec<SinkReport>,
    pub segments: Vec<SegmentReport>,
    /// When the oldest unacknowledged record was read (ns since the epoch).
    pub oldest_unacked_time: Option<i64>,
}

impl Report {
    pub fn unacked(&self) -> u64 {
        self.segments.iter().map(|s| s.unacked).sum()
    }

    pub fn has_damage(&self) -> bool {
        self.segments.iter().any(|s| s.corrupt_regions > 0 || s.torn_bytes > 0 || s.unreadable.is_some())
    }
}

/// Reads the buffer under `<data_dir>/buffer`.
pub fn inspect(data_dir: &Path) -> Result<Report, BufferError> {
    let dir = data_dir.join("buffer");
    let io = |path: std::path::PathBuf| move |source| BufferError::Io { path, source };
    let saved_names = sinks::read(&dir).map_err(io(dir.join("sinks")))?;
    let names = match &saved_names {
        Some(names) => names.clone(),
        None => acks::saved_sinks(&dir).map_err(io(dir.clone()))?,
    };
    // Without any file of its own, a sink reads what a one-sink logferry saved.
    let names = if names.is_empty() { vec![crate::config::DEFAULT_SINK.to_string()] } else { names };
    let mut saved = Vec::new();
    for name in &names {
        saved.push(acks::read(&dir, name).map_err(io(acks::path(&dir, name)))?);
    }
    let map = sinks::remap(saved_names.as_deref(), &names);
    let sinks_report = names.iter().zip(&saved).map(|(name, a)| SinkReport { name: name.clone(), acked: a.through, acked_above: a.ranges.len() }).collect();
    let mut report = Report { dir: dir.display().to_string(), sinks: sinks_report, segments: Vec::new(), oldest_unacked_time: None };
    let mut buf = Vec::new();
    for (_, path) in list_segments(&dir).map_err(super::io_err(&dir))? {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut seg = SegmentReport {
            name,
            bytes: 0,
            records: 0,
            unacked: 0,
            first_seq: None,
            last_seq: None,
            corrupt_regions: 0,
            torn_bytes: 0,
            unreadable: None,
        };
        match segment::scan_file(&path, &mut buf) {
            Err(e) => seg.unreadable = Some(e.to_string()),
            Ok(Err(why)) => seg.unreadable = Some(why),
            Ok(Ok(scan)) => {
                seg.bytes = buf.len() as u64;
                seg.records = scan.records.len() as u64;
                seg.first_seq = scan.records.first().map(|r| r.seq);
                seg.last_seq = scan.records.last().map(|r| r.seq);
                seg.corrupt_regions = scan.corrupt_regions;
                seg.torn_bytes = if scan.torn { seg.bytes - scan.valid_end } else { 0 };
                let owed = |r: &&segment::RecordMeta| {
                    let mask = sinks::translate(r.sinks, &map, names.len());
                    saved.iter().enumerate().any(|(c, a)| mask & (1 << c) != 0 && !a.contains(r.seq))
                };
                let unacked: Vec<_> = scan.records.iter().filter(owed).collect();
                seg.unacked = unacked.len() as u64;
                if report.oldest_unacked_time.is_none() {
                    report.oldest_unacked_time = unacked.first().map(|r| r.time);
                }
            }
        }
        report.segments.push(seg);
    }
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "buffer {}", self.dir)?;
        for s in &self.sinks {
            writeln!(f, "sink {}: acknowledged up to seq {}, and {} range(s) above it", s.name, s.acked, s.acked_above)?;
        }
        writeln!(f, "{:<22} {:>12} {:>9} {:>9} {:>21}  damage", "segment", "bytes", "records", "unacked", "seqs")?;
        for s in &self.segments {
            let seqs = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!("{a}..{b}"),
                _ => "-".into(),
            };
            let damage = match (&s.unreadable, s.corrupt_regions, s.torn_bytes) {
                (Some(why), _, _) => format!("unreadable: {why}"),
                (None, 0, 0) => "none".into(),
                (None, c, t) => format!("{c} corrupted region(s), {t} torn byte(s) at the end"),
            };
            writeln!(f, "{:<22} {:>12} {:>9} {:>9} {:>21}  {damage}", s.name, s.bytes, s.records, s.unacked, seqs)?;
        }
        write!(f, "{} segment(s), {} unacknowledged record(s)", self.segments.len(), self.unacked())?;
        if let Some(t) = self.oldest_unacked_time {
            let age = (crate::event::time::now() - t) as f64 / 1e9;
            write!(f, "; the oldest was read {} ({age:.0} s ago)", crate::event::time::format_rfc3339(t))?;
        }
        if self.has_damage() {
            write!(f, "\ndamage found: logferry skips corrupted records (counted) and truncates torn ones at start")?;
        }
        Ok(())
    }
}
