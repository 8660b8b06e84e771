//! Multiline grouping against Fluent Bit's vectors and the cases they do not cover.

use super::*;
use regex::bytes::Regex;

fn vectors() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vectors/fluent-bit/tests/internal/multiline")
}

fn json_list(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn caps() -> Caps {
    Caps { max_lines: 1000, max_bytes: 1 << 20 }
}

/// Feeds `lines` (one stream) through `rule`; returns (message, lines) per event.
fn group(rule: Rule, lines: &[&str], caps: Caps) -> Vec<(String, u32)> {
    let mut g = Grouper::new(Arc::new(rule), caps, Arc::new(GroupBudget::new(DEFAULT_GROUP_BUDGET)));
    let mut out = Vec::new();
    let mut emit = |e: &Event<'_>| out.push((String::from_utf8(e.message.to_vec()).unwrap(), e.lines));
    for (i, line) in lines.iter().enumerate() {
        let ev = Event::raw(i as i64, Stream::Stdout, line.as_bytes());
        g.push(&ev, i as u64 * 100, &mut emit);
    }
    g.flush(&mut emit);
    out
}

/// A vector's input lines as the runtime writes them (no trailing newline) through
/// `rule`, against its output events (each line's newline kept, as Fluent Bit does).
fn check_vector(name: &str, rule: Rule) {
    let input = json_list(&vectors().join(format!("{name}.input.json")));
    let want: Vec<String> = json_list(&vectors().join(format!("{name}.output.json"))).into_iter().map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string()).collect();
    let lines: Vec<&str> = input.iter().map(|l| l.strip_suffix('\n').unwrap_or(l)).collect();
    let got: Vec<String> = group(rule, &lines, caps()).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, want, "{name}");
}

#[test]
fn fluent_bit_vectors_group_alike() {
    check_vector("java", Rule::builtin(Parser::Java));
    check_vector("python", Rule::builtin(Parser::Python));
    check_vector("go", Rule::builtin(Parser::Go));
    check_vector("ruby", Rule::builtin(Parser::Ruby));
    check_vector("elastic", Rule::custom(Regex::new(r"^\[").unwrap(), Regex::new(r"^\s+").unwrap()));
}

/// Fluent Bit #3817: two groups in a row in one stream stay apart.
#[test]
fn two_groups_in_a_row_stay_apart() {
    let input = json_list(&vectors().join("issue_3817_1.input.json"));
    let want = json_list(&vectors().join("issue_3817_1.output.json"));
    // The CRI lines' messages; the last entry is not CRI (it passes through raw).
    let lines: Vec<&str> = input.iter().map(|l| crate::decode::cri::parse(l.as_bytes()).map_or(l.as_str(), |c| std::str::from_utf8(c.message).unwrap())).collect();
    let got: Vec<String> = group(Rule::custom(Regex::new("- $").unwrap(), Regex::new("^[1-9]").unwrap()), &lines, caps()).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, want);
}

#[test]
fn chained_python_tracebacks_are_one_event_and_a_trailing_blank_line_is_not_taken() {
    let trace = [
        "Traceback (most recent call last):",
        "  File \"/app/main.py\", line 3, in <module>",
        "    int(\"x\")",
        "ValueError: invalid literal for int() with base 10: 'x'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        "  File \"/app/main.py\", line 5, in <module>",
        "    raise RuntimeError(\"bad input\") from None",
        "    ~~~~~~~~~~~~~~~~~~^^^^^^^^^^^^^",
        "RuntimeError: bad input",
    ];
    let mut lines = vec!["starting"];
    lines.extend(trace);
    lines.extend(["", "next request"]);
    let got = group(Rule::builtin(Parser::Python), &lines, caps());
    let want = [("starting".to_string(), 1), (trace.join("\n"), trace.len() as u32), (String::new(), 1), ("next request".to_string(), 1)];
    assert_eq!(got, want);
}

#[test]
fn java_caused_by_and_suppressed_chains_and_a_new_exception_starts_a_new_group() {
    let first = [
        "java.lang.IllegalStateException: boom",
        "\tat com.example.A.run(A.java:10)",
        "\tSuppressed: java.io.IOException: close failed",
        "\t\tat com.example.A.close(A.java:20)",
        "Caused by: java.lang.NullPointerException",
        "\tat com.example.B.get(B.java:5)",
        "\t... 3 more",
    ];
    let second = ["Exception in thread \"main\" java.lang.Error: again", "\tat Main.main(Main.java:1)"];
    let lines: Vec<&str> = first.iter().chain(&second).copied().collect();
    let got = group(Rule::builtin(Parser::Java), &lines, caps());
    assert_eq!(got, [(first.join("\n"), 7), (second.join("\n"), 2)]);
}

