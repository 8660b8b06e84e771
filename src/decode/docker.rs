//! Docker's json-file format: `{"log":"…","stream":"stdout","time":"…"}` per line.
//!
//! A hand-written scanner rather than serde: it looks only for the three keys it
//! needs, in any order, and skips anything else (e.g. `attrs`). The `log` value comes
//! back in one of two forms ([`Form`]): unescaped, or still escaped as the event
//! writes it ([`passthrough`]), which for most values is a slice of the line with no
//! copy and no unescaping. Either form is written into a reused scratch buffer when
//! it cannot be a slice of the line.
//!
//! Docker appends `\n` to `log` only on a complete line or the last piece of a split
//! one (moby `daemon/logger/copier.go`), so a piece without it is partial.

mod passthrough;

use super::Malformed;
use crate::event::time::{parse_rfc3339, Nanos};
use crate::event::Stream;
use passthrough::Passed;

/// The form the `log` value is wanted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// As the application wrote it.
    Unescaped,
    /// In the event's JSON escaping (see [`crate::event::Event::escaped`]) where the
    /// line allows (valid UTF-8), unescaped otherwise: [`DockerLine::escaped`] says.
    Escaped,
}

/// One decoded json-file line.
#[derive(Debug, PartialEq, Eq)]
pub struct DockerLine<'a> {
    /// The `log` value without its trailing `\n`, unescaped or escaped (`escaped`).
    pub log: &'a [u8],
    /// `log` is in the event's JSON escaping.
    pub escaped: bool,
    /// `log` ended in `\n`: this piece ends a message.
    pub complete: bool,
    /// `None` when the record had no (or an unknown) `stream`.
    pub stream: Option<Stream>,
    /// `None` when the record had no (or an unparsable) `time`.
    pub time: Option<Nanos>,
}

/// Decodes one line (without its newline), the `log` value unescaped. `scratch` holds
/// it when it had escapes; it is cleared and reused, never shrunk.
pub fn parse<'a>(line: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<DockerLine<'a>, Malformed> {
    parse_as(line, scratch, Form::Unescaped)
}

/// [`parse`], the `log` value in the form asked for.
///
/// Docker writes its own layout, `{"log":"…","stream":"stdout","time":"…"}`, and that
/// is read by a shortcut: past the value, the rest of the line is matched whole. Any
/// other line (spaces, other keys, another order) goes through the general scanner,
/// from where the shortcut stopped.
pub fn parse_as<'a>(line: &'a [u8], scratch: &'a mut Vec<u8>, form: Form) -> Result<DockerLine<'a>, Malformed> {
    scratch.clear();
    parse_appending(line, scratch, form)
}

/// [`parse_as`], but a value that needs `scratch` is appended to what it holds, which
/// stays as it was: a decoder keeps the values of a split message's earlier pieces
/// there (see `decode::reassemble`).
pub fn parse_appending<'a>(line: &'a [u8], scratch: &'a mut Vec<u8>, form: Form) -> Result<DockerLine<'a>, Malformed> {
    let mut p = Parser { s: line, i: 0 };
    let mut fields = Fields::default();
    if line.starts_with(USUAL_START) {
        p.i = USUAL_START.len() - 1;
        let log = p.log_value(scratch, form)?;
        if let Some((stream, time)) = usual_end(&line[p.i..]) {
            return Ok(docker_line(line, scratch, log, Some(stream), Some(time)));
        }
        fields.log = Some(log);
    } else {
        p.skip_ws();
        p.expect(b'{')?;
        p.skip_ws();
        if p.peek() == Some(b'}') {
            return Err(Malformed);
        }
        p.field(&mut fields, scratch, form)?;
    }
    loop {
        p.skip_ws();
        match p.next() {
            Some(b',') => p.field(&mut fields, scratch, form)?,
            Some(b'}') => break,
            _ => return Err(Malformed),
        }
    }
    p.skip_ws();
    if p.i != line.len() {
        return Err(Malformed);
    }
    let log = fields.log.ok_or(Malformed)?;
    let stream = fields.stream.and_then(|s| s.plain(line)).and_then(Stream::from_bytes);
    let time = fields.time.and_then(|t| t.plain(line)).and_then(parse_rfc3339);
    Ok(docker_line(line, scratch, log, stream, time))
}

