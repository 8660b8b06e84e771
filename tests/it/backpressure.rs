//! A sink that stops taking data: the disk buffer fills to its cap, reading pauses
//! with the logs left on disk, and when the sink drains again everything arrives.
//! Files the kubelet deletes meanwhile, unread, are counted.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::node::{append_cri, numbered, Node, Shipper};

fn buffer_bytes(data: &Path) -> u64 {
    fs::read_dir(data.join("buffer")).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// Lines of `padding` bytes so that a few MB stand for a full buffer.
pub fn long_lines(prefix: &str, n: usize) -> Vec<String> {
    numbered(prefix, n).into_iter().map(|m| format!("{m} {}", "x".repeat(1000))).collect()
}

pub fn stalled_shipper(node: &Node) -> (Shipper, std::process::ChildStdout) {
    let root = node.root().display().to_string();
    let config = fs::read_to_string(node.config_with("", "[buffer]\nmax_bytes = 8388608\n")).unwrap().replace(
        &format!("type = \"file\"\npath = \"{root}/out.jsonl\""),
        "type = \"stdout\"",
    );
    let path = node.root().join("stdout.toml");
    fs::write(&path, config).unwrap();
    Shipper::start_piped(&path, node.out())
}

/// Waits until `cond` holds, or panics with `what` after 30 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the sink's output on a thread; returns the messages once it ends.
pub fn drain(mut stdout: std::process::ChildStdout) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string()).collect()
    })
}

#[test]
fn a_stalled_sink_pauses_reading_at_the_buffer_cap_and_loses_nothing() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let lines = long_lines("held", 30_000); // ~31 MB of log, far over the 8 MiB cap
    append_cri(&live, &lines);
    let (mut shipper, stdout) = stalled_shipper(&node);
    // Nobody reads the sink's pipe: the buffer fills to its cap and reading stops.
    // Nearly full: records are whole batches (a turn of up to 1 MiB read, ~1.5 MB
    // encoded here), so the cap is reached within a record in memory and one that
    // does not fit.
    let cap = 8 << 20;
    wait_until("the buffer is nearly full", || buffer_bytes(&node.data()) > cap - (3 << 20));
    std::thread::sleep(Duration::from_secs(1));
    assert!(buffer_bytes(&node.data()) <= cap + (1 << 20), "the cap holds: {}", buffer_bytes(&node.data()));
    // Operators see it: not ready, backpressure on, lag growing.
    let addr = shipper.metrics_addr();
    let (status, body) = crate::node::http_get(addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("sink default: its share of the buffer is full") && body.contains("reading is paused"), "{body}");
    let (_, scrape) = crate::node::http_get(addr, "/metrics");
    assert!(scrape.contains("\nlogferry_backpressure_active 1\n"), "{scrape}");
    assert!(!scrape.contains("\nlogferry_shipping_lag_seconds 0\n"), "{scrape}");
    assert_eq!(crate::node::http_get(addr, "/healthz").0, 200, "paused is not dead");
    let size = fs::metadata(&live).unwrap().len();
    let offset: u64 = node.checkpoints().first().map_or(0, |(_, pos)| pos.offset);
    assert!(offset < size / 2, "reading paused with most of the file unread ({offset} of {size})");
    // The sink drains again: everything arrives.
    let reader = drain(stdout);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.checkpointed_at(size) {
        assert!(Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let got = reader.join().unwrap();
    crate::node::assert_exactly_once(got, &lines);
}

#[test]
fn files_rotated_away_while_paused_are_counted() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let first = long_lines("first-file", 20_000);
    append_cri(&live, &first);
    let (mut shipper, stdout) = stalled_shipper(&node);
    wait_until("the buffer is nearly full", || buffer_bytes(&node.data()) > (6 << 20));
    // While logferry is paused inside the first file, the kubelet rotates twice and
    // deletes the middle file: logferry never saw its content.
    let rotated1 = live.with_file_name("0.log.20261121-100000");
    fs::rename(&live, &rotated1).unwrap();
    let middle = long_lines("middle-file", 2000);
    append_cri(&live, &middle);
    let rotated2 = live.with_file_name("0.log.20261121-100500");
    std::thread::sleep(Duration::from_millis(1500)); // a rescan sees the middle file
    fs::rename(&live, &rotated2).unwrap();
    let last = long_lines("last-file", 100);
    append_cri(&live, &last);
    std::thread::sleep(Duration::from_millis(1500));
    let middle_size = fs::metadata(&rotated2).unwrap().len();
    fs::remove_file(&rotated2).unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // a rescan notices it is gone

    let reader = drain(stdout);
    let all: Vec<String> = first.iter().chain(&last).cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if node.checkpointed_at(fs::metadata(&live).unwrap().len()) {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shipper.stop().success());
    let got = reader.join().unwrap();
    crate::node::assert_exactly_once(got, &all);
    let log = shipper.stderr();
    let stopped = log.lines().find(|l| l.contains("stopped")).unwrap_or_default();
    let counted = crate::node::log_field(stopped, "rotated_unread_bytes");
    assert_eq!(counted, Some(middle_size.to_string()), "the {middle_size} bytes lost must be counted:\n{log}");
}

