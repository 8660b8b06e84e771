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

/// CRI lines of `pod` in `ns`, on two days (the day is the event's, not the upload's).
fn pod_log(dir: &Path, ns: &str, pod: &str, n: usize) -> PathBuf {
    let d = dir.join(format!("var/log/pods/{ns}_{pod}_uid-{pod}/app"));
    fs::create_dir_all(&d).unwrap();
    let path = d.join("0.log");
    let mut text = String::new();
    for i in 0..n {
        let day = if i < n / 2 { "05" } else { "06" };
        text.push_str(&format!("2026-12-{day}T23:00:00.{i:09}Z stdout F {pod} line {i} {}\n", "x".repeat(i * 7919 % 700)));
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
    let config = replay_config(dir.path(), &s3_sink(&moto.endpoint, "logs", "ip-10-0-0-1", "object_max_bytes = 262144"));
    let out = replay(&config, &[&dir.path().join("var")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let objects = objects(&moto, "logs");
    assert!(objects.len() > 4, "{} objects: the 256 KiB threshold cuts them", objects.len());
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
        let raw: usize = o.lines.iter().map(|l| l.len() + 1).sum();
        assert!(raw <= 262_144 + 2_000, "{}: {raw} bytes, over the threshold by more than a line", o.key);
        assert!(o.size < raw, "compressed");
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
