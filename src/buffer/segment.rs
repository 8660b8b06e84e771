//! The on-disk format of one buffer segment, and reading it back.
//!
//! ```text
//! segment  = header record*
//! header   = "LFBUFSEG" (8 bytes) | version u32 | reserved u32          (16 bytes)
//! record   = magic u32 | len u32 | crc u32 | seq u64 | time i64 | events u32
//!            | sinks u16 | reserved u16 | payload[len]
//!            ("LFRC")              CRC-32C of everything after itself: seq … payload
//! ```
//!
//! Little-endian throughout. `time` is when the data was read (ns since the epoch),
//! for the shipping-lag metric; `events` is how many JSON lines the payload holds;
//! `sinks` which sinks the record goes to, one bit per sink in the order the buffer's
//! `sinks` file names them. Version 1 (before sinks had their own cursors) has no
//! `sinks` or `reserved`: its records go to every sink ([`ALL_SINKS`]). It is read,
//! never written.
//! The magic lets a reader find the next record after a corrupted one: it scans
//! forward for the magic and accepts a record there only if its CRC holds.

use std::fs::File;
use std::io::{self, Read};

pub const SEGMENT_MAGIC: &[u8; 8] = b"LFBUFSEG";
pub const VERSION: u32 = 2;
/// The version before `sinks`.
pub const VERSION_1: u32 = 1;
pub const HEADER_LEN: u64 = 16;
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"LFRC");
/// magic, len, crc, seq, time, events, sinks, reserved.
pub const RECORD_HEADER_LEN: usize = 4 + 4 + 4 + 8 + 8 + 4 + 2 + 2;
/// A version-1 record's header: no `sinks`, no `reserved`.
const RECORD_HEADER_LEN_V1: usize = RECORD_HEADER_LEN - 4;
/// A version-1 record goes to every sink.
pub const ALL_SINKS: u16 = u16::MAX;

/// The record header's length in a segment of `version`.
pub fn record_header_len(version: u32) -> usize {
    if version == VERSION_1 {
        RECORD_HEADER_LEN_V1
    } else {
        RECORD_HEADER_LEN
    }
}
/// A record larger than this is taken for garbage (a batch is ~1 MiB).
pub const MAX_RECORD_LEN: u32 = 64 << 20;

/// One buffered record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub time: i64,
    pub events: u32,
    pub payload: bytes::Bytes,
}

pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Checks a segment header and returns its version; the error says what is wrong.
pub fn check_header(h: &[u8]) -> Result<u32, String> {
    if h.len() < HEADER_LEN as usize || &h[..8] != SEGMENT_MAGIC {
        return Err("not a logferry buffer segment (bad magic)".into());
    }
    let v = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if v != VERSION && v != VERSION_1 {
        return Err(format!("segment version {v}; this logferry reads versions {VERSION_1} and {VERSION}"));
    }
    Ok(v)
}

/// Appends the framed record to `out`.
pub fn encode(seq: u64, time: i64, events: u32, sinks: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&frame(seq, time, events, sinks, payload));
    out.extend_from_slice(payload);
}

/// The framing that goes before `payload` on disk (written with it in one vectored
/// write, so the payload is not copied first).
pub fn frame(seq: u64, time: i64, events: u32, sinks: u16, payload: &[u8]) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..28].copy_from_slice(&time.to_le_bytes());
    h[28..32].copy_from_slice(&events.to_le_bytes());
    h[32..34].copy_from_slice(&sinks.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[12..]), payload);
    h[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A valid record, borrowed from the bytes it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub time: i64,
    pub events: u32,
    pub sinks: u16,
    pub payload: &'a [u8],
}

/// What was found at one offset of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A valid record and its framed length.
    Record(RecordRef<'a>, usize),
    /// The bytes end inside a record: a torn write, or more is yet to come.
    Incomplete,
    /// Not a valid record here.
    Corrupt,
}

/// Parses the record at the start of `b` (in a segment of the current version).
pub fn parse(b: &[u8]) -> Parsed<'_> {
    parse_version(b, VERSION)
}