#[test]
fn a_sink_that_keeps_up_is_fed_from_memory_and_the_disk_buffer_stays_empty() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let lines = long_lines("fresh", 5_000); // ~5 MB, under the 32 MiB held in memory
    append_cri(&live, &lines);
    // A generous hold, so that a slow test machine does not make the sink look slow.
    let config = node.config_with("", "[buffer]\nfsync_interval = \"5s\"\n");
    let mut shipper = Shipper::start(std::process::Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
    node.wait_for(&lines, Duration::from_secs(30));
    let size = fs::metadata(&live).unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Checkpoints advance over what the sink acknowledged, with nothing written.
    while !node.checkpointed_at(size) {
        assert!(Instant::now() < deadline, "checkpoints never covered the file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, scrape) = crate::node::http_get(shipper.metrics_addr(), "/metrics");
    assert!(scrape.contains("\nlogferry_buffer_written_bytes_total 0\n"), "{scrape}");
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let log = shipper.stderr();
    let stopped = log.lines().find(|l| l.contains("stopped")).unwrap_or_default();
    assert_eq!(crate::node::log_field(stopped, "buffer_written_bytes").as_deref(), Some("0"), "{log}");
    assert!(buffer_bytes(&node.data()) < 4096, "only empty segments: {}", buffer_bytes(&node.data()));
    crate::node::assert_exactly_once(node.messages(), &lines);
}

/// Regression: a sink that ended while the buffer was full left the buffer thread
/// waiting for room that would never come: the process hung instead of exiting for
/// Kubernetes to restart it. Here the sink fails because its buffer segments were
/// deleted under it; the process must exit non-zero within `shutdown_timeout`, having
/// checkpointed only what it buffered or shipped.
#[test]
fn a_sink_that_fails_ends_the_process_promptly_and_non_zero() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    append_cri(&live, &long_lines("held", 30_000));
    let (mut shipper, stdout) = stalled_shipper(&node);
    let cap = 8 << 20;
    wait_until("the buffer is nearly full", || buffer_bytes(&node.data()) > cap - (3 << 20));
    for e in fs::read_dir(node.data().join("buffer")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "seg") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let _reader = drain(stdout);
    let status = shipper.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("still running after its sink failed:\n{}", shipper.stderr()));
    assert!(!status.success(), "exit {status}");
    let log = shipper.stderr();
    assert!(log.contains("the sink stopped unexpectedly"), "{log}");
    assert!(log.contains("sink default failed"), "{log}");
}

/// Regression: while the buffer was full (a long outage), the records held in memory
/// stayed there — never written, never fsynced, their positions never checkpointed —
/// so a crash, or the kubelet deleting the files meanwhile, lost them. Now they are
/// written and fsynced as for a slow sink, and the checkpoints cover them: a SIGKILL
/// during the outage, then the pod's files deleted, still delivers every line read.
#[test]
fn a_long_outage_spills_memory_to_disk_so_a_crash_and_a_deleted_pod_lose_nothing_read() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let lines = long_lines("outage", 30_000);
    append_cri(&live, &lines);
    let file = fs::read(&live).unwrap();
    let (mut shipper, _stdout) = stalled_shipper(&node);
    let addr = shipper.metrics_addr();
    let gauge = |name: &str| -> f64 {
        let (_, body) = crate::node::http_get(addr, "/metrics");
        body.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(-1.0)
    };
    wait_until("reading pauses", || gauge("logferry_backpressure_active") == 1.0);
    wait_until("memory is written to disk", || gauge("logferry_buffer_memory_bytes") == 0.0);
    // Checkpoints saved every 200 ms cover what is on disk.
    std::thread::sleep(Duration::from_millis(600));
    shipper.kill();
    let offset = node.checkpoints().first().map_or(0, |(_, pos)| pos.offset);
    assert!(offset > 4 << 20, "the checkpoint covers what the buffer holds: {offset}");
    // The pod goes away during the outage: only the buffer has its lines now.
    fs::remove_dir_all(node.root().join("var/log/pods/default_web_uid-web")).unwrap();
    for l in fs::read_dir(node.root().join("var/log/containers")).unwrap() {
        fs::remove_file(l.unwrap().path()).unwrap();
    }
    let read = file[..offset as usize].iter().filter(|&&b| b == b'\n').count();
    assert_eq!(file[offset as usize - 1], b'\n', "a checkpoint is at a line's end");

    let (mut again, stdout) = Shipper::start_piped(&node.root().join("stdout.toml"), node.out());
    let reader = drain(stdout);
    std::thread::sleep(Duration::from_secs(3));
    assert!(again.stop().success(), "{}", again.stderr());
    let got: std::collections::HashSet<String> = reader.join().unwrap().into_iter().collect();
    let missing = lines[..read].iter().filter(|m| !got.contains(*m)).count();
    assert_eq!(missing, 0, "{missing} of the {read} lines read before the crash were lost");
}
