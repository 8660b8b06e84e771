//! `logferry verify` against a running `logferry run`: it passes when every marked
//! line lands whole and once (S3 sink, CloudWatch Logs, Firehose's bucket, a file),
//! and fails — exit 1, naming what is missing or cut — when the lines are routed
//! elsewhere or cut. The marked lines include lines split by the runtime (16 KiB).

use std::fs;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::aws::{logferry_command, Moto};
use crate::node::{Node, Shipper};

/// `logferry verify` with `args`, quick polling, the test's dummy credentials.
fn verify(config: &Path, args: &[&str]) -> Output {
    let mut cmd = logferry_command();
    cmd.args(["verify", "--config", config.to_str().unwrap(), "--poll", "300ms", "--settle", "2s"]).args(args);
    cmd.env_remove("POD_UID").env_remove("CONTAINER_NAME").output().unwrap()
}

fn report(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The four kinds of destination verify reads back, each with every line once.
#[test]
fn verify_passes_when_every_line_lands_whole_and_once_everywhere() {
    let moto = Moto::start();
    let endpoint = &moto.endpoint;
    moto.helper(&["s3-setup", endpoint, "logs"]);
    moto.firehose_to_s3("archive", "archive-bucket");
    let node = Node::new();
    let root = node.root().display().to_string();
    let config = node.sinks_config(
        "",
        &format!(
            r#"[sinks.local]
type = "file"
path = "{root}/local.jsonl"
[sinks.s3]
type = "s3"
bucket = "logs"
region = "us-east-1"
endpoint = "{endpoint}"
node = "n1"
key_prefix = "fluentd/test/{{namespace}}/dt={{date}}/"
object_max_age = "1s"
[sinks.cloudwatch]
type = "cloudwatch"
cluster = "test"
node = "n1"
region = "us-east-1"
endpoint = "{endpoint}"
linger = "200ms"
[sinks.firehose]
type = "firehose"
delivery_stream = "archive"
region = "us-east-1"
endpoint = "{endpoint}"
linger = "200ms"
"#
        ),
    );
    let mut shipper = Shipper::start(logferry_command(), &config, node.root().join("shipper.jsonl"));
    let live = node.container("verify", "verify-x1", "verify", 0);
    let out = verify(&config, &["--emit", live.to_str().unwrap(), "--lines", "40", "--timeout", "90s", "--firehose-bucket", "archive-bucket", "--firehose-prefix", "logs/"]);
    let text = report(&out);
    assert!(out.status.success(), "verify failed:\n{text}\nlogferry:\n{}", shipper.stderr());
    assert_eq!(text.matches("40 of 40 whole and once; landed after").count(), 4, "{text}");
    assert!(text.contains("12 of them over 16 KiB") && text.contains("s3://logs/fluentd/test/verify/dt=") && text.contains("log group /eks/test/containers") && text.contains("PASSED"), "{text}");
    assert!(shipper.stop().success());
}

/// In a pod, the lines go to stdout and the runtime writes them to the log file: here
/// the test is the runtime (CRI pieces of at most 16 KiB), and the pod's names come from
/// the downward API's environment.
#[test]
fn verify_in_a_pod_writes_to_stdout_and_finds_its_lines_by_its_pod_names() {
    let moto = Moto::start();
    let endpoint = &moto.endpoint;
    moto.helper(&["s3-setup", endpoint, "logs"]);
    let node = Node::new();
    let config = node.sinks_config(
        "",
        &format!(
            r#"[sinks.s3]
type = "s3"
bucket = "logs"
region = "us-east-1"
endpoint = "{endpoint}"
node = "n1"
compression = "zstd"
key_prefix = "{{namespace}}/{{pod}}/{{date}}/{{hour}}/"
object_max_age = "1s"
"#
        ),
    );
    let mut shipper = Shipper::start(logferry_command(), &config, node.root().join("shipper.jsonl"));
    let live = node.container("e2e", "logferry-verify-abc12", "verify", 0);
    let mut child = logferry_command()
        .args(["verify", "--config", config.to_str().unwrap(), "--lines", "30", "--timeout", "90s", "--poll", "300ms", "--settle", "2s"])
        .env("POD_NAMESPACE", "e2e")
        .env("POD_NAME", "logferry-verify-abc12")
        .env("CONTAINER_NAME", "verify")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut log = fs::OpenOptions::new().append(true).open(&live).unwrap();
    for line in stdout.lines() {
        let line = line.unwrap();
        let pieces: Vec<&[u8]> = line.as_bytes().chunks(16 * 1024).collect();
        let stamp = logferry::event::time::format_rfc3339(logferry::event::time::now());
        for (i, piece) in pieces.iter().enumerate() {
            let tag = if i + 1 < pieces.len() { "P" } else { "F" };
            log.write_all(format!("{stamp} stdout {tag} ").as_bytes()).unwrap();
            log.write_all(piece).unwrap();
            log.write_all(b"\n").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = report(&out);
    assert!(out.status.success(), "verify failed:\n{text}\nlogferry:\n{}", shipper.stderr());
    assert!(text.contains("s3://logs/e2e/logferry-verify-abc12/") && text.contains("30 of 30 whole and once"), "{text}");
    assert!(shipper.stop().success());
}

/// The S3 sink's route leaves the verify pod's namespace out: verify says so up front,
/// waits out its timeout, and fails naming every line as missing there.
#[test]
fn verify_fails_naming_the_missing_lines_when_they_are_routed_elsewhere() {
    let moto = Moto::start();
    let endpoint = &moto.endpoint;
    moto.helper(&["s3-setup", endpoint, "logs"]);
    let node = Node::new();
    let root = node.root().display().to_string();
    let config = node.sinks_config(
        "",
        &format!(
            r#"[sinks.local]
type = "file"
path = "{root}/local.jsonl"
[sinks.s3]
type = "s3"
bucket = "logs"
region = "us-east-1"
endpoint = "{endpoint}"
node = "n1"
object_max_age = "1s"
[sinks.s3.route]
include_namespaces = ["shop"]
"#
        ),
    );
    let mut shipper = Shipper::start(logferry_command(), &config, node.root().join("shipper.jsonl"));
    let live = node.container("verify", "verify-x2", "verify", 0);
    let out = verify(&config, &["--emit", live.to_str().unwrap(), "--lines", "20", "--timeout", "8s"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("sink \"s3\": its route does not select namespace \"verify\""), "{text}");
    assert!(text.contains("MISSING 20 of 20: lines 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (10 more)"), "{text}");
    assert!(text.contains("20 of 20 whole and once") && text.contains("FAILED"), "the file sink got them all: {text}");
    assert!(shipper.stop().success());
}

/// A shipper that truncates messages over 20,000 bytes: verify finds the long lines cut
/// and fails, saying which and how long they were.
#[test]
fn verify_fails_when_lines_arrive_cut() {
    let node = Node::new();
    let root = node.root().display().to_string();
    let config = node.sinks_config("", &format!("[sinks.local]\ntype = \"file\"\npath = \"{root}/local.jsonl\"\n"));
    let text = fs::read_to_string(&config).unwrap().replace("[decode]\n", "[decode]\nmax_message_bytes = 20000\n");
    fs::write(&config, text).unwrap();
    let mut shipper = Shipper::start(Command::new(env!("CARGO_BIN_EXE_logferry")), &config, node.root().join("shipper.jsonl"));
    let live = node.container("verify", "verify-x3", "verify", 0);
    let out = verify(&config, &["--emit", live.to_str().unwrap(), "--lines", "20", "--timeout", "60s"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("16 of 20 whole and once") && text.contains("CUT 4: lines 8, 9, 18, 19"), "{text}");
    assert!(text.contains("line 8 (20000 of 40000 bytes, flagged partial or truncated)"), "{text}");
    assert!(shipper.stop().success());
}

/// Bad flags are usage errors (64) that say what to do.
#[test]
fn verify_rejects_what_it_cannot_check() {
    let node = Node::new();
    let config = node.config("");
    let out = verify(&config, &["--sink", "nope", "--emit", "/tmp/x.log"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(report(&out).contains("--sink nope: the configuration has no sink of that name (it has default)"), "{}", report(&out));
    let out = verify(&config, &["--emit", node.root().join("x.log").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(report(&out).contains("not a kubelet log path"), "{}", report(&out));
}
