//! `logferry run` following files on a fake node: rotation, restarts, deletion,
//! truncation, resuming, and paths it must refuse. The real binary, real files.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::node::{append, append_cri, assert_exactly_once, log_field, numbered, read_events, Node, Shipper};

const WAIT: Duration = Duration::from_secs(30);

/// What the kubelet does: rename the live file, then the runtime reopens it.
fn rotate(live: &Path, stamp: &str) -> std::path::PathBuf {
    let rotated = live.with_file_name(format!("{}.{stamp}", live.file_name().unwrap().to_str().unwrap()));
    fs::rename(live, &rotated).unwrap();
    fs::File::create(live).unwrap();
    rotated
}

/// What the kubelet does to older rotated files: `X` → `X.gz.tmp` → `X.gz`, `X` removed.
fn gzip(path: &Path) {
    let gz = path.with_file_name(format!("{}.gz", path.file_name().unwrap().to_str().unwrap()));
    let tmp = gz.with_extension("gz.tmp");
    let mut enc = flate2::write::GzEncoder::new(fs::File::create(&tmp).unwrap(), flate2::Compression::fast());
    enc.write_all(&fs::read(path).unwrap()).unwrap();
    enc.finish().unwrap();
    fs::rename(&tmp, &gz).unwrap();
    fs::remove_file(path).unwrap();
}