/// How Docker starts a line: its first key, and the opening quote of the value.
const USUAL_START: &[u8] = b"{\"log\":\"";

/// The stream and time when `rest` — the line after the `log` value's closing quote —
/// is Docker's own ending, `,"stream":"stdout","time":"…"}` with a time that parses.
fn usual_end(rest: &[u8]) -> Option<(Stream, Nanos)> {
    const STREAM: &[u8] = b",\"stream\":\"";
    const TIME: &[u8] = b"\",\"time\":\"";
    let rest = rest.strip_prefix(STREAM)?;
    let (stream, rest) = rest.split_at_checked(6)?;
    let stream = Stream::from_bytes(stream)?;
    // The time parses only when it holds no `"` or `\`: no key or escape hides in it.
    let time = rest.strip_prefix(TIME)?.strip_suffix(b"\"}")?;
    Some((stream, parse_rfc3339(time)?))
}

/// The keys read from a line's object, as found.
#[derive(Default)]
struct Fields {
    log: Option<LogValue>,
    stream: Option<RawString>,
    time: Option<RawString>,
}

/// The [`DockerLine`] of a line whose `log` value is `log`.
fn docker_line<'a>(line: &'a [u8], scratch: &'a [u8], log: LogValue, stream: Option<Stream>, time: Option<Nanos>) -> DockerLine<'a> {
    let (log, complete, escaped) = match log {
        LogValue::Borrowed { start, end, newline, escaped } => (&line[start..end], newline, escaped),
        LogValue::Scratch { from, newline, escaped } => (&scratch[from..], newline, escaped),
    };
    DockerLine { log, escaped, complete, stream, time }
}

/// A string token: the bytes between its quotes, and whether any escape occurs.
#[derive(Debug, Clone, Copy)]
struct RawString {
    start: usize,
    end: usize,
    /// Offset of the first backslash, if any.
    first_escape: Option<usize>,
}

impl RawString {
    /// The content when it has no escapes.
    fn plain<'a>(&self, s: &'a [u8]) -> Option<&'a [u8]> {
        match self.first_escape {
            None => Some(&s[self.start..self.end]),
            Some(_) => None,
        }
    }
}

/// Where the `log` value lives, without its trailing newline, and in which form.
#[derive(Debug, Clone, Copy)]
enum LogValue {
    /// In the line itself: no escapes, or only the final `\n` (or, escaped, nothing
    /// to rewrite).
    Borrowed { start: usize, end: usize, newline: bool, escaped: bool },
    /// In the scratch buffer, from `from` to its end.
    Scratch { from: usize, newline: bool, escaped: bool },
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Result<(), Malformed> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// Reads one `key: value` of the object into `fields`; the cursor at or before
    /// the key.
    fn field(&mut self, fields: &mut Fields, scratch: &mut Vec<u8>, form: Form) -> Result<(), Malformed> {
        self.skip_ws();
        let key = self.string()?;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        match key.plain(self.s) {
            Some(b"log") => fields.log = Some(self.log_value(scratch, form)?),
            Some(b"stream") => fields.stream = Some(self.string()?),
            Some(b"time") => fields.time = Some(self.string()?),
            _ => self.skip_value()?,
        }
        Ok(())
    }

    /// Scans the `log` string, the cursor on its opening quote, into the form asked
    /// for.
    fn log_value(&mut self, scratch: &mut Vec<u8>, form: Form) -> Result<LogValue, Malformed> {
        match form {
            Form::Escaped => self.log_passed(scratch),
            Form::Unescaped => self.log_string(scratch),
        }
    }

    /// Scans a string token; the cursor must be on its opening quote.
    fn string(&mut self) -> Result<RawString, Malformed> {
        self.expect(b'"')?;
        let start = self.i;
        let mut first_escape = None;
        loop {
            let rest = &self.s[self.i..];
            let at = memchr::memchr2(b'"', b'\\', rest).ok_or(Malformed)?;
            self.i += at;
            if self.s[self.i] == b'"' {
                let end = self.i;
                self.i += 1;
                return Ok(RawString { start, end, first_escape });
            }
            first_escape.get_or_insert(self.i);
            self.i += 2; // the backslash and the escaped character
            if self.i > self.s.len() {
                return Err(Malformed);
            }
        }
    }

