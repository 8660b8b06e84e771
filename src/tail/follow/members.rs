//! The files of one stream's rotation set (the live file, rotated ones, compressed
//! ones): listing them, telling which one a position or an open file is, and opening
//! one at an offset.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::super::checkpoint::Position;
use super::super::identity::{self, FileId};
use super::super::lines::LineReader;
use super::super::rotation::{self, SetMember};

pub(super) enum Source {
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

pub(super) struct Current {
    pub(super) reader: LineReader<Source>,
    pub(super) id: FileId,
    /// Chain offset of this file's byte 0.
    pub(super) base: u64,
    /// The live file (may still grow) as opposed to a rotated, final one.
    pub(super) live: bool,
    /// Rotation stamp, once known.
    pub(super) stamp: Option<String>,
    /// File offset the reader started at.
    pub(super) opened_at: u64,
}

/// The file after `cur` in its rotation set: the next newer rotated file, or the live
/// file if it is not `cur` itself. `None` while nothing newer exists.
pub(super) fn successor<'a>(members: &'a [SetMember], cur: &Current) -> Option<&'a SetMember> {
    match &cur.stamp {
        Some(stamp) => members.iter().find(|m| m.stamp.as_deref().is_none_or(|s| s > stamp.as_str())),
        None => members.last().filter(|m| {
            m.stamp.is_none() && fs::metadata(&m.path).is_ok_and(|md| md.ino() != cur.id.ino || md.dev() != cur.id.dev)
        }),
    }
}

/// A rotated file's size as log data: its length, or for `.gz` the size gzip
/// records in its last four bytes (modulo 4 GiB, plenty for a 10 MiB log).
pub(super) fn uncompressed_size(m: &SetMember) -> Option<u64> {
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

pub(super) fn live_member(key: &Path) -> SetMember {
    SetMember { path: key.to_path_buf(), stamp: None, gzipped: false }
}

pub(super) fn list_members(key: &Path) -> io::Result<Vec<SetMember>> {
    match rotation::list_set(key) {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Whether the rotated file `<live>.<stamp>` of `live` is there, plain or compressed.
/// The plain one is looked at first: the kubelet writes the `.gz` before it removes the
/// plain file, so one of the two is always seen.
pub(super) fn rotated_exists(live: &Path, stamp: &str) -> bool {
    let plain = format!("{}.{stamp}", live.display());
    fs::symlink_metadata(&plain).is_ok() || fs::symlink_metadata(format!("{plain}.gz")).is_ok()
}

/// Opens a member at `offset` (uncompressed); `None` if it vanished meanwhile.
pub(super) fn open_member(m: &SetMember, chain_base: u64, max_line: usize, offset: u64) -> io::Result<Option<Current>> {
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
    let mut reader = LineReader::new(source, max_line, offset);
    // The live file's end is only "for now"; a rotated file's decides that it is done.
    reader.end_at_short_reads(!m.gzipped && m.stamp.is_none());
    Ok(Some(Current {
        reader,
        id,
        base: chain_base,
        live: m.stamp.is_none(),
        stamp: m.stamp.clone(),
        opened_at: offset,
    }))
}

/// Whether the member is the file a position was taken in.
pub(super) fn matches_position(m: &SetMember, pos: &Position) -> io::Result<Match> {
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
pub(super) enum Match {
    Yes,
    No,
    /// It was listed but is gone now (compressed or deleted as we looked).
    Vanished,
}

/// What looking for a position among one listing found.
pub(super) enum Lookup {
    Opened,
    /// Not there, but a listed file vanished meanwhile: look again.
    Vanished,
    Nowhere,
}

/// How many listings [`Follower::open_at`] takes before it calls a position lost.
pub(super) const OPEN_AT_LOOKS: usize = 5;

/// The rotation stamp of a file that was just renamed away from the live path.
pub(super) fn find_stamp(key: &Path, id: &FileId) -> io::Result<Option<String>> {
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
