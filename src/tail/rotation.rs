//! The kubelet's rotated-file names: `N.log` → `N.log.<YYYYMMDD-hhmmss>` → `….gz`.
//!
//! (`pkg/kubelet/logs/container_log_manager.go`.) A container's live file and its
//! rotated predecessors form one stream; ordering them needs only their names: the
//! timestamp suffix sorts in rotation order and the live file comes last.

/// A log file name split into the live name and its rotation suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotatedName<'a> {
    live: &'a str,
    /// `YYYYMMDD-hhmmss` for a rotated file.
    stamp: Option<&'a str>,
    gzipped: bool,
}

impl<'a> RotatedName<'a> {
    /// Splits `name` if it is `X.log`, `X.log.<stamp>` or `X.log.<stamp>.gz`.
    pub fn parse(name: &'a str) -> Option<Self> {
        if name.ends_with(".log") {
            return Some(Self { live: name, stamp: None, gzipped: false });
        }
        let (rest, gzipped) = match name.strip_suffix(".gz") {
            Some(r) => (r, true),
            None => (name, false),
        };
        let (live, stamp) = rest.rsplit_once('.')?;
        if !live.ends_with(".log") || !is_stamp(stamp) {
            return None;
        }
        Some(Self { live, stamp: Some(stamp), gzipped })
    }

    /// The live file's name (`N.log`).
    pub fn live_stem(&self) -> &'a str {
        self.live
    }

    pub fn stamp(&self) -> Option<&'a str> {
        self.stamp
    }

    pub fn is_gzipped(&self) -> bool {
        self.gzipped
    }

    /// Sort key within one container: oldest rotation first, the live file last.
    pub fn order_key(&self) -> (bool, &'a str) {
        (self.stamp.is_none(), self.stamp.unwrap_or(""))
    }
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15 && b[8] == b'-' && b.iter().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let live = RotatedName::parse("0.log").unwrap();
        assert_eq!((live.live_stem(), live.stamp(), live.is_gzipped()), ("0.log", None, false));
        let r = RotatedName::parse("0.log.20261121-100000").unwrap();
        assert_eq!((r.live_stem(), r.stamp(), r.is_gzipped()), ("0.log", Some("20261121-100000"), false));
        let g = RotatedName::parse("0.log.20261121-100000.gz").unwrap();
        assert_eq!((g.live_stem(), g.stamp(), g.is_gzipped()), ("0.log", Some("20261121-100000"), true));
        for other in ["0.log.gz.tmp", "0.log.20261121-100000.gz.tmp", "0.log.1", "app.txt", "0.log.2026112-100000"] {
            assert_eq!(RotatedName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn rotation_order() {
        let mut names = ["0.log", "0.log.20261121-100500.gz", "0.log.20261121-101000", "0.log.20261121-100000.gz"];
        names.sort_by_key(|n| RotatedName::parse(n).unwrap().order_key());
        assert_eq!(names, ["0.log.20261121-100000.gz", "0.log.20261121-100500.gz", "0.log.20261121-101000", "0.log"]);
    }
}

/// One file of a container's rotation set, as found in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMember {
    pub path: std::path::PathBuf,
    /// `None` for the live file.
    pub stamp: Option<String>,
    pub gzipped: bool,
}

/// The rotated files of the live file `live` (e.g. `…/nginx/0.log`), oldest first,
/// then the live file itself if it exists. While the kubelet compresses, a stamp can
/// exist both plain and `.gz`: the plain one is listed, since it is complete.
pub fn list_set(live: &std::path::Path) -> std::io::Result<Vec<SetMember>> {
    let dir = live.parent().unwrap_or(std::path::Path::new("."));
    let live_name = live.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut members: Vec<SetMember> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Only regular files: a FIFO or a directory under a log's name is not a log
        // (opening a FIFO would block the tailer).
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(r) = RotatedName::parse(name) else { continue };
        if r.live_stem() != live_name {
            continue;
        }
        members.push(SetMember { path: entry.path(), stamp: r.stamp().map(str::to_string), gzipped: r.is_gzipped() });
    }
    members.sort_by(|a, b| {
        let key = |m: &SetMember| (m.stamp.is_none(), m.stamp.clone().unwrap_or_default(), m.gzipped);
        key(a).cmp(&key(b))
    });
    members.dedup_by(|later, earlier| later.stamp.is_some() && later.stamp == earlier.stamp);
    Ok(members)
}