    /// Scans the `log` string, the cursor on its opening quote. The usual value —
    /// no escapes, or only the final `\n` — stays in the line; anything else is
    /// unescaped into `scratch` in the same pass that finds its end.
    fn log_string(&mut self, scratch: &mut Vec<u8>) -> Result<LogValue, Malformed> {
        self.expect(b'"')?;
        let start = self.i;
        let mut at = start + memchr::memchr2(b'"', b'\\', &self.s[start..]).ok_or(Malformed)?;
        if self.s[at] == b'"' {
            self.i = at + 1;
            return Ok(LogValue::Borrowed { start, end: at, newline: false, escaped: false });
        }
        if self.s.get(at + 1..at + 3) == Some(b"n\"") {
            self.i = at + 3;
            return Ok(LogValue::Borrowed { start, end: at, newline: true, escaped: false });
        }
        let from = scratch.len();
        scratch.extend_from_slice(&self.s[start..at]);
        at = unescape_run(self.s, at, scratch)?;
        if at == self.s.len() {
            return Err(Malformed); // no closing quote
        }
        self.i = at + 1;
        let newline = scratch.len() > from && scratch.last() == Some(&b'\n');
        if newline {
            scratch.pop();
        }
        Ok(LogValue::Scratch { from, newline, escaped: false })
    }

    /// Scans the `log` string, the cursor on its opening quote, passing it through in
    /// the event's escaping; a line that is not UTF-8 has it unescaped instead.
    fn log_passed(&mut self, scratch: &mut Vec<u8>) -> Result<LogValue, Malformed> {
        let quote = self.i;
        self.expect(b'"')?;
        let start = self.i;
        let from = scratch.len();
        let (value, end) = match passthrough::pass_through(self.s, start, scratch)? {
            (Passed::NotUtf8, _) => {
                self.i = quote;
                return self.log_string(scratch);
            }
            (Passed::Borrowed { end, newline }, at) => (LogValue::Borrowed { start, end, newline, escaped: true }, at),
            (Passed::Scratch { newline }, at) => (LogValue::Scratch { from, newline, escaped: true }, at),
        };
        self.i = end + 1;
        Ok(value)
    }

    /// Skips any JSON value without checking its inner grammar closely.
    fn skip_value(&mut self) -> Result<(), Malformed> {
        match self.peek().ok_or(Malformed)? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => self.skip_nested(),
            _ => {
                let n = self.s[self.i..]
                    .iter()
                    .take_while(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                    .count();
                if n == 0 {
                    return Err(Malformed);
                }
                self.i += n;
                Ok(())
            }
        }
    }

    fn skip_nested(&mut self) -> Result<(), Malformed> {
        let mut depth = 0usize;
        loop {
            match self.peek().ok_or(Malformed)? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// Unescapes the content of a JSON string (without its quotes) onto `out`: the
/// inverse of the event's escaping, so what an escaped event's message
/// ([`crate::event::Event::escaped`]) stands for.
pub fn unescape(s: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
    match unescape_run(s, 0, out)? {
        end if end == s.len() => Ok(()),
        _ => Err(Malformed), // a bare quote
    }
}

/// Unescapes JSON string content from `s[at]` onto `out`, up to a closing quote or
/// the end of `s`; returns where it stopped.
fn unescape_run(s: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, Malformed> {
    let mut at = copy_plain(s, at, out);
    while s.get(at) == Some(&b'\\') {
        // The two-byte escapes straight from a table; `\u` the long way.
        let next = match s.get(at + 1).map(|&c| SIMPLE_ESCAPES[c as usize]) {
            Some(c) if c != 0 => {
                out.push(c);
                at + 2
            }
            _ => unescape_one(s, at, out)?,
        };
        at = copy_plain(s, next, out);
    }
    Ok(at)
}

/// Copies `s[from..]` onto `out` up to the first `"` or `\`; returns where that is
/// (`s.len()`: neither follows). On x86-64, 16 bytes at a time with SSE2, each block
/// stored whole and kept up to the special: escape-dense values (JSON logs, full of
/// `\"`) cost no call per run.
fn copy_plain(s: &[u8], mut i: usize, out: &mut Vec<u8>) -> usize {
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= s.len() {
        let block: &[u8; 16] = s[i..i + 16].try_into().expect("16 bytes");
        let mask = quote_or_backslash16(block);
        let keep = if mask == 0 { 16 } else { mask.trailing_zeros() as usize };
        crate::event::encode::put16(out, block, keep);
        i += keep;
        if keep < 16 {
            return i;
        }
    }
    let run = memchr::memchr2(b'"', b'\\', &s[i..]).unwrap_or(s.len() - i);
    out.extend_from_slice(&s[i..i + run]);
    i + run
}

/// Bit `k` set when byte `k` of the 16 is `"` or `\`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn quote_or_backslash16(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86-64 baseline; the load reads the 16 bytes of the
    // array, and `loadu` has no alignment requirement.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(quote, backslash)) as u32
    }
}

/// What each two-byte escape `\c` stands for, by `c` (0: not one of them).
static SIMPLE_ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t[b'n' as usize] = b'\n';
    t[b'r' as usize] = b'\r';
    t[b't' as usize] = b'\t';
    t
};

/// Decodes the escape at `s[at]` (a backslash) onto `out`; returns where it ends.
/// A lone UTF-16 surrogate becomes U+FFFD, as Go's decoder does.
fn unescape_one(s: &[u8], at: usize, out: &mut Vec<u8>) -> Result<usize, Malformed> {
    let c = match *s.get(at + 1).ok_or(Malformed)? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let (ch, used) = unicode_escape(&s[at + 2..])?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            return Ok(at + 2 + used);
        }
        _ => return Err(Malformed),
    };
    out.push(c);
    Ok(at + 2)
}