#[test]
fn nodejs_errors_and_ruby_froms() {
    let node = ["TypeError: Cannot read properties of undefined (reading 'id')", "    at handler (/app/server.js:12:20)", "    at async Server.<anonymous> (/app/server.js:30:5)"];
    let lines: Vec<&str> = node.iter().copied().chain(["GET /health 200"]).collect();
    assert_eq!(group(Rule::builtin(Parser::NodeJs), &lines, caps()), [(node.join("\n"), 3), ("GET /health 200".to_string(), 1)]);
}

#[test]
fn a_group_stops_at_max_lines_and_the_rest_passes_through() {
    let lines = ["x.Error: e", "\tat a", "\tat b", "\tat c", "after"];
    let got = group(Rule::builtin(Parser::Java), &lines, Caps { max_lines: 3, max_bytes: 1 << 20 });
    assert_eq!(got, [("x.Error: e\n\tat a\n\tat b".to_string(), 3), ("\tat c".to_string(), 1), ("after".to_string(), 1)]);
}

#[test]
fn streams_never_mix_and_the_checkpoint_limit_is_the_oldest_open_group() {
    let mut g = Grouper::new(Arc::new(Rule::builtin(Parser::Java)), caps(), Arc::new(GroupBudget::new(DEFAULT_GROUP_BUDGET)));
    let mut out = Vec::new();
    let mut emit = |e: &Event<'_>| out.push((e.stream, String::from_utf8(e.message.to_vec()).unwrap(), e.lines));
    let ev = |stream, message: &'static str| Event::raw(0, stream, message.as_bytes());
    g.push(&ev(Stream::Stderr, "x.Error: err"), 10, &mut emit);
    g.push(&ev(Stream::Stdout, "plain"), 20, &mut emit);
    g.push(&ev(Stream::Stdout, "y.Exception: out"), 30, &mut emit);
    g.push(&ev(Stream::Stderr, "\tat e1"), 40, &mut emit);
    g.push(&ev(Stream::Stdout, "\tat o1"), 50, &mut emit);
    assert_eq!(g.oldest_open_offset(), Some(10));
    g.push(&ev(Stream::Stderr, "done"), 60, &mut emit);
    assert_eq!(g.oldest_open_offset(), Some(30));
    g.flush(&mut emit);
    assert!(!g.has_open());
    assert_eq!(
        out,
        [
            (Stream::Stdout, "plain".to_string(), 1),
            (Stream::Stderr, "x.Error: err\n\tat e1".to_string(), 2),
            (Stream::Stderr, "done".to_string(), 1),
            (Stream::Stdout, "y.Exception: out\n\tat o1".to_string(), 2),
        ]
    );
}

/// The budget shared by every open group: a group that would pass it closes early
/// (capped), the rest of its trace goes line by line; what closed groups held comes
/// back, and so does what a dropped grouper held.
#[test]
fn open_groups_share_one_budget() {
    let budget = Arc::new(GroupBudget::new(40));
    let rule = Arc::new(Rule::builtin(Parser::Java));
    let mut a = Grouper::new(rule.clone(), caps(), budget.clone());
    let mut b = Grouper::new(rule, caps(), budget.clone());
    let mut out = Vec::new();
    let mut emit = |e: &Event<'_>| out.push((String::from_utf8(e.message.to_vec()).unwrap(), e.lines));
    let ev = |m: &'static str| Event::raw(0, Stream::Stdout, m.as_bytes());
    a.push(&ev("x.Error: aaaaaaaaaa"), 0, &mut emit); // 19 bytes
    b.push(&ev("y.Error: bbbbbbbbbb"), 0, &mut emit); // 19 bytes: 38 used
    assert_eq!(budget.used(), 38);
    b.push(&ev("\tat frame"), 0, &mut emit); // would pass 40: b closes, the frame alone
    assert_eq!(b.stats.capped, 1);
    assert_eq!(budget.used(), 19);
    a.push(&ev("\tat f"), 0, &mut emit);
    assert_eq!(budget.used(), 25);
    drop(a);
    assert_eq!(budget.used(), 0);
    assert_eq!(out, [("y.Error: bbbbbbbbbb".to_string(), 1), ("\tat frame".to_string(), 1)]);
}
