//! Shared helpers: where the fixtures are, and decoding a whole input in memory the
//! way `replay` does (lines → decoder → encoder), with read time fixed at 0 so that
//! output is reproducible.

use std::io::Cursor;
use std::path::PathBuf;

use logferry::decode::{DecodeOptions, DecodeStats, FileDecoder};
use logferry::event::{EventEncoder, MessageFormat};
use logferry::tail::lines::{LineKind, LineReader};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Decodes `input` as one file; returns the JSON lines and the counters.
pub fn decode_to_json(input: &[u8], opts: &DecodeOptions, format: MessageFormat) -> (Vec<u8>, DecodeStats) {
    decode_to_json_with(input, opts, format, None)
}

/// [`decode_to_json`], grouping stack traces by `multiline`.
pub fn decode_to_json_with(input: &[u8], opts: &DecodeOptions, format: MessageFormat, multiline: Option<&logferry::decode::Multiline>) -> (Vec<u8>, DecodeStats) {
    let mut decoder = FileDecoder::new(opts).with_multiline(multiline);
    let mut encoder = EventEncoder::new(format);
    let mut out = Vec::new();
    let mut reader = LineReader::new(Cursor::new(input), opts.max_message_bytes + 65536, 0);
    let mut emit = |ev: &logferry::event::Event<'_>| encoder.encode(ev, b"", &mut out);
    while let Some(line) = reader.next_line().expect("reading memory cannot fail") {
        match line.kind {
            LineKind::Overlong => decoder.overlong_line(line.bytes, line.offset, 0, &mut emit),
            _ => decoder.line(line.bytes, line.offset, 0, &mut emit),
        }
    }
    if let Some(line) = reader.take_unterminated() {
        decoder.line(line.bytes, line.offset, 0, &mut emit);
    }
    decoder.finish(&mut emit);
    (out, decoder.stats)
}

/// Shows the first differing line of two JSON-lines outputs.
pub fn assert_same_lines(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<_>, Vec<_>) = (got.split(|&c| c == b'\n').collect(), want.split(|&c| c == b'\n').collect());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if a != b {
            let cut = |s: &[u8]| String::from_utf8_lossy(&s[..s.len().min(400)]).into_owned();
            panic!("{what}: line {} differs\n got: {}\nwant: {}", i + 1, cut(a), cut(b));
        }
    }
    panic!("{what}: {} lines, expected {}", g.len(), w.len());
}
