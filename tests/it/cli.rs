//! The `logferry replay` binary, end to end.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{assert_same_lines, fixtures};

fn logferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logferry")).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn replays_a_node_tree_in_rotation_order_with_metadata() {
    let node = fixtures().join("node");
    let out = logferry(&["replay", "--progress", "never", node.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = std::fs::read(fixtures().join("node.out")).unwrap();
    assert_same_lines(&out.stdout, &want, "node tree");
    let summary = stderr(&out);
    assert!(summary.contains("replayed 6 files (4 streams)"), "{summary}");
    assert!(summary.contains("malformed 0"), "{summary}");
}

#[test]
fn the_containers_links_alone_resolve_to_pod_metadata() {
    let links = fixtures().join("node/var/log/containers");
    let out = logferry(&["replay", "-q", links.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_slice(out.stdout.split(|&c| c == b'\n').next().unwrap()).unwrap();
    assert!(first["kubernetes"]["pod_uid"].is_string(), "{first}");
}

#[test]
fn writes_to_a_file_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("events.jsonl");
    let input = fixtures().join("cri_containerd.log");
    let out = logferry(&["replay", "-q", "--to", "file", "--output", out_path.to_str().unwrap(), input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read(&out_path).unwrap();
    assert_eq!(written.iter().filter(|&&c| c == b'\n').count(), 13);

    let dry = logferry(&["replay", "--dry-run", input.to_str().unwrap()]);
    assert!(dry.status.success());
    assert!(dry.stdout.is_empty());
    assert!(stderr(&dry).contains("events 13"), "{}", stderr(&dry));
}

/// Files replayed one after another share one read buffer: a long file, then short
/// ones and one that ends without a newline — every line comes out once, whole, and
/// nothing of a file read before shows up in the next.
#[test]
fn files_replayed_in_turn_share_a_read_buffer_and_keep_their_own_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for (k, (lines, len)) in [(3000usize, 200usize), (3, 10), (1, 5000), (40, 90), (2, 3)].into_iter().enumerate() {
        let mut text = String::new();
        for i in 0..lines {
            let message = format!("f{k} l{i} {}", "x".repeat(len));
            text.push_str(&format!("2026-12-07T01:00:00.{i:09}Z stdout F {message}\n"));
            want.push(message);
        }
        if k == 4 {
            text.pop(); // the last line without its newline: the file's end makes it a line
        }
        std::fs::write(dir.path().join(format!("{k}.log")), text).unwrap();
    }
    let out = logferry(&["replay", "-q", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<String> = out
        .stdout
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_owned())
        .collect();
    let (mut got_sorted, mut want_sorted) = (got.clone(), want.clone());
    got_sorted.sort();
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted, "every line once, whole");
}

/// Regression: `--output /dev/null` failed with os error 22 (fdatasync of a device),
/// and a pipe has no offsets to write at. A device or a pipe is written in order.
#[test]
fn a_file_sink_writes_to_a_device_or_a_pipe() {
    let input = fixtures().join("cri_containerd.log");
    let out = logferry(&["replay", "-q", "--to", "file", "--output", "/dev/null", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("events.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = logferry(&["replay", "-q", "--to", "file", "--output", fifo.to_str().unwrap(), input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let through_pipe = reader.join().unwrap();
    let plain = logferry(&["replay", "-q", input.to_str().unwrap()]);
    // (A malformed line's time is when it was read: compare the messages.)
    let messages = |out: &[u8]| -> Vec<serde_json::Value> {
        out.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()["message"].clone()).collect()
    };
    assert_eq!(messages(&through_pipe), messages(&plain.stdout), "through a pipe");
    assert_eq!(messages(&through_pipe).len(), 13);
}

#[test]
fn an_unreadable_path_is_named_and_the_rest_still_replayed() {
    let missing = fixtures().join("does-not-exist.log");
    let good = fixtures().join("cri_crio.log");
    let out = logferry(&["replay", "-q", missing.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read") && stderr(&out).contains("does-not-exist.log"), "{}", stderr(&out));
    assert_eq!(out.stdout.iter().filter(|&&c| c == b'\n').count(), 4);
}

#[test]
fn a_corrupt_gzip_is_reported_and_what_it_held_before_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let gz = std::fs::read(
        fixtures().join("node/var/log/pods/default_web-6d4cf56db6-x7k2p_1b4e28ba-2fa1-41d2-883f-0016d3cca427/nginx/0.log.20261121-095700.gz"),
    )
    .unwrap();
    let bad = dir.path().join("0.log.20261121-095700.gz");
    std::fs::write(&bad, &gz[..gz.len() - 12]).unwrap();
    let out = logferry(&["replay", "-q", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("0.log.20261121-095700.gz"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_64() {
    let input = fixtures().join("cri_crio.log");
    let out = logferry(&["replay", "--to", "file", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("--output"), "{}", stderr(&out));
}

#[test]
fn oversize_drop_and_json_messages_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("app.log");
    std::fs::write(
        &input,
        "2026-11-21T10:00:00Z stdout F {\"level\":\"info\",\"n\":1}\n2026-11-21T10:00:01Z stdout F 0123456789abcdef\n",
    )
    .unwrap();
    let out = logferry(&["replay", "--message-format", "json", "--max-message-bytes", "30", "--oversize", "drop", input.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#""message":{"level":"info","n":1}"#), "{text}");
    assert_eq!(text.lines().count(), 2);
    let out = logferry(&["replay", "-q", "--max-message-bytes", "10", input.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#""message":"0123456789","truncated":true"#), "{text}");
    assert!(!Path::new(&input).with_extension("out").exists());
}

#[test]
fn run_refuses_a_bad_config_listing_every_problem() {
    let dir = fixtures().join("config");
    let out = logferry(&["run", "--config", dir.join("many_problems.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    let want = std::fs::read_to_string(dir.join("many_problems.err")).unwrap();
    for line in want.lines() {
        assert!(err.contains(line), "missing {line:?} in\n{err}");
    }
    let missing = logferry(&["run", "--config", "/nonexistent/logferry.toml"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(stderr(&missing).contains("/nonexistent/logferry.toml"), "{}", stderr(&missing));
}

#[test]
fn check_accepts_the_reference_config_and_refuses_a_bad_one() {
    let dir = fixtures().join("config");
    let ok = logferry(&["check", "--config", dir.join("node.toml").to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("is valid"));
    let bad = logferry(&["check", "--config", dir.join("many_problems.toml").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn a_data_dir_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}/data\"\n[sink]\ntype = \"stdout\"\n", blocker.display()),
    )
    .unwrap();
    let out = logferry(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot create data_dir") && err.contains("not-a-dir"), "{err}");
}

#[test]
fn buffer_inspect_reports_records_and_damage() {
    use logferry::buffer::{Buffer, BufferOptions, WhenFull};
    let dir = tempfile::tempdir().unwrap();
    {
        let opts = BufferOptions::with_cap(1 << 30, WhenFull::Block);
        let (b, _) = Buffer::open(&dir.path().join("buffer"), opts).unwrap();
        for i in 0..3 {
            b.append(i, 2, format!("record {i}\n").into()).unwrap();
        }
        b.ack(1);
        b.persist_ack().unwrap();
        b.sync().unwrap();
    }
    let out = logferry(&["buffer", "inspect", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("acknowledged up to seq 1"), "{text}");
    assert!(text.contains("2 unacknowledged record(s)"), "{text}");
    assert!(!text.contains("damage found"), "{text}");
    // Flip a byte in the last record: reported, not fatal.
    let seg = std::fs::read_dir(dir.path().join("buffer")).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "seg")).unwrap().path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let out = logferry(&["buffer", "inspect", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("damage found"), "{text}");
}
