//! Property tests for reassembly and robustness.
//!
//! - Random messages (0 B – 200 KiB of arbitrary UTF-8), split the way Docker's
//!   json-file driver and containerd split them, with the pieces of stdout and stderr
//!   randomly interleaved, come back identical and in order per stream.
//! - Oversized messages come back as a character-boundary prefix, flagged.
//! - Arbitrary bytes, and valid lines with bytes flipped, never panic and always
//!   encode to valid JSON lines.
//!
//! Failing seeds are kept in `tests/it/proptest-regressions/` and committed.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use logferry::decode::{DecodeOptions, FormatChoice, Oversize};
use logferry::event::MessageFormat;

use crate::util::decode_to_json;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

/// A message without newlines: a random pattern of characters repeated up to a
/// random length, so that 200 KiB messages are cheap to generate.
fn message() -> impl Strategy<Value = String> {
    let len = prop_oneof![4 => 0usize..300, 2 => 300usize..20_000, 1 => 20_000usize..200 * 1024];
    let pattern = prop::collection::vec(any::<char>().prop_filter("no newline", |c| *c != '\n'), 1..40);
    (pattern, len).prop_map(|(pattern, len)| {
        let mut s = String::with_capacity(len + 4);
        for c in pattern.iter().cycle() {
            if s.len() >= len {
                break;
            }
            s.push(*c);
        }
        s
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

fn messages() -> impl Strategy<Value = Vec<(Stream, String)>> {
    prop::collection::vec((prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)], message()), 1..8)
}

/// Go's `encoding/json` string escaping as Docker writes it.
fn go_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap();
    quoted[1..quoted.len() - 1]
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Docker's copier: the line and its newline cut every `limit` bytes — at a character
/// boundary here, since Docker's encoder would replace a cut character with U+FFFD.
fn docker_pieces(msg: &str, limit: usize) -> Vec<String> {
    let data = format!("{msg}\n");
    let mut out = Vec::new();
    let mut rest = data.as_str();
    while !rest.is_empty() {
        let mut n = limit.min(rest.len());
        while !rest.is_char_boundary(n) {
            n -= 1;
        }
        if n == 0 {
            n = rest.chars().next().unwrap().len_utf8();
        }
        // The stream marker comes first so that no message text can be mistaken for it.
        out.push(format!(r#"{{"stream":"{{S}}","log":"{}","time":"2026-11-21T10:00:00.000000001Z"}}"#, go_escape(&rest[..n])));
        rest = &rest[n..];
    }
    out
}

/// containerd: cut every `limit` bytes exactly, `P` on all but the last piece.
fn cri_pieces(msg: &str, limit: usize) -> Vec<Vec<u8>> {
    let b = msg.as_bytes();
    if b.is_empty() {
        return vec![b"2026-11-21T10:00:00.000000001Z {S} F ".to_vec()];
    }
    let chunks: Vec<&[u8]> = b.chunks(limit).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut l = format!("2026-11-21T10:00:00.000000001Z {{S}} {} ", if i == last { 'F' } else { 'P' }).into_bytes();
            l.extend_from_slice(c);
            l
        })
        .collect()
}

/// Lays the pieces of each stream's messages out in one file, interleaving the two
/// streams by `schedule` (true: take the next stderr piece).
fn interleave(msgs: &[(Stream, String)], schedule: &[bool], pieces: impl Fn(&str) -> Vec<Vec<u8>>) -> Vec<u8> {
    let mut queues: [std::collections::VecDeque<Vec<u8>>; 2] = Default::default();
    for (stream, m) in msgs {
        for p in pieces(m) {
            let p = replace_marker(&p, stream.name());
            queues[(*stream == Stream::Stderr) as usize].push_back(p);
        }
    }
    let mut out = Vec::new();
    let mut turn = schedule.iter().cycle();
    while !(queues[0].is_empty() && queues[1].is_empty()) {
        let want = *turn.next().unwrap_or(&false) as usize;
        let q = if queues[want].is_empty() { 1 - want } else { want };
        out.extend_from_slice(&queues[q].pop_front().unwrap());
        out.push(b'\n');
    }
    out
}

fn replace_marker(line: &[u8], stream: &str) -> Vec<u8> {
    let at = line.windows(3).position(|w| w == b"{S}").unwrap();
    [&line[..at], stream.as_bytes(), &line[at + 3..]].concat()
}

/// Decoded messages per stream, in order.
fn decoded(input: &[u8], opts: &DecodeOptions) -> (Vec<String>, Vec<String>, logferry::decode::DecodeStats) {
    let (out, stats) = decode_to_json(input, opts, MessageFormat::String);
    let (mut o, mut e) = (Vec::new(), Vec::new());
    for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).expect("every output line is JSON");
        let m = v["message"].as_str().unwrap().to_string();
        match v["stream"].as_str().unwrap() {
            "stdout" => o.push(m),
            _ => e.push(m),
        }
    }
    (o, e, stats)
}

