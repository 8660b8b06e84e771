//! Stack traces as one event through `logferry run` and `logferry replay`: per
//! container and stream, across a 16 KiB split and a rotation, flushed when the file
//! goes quiet, never for containers no `[[multiline]]` entry selects.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::node::{append, read_events, Node};

/// CRI lines of `stream` for `msgs`; a message over 16 KiB is split as containerd
/// splits it (`P` pieces, then `F`).
fn cri(stream: &str, msgs: &[&str]) -> String {
    let mut out = String::new();
    for m in msgs {
        let bytes = m.as_bytes();
        let mut pieces: Vec<&[u8]> = bytes.chunks(16 * 1024).collect();
        if pieces.is_empty() {
            pieces.push(b"");
        }
        for (i, p) in pieces.iter().enumerate() {
            let tag = if i + 1 == pieces.len() { "F" } else { "P" };
            out.push_str(&format!("2026-12-06T10:00:00.000000001Z {stream} {tag} {}\n", std::str::from_utf8(p).unwrap()));
        }
    }
    out
}

fn wait_for_events(out: &Path, n: usize, secs: u64) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let events = read_events(out);
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(container, stream, message, lines)` of each event.
fn summary(events: &[serde_json::Value]) -> Vec<(String, String, String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["kubernetes"]["container"].as_str().unwrap().to_string(),
                e["stream"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
                e["multiline"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

#[test]
fn a_java_trace_is_one_event_across_a_split_line_and_a_rotation_and_only_where_selected() {
    let node = Node::new();
    let app = node.container("payments", "api", "app", 0);
    let other = node.container("payments", "api", "sidecar", 0);
    let config = node.config_with("", "[[multiline]]\ninclude_containers = [\"app\"]\nparser = \"java\"\nflush_timeout = \"1s\"\n");
    let mut shipper = crate::node::Shipper::start(Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
    let long_frame = format!("\tat com.example.Big.method(Big.java:1) {}", "x".repeat(40_000));
    let head = ["java.lang.IllegalStateException: boom", "\tat com.example.A.run(A.java:10)"];
    let tail = ["Caused by: java.lang.NullPointerException", "\tat com.example.B.get(B.java:5)", "\t... 3 more"];
    // The trace on stderr, stdout lines of the same container between its lines, the
    // sidecar printing the same trace (not selected: line by line).
    append(&app, cri("stderr", &head).as_bytes());
    append(&app, cri("stdout", &["GET /health 200"]).as_bytes());
    append(&app, cri("stderr", &[&long_frame]).as_bytes());
    append(&other, cri("stdout", &head).as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    // The kubelet rotates the file in the middle of the trace.
    std::fs::rename(&app, app.with_extension("log.20261206-100000")).unwrap();
    append(&app, cri("stderr", &tail).as_bytes());
    append(&app, cri("stderr", &["after the trace"]).as_bytes());
    let events = wait_for_events(&node.out(), 6, 30);
    let got = summary(&events);
    let trace: Vec<&str> = head.iter().copied().chain([long_frame.as_str()]).chain(tail).collect();
    let want = [
        ("app", "stdout", "GET /health 200".to_string(), 1),
        ("sidecar", "stdout", head[0].to_string(), 1),
        ("sidecar", "stdout", head[1].to_string(), 1),
        ("app", "stderr", trace.join("\n"), 6),
        ("app", "stderr", "after the trace".to_string(), 1),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want_sorted: Vec<(String, String, String, u64)> = want.iter().map(|(c, s, m, n)| (c.to_string(), s.to_string(), m.clone(), *n)).collect();
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted, "events: {:#?}", got.iter().map(|(c, s, m, n)| (c, s, &m[..m.len().min(60)], n)).collect::<Vec<_>>());
    // Within the app's stderr, order is kept.
    let app_err: Vec<&String> = got.iter().filter(|(c, s, _, _)| c == "app" && s == "stderr").map(|(_, _, m, _)| m).collect();
    assert_eq!(app_err.len(), 2);
    assert!(app_err[0].starts_with(head[0]) && app_err[1] == "after the trace");
    // "after the trace" was held as a possible start until the file went quiet.
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let log = shipper.stderr();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

#[test]
fn a_group_at_the_end_of_a_quiet_file_is_flushed_after_flush_timeout_and_checkpoints_wait_for_it() {
    let node = Node::new();
    let app = node.container("default", "web", "app", 0);
    let config = node.config_with("", "[[multiline]]\nparser = \"python\"\nflush_timeout = \"2s\"\n");
    let mut shipper = crate::node::Shipper::start(Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
    let trace = ["Traceback (most recent call last):", "  File \"/app/main.py\", line 3, in <module>", "    main()", "ValueError: bad"];
    append(&app, cri("stdout", &["before"]).as_bytes());
    append(&app, cri("stdout", &trace).as_bytes());
    let first = wait_for_events(&node.out(), 1, 30);
    assert_eq!(summary(&first)[0].2, "before");
    // While the group is open, positions stop at its first line: a crash now reads
    // the whole trace again.
    let group_start = cri("stdout", &["before"]).len() as u64;
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(read_events(&node.out()).len(), 1, "the trace waits for the quiet");
    let saved = node.checkpoints();
    assert!(!saved.is_empty() && saved.iter().all(|(_, p)| p.offset <= group_start), "{saved:?}");
    // The trace's end could be followed by a chained one: it waits for the quiet.
    let events = wait_for_events(&node.out(), 2, 30);
    assert_eq!(summary(&events)[1], ("app".into(), "stdout".into(), trace.join("\n"), 4));
    let end = std::fs::metadata(&app).unwrap().len();
    node.wait_for_checkpoint_change(Duration::from_secs(5));
    assert!(node.checkpointed_at(end), "{:?}", node.checkpoints());
    assert!(shipper.stop().success(), "{}", shipper.stderr());
}

#[test]
fn replay_groups_with_a_built_in_parser_and_counts_the_groups() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    let trace = ["panic: runtime error: index out of range [3] with length 3", "", "goroutine 1 [running]:", "main.main()", "\t/app/main.go:8 +0x1d", "exit status 2"];
    std::fs::write(&log, cri("stderr", &trace)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logferry")).args(["replay", "--multiline", "go"]).arg(&log).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["message"], trace[..5].join("\n"));
    assert_eq!(events[0]["multiline"], 5);
    assert_eq!(events[1]["message"], "exit status 2");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("events 2  lines 6") && summary.contains("multiline: 5 lines grouped into 1 events"), "{summary}");
}

/// SIGKILL with a group open: positions stopped at its first line, so the restarted
/// logferry reads the trace again and it arrives whole, once.
#[test]
fn sigkill_mid_group_then_restart_delivers_the_group_whole() {
    let node = Node::new();
    let app = node.container("default", "web", "app", 0);
    let config = node.config_with("", "[[multiline]]\nparser = \"java\"\nflush_timeout = \"30s\"\n");
    let start = || crate::node::Shipper::start(Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
    let mut shipper = start();
    let head = ["java.lang.IllegalStateException: boom", "\tat com.example.A.run(A.java:10)", "\tat com.example.A.main(A.java:3)"];
    let rest = ["Caused by: java.io.IOException: disk", "\tat com.example.B.write(B.java:5)"];
    append(&app, cri("stdout", &["before"]).as_bytes());
    append(&app, cri("stdout", &head).as_bytes());
    wait_for_events(&node.out(), 1, 30);
    node.wait_for_checkpoint_change(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    shipper.kill();
    append(&app, cri("stdout", &rest).as_bytes());
    append(&app, cri("stdout", &["after"]).as_bytes());
    let mut shipper = start();
    let events = wait_for_events(&node.out(), 3, 30);
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let trace: Vec<&str> = head.iter().chain(&rest).copied().collect();
    let got: Vec<(String, u64)> = summary(&events).into_iter().map(|(_, _, m, n)| (m, n)).collect();
    assert_eq!(got, [("before".to_string(), 1), (trace.join("\n"), 5), ("after".to_string(), 1)]);
}
