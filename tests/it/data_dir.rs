//! A data_dir that refuses writes — full or read-only, at start or mid-run — is a
//! condition logferry reports and recovers from, never an exit: it keeps shipping what
//! it reads, `/readyz` names the directory and the error, and once the disk takes
//! writes again checkpoints are saved and nothing was lost.
//!
//! The disk is a small tmpfs mounted over the node's data_dir (`mount` needs root, as
//! the tests run in CI); it is unmounted when the test ends, whatever happens.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::node::{append_cri, http_get, numbered, Node, Shipper};

/// A tmpfs of `size` mounted at a path, unmounted on drop.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs at {} (these tests need root, as in CI): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { at: at.to_path_buf() }
    }

    /// Fills the disk with one file until it refuses more.
    fn fill(&self) {
        let mut f = File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.at.join("filler")
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.at).status().unwrap().success();
        assert!(ok, "remount {mode} failed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Waits until `/readyz` answers `status` with a body containing every one of `words`.
pub fn wait_for_readyz(shipper: &Shipper, status: u16, words: &[&str]) -> String {
    let addr = shipper.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(addr, "/readyz");
        if code == status && words.iter().all(|w| body.contains(w)) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz still says {code}: {body}\nwanted {status} with {words:?}\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once the disk works again: more lines arrive, everything exactly once after a
/// clean stop, and a restart reads nothing again (the positions were saved).
fn ship_more_then_restart(node: &Node, mut shipper: Shipper, log: &Path, before: &[String], prefix: &str) {
    let more = numbered(prefix, 300);
    append_cri(log, &more);
    let all: Vec<String> = before.iter().chain(&more).cloned().collect();
    node.wait_for(&all, Duration::from_secs(30));
    shipper.stop_and_check(node, &all);
    let mut again = node.start("");
    std::thread::sleep(Duration::from_secs(1));
    again.stop_and_check(node, &all);
}

fn metric(shipper: &Shipper, name: &str) -> f64 {
    let (_, body) = http_get(shipper.metrics_addr(), "/metrics");
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Regression: `logferry run` exited 1 ("cannot write checkpoints … No space left on
/// device") on a node whose data_dir was full: a crash loop on the node whose logs
/// matter most.
#[test]
fn a_full_data_dir_at_start_keeps_shipping_and_recovers_when_space_returns() {
    let node = Node::new();
    let disk = SmallDisk::mount(&node.data(), "1m");
    disk.fill();
    let log = node.container("default", "web", "app", 0);
    let first = numbered("while-full", 300);
    append_cri(&log, &first);

    let shipper = node.start("");
    node.wait_for(&first, Duration::from_secs(30));
    let why = wait_for_readyz(&shipper, 503, &["data_dir", "No space left on device", &node.data().display().to_string()]);
    assert!(why.contains("checkpoints"), "{why}");
    assert!(metric(&shipper, "logferry_data_dir_errors_total") > 0.0);
    assert!(node.checkpoints().is_empty(), "nothing saved on a full disk");

    disk.free();
    wait_for_readyz(&shipper, 200, &["ready"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.checkpoints().is_empty() {
        assert!(Instant::now() < deadline, "checkpoints never saved after space returned\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_text = shipper.stderr();
    assert_eq!(log_text.matches("cannot save checkpoints").count(), 1, "one log line per cause:\n{log_text}");
    ship_more_then_restart(&node, shipper, &log, &first, "after-space");
}

/// The disk fills while logferry runs with a sink that keeps up: shipping goes on,
/// `/readyz` says why the checkpoints wait, and after space returns and a restart
/// every line is there exactly once.
#[test]
fn a_data_dir_filling_up_mid_run_loses_nothing() {
    let node = Node::new();
    let disk = SmallDisk::mount(&node.data(), "2m");
    let log = node.container("default", "web", "app", 0);
    let before = numbered("before", 200);
    append_cri(&log, &before);
    let shipper = node.start("");
    node.wait_for(&before, Duration::from_secs(30));
    node.wait_for_checkpoint_change(Duration::from_secs(5));

    disk.fill();
    let during = numbered("during", 500);
    append_cri(&log, &during);
    let so_far: Vec<String> = before.iter().chain(&during).cloned().collect();
    node.wait_for(&so_far, Duration::from_secs(30));
    wait_for_readyz(&shipper, 503, &["data_dir", "No space left on device"]);

    disk.free();
    wait_for_readyz(&shipper, 200, &["ready"]);
    ship_more_then_restart(&node, shipper, &log, &so_far, "after");
}

/// A read-only data_dir (a remount after disk errors, a wrong mount option): shipping
/// goes on from memory, `/readyz` says so; once writable, checkpoints are saved.
#[test]
fn a_read_only_data_dir_keeps_shipping_and_recovers_when_writable() {
    let node = Node::new();
    let disk = SmallDisk::mount(&node.data(), "4m");
    disk.remount("ro");
    let log = node.container("default", "web", "app", 0);
    let first = numbered("read-only", 300);
    append_cri(&log, &first);
    let shipper = node.start("");
    node.wait_for(&first, Duration::from_secs(30));
    wait_for_readyz(&shipper, 503, &["data_dir", "Read-only file system"]);

    disk.remount("rw");
    wait_for_readyz(&shipper, 200, &["ready"]);
    ship_more_then_restart(&node, shipper, &log, &first, "writable");
}

/// The buffer on a disk that fills: rolling to a new segment and writing fail without
/// a panic, what was refused is not taken (the caller still has it), the fault is
/// reported until a write works again, and everything taken is recovered after.
#[test]
fn a_buffer_segment_roll_that_fails_does_not_panic_and_recovers() {
    use logferry::buffer::{Buffer, BufferOptions, WhenFull};
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "1m");
    let opts = BufferOptions { max_bytes: 1 << 30, segment_bytes: 64 << 10, when_full: WhenFull::Block, memory_bytes: 0, hold: Duration::ZERO };
    let (buffer, _) = Buffer::open(&disk.at.join("buffer"), opts).unwrap();
    let record = |i: usize| bytes::Bytes::from(format!("{i:08}{}\n", "x".repeat(4000)));
    let mut taken = Vec::new();
    for i in 0..20 {
        taken.push((buffer.append(1, 1, record(i)).unwrap(), record(i)));
    }
    buffer.sync().unwrap();
    disk.fill();
    let mut refused = 0;
    for i in 20..80 {
        match buffer.append(1, 1, record(i)) {
            Ok(seq) => taken.push((seq, record(i))),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "the full disk refused nothing");
    let fault = buffer.disk_fault().expect("the fault is reported");
    assert!(fault.contains("No space left on device"), "{fault}");
    assert!(buffer.stats().disk_errors > 0);

    disk.free();
    for i in 80..100 {
        taken.push((buffer.append(1, 1, record(i)).unwrap(), record(i)));
    }
    buffer.sync().unwrap();
    assert_eq!(buffer.disk_fault(), None);
    drop(buffer);

    let (buffer, rec) = Buffer::open(&disk.at.join("buffer"), opts).unwrap();
    assert_eq!(rec.unacked as usize, taken.len(), "{rec:?}");
    let mut back = Vec::new();
    loop {
        let got = buffer.read(1 << 20, Duration::ZERO).unwrap();
        if got.is_empty() {
            break;
        }
        back.extend(got.into_iter().map(|r| (r.seq, r.payload)));
    }
    assert!(back == taken, "recovered {} records, took {}", back.len(), taken.len());
}
