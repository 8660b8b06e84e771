//! What the AWS sinks' tests share: the AWS emulator (moto server, from
//! `tests/install-tools.sh` as `$LOGFERRY_TOOLS/bin/moto_server`; each test starts its
//! own on a free 127.0.0.1 port, read back with `tests/aws_emulator.py`), dummy
//! credentials, and `logferry replay --config`.

use std::collections::HashMap;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("LOGFERRY_TOOLS").map(PathBuf::from).unwrap_or_else(|| "/opt/logferry-tools".into());
    let path = dir.join("bin").join(name);
    assert!(path.exists(), "{} not found: install the test tools with `bash tests/install-tools.sh` (as root)", path.display());
    path
}

/// A moto server on a free port, stopped on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    pub fn helper(&self, args: &[&str]) -> Vec<u8> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws_emulator.py");
        let out = Command::new(tool("python")).arg(script).args(args).output().unwrap();
        assert!(out.status.success(), "aws_emulator.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    pub fn firehose_to_s3(&self, stream: &str, bucket: &str) {
        self.helper(&["firehose-setup", &self.endpoint, stream, bucket]);
    }

    /// Every line of every object in `bucket`.
    pub fn s3_lines(&self, bucket: &str) -> Vec<Vec<u8>> {
        let data = self.helper(&["s3-read", &self.endpoint, bucket]);
        data.split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dummy credentials from the environment; nothing may look for others (IMDS).
pub fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
}

/// `logferry` with the dummy credentials and no pod identity of its own.
pub fn logferry_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    aws_env(&mut cmd).env_remove("POD_NAME").env_remove("POD_NAMESPACE");
    cmd
}

/// Writes a replay config into `dir`.
pub fn replay_config(dir: &Path, sink: &str) -> PathBuf {
    let path = dir.join("replay.toml");
    fs::write(&path, format!("data_dir = \"{}/data\"\n{sink}", dir.display())).unwrap();
    path
}

pub fn replay(config: &Path, paths: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    aws_env(&mut cmd).args(["replay", "--config", config.to_str().unwrap()]);
    cmd.args(paths).output().unwrap()
}

/// The JSON lines `logferry replay` writes to stdout for `paths`: what must arrive.
pub fn expected_lines(paths: &[&Path]) -> Vec<Vec<u8>> {
    let out = Command::new(env!("CARGO_BIN_EXE_logferry")).arg("replay").args(paths).output().unwrap();
    assert!(out.status.success());
    out.stdout.split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
}

/// Every expected line arrived exactly once, byte for byte.
pub fn assert_each_once(got: &[Vec<u8>], want: &[Vec<u8>]) {
    let mut counts: HashMap<&[u8], i64> = HashMap::new();
    for l in want {
        *counts.entry(l).or_default() += 1;
    }
    for l in got {
        *counts.entry(l).or_default() -= 1;
    }
    let missing = counts.values().filter(|&&c| c > 0).count();
    let extra: Vec<_> = counts.iter().filter(|(_, &c)| c < 0).map(|(l, _)| String::from_utf8_lossy(l).into_owned()).take(3).collect();
    assert_eq!(missing, 0, "{missing} of {} lines never arrived", want.len());
    assert!(extra.is_empty(), "duplicated or unexpected lines, e.g. {extra:?}");
    assert_eq!(got.len(), want.len());
}


/// A metric's value from logferry's `/metrics`.
pub fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, body) = crate::node::http_get(addr, "/metrics");
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A node with one container (`default/api/app`), and `logferry run` on it with the
/// node's usual config but `sink` (a whole `[sink]` table) in place of its file sink.
pub fn run_with_sink(sink: &str) -> (crate::node::Node, PathBuf, crate::node::Shipper) {
    let node = crate::node::Node::new();
    let live = node.container("default", "api", "app", 0);
    let config = node.config_with("", "");
    let text = fs::read_to_string(&config).unwrap();
    let file_sink = format!("[sink]\ntype = \"file\"\npath = \"{}\"\n", node.out().display());
    fs::write(&config, text.replace(&file_sink, sink)).unwrap();
    let shipper = crate::node::Shipper::start(logferry_command(), &config, node.out());
    (node, live, shipper)
}

/// Five SIGKILLs of `logferry run` shipping to `sink`, restarting each time. Each round
/// first ships a batch and lets it settle (delivered, and the ack position saved),
/// then appends another and kills logferry while that one is in flight. Every line
/// must arrive at least once; a settled line never twice (a record is released from
/// the buffer only once the sink accepted it, and the release survives the crash), so
/// duplicates come only from what was in flight. `append` writes log lines;
/// `delivered` lists the messages the destination holds.
pub fn sigkill_rounds(sink: &str, append: impl Fn(&Path, &[String]), delivered: impl Fn() -> Vec<String>) {
    let (node, live, mut shipper) = run_with_sink(sink);
    let config = node.root().join("logferry.toml");
    let wait_for = |want: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: std::collections::HashSet<String> = delivered().into_iter().collect();
            let missing = want.iter().filter(|m| !got.contains(*m)).count();
            if missing == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{missing} of {} lines never arrived", want.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (mut settled, mut in_flight) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let calm = crate::node::numbered(&format!("settled{round}"), 1000);
        append(&live, &calm);
        wait_for(&calm);
        // The ack position is saved every checkpoint_interval (200 ms).
        std::thread::sleep(Duration::from_millis(600));
        settled.extend(calm);
        let busy = crate::node::numbered(&format!("inflight{round}"), 2000);
        append(&live, &busy);
        std::thread::sleep(Duration::from_millis(50 + 60 * round as u64));
        shipper.kill();
        in_flight.extend(busy);
        shipper = crate::node::Shipper::start(logferry_command(), &config, node.out());
    }
    wait_for(&in_flight);
    assert!(shipper.stop().success(), "{}", shipper.stderr());
    let counts = crate::node::count(delivered());
    let twice: Vec<&String> = settled.iter().filter(|m| counts[*m] > 1).collect();
    assert!(twice.is_empty(), "{} settled lines were delivered again, e.g. {:?}", twice.len(), &twice[..twice.len().min(3)]);
    let repeated = in_flight.iter().filter(|m| counts[*m] > 1).count();
    let all = settled.len() + in_flight.len();
    eprintln!("sigkill: {all} lines, {repeated} delivered twice ({:.1} %), all of them in flight at a kill", 100.0 * repeated as f64 / all as f64);
}

/// While `throttle` is set the destination throttles everything: the pace gauge
/// `rate` must fall to an eighth of `ceiling` or less, with at least 3 throttles
/// counted by `throttled`. Then throttling stops and the pace must climb back to
/// `ceiling`; `feed(n)` is called every 100 ms meanwhile, since the pace grows with
/// successful calls.
pub fn pace_drops_and_recovers(
    shipper: &crate::node::Shipper,
    rate: &str,
    throttled: &str,
    ceiling: f64,
    throttle: &std::sync::atomic::AtomicBool,
    mut feed: impl FnMut(usize),
) {
    let addr = shipper.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(addr, rate) > ceiling / 8.0 {
        assert!(Instant::now() < deadline, "the pace never dropped:\n{}", shipper.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(addr, throttled) >= 3.0);
    throttle.store(false, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while metric(addr, rate) < ceiling {
        assert!(Instant::now() < deadline, "the pace never recovered:\n{}", shipper.stderr());
        feed(n);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}