#[test]
fn follows_appends_and_rotations_exactly_once() {
    let node = Node::new();
    let live = node.container("default", "web", "nginx", 0);
    let before = numbered("before-start", 50);
    append_cri(&live, &before);
    let mut shipper = node.start("");
    node.wait_for(&before, WAIT);

    let mut all = before.clone();
    let a = numbered("first-file", 100);
    append_cri(&live, &a);
    // A line split across the rotation: P in the old file, F in the new one.
    append(&live, b"2026-11-21T10:00:00Z stderr P split across \n");
    let r1 = rotate(&live, "20261121-100000");
    append(&live, b"2026-11-21T10:00:01Z stderr F the rotation\n");
    let b = numbered("second-file", 100);
    append_cri(&live, &b);
    all.extend(a);
    all.push("split across the rotation".into());
    all.extend(b);
    node.wait_for(&all, WAIT);

    // Two more rotations in a row while logferry is behind, the older one gzipped.
    let c = numbered("third-file", 100);
    append_cri(&live, &c);
    let r2 = rotate(&live, "20261121-100500");
    let d = numbered("fourth-file", 100);
    append_cri(&live, &d);
    gzip(&r1);
    let _r3 = rotate(&live, "20261121-101000");
    gzip(&r2);
    let e = numbered("live-again", 100);
    append_cri(&live, &e);
    all.extend(c);
    all.extend(d);
    all.extend(e);
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

#[test]
fn stop_and_restart_neither_loses_nor_repeats() {
    let node = Node::new();
    let live = node.container("default", "api", "app", 0);
    let mut all = Vec::new();
    for round in 0..4 {
        let mut shipper = node.start("");
        let batch = numbered(&format!("round-{round}"), 300);
        append_cri(&live, &batch);
        all.extend(batch);
        // Written while it stops: picked up by the next run.
        node.wait_for(&all[..all.len() - 100], WAIT);
        assert!(shipper.stop().success(), "{}", shipper.stderr());
        let late = numbered(&format!("while-stopped-{round}"), 20);
        append_cri(&live, &late);
        all.extend(late);
    }
    let mut shipper = node.start("");
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

#[test]
fn resumes_inside_a_file_the_kubelet_compressed_meanwhile() {
    let node = Node::new();
    let live = node.container("default", "web", "nginx", 0);
    let first = numbered("seen", 200);
    append_cri(&live, &first);
    node.ship_once(&first);

    // While logferry is down: more lines in the same file, then two rotations, and
    // the file it was reading is now only a .gz.
    let rest = numbered("unseen-tail", 200);
    append_cri(&live, &rest);
    let r1 = rotate(&live, "20261121-100000");
    let mid = numbered("middle-file", 50);
    append_cri(&live, &mid);
    rotate(&live, "20261121-100500");
    gzip(&r1);
    let last = numbered("new-live", 50);
    append_cri(&live, &last);

    let mut shipper = node.start("");
    let all: Vec<String> = [first, rest, mid, last].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

#[test]
fn container_restarts_and_pod_deletion() {
    let node = Node::new();
    let first = node.container("shop", "cart", "app", 0);
    let a = numbered("attempt-0", 100);
    append_cri(&first, &a);
    let mut shipper = node.start("");
    node.wait_for(&a, WAIT);
    // The container restarts: 1.log beside 0.log, the link now points at 1.log.
    for l in fs::read_dir(node.root().join("var/log/containers")).unwrap() {
        fs::remove_file(l.unwrap().path()).unwrap();
    }
    let second = node.container("shop", "cart", "app", 1);
    let b = numbered("attempt-1", 100);
    append_cri(&second, &b);
    let all = [a, b].concat();
    node.wait_for(&all, WAIT);
    // The pod is deleted: its files and links vanish.
    fs::remove_dir_all(node.root().join("var/log/pods/shop_cart_uid-cart")).unwrap();
    for l in fs::read_dir(node.root().join("var/log/containers")).unwrap() {
        fs::remove_file(l.unwrap().path()).unwrap();
    }
    // After rotate_wait (2 s) the streams are forgotten, checkpoints included.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = node.checkpoints();
        if !left.iter().any(|(path, _)| path.to_string_lossy().contains("cart")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "checkpoints still name the deleted pod: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    shipper.stop_and_check(&node, &all);
}

#[test]
fn copytruncate_restarts_at_zero() {
    let node = Node::new();
    let live = node.container("default", "legacy", "app", 0);
    let a = numbered("before-truncate", 100);
    append_cri(&live, &a);
    let mut shipper = node.start("");
    node.wait_for(&a, WAIT);
    fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(0).unwrap();
    let b = numbered("after", 10);
    append_cri(&live, &b);
    let all = [a, b].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
    assert!(shipper.stderr().contains("truncated in place"), "{}", shipper.stderr());
    // What was written between the last read and the truncation is gone, and may have
    // held the head of the first message after it: that one is flagged.
    let flagged: Vec<String> = read_events(&node.out()).iter().filter(|e| e["partial"] == true).map(|e| e["message"].to_string()).collect();
    assert_eq!(flagged, ["\"after-0\""]);
}

/// The issue-15 cut line: logferry was killed while its checkpoint still pointed into
/// a rotated file, and the kubelet deleted that file before logferry came back. The
/// oldest file left began with the last piece of a split message, which looks exactly
/// like a whole line (Docker's last piece ends in `\n`; CRI's is `F`), and was shipped
/// as one. It now arrives flagged `partial`, on each stream, and only that one.
#[test]
fn a_position_whose_file_was_deleted_during_downtime_flags_the_first_message_partial() {
    let node = Node::new();
    let live = node.container("default", "api", "app", 0);
    let docker = |stream: &str, log: &str| format!("{{\"log\":\"{log}\",\"stream\":\"{stream}\",\"time\":\"2026-11-21T10:00:00.000000001Z\"}}\n");
    let before = numbered("before", 20);
    let lines: String = before.iter().map(|m| docker("stdout", &format!("{m}\\n"))).collect();
    append(&live, lines.as_bytes());
    node.ship_once(&before);
    // Checkpoint 'before' is where the restart would resume; the kill is simulated by
    // what follows: lines logferry never read, in a file it will not find again.
    // While logferry is down: more lines, one message split on each stream, rotation
    // in the middle of both, and the rotated file deleted.
    append(&live, (docker("stdout", "lost\\n") + &docker("stdout", "out-head-") + &docker("stderr", "err-head-")).as_bytes());
    let rotated = rotate(&live, "20261121-100000");
    append(&live, (docker("stderr", "err-tail\\n") + &docker("stdout", "out-tail\\n")).as_bytes());
    let after = numbered("after", 5);
    let lines: String = after.iter().map(|m| docker("stdout", &format!("{m}\\n")) + &docker("stderr", &format!("err-{m}\\n"))).collect();
    append(&live, lines.as_bytes());
    fs::remove_file(rotated).unwrap();

    let mut shipper = node.start("");
    let want_new: Vec<String> = after.iter().cloned().chain(after.iter().map(|m| format!("err-{m}"))).collect();
    node.wait_for(&want_new, WAIT);
    let deadline = std::time::Instant::now() + WAIT;
    let lost = || crate::aws::metric(shipper.metrics_addr(), "logferry_lost_positions_total");
    while lost() < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lost(), 1.0);
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    assert!(shipper.stderr().contains("was deleted before logferry got back to it"), "{}", shipper.stderr());
    let events = read_events(&node.out());
    let flagged: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["partial"] == true)
        .map(|e| (e["stream"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(flagged, [("stderr", "err-tail"), ("stdout", "out-tail")]);
    let whole: Vec<String> = events.iter().filter(|e| e.get("partial").is_none()).map(|e| e["message"].as_str().unwrap().to_string()).collect();
    let want_whole: Vec<String> = before.iter().cloned().chain(want_new).collect();
    assert_exactly_once(whole, &want_whole);
}

#[test]
fn a_reused_inode_is_not_mistaken_for_the_old_file() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let old = numbered("old-file-with-a-longer-line-here", 40);
    append_cri(&live, &old);
    node.ship_once(&old);
    // The file is replaced by another one. Whether or not the filesystem reuses the
    // inode, make the checkpoint claim the new file's inode with the old offset, as
    // an inode reuse would: the fingerprint must tell them apart.
    fs::remove_file(&live).unwrap();
    // Longer than the old one, so the old offset would be inside it.
    let new = numbered("new-file", 400);
    append_cri(&live, &new);
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&live).unwrap());
    let mut cp = logferry::tail::checkpoint::Checkpoints::load(&node.data()).unwrap();
    let (path, mut pos) = cp.iter().map(|(p, pos)| (p.to_path_buf(), pos)).next().unwrap();
    pos.file.ino = ino;
    cp.set(&path, pos);
    cp.compact().unwrap();

    let mut shipper = node.start("");
    let all = [old, new].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

#[test]
fn refuses_links_outside_the_roots_and_skips_directories() {
    let node = Node::new();
    let good = node.container("default", "web", "app", 0);
    let outside = node.root().join("outside.log");
    fs::write(&outside, "2026-11-21T10:00:00Z stdout F secret\n").unwrap();
    std::os::unix::fs::symlink(&outside, node.root().join("var/log/containers/evil_default_x-0123456789abcdef.log")).unwrap();
    // A log file replaced by a directory.
    let odd = node.container("default", "odd", "app", 0);
    fs::remove_file(&odd).unwrap();
    fs::create_dir(&odd).unwrap();
    let msgs = numbered("fine", 20);
    append_cri(&good, &msgs);
    let mut shipper = node.start("");
    node.wait_for(&msgs, WAIT);
    shipper.stop_and_check(&node, &msgs);
    let log = shipper.stderr();
    assert!(log.contains("outside the allowed roots"), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
}

#[test]
fn an_unreadable_file_does_not_stop_the_others() {
    if !is_root() {
        return unreadable_as_current_user();
    }
    // As root every file is readable: run logferry as `nobody` instead.
    let node = Node::new();
    let good = node.container("default", "web", "app", 0);
    let secret = node.container("default", "vault", "app", 0);
    append_cri(&secret, &numbered("hidden", 5));
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let msgs = numbered("visible", 20);
    append_cri(&good, &msgs);
    open_up(node.root());
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_logferry")]);
    let mut shipper = crate::node::Shipper::start(cmd, &node.config(""), node.out());
    node.wait_for(&msgs, WAIT);
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    assert_exactly_once(node.messages(), &msgs);
    assert!(shipper.stderr().contains("ermission denied"), "{}", shipper.stderr());
}

fn unreadable_as_current_user() {
    let node = Node::new();
    let good = node.container("default", "web", "app", 0);
    let secret = node.container("default", "vault", "app", 0);
    append_cri(&secret, &numbered("hidden", 5));
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let msgs = numbered("visible", 20);
    append_cri(&good, &msgs);
    let mut shipper = node.start("");
    node.wait_for(&msgs, WAIT);
    shipper.stop_and_check(&node, &msgs);
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// Lets `nobody` into the test's directories (tempdirs are 0700).
fn open_up(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = vec![root.to_path_buf()];
    let mut p = root.parent();
    while let Some(d) = p {
        let mode = fs::metadata(d).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o001)).unwrap();
        }
        p = d.parent();
    }
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        for e in fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs.push(e.path());
            } else if ft.is_file() && fs::metadata(e.path()).unwrap().permissions().mode() & 0o777 != 0 {
                fs::set_permissions(e.path(), fs::Permissions::from_mode(0o666)).unwrap();
            }
        }
    }
}