/// Parses the record at the start of `b`, in a segment of `version`.
pub fn parse_version(b: &[u8], version: u32) -> Parsed<'_> {
    let head = record_header_len(version);
    if b.len() < head {
        return if b.len() < 4 || b[..4] == RECORD_MAGIC.to_le_bytes() { Parsed::Incomplete } else { Parsed::Corrupt };
    }
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    if word(0) != RECORD_MAGIC {
        return Parsed::Corrupt;
    }
    let len = word(4);
    if len > MAX_RECORD_LEN {
        return Parsed::Corrupt;
    }
    let total = head + len as usize;
    if b.len() < total {
        return Parsed::Incomplete;
    }
    let body = &b[12..total];
    if crc32c::crc32c(body) != word(8) {
        return Parsed::Corrupt;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
    let time = i64::from_le_bytes(body[8..16].try_into().unwrap());
    let events = u32::from_le_bytes(body[16..20].try_into().unwrap());
    let sinks = if version == VERSION_1 { ALL_SINKS } else { u16::from_le_bytes(body[20..22].try_into().unwrap()) };
    Parsed::Record(RecordRef { seq, time, events, sinks, payload: &body[head - 12..] }, total)
}

/// Where the next record magic starts at or after `from`, if anywhere.
pub fn find_magic(b: &[u8], from: usize) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut i = from;
    while let Some(p) = memchr::memchr(magic[0], b.get(i..)?) {
        let at = i + p;
        if b.get(at..at + 4) == Some(&magic[..]) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Where a valid record sits in a segment, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub seq: u64,
    pub time: i64,
    pub events: u32,
    pub sinks: u16,
    /// Offset of the record's magic in the segment file.
    pub offset: u64,
    /// Framed length (header and payload).
    pub framed: u64,
}

/// The result of reading a whole segment.
#[derive(Debug, Default)]
pub struct Scan {
    /// The segment's format version.
    pub version: u32,
    pub records: Vec<RecordMeta>,
    /// Bytes of corrupted regions skipped, and how many such regions.
    pub corrupt_regions: u64,
    pub corrupt_bytes: u64,
    /// Where valid data ends: the start of a torn last record, or the file's end.
    pub valid_end: u64,
    /// The file ends inside a record.
    pub torn: bool,
}

/// Reads every record of a segment file, skipping corrupted regions. `buf` is
/// reused between segments.
pub fn scan_file(path: &std::path::Path, buf: &mut Vec<u8>) -> io::Result<Result<Scan, String>> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    match check_header(buf) {
        Ok(version) => Ok(Ok(scan_bytes(buf, version))),
        Err(e) => Ok(Err(e)),
    }
}

/// Scans a segment's bytes (header included) of `version`.
pub fn scan_bytes(bytes: &[u8], version: u32) -> Scan {
    let mut scan = Scan { version, ..Scan::default() };
    let mut at = HEADER_LEN as usize;
    while at < bytes.len() {
        match parse_version(&bytes[at..], version) {
            Parsed::Record(r, n) => {
                scan.records.push(RecordMeta { seq: r.seq, time: r.time, events: r.events, sinks: r.sinks, offset: at as u64, framed: n as u64 });
                at += n;
            }
            Parsed::Incomplete => {
                // Either a torn tail, or a corrupted length pointing past the end:
                // a valid record further on means the latter.
                match next_valid(bytes, at + 1, version) {
                    Some(next) => {
                        scan.corrupt_regions += 1;
                        scan.corrupt_bytes += (next - at) as u64;
                        at = next;
                    }
                    None => {
                        scan.torn = true;
                        scan.valid_end = at as u64;
                        return scan;
                    }
                }
            }
            Parsed::Corrupt => {
                let next = next_valid(bytes, at + 1, version);
                scan.corrupt_regions += 1;
                match next {
                    Some(n) => {
                        scan.corrupt_bytes += (n - at) as u64;
                        at = n;
                    }
                    None => {
                        // Nothing valid follows: treat it as a torn tail.
                        scan.corrupt_bytes += (bytes.len() - at) as u64;
                        scan.torn = true;
                        scan.valid_end = at as u64;
                        return scan;
                    }
                }
            }
        }
    }
    scan.valid_end = bytes.len() as u64;
    scan
}

