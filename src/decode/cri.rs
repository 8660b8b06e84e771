//! The CRI log format (containerd, CRI-O): `<RFC3339Nano> <stdout|stderr> <tags> <message>`.
//!
//! `tags` is `P` (partial: the runtime cut the line, more follows) or `F` (full: this
//! piece ends the line), possibly followed by `:`-separated fields a future runtime
//! may add (cri-api `LogTagDelimiter`); only the first tag is read. The message is
//! returned as raw bytes: containerd cuts long lines at a byte count, so one piece may
//! end inside a UTF-8 character that the next piece completes.

use super::Malformed;
use crate::event::time::{parse_rfc3339, Nanos};
use crate::event::Stream;

/// One decoded CRI line.
#[derive(Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub time: Nanos,
    pub stream: Stream,
    /// Tag `F`: this piece ends a message.
    pub complete: bool,
    pub message: &'a [u8],
}

/// Decodes one line (without its newline). Borrowed from `line`; never copies.
pub fn parse(line: &[u8]) -> Result<CriLine<'_>, Malformed> {
    let (ts, rest) = split_field(line).ok_or(Malformed)?;
    let time = parse_rfc3339(ts).ok_or(Malformed)?;
    // What runtimes write, `stdout F ` and the like, read without searching.
    let stream = match rest.get(..7) {
        Some(b"stdout ") => Some(Stream::Stdout),
        Some(b"stderr ") => Some(Stream::Stderr),
        _ => None,
    };
    if let (Some(stream), Some(tag @ (b'F' | b'P')), Some(b' ')) = (stream, rest.get(7), rest.get(8)) {
        return Ok(CriLine { time, stream, complete: *tag == b'F', message: &rest[9..] });
    }
    let (stream, rest) = split_field(rest).ok_or(Malformed)?;
    let stream = Stream::from_bytes(stream).ok_or(Malformed)?;
    // The message follows the tags' space. A line ending right after the tags (no
    // space) carries an empty message; be lenient about that.
    let (tags, message) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let first_tag = tags.split(|&c| c == b':').next().unwrap_or_default();
    let complete = match first_tag {
        b"F" => true,
        b"P" => false,
        _ => return Err(Malformed),
    };
    Ok(CriLine { time, stream, complete, message })
}

/// Splits at the first space; `None` when there is none.
fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = memchr::memchr(b' ', s)?;
    Some((&s[..sp], &s[sp + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_full_and_partial() {
        let l = parse(b"2016-10-06T00:17:09.669794202Z stdout F log content 1").unwrap();
        assert_eq!(l.message, b"log content 1");
        assert!(l.complete);
        assert_eq!(l.stream, Stream::Stdout);
        let p = parse(b"2016-10-06T00:17:09.669794203Z stderr P partial  ").unwrap();
        assert_eq!(p.message, b"partial  ");
        assert!(!p.complete);
        assert_eq!(p.stream, Stream::Stderr);
    }

    #[test]
    fn cri_o_offset_timestamps() {
        let l = parse(b"2016-10-06T02:17:09.669794202+02:00 stdout F x").unwrap();
        assert_eq!(l.time, parse_rfc3339(b"2016-10-06T00:17:09.669794202Z").unwrap());
    }

    #[test]
    fn future_tag_fields_are_ignored() {
        assert!(parse(b"2016-10-06T00:17:09Z stdout F:x=y hi").unwrap().complete);
        assert!(!parse(b"2016-10-06T00:17:09Z stdout P:x=y hi").unwrap().complete);
    }

    #[test]
    fn empty_messages() {
        assert_eq!(parse(b"2016-10-06T00:17:09Z stdout F ").unwrap().message, b"");
        assert_eq!(parse(b"2016-10-06T00:17:09Z stdout F").unwrap().message, b"");
    }

    #[test]
    fn message_bytes_are_untouched() {
        let l = parse(b"2016-10-06T00:17:09Z stdout P \xe6\x97").unwrap();
        assert_eq!(l.message, b"\xe6\x97");
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            &b""[..], b"hello", b"2016-10-06T00:17:09Z", b"2016-10-06T00:17:09Z stdout", b"2016-10-06T00:17:09Z stdin F x",
            b"2016-10-06T00:17:09Z stdout X x", b"2016-10-06 stdout F x", b"{\"log\":\"x\"}", b"2016-10-06T00:17:09Z stdout  F x",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