#[test]
fn start_at_end_skips_old_lines_only_at_the_very_first_start() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    append_cri(&live, &numbered("history", 50));
    let mut shipper = node.start("start_at = \"end\"");
    std::thread::sleep(Duration::from_millis(1500));
    let fresh = numbered("fresh", 20);
    append_cri(&live, &fresh);
    // A file that appears later is read from its beginning.
    let later = node.container("default", "later", "app", 0);
    let early = numbered("later-pod", 10);
    append_cri(&later, &early);
    let all = [fresh, early].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

#[test]
fn a_split_line_left_hanging_is_flushed_as_partial_after_the_timeout() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let mut shipper = node.start("");
    append(&live, b"2026-11-21T10:00:00Z stdout P the runtime died mid-line\n");
    node.wait_for(&["the runtime died mid-line".to_string()], WAIT);
    assert!(shipper.stop().success());
    let events = read_events(&node.out());
    assert_eq!(events[0]["partial"], true, "{events:?}");
}

#[test]
fn sigkill_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let mut all = Vec::new();
    for round in 0..6 {
        let mut shipper = node.start("");
        let batch = numbered(&format!("round-{round}"), 2000);
        append_cri(&live, &batch);
        all.extend(batch);
        node.wait_for_checkpoint_change(Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(40 * round as u64));
        shipper.kill();
    }
    node.ship_once(&all);
    let counts = crate::node::count(node.messages());
    assert!(all.iter().all(|m| counts.contains_key(m)), "a line was lost");
    let dups: usize = counts.values().map(|n| n - 1).sum();
    // At most what a kill can leave un-checkpointed or unacknowledged: a fraction of
    // a second of reading per kill, never everything again.
    eprintln!("sigkill: {dups} duplicates of {} lines after 6 kills", all.len());
    assert!(dups < all.len(), "{dups} duplicates of {}", all.len());
}

