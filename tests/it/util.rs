//! Shared helpers: where the fixtures are, and decoding a whole input in memory the
//! way `replay` does (lines → decoder → encoder), with read time fixed at 0 so that
//! output is reproducible.

use std::path::PathBuf;

use logferry::decode::{DecodeOptions, DecodeStats, FileDecoder, Window};
use logferry::event::{EventEncoder, MessageFormat};
use logferry::tail::lines::{LineKind, LineReader};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Decodes `input` as one file; returns the JSON lines and the counters.
pub fn decode_to_json(input: &[u8], opts: &DecodeOptions, format: MessageFormat) -> (Vec<u8>, DecodeStats) {
    decode_to_json_with(input, opts, format, None)
}

/// [`decode_to_json`], grouping stack traces by `multiline`. Decoded the way `replay`
/// and the follower do — a split message's pieces left in the read buffer, a read of
/// 4 KiB at a time so that refills move them — and checked against each line decoded
/// alone (its pieces copied), which must give the same bytes and counters.
pub fn decode_to_json_with(input: &[u8], opts: &DecodeOptions, format: MessageFormat, multiline: Option<&logferry::decode::Multiline>) -> (Vec<u8>, DecodeStats) {
    let kept = decode_with(input, opts, format, multiline, true);
    let alone = decode_with(input, opts, format, multiline, false);
    assert_same_lines(&kept.0, &alone.0, "pieces left in the read buffer against lines decoded alone");
    assert_eq!(kept.1, alone.1, "the counters, pieces left in the read buffer against lines decoded alone");
    kept
}

fn decode_with(input: &[u8], opts: &DecodeOptions, format: MessageFormat, multiline: Option<&logferry::decode::Multiline>, in_place: bool) -> (Vec<u8>, DecodeStats) {
    let mut decoder = FileDecoder::new(opts).with_multiline(multiline);
    let mut encoder = EventEncoder::new(format);
    let mut out = Vec::new();
    let mut reader = LineReader::new(Trickle(input), opts.max_message_bytes + 65536, 0);
    let mut emit = |ev: &logferry::event::Event<'_>| encoder.encode(ev, b"", &mut out);
    let let_go = |reader: &mut LineReader<Trickle<'_>>, decoder: &mut FileDecoder| {
        let (kept, offset) = reader.kept();
        decoder.detach(Window { bytes: kept, offset });
        reader.keep_from(None);
    };
    while let Some(line) = reader.next_line().expect("reading memory cannot fail") {
        let overlong = line.kind == LineKind::Overlong;
        match line.kind {
            LineKind::Overlong => decoder.overlong_line(line.bytes, line.offset, 0, &mut emit),
            _ if in_place => decoder.line_in(Window { bytes: line.window, offset: line.window_offset }, line.offset, 0, &mut emit),
            _ => decoder.line(line.bytes, line.offset, 0, &mut emit),
        }
        if overlong {
            let_go(&mut reader, &mut decoder);
        }
        reader.keep_from(decoder.keep_from());
    }
    let_go(&mut reader, &mut decoder);
    if let Some(line) = reader.take_unterminated() {
        decoder.line(line.bytes, line.offset, 0, &mut emit);
    }
    decoder.finish(&mut emit);
    (out, decoder.stats)
}

/// Returns at most 4 KiB per read.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(4096).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
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
