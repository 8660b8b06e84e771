//! `<data_dir>/buffer/sinks`: the sinks' names in the order of the bits of a
//! record's `sinks` mask, so that a restart with sinks added, removed or reordered
//! still knows whose each record is.
//!
//! ```text
//! logferry-sinks 1
//! archive
//! team-a
//! ```
//!
//! Replaced atomically before the first segment of a run is written. A buffer
//! without it was written by a logferry with one sink: bit `i` is then the `i`-th
//! sink of the current configuration.

use std::fs;
use std::io;
use std::path::Path;

const HEADER: &str = "logferry-sinks 1";
const FILE_NAME: &str = "sinks";

/// The names saved in `dir`, if any (a damaged file is logged and read as none).
pub fn read(dir: &Path) -> io::Result<Option<Vec<String>>> {
    let path = dir.join(FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) || !text.ends_with('\n') {
        tracing::warn!(file = %path.display(), "the buffer's list of sinks is damaged; records are taken as routed by position");
        return Ok(None);
    }
    Ok(Some(lines.map(str::to_string).collect()))
}

pub fn write(dir: &Path, names: &[String]) -> io::Result<()> {
    let mut text = format!("{HEADER}\n");
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    crate::durable::replace_file(&dir.join(FILE_NAME), text.as_bytes())
}

/// For each bit of a saved mask, the bit it is now (`None`: that sink is gone).
/// Without a saved list, bits keep their positions.
pub fn remap(saved: Option<&[String]>, now: &[String]) -> Vec<Option<u32>> {
    match saved {
        None => (0..16).map(|i| (i < now.len() as u32).then_some(i)).collect(),
        Some(saved) => saved.iter().map(|name| now.iter().position(|n| n == name).map(|i| i as u32)).collect(),
    }
}

/// A saved mask in today's bits. [`super::segment::ALL_SINKS`] (a version-1 record)
/// is every sink of today.
pub fn translate(mask: u16, map: &[Option<u32>], sinks_now: usize) -> u16 {
    if mask == super::segment::ALL_SINKS {
        return ((1u32 << sinks_now) - 1) as u16;
    }
    let mut out = 0u16;
    for (bit, to) in map.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            if let Some(to) = to {
                out |= 1 << to;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_sinks_by_name() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        let before: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        write(d.path(), &before).unwrap();
        assert_eq!(read(d.path()).unwrap().as_deref(), Some(&before[..]));
        // b removed, d added, c moved first.
        let now: Vec<String> = ["c", "a", "d"].map(String::from).to_vec();
        let map = remap(Some(&before), &now);
        assert_eq!(translate(0b001, &map, 3), 0b010);
        assert_eq!(translate(0b110, &map, 3), 0b001);
        assert_eq!(translate(0b010, &map, 3), 0);
        assert_eq!(translate(super::super::segment::ALL_SINKS, &map, 3), 0b111);
        assert_eq!(translate(0b1, &remap(None, &now), 3), 0b1);
    }
}
