//! Which file is this? (device, inode) plus a checksum of the first line.
//!
//! (device, inode) alone is not enough: when a pod's log is deleted the filesystem
//! may hand the same inode to the next file created, and a reader trusting the number
//! would resume the new file in the middle. The fingerprint — CRC-32 of the first line
//! (up to [`FINGERPRINT_BYTES`]) — tells them apart, because every container log line
//! starts with a nanosecond timestamp. It also survives compression, which inode
//! numbers do not: a rotated file the kubelet gzipped is found again by decompressing
//! its first line.
//!
//! A file with no complete first line yet has no fingerprint; it is matched by
//! (device, inode) alone until it has one.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How much of the first line the fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// CRC-32 of the first line; `None` while the file has no complete line.
    pub fingerprint: Option<u32>,
}

impl FileId {
    pub fn from_metadata(md: &Metadata, fingerprint: Option<u32>) -> Self {
        Self { dev: md.dev(), ino: md.ino(), fingerprint }
    }

    /// Same file on disk: same inode, and fingerprints agree where both are known.
    pub fn same_file(&self, other: &FileId) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.same_content_start(other)
    }

    /// Fingerprints do not contradict each other (either unknown, or equal).
    pub fn same_content_start(&self, other: &FileId) -> bool {
        match (self.fingerprint, other.fingerprint) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// The fingerprint of whatever `r` yields first: CRC-32 of its first line, or `None`
/// if no newline comes within [`FINGERPRINT_BYTES`] and the input ends first.
pub fn fingerprint_reader(mut r: impl Read) -> io::Result<Option<u32>> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let mut have = 0;
    while have < buf.len() {
        let n = match r.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(nl) = memchr::memchr(b'\n', &buf[have..have + n]) {
            return Ok(Some(crc32fast::hash(&buf[..have + nl + 1])));
        }
        have += n;
    }
    // A first line longer than the window: its head is distinctive enough.
    Ok((have == buf.len()).then(|| crc32fast::hash(&buf)))
}

/// Fingerprint of a file on disk, decompressing it first if `gzipped`.
pub fn fingerprint_path(path: &Path, gzipped: bool) -> io::Result<Option<u32>> {
    let f = File::open(path)?;
    if gzipped {
        fingerprint_reader(flate2::read::MultiGzDecoder::new(f))
    } else {
        fingerprint_reader(f)
    }
}

/// The identity of an open file.
pub fn identify(file: &File) -> io::Result<FileId> {
    Ok(FileId::from_metadata(&file.metadata()?, fingerprint_open(file)?))
}

/// Fingerprints through `file` itself with positioned reads (no seek).
pub fn fingerprint_open(file: &File) -> io::Result<Option<u32>> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let mut have = 0;
    while have < buf.len() {
        let n = file.read_at(&mut buf[have..], have as u64)?;
        if n == 0 {
            break;
        }
        if let Some(nl) = memchr::memchr(b'\n', &buf[have..have + n]) {
            return Ok(Some(crc32fast::hash(&buf[..have + nl + 1])));
        }
        have += n;
    }
    Ok((have == buf.len()).then(|| crc32fast::hash(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprint_is_the_first_line_and_survives_gzip() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("0.log");
        std::fs::write(&plain, b"2026-11-21T10:00:00.000000001Z stdout F first\nsecond\n").unwrap();
        let fp = fingerprint_path(&plain, false).unwrap();
        assert_eq!(fp, Some(crc32fast::hash(b"2026-11-21T10:00:00.000000001Z stdout F first\n")));

        let gz = d.path().join("0.log.20261121-100000.gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        enc.finish().unwrap();
        assert_eq!(fingerprint_path(&gz, true).unwrap(), fp);
        assert_eq!(fingerprint_open(&File::open(&plain).unwrap()).unwrap(), fp);
    }

    #[test]
    fn no_fingerprint_before_the_first_newline() {
        assert_eq!(fingerprint_reader(&b"partial"[..]).unwrap(), None);
        assert_eq!(fingerprint_reader(&b""[..]).unwrap(), None);
        assert!(fingerprint_reader(&[b'x'; FINGERPRINT_BYTES + 10][..]).unwrap().is_some());
    }

    #[test]
    fn identity_needs_inode_and_agreeing_fingerprints() {
        let a = FileId { dev: 1, ino: 7, fingerprint: Some(1) };
        assert!(a.same_file(&FileId { fingerprint: None, ..a }));
        assert!(!a.same_file(&FileId { fingerprint: Some(2), ..a }), "a reused inode");
        assert!(!a.same_file(&FileId { ino: 8, ..a }));
    }
}