/// Reads the 4 hex digits after `\u` (and a low surrogate's own escape if one follows a
/// high surrogate). Returns the character and how many bytes were used.
#[inline(always)]
fn unicode_escape(s: &[u8]) -> Result<(char, usize), Malformed> {
    let hi = hex4(s)?;
    if !(0xD800..0xE000).contains(&hi) {
        return Ok((char::from_u32(hi).ok_or(Malformed)?, 4));
    }
    if hi < 0xDC00 && s.get(4..6) == Some(b"\\u") {
        if let Ok(lo) = hex4(&s[6..]) {
            if (0xDC00..0xE000).contains(&lo) {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Ok((char::from_u32(c).ok_or(Malformed)?, 10));
            }
        }
    }
    Ok((char::REPLACEMENT_CHARACTER, 4))
}

#[inline(always)]
fn hex4(s: &[u8]) -> Result<u32, Malformed> {
    let digits: [u8; 4] = s.get(..4).ok_or(Malformed)?.try_into().expect("4 bytes");
    let [a, b, c, d] = digits.map(|c| HEX_DIGITS[c as usize]);
    // Any byte that is not a hex digit has 0x10 set, and sets it in the OR.
    if (a | b | c | d) & 0x10 != 0 {
        return Err(Malformed);
    }
    Ok(u32::from(a) << 12 | u32::from(b) << 8 | u32::from(c) << 4 | u32::from(d))
}