fn per_stream(msgs: &[(Stream, String)]) -> (Vec<String>, Vec<String>) {
    let pick = |s| msgs.iter().filter(|(st, _)| *st == s).map(|(_, m)| m.clone()).collect();
    (pick(Stream::Stdout), pick(Stream::Stderr))
}

/// `input` decodes to exactly `msgs`, in order per stream, with nothing odd counted.
fn round_trips(input: &[u8], msgs: &[(Stream, String)]) -> Result<(), TestCaseError> {
    let opts = DecodeOptions { max_message_bytes: 1 << 20, ..DecodeOptions::default() };
    let (o, e, stats) = decoded(input, &opts);
    let (want_o, want_e) = per_stream(msgs);
    prop_assert_eq!(o, want_o);
    prop_assert_eq!(e, want_e);
    prop_assert_eq!(stats.malformed + stats.partial + stats.truncated, 0);
    Ok(())
}

fn piece_limit() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(16 * 1024), 1 => 1usize..64]
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn docker_split_messages_come_back_identical(msgs in messages(), schedule in prop::collection::vec(any::<bool>(), 1..16), limit in piece_limit()) {
        let input = interleave(&msgs, &schedule, |m| docker_pieces(m, limit).into_iter().map(String::into_bytes).collect());
        round_trips(&input, &msgs)?;
    }

    #[test]
    fn cri_split_messages_come_back_identical(msgs in messages(), schedule in prop::collection::vec(any::<bool>(), 1..16), limit in piece_limit()) {
        let input = interleave(&msgs, &schedule, |m| cri_pieces(m, limit));
        round_trips(&input, &msgs)?;
    }

    #[test]
    fn oversized_messages_are_cut_at_a_character_boundary(msgs in messages(), max in 1usize..40_000, limit in piece_limit()) {
        let input = interleave(&msgs, &[false], |m| cri_pieces(m, limit));
        let opts = DecodeOptions { max_message_bytes: max, oversize: Oversize::Truncate, format: FormatChoice::Cri };
        let (out, _) = decode_to_json(&input, &opts, MessageFormat::String);
        let events: Vec<serde_json::Value> =
            out.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        let (want_o, want_e) = per_stream(&msgs);
        let want: Vec<&String> = want_o.iter().chain(&want_e).collect();
        prop_assert_eq!(events.len(), msgs.len());
        let mut got: Vec<(String, bool)> = events.iter().filter(|v| v["stream"] == "stdout")
            .chain(events.iter().filter(|v| v["stream"] == "stderr"))
            .map(|v| (v["message"].as_str().unwrap().to_string(), v.get("truncated").is_some())).collect();
        for ((m, truncated), original) in got.drain(..).zip(want) {
            prop_assert!(m.len() <= max);
            prop_assert!(original.starts_with(&m));
            prop_assert_eq!(truncated, original.len() > max);
            if truncated {
                let next = original[m.len()..].chars().next().unwrap().len_utf8();
                prop_assert!(m.len() + next > max, "cut earlier than needed");
            }
        }
    }
}

/// Bytes biased toward the characters the parsers branch on.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => prop::sample::select(b"{}[]\":,\\ \nPFZTu0123456789-+.".to_vec()),
    ];
    prop::collection::vec(byte, 0..2000)
}

