//! The S3 sink against the emulator: objects read back (decompressed), every line
//! exactly once, keys under the template's prefix (namespace and day), objects from
//! several nodes side by side in one bucket.

use std::fs;
use std::path::{Path, PathBuf};

use crate::aws::{assert_each_once, expected_lines, replay, replay_config, Moto};

/// A `[sink]` for S3 at `endpoint`, plus `extra` keys.
fn s3_sink(endpoint: &str, bucket: &str, node: &str, extra: &str) -> String {
    format!("[sink]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\nnode = \"{node}\"\nkey_prefix = \"fluentd/prod/{{namespace}}/dt={{date}}/\"\n{extra}\n")
}

#[derive(serde::Deserialize)]
struct Object {
    key: String,
    size: usize,
    content_encoding: Option<String>,
    content_type: Option<String>,
    lines: Vec<String>,
}

fn objects(moto: &Moto, bucket: &str) -> Vec<Object> {
    serde_json::from_slice(&moto.helper(&["s3-objects", &moto.endpoint, bucket])).unwrap()
}

/// CRI lines of `pod` in `ns`, on two days (the day is the event's, not the upload's),
/// with hex filler that compresses about as well as logs do (to about half).
fn pod_log(dir: &Path, ns: &str, pod: &str, n: usize) -> PathBuf {
    let d = dir.join(format!("var/log/pods/{ns}_{pod}_uid-{pod}/app"));
    fs::create_dir_all(&d).unwrap();
    let path = d.join("0.log");
    let mut text = String::new();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ n as u64;
    for i in 0..n {
        let day = if i < n / 2 { "05" } else { "06" };
        let mut filler = String::new();
        while filler.len() < i * 7919 % 700 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            filler.push_str(&format!("{:016x} ", x));
        }
        text.push_str(&format!("2026-12-{day}T23:00:00.{i:09}Z stdout F {pod} line {i} {filler}\n"));
    }
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn replay_writes_gzipped_objects_per_namespace_and_day_each_line_once() {
    let moto = Moto::start();
    moto.helper(&["s3-setup", &moto.endpoint, "logs"]);
    let dir = tempfile::tempdir().unwrap();
    let web = pod_log(dir.path(), "shop", "web", 3000);
    let dns = pod_log(dir.path(), "kube-system", "coredns", 500);
    let config = replay_config(dir.path(), &s3_sink(&moto.endpoint, "logs", "ip-10-0-0-1", "object_max_bytes = 131072"));
    let out = replay(&config, &[&dir.path().join("var")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let objects = objects(&moto, "logs");
    assert!(objects.len() > 4, "{} objects: the 128 KiB threshold cuts them", objects.len());
    for o in &objects {
        assert_eq!(o.content_encoding.as_deref(), Some("gzip"), "{}", o.key);
        assert_eq!(o.content_type.as_deref(), Some("application/x-ndjson"));
        assert!(o.key.ends_with(".jsonl.gz") && o.key.contains("/ip-10-0-0-1-"), "{}", o.key);
        for line in &o.lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ns = v["kubernetes"]["namespace"].as_str().unwrap();
            let day: String = v["time"].as_str().unwrap()[..10].chars().filter(|c| c.is_ascii_digit()).collect();
            assert!(o.key.starts_with(&format!("fluentd/prod/{ns}/dt={day}/")), "{} holds an event of {ns} on {day}", o.key);
        }
        // The threshold is on the object as stored: over it by at most a few percent.
        let raw: usize = o.lines.iter().map(|l| l.len() + 1).sum();
        assert!(o.size <= 131_072 * 105 / 100, "{}: {} bytes stored, over the 128 KiB threshold", o.key, o.size);
        assert!(o.size < raw * 7 / 10, "{}: compressed, {} of {raw} bytes", o.key, o.size);
    }
    let got: Vec<Vec<u8>> = objects.iter().flat_map(|o| o.lines.iter().map(|l| format!("{l}\n").into_bytes())).collect();
    assert_each_once(&got, &expected_lines(&[&web, &dns]));
}

/// Two nodes (two processes, each its own node name) write the same files' events to
/// one bucket at once: no object overwrites another, every line is there twice (once
/// per node), uncompressed with `compression = "none"`.
#[test]
fn several_nodes_never_overwrite_each_other() {
    let moto = Moto::start();
    moto.helper(&["s3-setup", &moto.endpoint, "shared"]);
    let dir = tempfile::tempdir().unwrap();
    let web = pod_log(dir.path(), "shop", "web", 2000);
    let runs: Vec<_> = ["node-a", "node-b"]
        .iter()
        .map(|node| {
            let sub = dir.path().join(node);
            fs::create_dir_all(&sub).unwrap();
            let config = replay_config(&sub, &s3_sink(&moto.endpoint, "shared", node, "compression = \"none\"\nobject_max_bytes = 65536"));
            let web = web.clone();
            std::thread::spawn(move || replay(&config, &[&web]))
        })
        .collect();
    for r in runs {
        let out = r.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let objects = objects(&moto, "shared");
    assert!(objects.iter().all(|o| o.content_encoding.is_none() && o.key.ends_with(".jsonl")));
    let want = expected_lines(&[&web]);
    for node in ["node-a", "node-b"] {
        let got: Vec<Vec<u8>> = objects.iter().filter(|o| o.key.contains(&format!("/{node}-"))).flat_map(|o| o.lines.iter().map(|l| format!("{l}\n").into_bytes())).collect();
        assert_each_once(&got, &want);
    }
}

/// Faults the emulator cannot make (503 SlowDown, 500, resets, a slow answer), from
/// the fault server: every line arrives, and no object is written twice once accepted.
#[test]
fn faults_lose_nothing_and_accepted_objects_are_never_written_again() {
    use crate::fault::{Action, FaultServer, Rng};
    let mut rng = Rng(0x5eed_5eed);
    let server = FaultServer::start(move |_| match rng.next() % 8 {
        0 => Action::Throttle,
        1 => Action::ServerError,
        2 => Action::Reset,
        3 => Action::Error(503, "SlowDown"),
        _ => Action::Accept,
    });
    let dir = tempfile::tempdir().unwrap();
    let web = pod_log(dir.path(), "shop", "web", 4000);
    let sink = s3_sink(&server.endpoint(), "faulty", "n1", "compression = \"none\"\nobject_max_bytes = 65536\nretry_max_wait = \"200ms\"\nmax_in_flight = 8");
    let out = replay(&replay_config(dir.path(), &sink), &[&web]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = server.seen.lock().unwrap();
    assert!(seen.faults + seen.throttled > 5, "the plan injected faults ({} faults, {} throttled)", seen.faults, seen.throttled);
    let mut got = Vec::new();
    for (key, bodies) in &seen.accepted {
        assert_eq!(bodies.len(), 1, "{key} was accepted more than once");
        got.extend(bodies[0].split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec));
    }
    assert_each_once(&got, &expected_lines(&[&web]));
}

/// Five SIGKILLs of `logferry run` shipping to S3 (the fault server, accepting), with
/// objects sealed every 200 ms: every line arrives, a settled line never twice.
#[test]
fn sigkill_mid_object_loses_nothing() {
    use crate::fault::{Action, FaultServer};
    let server = FaultServer::start(|_| Action::Accept);
    let sink = s3_sink(&server.endpoint(), "killed", "n1", "compression = \"none\"\nobject_max_age = \"200ms\"");
    let messages = || -> Vec<String> {
        let seen = server.seen.lock().unwrap();
        seen.accepted.values().flatten().flat_map(|body| body.split_inclusive(|&c| c == b'\n').map(crate::fault::message)).collect()
    };
    crate::aws::sigkill_rounds(&sink, crate::node::append_cri, messages);
}

/// `logferry run` over the kubelet simulator (rotation, split lines, five namespaces)
/// shipping to S3 in the emulator: every line exactly once, each object under its
/// events' namespace and day.
#[test]
fn a_busy_node_ships_every_line_once_to_s3() {
    let moto = Moto::start();
    moto.helper(&["s3-setup", &moto.endpoint, "node-logs"]);
    let node = crate::node::Node::new();
    let config = node.sinks_config("", &s3_sink(&moto.endpoint, "node-logs", "n1", "object_max_age = \"1s\"").replace("[sink]", "[sinks.archive]"));
    let mut shipper = crate::node::Shipper::start(crate::aws::logferry_command(), &config, node.out());
    let written = crate::kubelet::run_cri(
        node.root(),
        &["--pods", "5", "--containers-per-pod", "2", "--rate", "600", "--duration", "5", "--seed", "18", "--max-files", "5", "--long-every", "40"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let lines = loop {
        let lines: Vec<(String, String)> = objects(&moto, "node-logs").into_iter().flat_map(|o| o.lines.into_iter().map(move |l| (o.key.clone(), l))).collect();
        if lines.len() >= written.len() || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    for (key, line) in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ns = v["kubernetes"]["namespace"].as_str().unwrap();
        assert!(key.starts_with(&format!("fluentd/prod/{ns}/dt=")), "{key} holds an event of {ns}");
    }
    let got: Vec<String> = lines.iter().map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string()).collect();
    crate::node::assert_exactly_once(got, &written);
}

/// `compression = "zstd"`: `.jsonl.zst` objects that decompress to every line once.
#[test]
fn zstd_objects_decompress_to_every_line_once() {
    use crate::fault::{Action, FaultServer};
    let server = FaultServer::start(|_| Action::Accept);
    let dir = tempfile::tempdir().unwrap();
    let web = pod_log(dir.path(), "shop", "web", 2000);
    let sink = s3_sink(&server.endpoint(), "zst", "n1", "compression = \"zstd\"\nobject_max_bytes = 131072");
    let out = replay(&replay_config(dir.path(), &sink), &[&web]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = server.seen.lock().unwrap();
    assert!(seen.accepted.len() > 2);
    let mut got = Vec::new();
    for (key, bodies) in &seen.accepted {
        assert!(key.split('?').next().unwrap().ends_with(".jsonl.zst"), "{key}");
        let data = zstd::decode_all(&bodies[0][..]).unwrap();
        assert!(bodies[0].len() < data.len(), "{key}: compressed");
        got.extend(data.split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec));
    }
    assert_each_once(&got, &expected_lines(&[&web]));
}

/// An object over 16 MiB goes in parts (multipart upload, in the emulator): read back
/// whole, every line once.
#[test]
fn large_objects_are_uploaded_in_parts() {
    let moto = Moto::start();
    moto.helper(&["s3-setup", &moto.endpoint, "big"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("var/log/pods/shop_web_uid-web/app");
    fs::create_dir_all(&d).unwrap();
    let log = d.join("0.log");
    let mut text = String::new();
    for i in 0..12_000 {
        text.push_str(&format!("2026-12-06T10:00:00.{i:09}Z stdout F line {i} {}\n", "y".repeat(1800)));
    }
    fs::write(&log, text).unwrap();
    let sink = s3_sink(&moto.endpoint, "big", "n1", "compression = \"none\"\nobject_max_bytes = 33554432");
    let out = replay(&replay_config(dir.path(), &sink), &[&log]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let objects = objects(&moto, "big");
    assert!(objects.iter().any(|o| o.size >= 16 << 20), "an object over 16 MiB: {:?}", objects.iter().map(|o| o.size).collect::<Vec<_>>());
    let got: Vec<Vec<u8>> = objects.iter().flat_map(|o| o.lines.iter().map(|l| format!("{l}\n").into_bytes())).collect();
    assert_each_once(&got, &expected_lines(&[&log]));
}

/// A multipart upload whose parts fail (a 500, a reset) now and then: each failed part
/// is sent again by itself; a part that fails four times in a row gives the upload up
/// (aborted) and the object is retried whole. Every line arrives once, no object twice.
#[test]
fn a_failing_part_retries_the_object_and_loses_nothing() {
    use crate::fault::{Action, FaultServer};
    let mut parts = 0u32;
    let server = FaultServer::start(move |call| {
        if !call.stream.ends_with("#part") {
            return Action::Accept;
        }
        parts += 1;
        // Attempt 1: part 1 ok; part 2 fails once (500); part 3 is reset, then fails
        // three more times: the upload is given up. Attempt 2: part 1 fails once.
        match parts {
            2 | 5..=8 => Action::ServerError,
            4 => Action::Reset,
            _ => Action::Accept,
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("var/log/pods/shop_web_uid-web/app");
    fs::create_dir_all(&d).unwrap();
    let log = d.join("0.log");
    let mut text = String::new();
    for i in 0..12_000 {
        text.push_str(&format!("2026-12-06T10:00:00.{i:09}Z stdout F line {i} {}\n", "z".repeat(1800)));
    }
    fs::write(&log, text).unwrap();
    let sink = s3_sink(&server.endpoint(), "parts", "n1", "compression = \"none\"\nobject_max_bytes = 20971520\nretry_max_wait = \"200ms\"");
    let out = replay(&replay_config(dir.path(), &sink), &[&log]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.faults, 6, "parts failed");
    assert_eq!(seen.aborted, 1, "only the part that failed four times in a row gave its upload up");
    let mut got = Vec::new();
    for (key, bodies) in &seen.accepted {
        assert_eq!(bodies.len(), 1, "{key} was completed more than once");
        got.extend(bodies[0].split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec));
    }
    assert!(seen.accepted.values().any(|b| b[0].len() >= 16 << 20), "an object went in parts");
    assert_each_once(&got, &expected_lines(&[&log]));
}