/// Each byte's value as a hex digit, or 0x10 when it is not one.
static HEX_DIGITS: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        t[b'A' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(line: &str) -> (Vec<u8>, bool, Option<Stream>, Option<Nanos>) {
        let mut scratch = Vec::new();
        let d = parse(line.as_bytes(), &mut scratch).unwrap();
        (d.log.to_vec(), d.complete, d.stream, d.time)
    }

    #[test]
    fn the_usual_line_is_borrowed() {
        let line = br#"{"log":"hello world\n","stream":"stderr","time":"2019-01-01T11:11:11.111111111Z"}"#;
        let mut scratch = Vec::new();
        let d = parse(line, &mut scratch).unwrap();
        assert_eq!(d.log, b"hello world");
        assert!(d.complete);
        assert_eq!(d.stream, Some(Stream::Stderr));
        assert!(d.time.is_some());
        assert!(scratch.is_empty(), "no copy for the common case");
    }

    #[test]
    fn any_field_order_and_extra_fields() {
        let (log, complete, stream, time) = parse_ok(
            r#" { "time" : "2019-01-01T11:11:11Z", "attrs":{"a":[1,{"b":"}"}]}, "n":-1.5e3, "t":true, "stream":"stdout", "log" : "x" } "#,
        );
        assert_eq!(log, b"x");
        assert!(!complete, "no trailing newline: a partial piece");
        assert_eq!(stream, Some(Stream::Stdout));
        assert_eq!(time, Some(1_546_341_071_000_000_000));
    }

    #[test]
    fn every_escape() {
        let (log, complete, ..) =
            parse_ok(r#"{"log":"q\" b\\ s\/ \b\f\r\t \u003cdiv\u003e \u0026 \u00e9 \ud83d\ude00 \u0000\n"}"#);
        assert_eq!(log, "q\" b\\ s/ \u{8}\u{c}\r\t <div> & é 😀 \u{0}".as_bytes());
        assert!(complete);
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let (log, ..) = parse_ok(r#"{"log":"a\ud800b\udc00c\ud800\u0041"}"#);
        assert_eq!(log, "a\u{FFFD}b\u{FFFD}c\u{FFFD}A".as_bytes());
    }

    /// The block copy between escapes: an escape, a quote or the end at every position
    /// of values from 0 to 50 bytes decodes as serde_json decodes it.
    #[test]
    fn escapes_at_every_position_decode_as_serde_does() {
        for len in 0..50 {
            for pos in 0..len {
                for escape in ["\\\"", "\\\\", "\\n", "\\u00e9", "\\/"] {
                    let mut value = "a".repeat(len);
                    value.insert_str(pos, escape);
                    value.insert_str(0, "\\t");
                    let line = format!("{{\"log\":\"{value}\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-06T10:00:00.000000000Z\"}}");
                    let want: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let mut scratch = Vec::new();
                    let got = parse(line.as_bytes(), &mut scratch).unwrap();
                    let want = want["log"].as_str().unwrap();
                    assert_eq!(got.log, want.strip_suffix('\n').unwrap().as_bytes(), "{line}");
                    assert!(got.complete);
                }
            }
        }
    }

    /// `log` values dense in escapes of every kind (`\"` runs, `\\` before `n` or
    /// `"`, `\u` and surrogate pairs, escapes cut by a block's end), ending anywhere in
    /// a block and followed by fields with escapes of their own: as serde_json decodes
    /// them, through `parse` and through the escape-at-a-time path by itself.
    #[test]
    fn dense_escapes_decode_as_serde_does_on_every_path() {
        let alphabet: [&str; 14] = ["\\\"", "\\\\", "\\n", "\\t", "\\r", "\\b", "\\f", "\\/", "\\u003c", "\\ud83d\\ude00", "a", "é", "{\\\"k\\\":1}", "plain text "];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for case in 0..4000 {
            let mut value = String::new();
            let len = case % 70;
            while value.len() < len {
                crate::xorshift(&mut state);
                // Every other case only the escapes whole blocks take.
                let choices = if case % 2 == 0 { 8 } else { alphabet.len() };
                let pick = (state % choices as u64) as usize;
                value.push_str(alphabet[if case % 2 == 0 && pick == 1 { 0 } else { pick }]);
            }
            let newline = if case % 3 == 0 { "" } else { "\\n" };
            let line = format!("{{\"log\":\"{value}{newline}\",\"attrs\":{{\"x\":\"\\\"\\\\\\u0041\"}},\"stream\":\"stdout\"}}");
            let want: serde_json::Value = serde_json::from_str(&line).unwrap();
            let want = want["log"].as_str().unwrap();
            let mut scratch = Vec::new();
            let got = parse(line.as_bytes(), &mut scratch).unwrap();
            assert_eq!(got.log, want.strip_suffix('\n').unwrap_or(want).as_bytes(), "{line}");
            assert_eq!(got.complete, want.ends_with('\n'), "{line}");
            // The same value (after `{"log":"`) through the escape-at-a-time path alone.
            let body = line.as_bytes();
            let mut plain = Vec::new();
            let mut at = copy_plain(body, 8, &mut plain);
            while body[at] == b'\\' {
                let next = unescape_one(body, at, &mut plain).unwrap();
                at = copy_plain(body, next, &mut plain);
            }
            assert_eq!(plain, want.as_bytes(), "escape at a time: {line}");
        }
    }

    /// Lines starting as Docker's own (the shortcut) read exactly as the general
    /// scanner reads them (the same line after a space), in both forms: the usual
    /// ending, and endings that differ from it by a little — another key, another
    /// order, spaces, another stream, a time that does not parse or hides a key, an
    /// escape in the stream, junk after the object.
    #[test]
    fn the_usual_layout_reads_as_the_general_scanner_reads_it() {
        let time = "2026-12-07T04:06:42.123456789Z";
        let endings = [
            format!(r#","stream":"stdout","time":"{time}"}}"#),
            format!(r#","stream":"stderr","time":"{time}"}}"#),
            r#","stream":"stdout","time":"2026-12-07T04:06:42+02:00"}"#.to_string(),
            format!(r#","stream":"stdin","time":"{time}"}}"#),
            format!(r#","stream":"stdout","time":"{time}" }}"#),
            format!(r#", "stream":"stdout","time":"{time}"}}"#),
            format!(r#","stream":"stdout","time":"{time}"}} "#),
            format!(r#","stream":"stdout","time":"{time}"}}x"#),
            format!(r#","stream":"stdout","time":"{time}","attrs":{{"a":"b"}}}}"#),
            format!(r#","stream":"stdout","attrs":{{"a":"b"}},"time":"{time}"}}"#),
            format!(r#","time":"{time}","stream":"stdout"}}"#),
            r#","stream":"stdout","time":"yesterday"}"#.to_string(),
            r#","stream":"stdout","time":"x","log":"second"}"#.to_string(),
            r#","stream":"stdout","time":"2026-12-07T04:06:42Z","log":"y"}"#.to_string(),
            format!(r#","stream":"std\u006fut","time":"{time}"}}"#),
            r#","stream":"stdout"}"#.to_string(),
            r#"}"#.to_string(),
            r#","stream":"stdout","time":""#.to_string(),
            String::new(),
        ];
        for value in [r#"hello\n"#, r#"a \"quoted\" \u003cb\u003e é\n"#, "partial", r#"\u000a"#, r#"C:\\n"#] {
            for ending in &endings {
                let line = format!(r#"{{"log":"{value}"{ending}"#);
                for form in [Form::Unescaped, Form::Escaped] {
                    let (mut scratch, mut general_scratch) = (Vec::new(), Vec::new());
                    let general = format!(" {line}");
                    let got = parse_as(line.as_bytes(), &mut scratch, form).map(|d| (d.log.to_vec(), d.escaped, d.complete, d.stream, d.time));
                    let want = parse_as(general.as_bytes(), &mut general_scratch, form).map(|d| (d.log.to_vec(), d.escaped, d.complete, d.stream, d.time));
                    assert_eq!(got, want, "{line} {form:?}");
                }
            }
        }
        // The usual line is read whole by the shortcut, time and stream included.
        let line = format!(r#"{{"log":"hello\n","stream":"stderr","time":"{time}"}}"#);
        let mut scratch = Vec::new();
        let d = parse_as(line.as_bytes(), &mut scratch, Form::Escaped).unwrap();
        assert_eq!((d.log, d.complete, d.stream, d.time), (&b"hello"[..], true, Some(Stream::Stderr), parse_rfc3339(time.as_bytes())));
    }

    #[test]
    fn escaped_backslash_before_n_is_not_a_newline() {
        let (log, complete, ..) = parse_ok(r#"{"log":"path C:\\n"}"#);
        assert_eq!(log, b"path C:\\n");
        assert!(!complete);
    }

    #[test]
    fn a_lone_newline_completes_a_message() {
        let (log, complete, ..) = parse_ok(r#"{"log":"\n","stream":"stdout","time":"2019-01-01T11:11:11Z"}"#);
        assert_eq!(log, b"");
        assert!(complete);
    }

    #[test]
    fn missing_stream_and_time_still_decode() {
        let (log, complete, stream, time) = parse_ok(r#"{"log":"only log\n"}"#);
        assert_eq!((&log[..], complete, stream, time), (&b"only log"[..], true, None, None));
        let (_, _, stream, time) = parse_ok(r#"{"log":"x\n","stream":"console","time":"yesterday"}"#);
        assert_eq!((stream, time), (None, None));
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            "", "{", "{}", "[]", "not json", r#"{"log":1}"#, r#"{"stream":"stdout"}"#, r#"{"log":"x"} junk"#,
            r#"{"log":"unterminated}"#, r#"{"log":"bad \q escape"}"#, r#"{"log":"\u12"}"#, r#"{"log":"x",}"#,
            r#"{"log":"x" "stream":"stdout"}"#, r#"{"log":"x","a":}"#, r#"{"log":"x\"#, r#"{"a":{"b":[}"#,
        ] {
            let mut scratch = Vec::new();
            assert!(parse(bad.as_bytes(), &mut scratch).is_err(), "{bad}");
        }
    }
}