fn valid_lines() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"{\"log\":\"a \\u00e9 \\\" b\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-21T10:00:00.1Z\"}\n");
    v.extend_from_slice(b"{\"log\":\"partial\",\"stream\":\"stderr\",\"time\":\"2026-11-21T10:00:00.1Z\"}\n");
    v.extend_from_slice(b"2026-11-21T10:00:00.000000001Z stdout P piece \xe6\x97\n");
    v.extend_from_slice(b"2026-11-21T10:00:00.000000001+02:00 stderr F full\n");
    v
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic(input in hostile_bytes(), max in 1usize..64, format in 0u8..3, drop in any::<bool>()) {
        let opts = DecodeOptions {
            max_message_bytes: max,
            oversize: if drop { Oversize::Drop } else { Oversize::Truncate },
            format: [FormatChoice::Auto, FormatChoice::Docker, FormatChoice::Cri][format as usize],
        };
        for message_format in [MessageFormat::String, MessageFormat::Json] {
            let (out, _) = decode_to_json(&input, &opts, message_format);
            for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(line).is_ok());
            }
        }
    }

    #[test]
    fn valid_lines_with_flipped_bytes_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut input = valid_lines();
        for (at, b) in flips {
            let i = at.index(input.len());
            input[i] = b;
        }
        let (out, stats) = decode_to_json(&input, &DecodeOptions::default(), MessageFormat::String);
        let n = out.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count() as u64;
        prop_assert_eq!(n, stats.events);
        for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            prop_assert!(serde_json::from_slice::<serde_json::Value>(line).is_ok());
        }
    }
}

/// A line of a multiline test: at most 20 KB, so that a group stays under the cap.
fn short_text() -> impl Strategy<Value = String> {
    let len = prop_oneof![4 => 0usize..200, 1 => 200usize..20_000];
    let pattern = prop::collection::vec(any::<char>().prop_filter("no newline", |c| *c != '\n'), 1..20);
    (pattern, len).prop_map(|(pattern, len)| pattern.iter().cycle().take(len).collect())
}

/// Per stream: groups (a `START` line and up to five continuation lines, which begin
/// with a space) and single lines.
fn ml_items() -> impl Strategy<Value = Vec<(Stream, Vec<String>)>> {
    let stream = prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)];
    let item = prop_oneof![
        short_text().prop_map(|t| vec![format!("single {t}")]),
        (short_text(), prop::collection::vec(short_text(), 0..6))
            .prop_map(|(head, rest)| std::iter::once(format!("START {head}")).chain(rest.into_iter().map(|t| format!(" cont {t}"))).collect()),
    ];
    prop::collection::vec((stream, item), 1..10)
}

proptest! {
    #![proptest_config(config(64))]

    /// Random groups of random lines, split as containerd splits them and interleaved
    /// across streams, come back grouped exactly, in order per stream; asking to flush
    /// while the file is not caught up never cuts a group.
    #[test]
    fn multiline_groups_come_back_whole_per_stream(items in ml_items(), schedule in prop::collection::vec(any::<bool>(), 1..16), limit in piece_limit()) {
        let lines: Vec<(Stream, String)> = items.iter().flat_map(|(s, group)| group.iter().map(move |l| (*s, l.clone()))).collect();
        let input = interleave(&lines, &schedule, |m| cri_pieces(m, limit));
        let rule = logferry::decode::multiline::Rule::custom(regex::bytes::Regex::new("^START").unwrap(), regex::bytes::Regex::new("^ ").unwrap());
        let budget = std::sync::Arc::new(logferry::decode::multiline::GroupBudget::new(logferry::decode::multiline::DEFAULT_GROUP_BUDGET));
        let multiline = logferry::decode::Multiline { rule: std::sync::Arc::new(rule), max_lines: 1000, flush_timeout: std::time::Duration::ZERO, budget };
        let mut decoder = logferry::decode::FileDecoder::new(&DecodeOptions::default()).with_multiline(Some(&multiline));
        let mut got: [Vec<(String, u32)>; 2] = Default::default();
        let mut emit = |e: &logferry::event::Event<'_>| got[e.stream as usize].push((String::from_utf8(e.message.to_vec()).unwrap(), e.lines));
        let mut offset = 0;
        for line in input.split_inclusive(|&c| c == b'\n') {
            decoder.line(&line[..line.len() - 1], offset, 0, &mut emit);
            offset += line.len() as u64;
            prop_assert!(!decoder.flush_stale(None, std::time::Duration::ZERO, &mut emit), "flushed while not caught up");
        }
        decoder.finish(&mut emit);
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let want: Vec<(String, u32)> = items.iter().filter(|(s, _)| *s == stream).map(|(_, g)| (g.join("\n"), g.len() as u32)).collect();
            prop_assert_eq!(&got[i], &want);
        }
        let events = items.len() as u64;
        prop_assert_eq!(decoder.stats.events, events);
        prop_assert_eq!(decoder.stats.grouped_lines, items.iter().filter(|(_, g)| g.len() > 1).map(|(_, g)| g.len() as u64).sum::<u64>());
    }
}