/// A line's position is saved as soon as the sink acknowledges it, not at the
/// buffer's next commit (a minute away here; only a start's first batch is committed
/// at once) nor the checkpoint journal's next sync (five seconds): so a logferry
/// killed a second after the sink had a batch repeats none of it.
#[test]
fn a_kill_after_the_sink_has_a_batch_repeats_none_of_it() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    // Nor a tailer's timer within the second: its rescans and polls of a written file
    // hand the buffer thread a batch, which wakes it too.
    let config = node.config_with("busy_poll_interval = \"20s\"\nrescan_interval = \"30s\"", "[buffer]\nfsync_interval = \"60s\"\n");
    let mut all = Vec::new();
    for round in 0..3 {
        let mut shipper = Shipper::start(std::process::Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
        for batch in ["first", "second"] {
            let lines = numbered(&format!("round-{round}-{batch}"), 50);
            append_cri(&live, &lines);
            all.extend(lines);
            node.wait_for(&all, WAIT);
        }
        std::thread::sleep(Duration::from_secs(1));
        shipper.kill();
    }
    // Once more, to stop cleanly: nothing is left to read.
    let mut shipper = Shipper::start(std::process::Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
    shipper.metrics_addr();
    shipper.stop_and_check(&node, &all);
}

#[test]
fn polling_mode_follows_writes_and_rotations_without_inotify() {
    let node = Node::new();
    let live = node.container("default", "nfs", "app", 0);
    let mut shipper = node.start("watch = \"poll\"");
    let a = numbered("polled", 50);
    append_cri(&live, &a);
    node.wait_for(&a, WAIT);
    rotate(&live, "20261121-100000");
    let b = numbered("polled-after-rotation", 50);
    append_cri(&live, &b);
    // A new pod, found by the periodic rescan rather than a directory event.
    let other = node.container("default", "late", "app", 0);
    let c = numbered("polled-new-pod", 5);
    append_cri(&other, &c);
    let all = [a, b, c].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

/// A container writing many times a second is read on a timer (its directory no longer
/// watched: `logferry_directories_polled` 1), and every line still arrives, through a
/// rotation too; once it is quiet its directory is watched again, and one line written
/// then arrives by inotify alone (the rescan is an hour away). Not timed: batching must
/// never hold a line back, whatever the pace.
#[test]
fn a_busy_container_is_read_on_a_timer_and_every_line_still_arrives() {
    let node = Node::new();
    let live = node.container("default", "chatty", "app", 0);
    let mut shipper = node.start("rescan_interval = \"1h\"\nbusy_poll_interval = \"100ms\"");
    let addr = shipper.metrics_addr();
    let polled = || crate::aws::metric(addr, "logferry_directories_polled");
    let mut all = Vec::new();
    let mut write = |what: &str, n: usize| {
        let line = vec![format!("{what}-{n:05}")];
        append_cri(&live, &line);
        all.extend(line);
        std::thread::sleep(Duration::from_millis(50));
    };
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    while polled() < 1.0 {
        assert!(Instant::now() < deadline, "20 writes a second for 30 s and the directory was never polled");
        write("busy", n);
        n += 1;
    }
    rotate(&live, "20261121-100000");
    (0..20).for_each(|k| write("polled-after-rotation", k));
    node.wait_for(&all, WAIT);
    while polled() > 0.0 {
        assert!(Instant::now() < deadline + WAIT, "quiet for 30 s and the directory is still polled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = numbered("watched-again", 1);
    append_cri(&live, &last);
    all.extend(last);
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

/// The stdout sink, stopped right after its last write: it acknowledges what it wrote
/// at once and ends as soon as the buffer thread has (regression: a sink that took the
/// buffer thread's last nudge while its last write was unacknowledged went back to
/// sleep, and the stop waited out `shutdown_timeout`). Every line once, no warning.
#[test]
fn the_stdout_sink_stops_right_after_its_last_write() {
    use std::io::BufRead;
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let config = node.config_with("", "");
    let text = fs::read_to_string(&config).unwrap();
    let file_sink = format!("[sink]\ntype = \"file\"\npath = \"{}\"\n", node.out().display());
    fs::write(&config, text.replace(&file_sink, "[sink]\ntype = \"stdout\"\n")).unwrap();
    for round in 0..3 {
        let (mut shipper, stdout) = Shipper::start_piped(&config, node.out());
        let lines = numbered(&format!("round-{round}"), 200);
        append_cri(&live, &lines);
        let mut got = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            got.push(v["message"].as_str().unwrap().to_string());
            if got.len() == lines.len() {
                break;
            }
        }
        assert!(shipper.stop().success());
        assert_exactly_once(got, &lines);
        let log = shipper.stderr();
        assert!(!log.contains("shutdown_timeout"), "round {round}: the stop waited out shutdown_timeout:\n{log}");
    }
}

/// A node where logferry starts before the kubelet made `/var/log/containers` (and
/// `/var/log/pods`): the first pod's lines arrive by inotify alone (the rescan is an
/// hour away) — its nearest existing ancestor is watched until the directory exists.
#[test]
fn an_include_directory_made_after_the_start_is_watched() {
    let node = Node::new();
    fs::remove_dir_all(node.root().join("var")).unwrap();
    let mut shipper = node.start("rescan_interval = \"1h\"");
    shipper.metrics_addr();
    fs::create_dir_all(node.root().join("var/log/containers")).unwrap();
    let live = node.container("default", "early", "app", 0);
    let lines = numbered("first-pod", 20);
    append_cri(&live, &lines);
    node.wait_for(&lines, WAIT);
    shipper.stop_and_check(&node, &lines);
}

#[test]
fn a_hot_file_does_not_starve_the_others() {
    let node = Node::new();
    let hot = node.container("default", "chatty", "app", 0);
    let quiet = node.container("default", "quiet", "app", 0);
    let backlog = numbered("hot-backlog-line-with-some-padding-to-make-it-longer", 30_000);
    append_cri(&hot, &backlog);
    let few = numbered("quiet", 10);
    append_cri(&quiet, &few);
    let mut shipper = node.start("read_bytes_per_turn = 65536");
    let all = [backlog, few.clone()].concat();
    node.wait_for(&all, WAIT);
    assert!(shipper.stop().success());
    let msgs = node.messages();
    let last_quiet = msgs.iter().rposition(|m| m.starts_with("quiet-")).unwrap();
    // Turns of 64 KiB: the quiet file is read in the first round, not after 3 MB.
    assert!(last_quiet < msgs.len() / 10, "the quiet file's lines came at {last_quiet} of {}", msgs.len());
}

#[test]
fn backlogged_files_are_read_by_two_threads_each_in_order() {
    read_backlogs_on_two_threads("");
}

#[test]
fn backlogged_files_are_read_by_two_threads_under_backpressure() {
    // 11 MB of backlog against an 8 MiB buffer that writes nearly everything: reading
    // pauses and resumes while helpers take turns. (The tailer's unit test covers a
    // helper's turn coming back to a full channel, which this rarely hits.)
    read_backlogs_on_two_threads("[buffer]\nmax_bytes = 8388608\nmemory_bytes = 65536\n");
}

fn read_backlogs_on_two_threads(tables: &str) {
    let node = Node::new();
    let files: Vec<_> = (0..4).map(|i| node.container("default", &format!("backlog{i}"), "app", 0)).collect();
    let per_file: Vec<Vec<String>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let m = numbered(&format!("backlog{i}-line-with-some-padding-so-that-turns-fill"), 25_000);
            append_cri(f, &m);
            m
        })
        .collect();
    let config = node.config_with("read_bytes_per_turn = 65536", tables);
    let mut shipper = Shipper::start(std::process::Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.out());
    let all = per_file.concat();
    node.wait_for(&all, WAIT);
    // More is written while following: the helper also serves a live file.
    let more: Vec<String> = (0..4).flat_map(|i| numbered(&format!("backlog{i}-more"), 2_000)).collect();
    for (i, f) in files.iter().enumerate() {
        append_cri(f, &more[i * 2_000..(i + 1) * 2_000]);
    }
    let all = [all, more.clone()].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
    let got = node.messages();
    for i in 0..4 {
        let prefix = format!("backlog{i}-");
        let want: Vec<&String> = per_file[i].iter().chain(&more[i * 2_000..(i + 1) * 2_000]).collect();
        let mine: Vec<&String> = got.iter().filter(|m| m.starts_with(&prefix)).collect();
        assert!(mine == want, "file {i}'s lines are out of order");
    }
    let stopped = shipper.stderr().lines().find(|l| l.contains("\"stopped\"")).map(str::to_string).unwrap_or_default();
    let helped: u64 = log_field(&stopped, "helper_read_turns").and_then(|v| v.parse().ok()).unwrap_or(0);
    let own: u64 = log_field(&stopped, "read_turns").and_then(|v| v.parse().ok()).unwrap_or(0);
    // 4 files of ~2.7 MB, read 256 KiB at a time: ~40 turns, most with a backlog.
    assert!(helped >= 8 && own >= 8, "turns: {own} by the tailer, {helped} by the helper: {stopped}");
}

#[test]
fn more_files_than_descriptors_are_all_followed() {
    let node = Node::new();
    let files: Vec<_> = (0..4).map(|i| node.container("default", &format!("pod{i}"), "app", 0)).collect();
    let mut all = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let m = numbered(&format!("capped-{i}"), 20);
        append_cri(f, &m);
        all.extend(m);
    }
    let mut shipper = node.start("max_open_files = 2");
    node.wait_for(&all, Duration::from_secs(60));
    // Closed files are reopened where they were when written to again.
    for (i, f) in files.iter().enumerate() {
        let m = numbered(&format!("again-{i}"), 5);
        append_cri(f, &m);
        all.extend(m);
    }
    node.wait_for(&all, Duration::from_secs(60));
    shipper.stop_and_check(&node, &all);
}

#[test]
fn namespace_pod_and_container_filters_and_the_own_pod() {
    let node = Node::new();
    let keep = node.container("shop", "cart-7d9f", "app", 0);
    let system = node.container("kube-system", "coredns-1", "coredns", 0);
    let sidecar = node.container("shop", "cart-7d9f", "istio-proxy", 0);
    let own = node.container("logging", "logferry-abcde", "logferry", 0);
    let wanted = numbered("kept", 10);
    append_cri(&keep, &wanted);
    for (f, what) in [(&system, "system"), (&sidecar, "sidecar"), (&own, "own")] {
        append_cri(f, &numbered(what, 10));
    }
    let filters = "exclude_namespaces = [\"kube-*\"]\nexclude_containers = [\"istio-proxy\"]";
    let mut shipper = node.start_with_env(filters, &[("POD_NAMESPACE", "logging"), ("POD_NAME", "logferry-abcde")]);
    node.wait_for(&wanted, WAIT);
    // Give the excluded files every chance to show up before looking.
    std::thread::sleep(Duration::from_millis(1500));
    shipper.stop_and_check(&node, &wanted);
}

/// Waits until the shipper's log contains `text` `n` times.
pub fn wait_for_log(shipper: &crate::node::Shipper, text: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while shipper.stderr().matches(text).count() < n {
        assert!(std::time::Instant::now() < deadline, "never logged {text:?}:\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_changes_the_filters_without_loss_or_duplicates() {
    let node = Node::new();
    let kept = node.container("default", "web", "app", 0);
    let dropped = node.container("default", "noisy", "app", 0);
    let (k1, d1) = (numbered("kept-before", 100), numbered("noisy-before", 100));
    append_cri(&kept, &k1);
    append_cri(&dropped, &d1);
    let mut shipper = node.start("");
    node.wait_for(&[k1.clone(), d1.clone()].concat(), WAIT);

    // A broken configuration is refused; the running one stays.
    std::fs::write(node.root().join("logferry.toml"), "[tail]\nstart_at = \"middle\"\n").unwrap();
    shipper.hangup();
    wait_for_log(&shipper, "the new configuration is refused", 1);
    let k2 = numbered("kept-still", 10);
    append_cri(&kept, &k2);
    node.wait_for(&k2, WAIT);

    // Now exclude the noisy pod.
    node.config("exclude_pods = [\"noisy\"]");
    shipper.hangup();
    wait_for_log(&shipper, "SIGHUP: reloading", 1);
    std::thread::sleep(Duration::from_millis(1500)); // a rescan applies it
    let (k3, d3) = (numbered("kept-after", 100), numbered("noisy-after", 100));
    append_cri(&kept, &k3);
    append_cri(&dropped, &d3);
    node.wait_for(&k3, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    shipper.stop_and_check(&node, &[k1, d1, k2, k3].concat());
}

/// Regression (review): with every descriptor taken by a busy stream, another stream
/// waited forever and the loop spun.
#[test]
fn a_stream_waiting_for_a_descriptor_gets_one_while_another_keeps_writing() {
    let node = Node::new();
    let busy = node.container("default", "busy", "app", 0);
    let quiet = node.container("default", "quiet", "app", 0);
    append_cri(&busy, &numbered("busy-0", 1));
    let two = numbered("quiet-line", 2);
    append_cri(&quiet, &two);
    let mut shipper = node.start("max_open_files = 1");
    let mut all = [numbered("busy-0", 1), two.clone()].concat();
    let deadline = std::time::Instant::now() + WAIT;
    let mut i = 1;
    while !node.messages().contains(&two[1]) {
        assert!(std::time::Instant::now() < deadline, "the quiet stream never got a descriptor");
        let line = numbered(&format!("busy-{i}"), 1);
        append_cri(&busy, &line);
        all.extend(line);
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}

/// Regression (review): a damaged older `.gz` in the set made the resume fail, and the
/// retry started over at the live file, skipping the rest of the rotated file.
#[test]
fn a_damaged_gz_beside_the_stream_does_not_lose_the_resume_position() {
    let node = Node::new();
    let live = node.container("default", "web", "app", 0);
    let first = numbered("first", 3);
    append_cri(&live, &first);
    node.ship_once(&first);
    let more = numbered("more", 3);
    append_cri(&live, &more);
    rotate(&live, "20260101-000010");
    let last = numbered("last", 1);
    append_cri(&live, &last);
    fs::write(live.with_file_name("0.log.20260101-000001.gz"), b"\x1f\x8b not really gzip").unwrap();
    let mut shipper = node.start("");
    let all = [first, more, last].concat();
    node.wait_for(&all, WAIT);
    shipper.stop_and_check(&node, &all);
}