/// The next offset ≥ `from` holding a record whose CRC holds.
pub fn next_valid(bytes: &[u8], from: usize, version: u32) -> Option<usize> {
    let mut i = from;
    while let Some(m) = find_magic(bytes, i) {
        if matches!(parse_version(&bytes[m..], version), Parsed::Record(..)) {
            return Some(m);
        }
        i = m + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut b = header().to_vec();
        for (seq, p) in records {
            encode(*seq, 7, 1, 0b101, p, &mut b);
        }
        b
    }

    fn scan_bytes(b: &[u8]) -> Scan {
        super::scan_bytes(b, check_header(b).unwrap())
    }

    #[test]
    fn round_trip() {
        let b = seg(&[(1, b"one\n"), (2, b""), (3, b"three\n")]);
        let s = scan_bytes(&b);
        assert_eq!(s.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let third = s.records[2];
        match parse(&b[third.offset as usize..]) {
            Parsed::Record(r, n) => assert_eq!((r.payload, n as u64), (&b"three\n"[..], third.framed)),
            other => panic!("{other:?}"),
        }
        assert!(!s.torn);
        assert_eq!(s.valid_end, b.len() as u64);
        assert!(s.records.iter().all(|r| r.sinks == 0b101));
    }

    /// A segment written before sinks had cursors (version 1: no `sinks` field) is
    /// read, its records going to every sink.
    #[test]
    fn a_version_1_segment_is_read_for_every_sink() {
        let mut b = header().to_vec();
        b[8..12].copy_from_slice(&VERSION_1.to_le_bytes());
        for (seq, p) in [(1u64, &b"one\n"[..]), (2, b"two\n")] {
            let mut h = vec![0u8; RECORD_HEADER_LEN_V1];
            h[12..20].copy_from_slice(&seq.to_le_bytes());
            h[20..28].copy_from_slice(&7i64.to_le_bytes());
            h[28..32].copy_from_slice(&1u32.to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&h[12..]), p);
            h[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
            h[4..8].copy_from_slice(&(p.len() as u32).to_le_bytes());
            h[8..12].copy_from_slice(&crc.to_le_bytes());
            b.extend_from_slice(&h);
            b.extend_from_slice(p);
        }
        let s = scan_bytes(&b);
        assert_eq!(s.version, VERSION_1);
        let got: Vec<(u64, u16, u64)> = s.records.iter().map(|r| (r.seq, r.sinks, r.framed)).collect();
        assert_eq!(got, [(1, ALL_SINKS, 32 + 4), (2, ALL_SINKS, 32 + 4)]);
        match parse_version(&b[s.records[1].offset as usize..], VERSION_1) {
            Parsed::Record(r, _) => assert_eq!(r.payload, b"two\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_torn_tail_is_found_at_every_cut() {
        let full = seg(&[(1, b"first"), (2, b"second record")]);
        let first_end = HEADER_LEN as usize + RECORD_HEADER_LEN + 5;
        for cut in first_end + 1..full.len() {
            let s = scan_bytes(&full[..cut]);
            assert_eq!(s.records.len(), 1, "cut at {cut}");
            assert!(s.torn);
            assert_eq!(s.valid_end, first_end as u64);
        }
    }

    #[test]
    fn a_flipped_byte_loses_one_record_only() {
        let full = seg(&[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc")]);
        let second = HEADER_LEN as usize + RECORD_HEADER_LEN + 4;
        for i in second..second + RECORD_HEADER_LEN + 4 {
            let mut b = full.clone();
            b[i] ^= 0x40;
            let s = scan_bytes(&b);
            let seqs: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, vec![1, 3], "flip at {i}");
            assert_eq!(s.corrupt_regions, 1);
        }
    }

    /// Regression (found by the buffer's model test): a record whose length was
    /// corrupted upward, followed by another corrupted record, made recovery take the
    /// rest of the segment for a torn tail — and truncate good records away.
    #[test]
    fn two_corrupted_records_do_not_hide_the_good_ones_after_them() {
        let full = seg(&[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc"), (4, b"dddd")]);
        let rec = RECORD_HEADER_LEN + 4;
        let first = HEADER_LEN as usize;
        let mut b = full.clone();
        b[first + 5] = 0x7f; // record 1's length: far past the end
        b[first + rec + 20] ^= 0x01; // record 2's payload
        let s = scan_bytes(&b);
        let seqs: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert!(!s.torn);
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(check_header(&header()), Ok(VERSION));
        assert_eq!(check_header(b"LFBUFSEG\x01\0\0\0\0\0\0\0"), Ok(VERSION_1));
        assert!(check_header(b"LFBUFSEG\x03\0\0\0\0\0\0\0").unwrap_err().contains("version 3"));
        assert!(check_header(b"garbage garbage!").is_err());
    }
}
