//! A fake node for following tests: pod log directories, `/var/log/containers`
//! links, and a running `logferry run` pointed at them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("var/log/containers")).unwrap();
        fs::create_dir_all(dir.path().join("var/log/pods")).unwrap();
        fs::create_dir_all(dir.path().join("data")).unwrap();
        Self { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> PathBuf {
        self.root().join("out.jsonl")
    }

    pub fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    /// Creates `…/pods/<ns>_<pod>_uid-<pod>/<container>/<restart>.log` and its link.
    pub fn container(&self, ns: &str, pod: &str, container: &str, restart: u32) -> PathBuf {
        let dir = self.root().join(format!("var/log/pods/{ns}_{pod}_uid-{pod}/{container}"));
        fs::create_dir_all(&dir).unwrap();
        let live = dir.join(format!("{restart}.log"));
        File::create(&live).unwrap();
        let id = format!("{:064x}", (restart as u64 + 1) * 0x1234 + container.len() as u64);
        let link = self.root().join(format!("var/log/containers/{pod}_{ns}_{container}-{id}.log"));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&live, &link).unwrap();
        live
    }

    /// The config: test-friendly intervals, plus `tail_extra` TOML lines in `[tail]`.
    pub fn config(&self, tail_extra: &str) -> PathBuf {
        self.config_with(tail_extra, "")
    }

    /// As [`Self::config`], with whole tables (`[buffer]` …) appended.
    pub fn config_with(&self, tail_extra: &str, tables: &str) -> PathBuf {
        let root = self.root().display();
        // A test may set its own.
        let rescan = if tail_extra.contains("rescan_interval") { "" } else { "rescan_interval = \"1s\"" };
        let cfg = format!(
            r#"data_dir = "{root}/data"
shutdown_timeout = "10s"
[tail]
include = ["{root}/var/log/containers/*.log"]
roots = ["{root}/var/log/pods"]
{rescan}
rotate_wait = "2s"
checkpoint_interval = "200ms"
{tail_extra}
[decode]
partial_flush_timeout = "1s"
[sink]
type = "file"
path = "{root}/out.jsonl"
[metrics]
listen = "127.0.0.1:0"
{tables}
"#
        );
        let path = self.root().join("logferry.toml");
        fs::write(&path, cfg).unwrap();
        path
    }

    pub fn start(&self, tail_extra: &str) -> Shipper {
        self.start_with_env(tail_extra, &[])
    }

    pub fn start_with_env(&self, tail_extra: &str, env: &[(&str, &str)]) -> Shipper {
        let config = self.config(tail_extra);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
        cmd.env_remove("POD_NAME").env_remove("POD_NAMESPACE").envs(env.iter().copied());
        Shipper::start(cmd, &config, self.out())
    }

    /// Runs logferry until `msgs` have arrived, then stops it cleanly.
    pub fn ship_once(&self, msgs: &[String]) {
        let mut shipper = self.start("");
        self.wait_for(msgs, Duration::from_secs(30));
        assert!(shipper.stop().success(), "{}", shipper.stderr());
    }

    /// Messages in the output, in order.
    pub fn messages(&self) -> Vec<String> {
        read_events(&self.out()).into_iter().map(|v| v["message"].as_str().unwrap().to_string()).collect()
    }

    /// Waits until every one of `want` is in the output (or panics after `timeout`).
    pub fn wait_for(&self, want: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got: HashMap<String, usize> = count(self.messages());
            let missing: Vec<&String> = want.iter().filter(|m| !got.contains_key(*m)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{} of {} messages never arrived, e.g. {:?}", missing.len(), want.len(), &missing[..missing.len().min(3)]);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Node {
    /// A config with `sinks` (whole `[sinks.…]` tables) in place of the node's `[sink]`,
    /// `buffer` keys in `[buffer]`, and the default partial flush (5 s).
    pub fn sinks_config(&self, buffer: &str, sinks: &str) -> PathBuf {
        let root = self.root().display().to_string();
        let text = format!(
            r#"data_dir = "{root}/data"
shutdown_timeout = "10s"
[tail]
include = ["{root}/var/log/containers/*.log"]
roots = ["{root}/var/log/pods"]
rescan_interval = "1s"
checkpoint_interval = "200ms"
[decode]
partial_flush_timeout = "5s"
[buffer]
{buffer}
[metrics]
listen = "127.0.0.1:0"
{sinks}
"#
        );
        let path = self.root().join("sinks.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

impl Node {
    /// Waits until the saved checkpoints change (or `timeout` passes).
    pub fn wait_for_checkpoint_change(&self, timeout: Duration) {
        let before = self.checkpoints();
        let deadline = Instant::now() + timeout;
        while self.checkpoints() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The checkpoints saved in the node's data_dir (snapshot and journal), as logferry
    /// would load them: each stream's path and position.
    pub fn checkpoints(&self) -> Vec<(PathBuf, logferry::tail::checkpoint::Position)> {
        match logferry::tail::checkpoint::Checkpoints::load(&self.data()) {
            Ok(c) => c.iter().map(|(p, pos)| (p.to_path_buf(), pos)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether some stream's saved checkpoint is at `offset`.
    pub fn checkpointed_at(&self, offset: u64) -> bool {
        self.checkpoints().iter().any(|(_, pos)| pos.offset == offset)
    }
}

pub fn count(msgs: Vec<String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in msgs {
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

/// Every message of `want` exactly once, and nothing else.
pub fn assert_exactly_once(got: Vec<String>, want: &[String]) {
    let counts = count(got);
    let dups: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).map(|(m, n)| (m.clone(), *n)).collect();
    assert!(dups.is_empty(), "{} messages duplicated, e.g. {:?}", dups.len(), &dups[..dups.len().min(3)]);
    let missing: Vec<_> = want.iter().filter(|m| !counts.contains_key(*m)).collect();
    assert!(missing.is_empty(), "{} messages missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(3)]);
    let wanted: std::collections::HashSet<&String> = want.iter().collect();
    let extra: Vec<_> = counts.keys().filter(|m| !wanted.contains(m)).collect();
    assert!(extra.is_empty(), "unexpected messages, e.g. {:?}", &extra[..extra.len().min(3)]);
}

/// The events in a file sink's output so far: whole lines only. A last line without
/// its newline is a write still in progress (a read can see part of a large write);
/// after a clean stop, [`Shipper::stop_and_check`] requires there is none.
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read(path).unwrap_or_default();
    let whole = text.iter().rposition(|&c| c == b'\n').map_or(&text[..0], |at| &text[..=at]);
    whole
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("bad output line {e}: {}", String::from_utf8_lossy(l))))
        .collect()
}

/// Appends CRI lines (`F`) with the given messages.
pub fn append_cri(path: &Path, msgs: &[String]) {
    let mut data = Vec::new();
    for m in msgs {
        data.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout F {m}\n").as_bytes());
    }
    append(path, &data);
}

pub fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(data).unwrap();
}

/// `prefix-0` … `prefix-(n-1)`.
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A running `logferry run`.
pub struct Shipper {
    child: Option<Child>,
    /// Shared by the runs of one test, appended to.
    log: PathBuf,
    /// Where this run's part of `log` starts.
    log_start: usize,
}

impl Shipper {
    /// Starts with its standard output (the `stdout` sink) as a pipe the test reads.
    pub fn start_piped(config: &Path, out: PathBuf) -> (Self, std::process::ChildStdout) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
        cmd.env_remove("POD_NAME").env_remove("POD_NAMESPACE");
        let mut s = Self::start_with_stdout(cmd, config, out, Stdio::piped());
        let stdout = s.child.as_mut().unwrap().stdout.take().unwrap();
        (s, stdout)
    }

    pub fn start(cmd: Command, config: &Path, out: PathBuf) -> Self {
        Self::start_with_stdout(cmd, config, out, Stdio::null())
    }

    fn start_with_stdout(mut cmd: Command, config: &Path, out: PathBuf, stdout: Stdio) -> Self {
        let log = out.with_extension(format!("stderr.{}", std::process::id()));
        let stderr = OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let log_start = stderr.metadata().unwrap().len() as usize;
        let child = cmd
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", std::env::var("TEST_RUST_LOG").unwrap_or("info".into()))
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("logferry starts");
        Self { child: Some(child), log, log_start }
    }

    /// Its own log so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics listener's address, once this run has said where it listens.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.stderr().get(self.log_start..).unwrap_or_default().to_string();
            if let Some(line) = log.lines().find(|l| l.contains("serving /metrics")) {
                if let Some(addr) = log_field(line, "address") {
                    return addr.parse().unwrap();
                }
            }
            assert!(Instant::now() < deadline, "no metrics listener in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A field of one of logferry's log lines, JSON (`"name":"v"`, the default when not
/// on a terminal) or text (`name=v`).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v.get(name).map(|f| f.as_str().map_or_else(|| f.to_string(), str::to_string));
    }
    let rest = line.split(&format!("{name}=")).nth(1)?;
    Some(rest.split_whitespace().next()?.trim_matches('"').to_string())
}

/// A plain HTTP GET to logferry's listener: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

impl Shipper {

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "TERM");
        wait_with_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", self.stderr()))
    }

    /// Waits up to `timeout` for it to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = wait_with_timeout(self.child.as_mut().expect("running"), timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGHUP: reload the configuration file.
    pub fn hangup(&self) {
        signal(self.child.as_ref().expect("running"), "HUP");
    }

    /// SIGTERM; it must exit 0, and `node` must hold every one of `want` exactly once.
    pub fn stop_and_check(&mut self, node: &Node, want: &[String]) {
        let status = self.stop();
        assert!(status.success(), "exit {status}:\n{}", self.stderr());
        let text = fs::read(node.out()).unwrap_or_default();
        assert!(text.is_empty() || text.ends_with(b"\n"), "after a clean stop the output ends in a torn line: {:?}", String::from_utf8_lossy(&text[text.len().saturating_sub(200)..]));
        assert_exactly_once(node.messages(), want);
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    signal_pid(child.id(), sig);
}

/// Sends `sig` (`TERM`, `HUP` …) to process `pid`.
pub fn signal_pid(pid: u32, sig: &str) {
    // The shell's `kill` builtin: no dependency on a `kill` binary being installed.
    let ok = Command::new("sh").args(["-c", &format!("kill -{sig} {pid}")]).status().unwrap().success();
    assert!(ok);
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
