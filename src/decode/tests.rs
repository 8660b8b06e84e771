//! `FileDecoder` as a whole: detection, raw lines, flushing rules, checkpoints.

use std::time::Duration;

use super::*;

fn collect(dec: &mut FileDecoder, lines: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for l in lines {
        dec.line(l, offset, 42, &mut |e| out.push((e.message.to_vec(), e.partial)));
        offset += l.len() as u64 + 1;
    }
    out
}

#[test]
fn detects_docker_then_keeps_it() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let out = collect(&mut dec, &[br#"{"log":"a\n"}"#, b"2026-11-21T10:00:00Z stdout F cri here", br#"{"log":"b\n"}"#]);
    assert_eq!(dec.format(), Some(Format::Docker));
    assert_eq!(out.len(), 3);
    assert_eq!(dec.stats.malformed, 1, "a CRI line in a Docker file is raw");
}

#[test]
fn a_forced_format_makes_the_other_raw() {
    let opts = DecodeOptions { format: FormatChoice::Cri, ..DecodeOptions::default() };
    let mut dec = FileDecoder::new(&opts);
    let out = collect(&mut dec, &[br#"{"log":"a\n"}"#]);
    assert_eq!(out, vec![(br#"{"log":"a\n"}"#.to_vec(), false)]);
    assert_eq!(dec.stats.malformed, 1);
}

#[test]
fn raw_lines_get_the_read_time() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let mut times = Vec::new();
    dec.line(b"garbage", 0, 42, &mut |e| times.push(e.time));
    assert_eq!(times, vec![42]);
}

/// The follower says how long it has been caught up with the file's end. While it
/// is not caught up (`None`), a pending piece is never flushed, however long it has
/// waited: its continuation may be in the unread part of the file.
#[test]
fn stale_pieces_flush_only_when_caught_up_and_quiet() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let mut out = Vec::new();
    dec.line(b"2026-11-21T10:00:00Z stdout P first half ", 0, 0, &mut |e| out.push(e.message.to_vec()));
    let timeout = Duration::from_secs(5);
    assert!(!dec.flush_stale(None, timeout, &mut |_| panic!("not caught up: must wait")));
    assert!(!dec.flush_stale(Some(Duration::from_secs(4)), timeout, &mut |_| panic!("not quiet long enough")));
    dec.line(b"2026-11-21T10:00:01Z stdout F second half", 50, 0, &mut |e| out.push(e.message.to_vec()));
    assert_eq!(out, vec![b"first half second half".to_vec()]);

    dec.line(b"2026-11-21T10:00:02Z stderr P never finished", 100, 0, &mut |_| {});
    let mut flushed = Vec::new();
    assert!(dec.flush_stale(Some(timeout), timeout, &mut |e| flushed.push((e.message.to_vec(), e.partial))));
    assert_eq!(flushed, vec![(b"never finished".to_vec(), true)]);
    assert!(!dec.flush_stale(Some(timeout), timeout, &mut |_| panic!("nothing left")));
}

#[test]
fn checkpoints_never_point_inside_a_split_message() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let lines: [&[u8]; 4] = [
        b"2026-11-21T10:00:00Z stdout F whole",
        b"2026-11-21T10:00:00Z stderr P start",
        b"2026-11-21T10:00:00Z stdout P other",
        b"2026-11-21T10:00:00Z stderr F end",
    ];
    let mut offset = 0u64;
    let mut safe = Vec::new();
    for l in lines {
        dec.line(l, offset, 0, &mut |_| {});
        offset += l.len() as u64 + 1;
        safe.push(dec.checkpoint_offset(offset));
    }
    let starts = [0u64, 36, 72, 108];
    assert_eq!(safe, vec![starts[1], starts[1], starts[1], starts[2]]);
}

/// Docker values pass through escaped, and come out as escaping their unescaped text
/// would write them; a multiline rule set while a split message is pending gets it
/// unescaped, like every later line.
#[test]
fn docker_values_pass_through_escaped_until_a_rule_looks_inside() {
    use crate::event::encode::write_json_string;
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let lines: [&[u8]; 3] = [br#"{"log":"a \"q\" \u003cb\u003e\n"}"#, br#"{"log":"caf\u00e9 \/x\n"}"#, b"{\"log\":\"bad \xff\\n\"}"];
    let mut got = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        dec.line(l, i as u64 * 100, 0, &mut |e| got.push((e.message.to_vec(), e.escaped)));
    }
    let want: Vec<(Vec<u8>, bool)> =
        vec![(br#"a \"q\" <b>"#.to_vec(), true), ("café /x".as_bytes().to_vec(), true), (b"bad \xff".to_vec(), false)];
    assert_eq!(got, want, "not UTF-8: unescaped, for the encoder to repair");
    let mut quoted = Vec::new();
    write_json_string(&mut quoted, "a \"q\" <b>".as_bytes());
    assert_eq!(&quoted[1..quoted.len() - 1], &got[0].0[..]);

    // A split message pending escaped when a rule arrives.
    dec.line(br#"{"log":"first \"half\" "}"#, 300, 0, &mut |_| panic!("not finished"));
    let rule = multiline::Rule::builtin(multiline::Parser::Java);
    let budget = Arc::new(multiline::GroupBudget::new(1 << 20));
    dec.set_multiline(Some(&Multiline { rule: Arc::new(rule), max_lines: 100, flush_timeout: Duration::from_secs(1), budget }));
    let mut out = Vec::new();
    dec.line(br#"{"log":"second\n"}"#, 400, 0, &mut |e| out.push((e.message.to_vec(), e.escaped)));
    dec.line(br#"{"log":"next \"one\"\n"}"#, 500, 0, &mut |e| out.push((e.message.to_vec(), e.escaped)));
    dec.finish(&mut |e| out.push((e.message.to_vec(), e.escaped)));
    assert_eq!(out, vec![(br#"first "half" second"#.to_vec(), false), (br#"next "one""#.to_vec(), false)]);
}

/// A container log file for [`messages_left_in_place_decode_as_lines_alone`]: each
/// message cut into pieces of `cut` bytes (Docker: at characters, as Go writes only
/// UTF-8; CRI: anywhere), a line of the other stream now and then among them, and a
/// malformed line; Docker values escaped as Go does (`<` as `\u003c`: rewritten).
fn split_log(docker: bool, messages: &[(bool, String, usize, bool)]) -> Vec<u8> {
    let mut file = Vec::new();
    let line = |file: &mut Vec<u8>, stderr: bool, piece: &[u8], last: bool| {
        let stream = if stderr { "stderr" } else { "stdout" };
        if docker {
            let mut text = String::from_utf8(piece.to_vec()).unwrap();
            if last {
                text.push('\n');
            }
            let value = serde_json::to_string(&text).unwrap().replace('<', "\\u003c").replace('&', "\\u0026");
            file.extend_from_slice(format!(r#"{{"log":{value},"stream":"{stream}","time":"2026-11-21T10:00:00.000000001Z"}}"#).as_bytes());
        } else {
            file.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z {stream} {} ", if last { 'F' } else { 'P' }).as_bytes());
            file.extend_from_slice(piece);
        }
        file.push(b'\n');
    };
    for (stderr, text, cut, interleave) in messages {
        let bytes = text.as_bytes();
        let mut at = 0;
        loop {
            let mut end = (at + cut.max(&1)).min(bytes.len());
            while docker && !text.is_char_boundary(end) {
                end += 1;
            }
            line(&mut file, *stderr, &bytes[at..end], end == bytes.len());
            if *interleave && end < bytes.len() {
                line(&mut file, !stderr, b"between", true);
            }
            if end == bytes.len() {
                break;
            }
            at = end;
        }
        if *interleave {
            file.extend_from_slice(b"not a log line\n");
        }
    }
    file
}

type Decoded = (Stream, Vec<u8>, bool, bool, bool, String);

fn decoded(e: &Event<'_>, encoder: &mut crate::event::EventEncoder) -> Decoded {
    let mut json = Vec::new();
    encoder.encode(e, b"", &mut json);
    (e.stream, e.message.to_vec(), e.escaped, e.truncated, e.partial, String::from_utf8(json).unwrap())
}

proptest::proptest! {
    /// The pieces of split messages left in the reader's buffer (and in the decoder's
    /// own bytes, for rewritten Docker values) give exactly the events, JSON and counts
    /// of decoding each line alone, whatever the reads (the kept bytes moved by each
    /// refill), where the reader lets go of them (a turn's end), the cap and the
    /// interleaving of the streams.
    #[test]
    fn messages_left_in_place_decode_as_lines_alone(
        docker in proptest::bool::ANY,
        messages in proptest::collection::vec(
            (proptest::bool::ANY, "[a-z <&\"\\\\é日😀]{0,120}", 1usize..40, proptest::bool::weighted(0.3)),
            1..20,
        ),
        read_size in 1usize..400,
        let_go in proptest::collection::vec(proptest::bool::weighted(0.1), 200),
        max_message_bytes in proptest::prop_oneof![proptest::strategy::Just(1usize << 20), 20usize..80],
    ) {
        use crate::tail::lines::{LineReader, Trickle};
        let file = split_log(docker, &messages);
        let opts = DecodeOptions { max_message_bytes, ..DecodeOptions::default() };
        let mut encoder = crate::event::EventEncoder::default();

        let mut alone = FileDecoder::new(&opts);
        let (mut want, mut offset) = (Vec::new(), 0u64);
        for line in file.split_inclusive(|&b| b == b'\n') {
            alone.line(&line[..line.len() - 1], offset, 0, &mut |e| want.push(decoded(e, &mut encoder)));
            offset += line.len() as u64;
        }
        alone.finish(&mut |e| want.push(decoded(e, &mut encoder)));

        let mut kept = FileDecoder::new(&opts);
        let mut reader = LineReader::new(Trickle(&file, read_size), 1 << 20, 0);
        let (mut got, mut n) = (Vec::new(), 0);
        while let Some(line) = reader.next_line().unwrap() {
            let window = Window { bytes: line.window, offset: line.window_offset };
            kept.line_in(window, line.offset, 0, &mut |e| got.push(decoded(e, &mut encoder)));
            reader.keep_from(kept.keep_from());
            if let_go[n % let_go.len()] {
                let (bytes, offset) = reader.kept();
                kept.detach(Window { bytes, offset });
                reader.keep_from(None);
            }
            n += 1;
        }
        let (bytes, offset) = reader.kept();
        kept.detach(Window { bytes, offset });
        reader.keep_from(None);
        kept.finish(&mut |e| got.push(decoded(e, &mut encoder)));
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(kept.stats, alone.stats);
    }
}

/// A split message read whole into the reader's buffer comes out in pieces there, the
/// rewritten Docker values among them in the decoder's own bytes.
#[test]
fn a_split_message_read_at_once_is_not_copied() {
    use crate::tail::lines::LineReader;
    for docker in [true, false] {
        let text = "first <part> & second part, third part".to_string();
        let file = split_log(docker, &[(false, text.clone(), 10, false)]);
        let mut dec = FileDecoder::new(&DecodeOptions::default());
        let mut reader = LineReader::new(std::io::Cursor::new(file), 1 << 20, 0);
        let mut got = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            let window = Window { bytes: line.window, offset: line.window_offset };
            dec.line_in(window, line.offset, 0, &mut |e| got.push((e.message.whole().is_none(), e.text(&mut Vec::new()).to_vec())));
            reader.keep_from(dec.keep_from());
        }
        assert_eq!(got, vec![(true, text.into_bytes())], "docker: {docker}");
        assert_eq!(dec.stats.rejoined, 1);
    }
}
