//! Fluent Bit's Docker-mode vectors (`tests/fixtures/vectors/fluent-bit`, see its
//! README). Their expected records are Docker `log` values; ours are events whose
//! `message` is that value without its final newline.
//!
//! Three of the five cases group lines into multi-line messages with a regex parser
//! (`Docker_Mode_Parser`), which logferry does not do: there we check that every
//! split piece is rejoined and that the concatenated content is byte-identical.

use logferry::decode::DecodeOptions;
use logferry::event::MessageFormat;

use crate::util::{decode_to_json, fixtures};

const DIR: &str = "vectors/fluent-bit/tests/runtime/data/tail";

/// (our messages, Fluent Bit's expected `log` values)
fn run(name: &str) -> (Vec<String>, Vec<String>) {
    let dir = fixtures().join(DIR);
    let input = std::fs::read(dir.join(format!("log/{name}.log"))).unwrap();
    let (out, stats) = decode_to_json(&input, &DecodeOptions::default(), MessageFormat::String);
    assert_eq!(stats.malformed, 0, "{name}");
    let ours = jsonl(&out).map(|v| v["message"].as_str().unwrap().to_string()).collect();
    let expected = std::fs::read(dir.join(format!("out/{name}.out"))).unwrap();
    let theirs = jsonl(&expected).map(|v| v["log"].as_str().unwrap().to_string()).collect();
    (ours, theirs)
}

fn jsonl(b: &[u8]) -> impl Iterator<Item = serde_json::Value> + '_ {
    b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap())
}

#[test]
fn dockermode_complete_lines_pass_through() {
    let (ours, theirs) = run("dockermode");
    assert_eq!(ours.iter().map(|m| format!("{m}\n")).collect::<Vec<_>>(), theirs);
}

#[test]
fn dockermode_splitted_line_is_rejoined() {
    let (ours, theirs) = run("dockermode_splitted_line");
    assert_eq!(ours.iter().map(|m| format!("{m}\n")).collect::<Vec<_>>(), theirs);
}

#[test]
fn multiline_vectors_keep_every_byte_and_rejoin_pieces() {
    for name in ["dockermode_multiple_lines", "dockermode_splitted_multiple_lines", "dockermode_firstline_detection"] {
        let (ours, theirs) = run(name);
        let joined: String = ours.iter().map(|m| format!("{m}\n")).collect();
        assert_eq!(joined, theirs.concat(), "{name}");
    }
    let (ours, _) = run("dockermode_splitted_multiple_lines");
    assert!(ours.contains(&"third bullet point".to_string()), "{ours:?}");
}
