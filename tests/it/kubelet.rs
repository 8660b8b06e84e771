//! `logferry run` against `tests/kubelet_sim.py`: a runtime writing Docker or CRI
//! lines (16 KiB splits, interleaved streams) while the kubelet rotates, compresses and
//! deletes files, restarts containers and deletes a pod. Every line must arrive once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::node::{assert_exactly_once, Node};

/// Runs the simulator to completion; returns the messages it wrote.
fn simulate(root: &Path, format: &str, seconds: u32, extra: &[&str]) -> Vec<String> {
    let sim = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubelet_sim.py");
    let truth = root.join("truth.jsonl");
    let status = Command::new("python3")
        .arg(sim)
        .args(["--root", root.to_str().unwrap(), "--format", format])
        .args(["--pods", "3", "--containers-per-pod", "2", "--rate", "2000"])
        .args(["--duration", &seconds.to_string(), "--seed", "7"])
        // Rotations every second or two per container, and deletions beyond five
        // files: a few seconds of slack before the kubelet deletes a file unread, so
        // a slow debug build on a loaded machine still keeps up.
        .args(["--max-size", "512Ki", "--max-files", "5", "--rotate-check", "0.5"])
        .args(["--truth", truth.to_str().unwrap()])
        .args(extra)
        .status()
        .expect("python3 runs tests/kubelet_sim.py");
    assert!(status.success());
    std::fs::read_to_string(truth)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string())
        .collect()
}

fn follow_a_busy_node(format: &str) {
    let node = Node::new();
    let mut shipper = node.start("");
    let written = simulate(node.root(), format, 8, &["--restart-every", "3", "--delete-pod-after", "5", "--delete-grace", "3"]);
    assert!(written.len() > 3000, "the simulator wrote only {} messages", written.len());
    node.wait_for(&written, Duration::from_secs(60));
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    assert_exactly_once(node.messages(), &written);
    let log = shipper.stderr();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

#[test]
fn every_cri_line_arrives_once_through_rotations_restarts_and_deletion() {
    follow_a_busy_node("cri");
}

#[test]
fn every_docker_line_arrives_once_through_rotations_restarts_and_deletion() {
    follow_a_busy_node("docker");
}

/// Invariant 1 of the design: a crash at any instant loses nothing. The simulator
/// runs in the background while logferry is SIGKILLed 20 times at pseudo-random
/// instants and restarted at once; afterwards every line is there at least once, and
/// duplicates stay a small fraction (what was read but not yet checkpointed).
#[test]
fn sigkill_twenty_times_while_the_kubelet_rotates_loses_nothing() {
    let node = Node::new();
    let sim = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubelet_sim.py");
    let truth = node.root().join("truth.jsonl");
    let mut writer = Command::new("python3")
        .arg(sim)
        .args(["--root", node.root().to_str().unwrap(), "--format", "cri"])
        .args(["--pods", "2", "--containers-per-pod", "2", "--rate", "1500", "--duration", "14", "--seed", "11"])
        .args(["--max-size", "512Ki", "--max-files", "5", "--rotate-check", "0.5"])
        .args(["--truth", truth.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs tests/kubelet_sim.py");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        let mut shipper = node.start("");
        // Let this run make some progress (a checkpoint saved), then kill it at a
        // pseudo-random instant.
        node.wait_for_checkpoint_change(Duration::from_secs(20));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 400));
        shipper.kill();
    }
    // Restarted at once, as the DaemonSet would: logferry must be running while the
    // kubelet keeps rotating, or it could delete files nobody read.
    let mut shipper = node.start("");
    assert!(writer.wait().unwrap().success());
    let written: Vec<String> = std::fs::read_to_string(&truth)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string())
        .collect();
    node.wait_for(&written, Duration::from_secs(60));
    assert!(shipper.stop().success());
    let counts = crate::node::count(node.messages());
    let dups: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("sigkill x20: {} lines, {dups} duplicates ({:.2} %)", written.len(), 100.0 * dups as f64 / written.len() as f64);
    assert!(written.iter().all(|m| counts.contains_key(m)));
    // A kill repeats at most what was read but not yet checkpointed (one fsync
    // interval plus one checkpoint interval, 200 ms each here) and what was shipped
    // but whose acknowledgement was not yet saved (200 ms): at 1,500 lines/s, at most
    // ~900 lines per kill.
    let bound = 20 * 1500 * 600 / 1000;
    assert!(dups <= bound, "{dups} duplicates of {} (bound {bound})", written.len());
}
