//! Golden files: `tests/fixtures/<case>.log` must decode to exactly `<case>.out`.
//! The `.out` files are written by `tests/make_fixtures.py` from the messages each
//! case was made of — an oracle independent of the Rust code.

use logferry::decode::DecodeOptions;
use logferry::event::MessageFormat;

use crate::util::{assert_same_lines, decode_to_json, fixtures};

fn golden(case: &str) {
    let dir = fixtures();
    let input = std::fs::read(dir.join(format!("{case}.log"))).unwrap();
    let want = std::fs::read(dir.join(format!("{case}.out"))).unwrap();
    let (got, _) = decode_to_json(&input, &DecodeOptions::default(), MessageFormat::String);
    assert_same_lines(&got, &want, case);
}

#[test]
fn docker_escapes() {
    golden("docker_escapes");
}

#[test]
fn docker_split_interleaved() {
    golden("docker_split");
}

#[test]
fn docker_fields_order_extra_and_missing() {
    golden("docker_fields");
}

#[test]
fn docker_malformed_lines_become_raw_events() {
    golden("docker_malformed");
}

#[test]
fn cri_containerd() {
    golden("cri_containerd");
}

#[test]
fn cri_crio_offsets() {
    golden("cri_crio");
}

#[test]
fn cri_partial_at_end() {
    golden("cri_partial_at_end");
}

#[test]
fn format_detected_on_first_decodable_line() {
    golden("detect_after_garbage");
}

#[test]
fn counters_match_what_happened() {
    let input = std::fs::read(fixtures().join("docker_malformed.log")).unwrap();
    let (_, stats) = decode_to_json(&input, &DecodeOptions::default(), MessageFormat::String);
    assert_eq!(stats.malformed, 8, "seven bad lines and the truncated last one");
    assert_eq!(stats.partial, 1);
    assert_eq!(stats.events, 11);
    let input = std::fs::read(fixtures().join("docker_split.log")).unwrap();
    let (_, stats) = decode_to_json(&input, &DecodeOptions::default(), MessageFormat::String);
    // 16,383 bytes and its newline fit one 16 KiB piece: five of the six were split.
    assert_eq!((stats.events, stats.rejoined, stats.malformed), (6, 5, 0));
    let input = std::fs::read(fixtures().join("docker_fields.log")).unwrap();
    let (_, stats) = decode_to_json(&input, &DecodeOptions::default(), MessageFormat::String);
    assert_eq!((stats.missing_stream, stats.missing_time), (2, 2));
}

/// `tests/fixtures/multiline_<lang>_<format>.log` (two real traces, one on stderr and
/// one on stdout, between single lines, the other stream's lines interleaved, one
/// line split at 16 KiB), grouped by the built-in `parser`, must give `.out`: each
/// stream's events in order (stdout's first; the two streams' events interleave by
/// when a group closes, which the oracle does not model).
fn golden_multiline(lang: &str, format: &str) {
    use logferry::decode::multiline::{Parser, Rule};
    let case = format!("multiline_{lang}_{format}");
    let dir = fixtures();
    let input = std::fs::read(dir.join(format!("{case}.log"))).unwrap();
    let want = std::fs::read(dir.join(format!("{case}.out"))).unwrap();
    let rule = Rule::builtin(Parser::from_name(lang).unwrap());
    let budget = std::sync::Arc::new(logferry::decode::multiline::GroupBudget::new(logferry::decode::multiline::DEFAULT_GROUP_BUDGET));
    let multiline = logferry::decode::Multiline { rule: std::sync::Arc::new(rule), max_lines: 1000, flush_timeout: std::time::Duration::from_secs(1), budget };
    let (got, stats) = crate::util::decode_to_json_with(&input, &DecodeOptions::default(), MessageFormat::String, Some(&multiline));
    let mut lines: Vec<&[u8]> = got.split_inclusive(|&c| c == b'\n').collect();
    lines.sort_by_key(|l| !String::from_utf8_lossy(l).contains(r#""stream":"stdout""#));
    assert_same_lines(&lines.concat(), &want, &case);
    assert_eq!(stats.groups, 2, "{case}: two traces");
    assert_eq!(stats.rejoined, 1, "{case}: one trace line was split at 16 KiB");
}

#[test]
fn multiline_traces_of_each_language_group_in_docker_and_cri_files() {
    for lang in ["java", "python", "go", "ruby", "nodejs"] {
        for format in ["docker", "cri"] {
            golden_multiline(lang, format);
        }
    }
}
