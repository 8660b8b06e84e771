//! Configuration of `logferry run`: the TOML file, checked into a typed [`Config`].
//!
//! Two stages, as ripgrep does with its flags. `raw` deserializes the text into
//! loose serde structs that keep whatever was written: a value of the wrong type or
//! an unknown key is data there, not an error. Then `build` turns them into a
//! `Config`, with `check`'s helpers recording *every* problem under its key path,
//! so that one `logferry check` lists all there is to fix. Only a TOML syntax error
//! stops early: past it nothing can be read.
//!
//! The reference config, with every key, its default and what it is for, is
//! `tests/fixtures/config/node.toml`; a test keeps it in step with this module.
//!
//! Nothing here touches the paths it is given (no opening, creating or checking that
//! they exist): the stages that use them do, and report it there. The only I/O is
//! reading the file in [`Config::load`] and two variables in [`EnvView::from_process`].

mod check;
mod env;
mod error;
mod aws;
pub mod multiline;
mod pods;
mod raw;
mod route;
mod sink;

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;

use crate::decode::{DecodeOptions, FormatChoice, Oversize};
use crate::event::MessageFormat;
use check::{Checker, GlobKind};
pub use error::{ConfigError, Problem};
use pods::NameFilter;
pub use pods::PodFilter;
use crate::buffer::WhenFull;
use raw::{Field, List, RawBuffer, RawConfig, RawDecode, RawLog, RawMetrics, RawTail};
pub use aws::{CloudWatchConfig, Compression, FirehoseConfig, Pacing, S3Config, SinkOversize};
pub use multiline::MultilineConfig;
pub use route::RouteConfig;
pub use sink::{DEFAULT_SINK, FIREHOSE_BYTES_PER_SECOND, FIREHOSE_RECORDS_PER_SECOND, FIREHOSE_REQUESTS_PER_SECOND, MAX_SINKS};
pub use env::OVERRIDES as ENV_OVERRIDES;

const DEFAULT_DATA_DIR: &str = "/var/lib/logferry";
/// logferry's metrics port.
const DEFAULT_METRICS_PORT: u16 = 9180;
/// The kubelet's symlinks, one per container.
const DEFAULT_INCLUDE: &[&str] = &["/var/log/containers/*.log"];
/// Where the `/var/log/containers` links point: the kubelet's files (containerd,
/// CRI-O) and Docker's json-file logs.
const DEFAULT_ROOTS: &[&str] = &["/var/log/pods", "/var/lib/docker/containers"];
/// Above this a message is no longer a log line; CloudWatch Logs caps events at 1 MiB.
const MAX_MESSAGE_BYTES_LIMIT: usize = 16 << 20;
/// A buffer smaller than a few batches could not hold one in flight and one arriving.
const MIN_BUFFER_BYTES: usize = 8 << 20;
/// More than this per turn would only make batches, and the memory for them, larger.
const MAX_READ_BYTES_PER_TURN: usize = 64 << 20;
/// More reading threads than this would only contend (and a node's share is small).
const MAX_READ_THREADS: usize = 8;
/// Less than a page per turn makes fairness cost more than it buys.
const MIN_READ_BYTES_PER_TURN: usize = 4096;

/// The checked configuration of `logferry run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Disk buffer and checkpoints live here.
    pub data_dir: PathBuf,
    /// How long to drain on SIGTERM before exiting; keep it under the pod's
    /// `terminationGracePeriodSeconds`.
    pub shutdown_timeout: Duration,
    pub tail: TailConfig,
    pub decode: DecodeOptions,
    pub message_format: MessageFormat,
    /// A split line whose next piece has not come for this long is emitted as partial.
    pub partial_flush_timeout: Duration,
    pub buffer: BufferConfig,
    /// At least one; a lone `[sink]` table is the sink named `default`.
    pub sinks: Vec<NamedSink>,
    /// `[[multiline]]`: stack traces grouped, per container; the first entry that
    /// selects a container applies.
    pub multiline: Vec<MultilineConfig>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub log: LogConfig,
}

/// logferry's own logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter ("info", "logferry=debug,warn"); `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise (in a container).
    Auto,
    Json,
    Text,
}

/// The disk buffer between reading and shipping (`<data_dir>/buffer`).
#[derive(Debug, Clone, Copy)]
pub struct BufferConfig {
    /// Cap on the buffer's size on disk.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// Group commit: fsync at most this often…
    pub fsync_interval: Duration,
    /// …or once this much was written since the last fsync.
    pub fsync_bytes: u64,
    /// Batches held in memory while the sink takes them; what the sink has not
    /// acknowledged within `fsync_interval` is written to disk (0: write everything).
    pub memory_bytes: u64,
}

/// Where to start in a file that was already there at the very first start (no
/// checkpoint yet). Files that appear later are always read from their beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

/// How the tailer learns that files changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify; falls back to polling if the kernel refuses watches.
    Inotify,
    /// Look at every file twice a second: for file systems without inotify (NFS,
    /// some overlays).
    Poll,
}

#[derive(Debug, Clone)]
pub struct TailConfig {
    /// The include globs as written, for `tail` to find the directories to watch
    /// (each glob's literal prefix).
    pub include: Vec<String>,
    pub include_set: GlobSet,
    pub exclude: GlobSet,
    /// A symlink is followed only if its target resolves inside one of these.
    pub roots: Vec<PathBuf>,
    pub start_at: StartAt,
    pub watch: WatchMode,
    /// The full rescan that catches what inotify missed (overflow, lost watches).
    pub rescan_interval: Duration,
    /// How often a busy container's files are read (see `tail::tailer::hot`).
    pub busy_poll_interval: Duration,
    /// How long a deleted file's descriptor is kept open after its end was read,
    /// in case the runtime still writes a last line to it.
    pub rotate_wait: Duration,
    pub checkpoint_interval: Duration,
    pub max_open_files: usize,
    /// Fairness: a file yields to the others after this many bytes in one turn.
    pub read_bytes_per_turn: usize,
    /// Threads reading backlogged files at once (see `tail::helper`).
    pub read_threads: usize,
    pub pods: PodFilter,
}

/// One destination: what it is, its share of the buffer, and which events it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSink {
    /// The operator's name (`default` for a lone `[sink]`): the `sink` label of its
    /// metrics.
    pub name: String,
    /// Its table's key path (`sink`, `sinks.archive`), for messages.
    pub at: String,
    pub config: SinkConfig,
    pub route: RouteConfig,
    /// What this sink may leave unacknowledged in the buffer.
    pub max_bytes: u64,
    /// What happens when it has: reading waits, or this sink drops its oldest.
    pub when_full: WhenFull,
}

const WHEN_FULL: [(&str, WhenFull); 2] = [("block", WhenFull::Block), ("drop_oldest", WhenFull::DropOldest)];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    Stdout,
    File { path: PathBuf },
    Firehose(FirehoseConfig),
    CloudWatch(CloudWatchConfig),
    S3(S3Config),
}

impl SinkConfig {
    /// The `sink` label of metrics.
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::Stdout => "stdout",
            SinkConfig::File { .. } => "file",
            SinkConfig::Firehose(_) => "firehose",
            SinkConfig::CloudWatch(_) => "cloudwatch",
            SinkConfig::S3(_) => "s3",
        }
    }

    /// The pace an AWS sink starts at, (bytes, requests) per second — its ceilings —
    /// as `logferry_sink_rate_*` shows it (0 for what the sink does not pace by).
    pub fn starting_rate(&self) -> (f64, f64) {
        match self {
            SinkConfig::Firehose(c) => (c.pacing.bytes_per_second as f64, f64::from(c.pacing.requests_per_second)),
            SinkConfig::CloudWatch(c) => (0.0, f64::from(c.pacing.requests_per_second)),
            SinkConfig::S3(c) => (0.0, f64::from(c.pacing.requests_per_second)),
            SinkConfig::Stdout | SinkConfig::File { .. } => (0.0, 0.0),
        }
    }
}

/// The environment variables the config depends on, passed in so that building a
/// config is a pure function of its inputs (and tests need not touch the process
/// environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvView {
    /// `POD_NAMESPACE`: our own pod's namespace (downward API).
    pub pod_namespace: Option<String>,
    /// `POD_NAME`: our own pod's name (downward API).
    pub pod_name: Option<String>,
    /// Every variable, for `${VAR}` in values and `LOGFERRY_*` overrides.
    pub vars: std::collections::BTreeMap<String, String>,
}

impl EnvView {
    /// Reads `POD_NAMESPACE` and `POD_NAME`; unset or empty is `None`.
    pub fn from_process() -> EnvView {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        EnvView {
            pod_namespace: var("POD_NAMESPACE"),
            pod_name: var("POD_NAME"),
            vars: std::env::vars().collect(),
        }
    }

    /// (namespace, pod) when both are known.
    fn own_pod(&self) -> Option<(String, String)> {
        Some((self.pod_namespace.clone()?, self.pod_name.clone()?))
    }
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Checks a config given as text, with our own pod from the process environment.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_env(text, &EnvView::from_process())
    }

    /// Checks a config given as text, with our own pod from `env`.
    pub fn from_toml_str_with_env(text: &str, env: &EnvView) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::syntax(text, &e))?;
        env::apply_overrides(&mut table, &env.vars);
        let mut problems = Vec::new();
        env::interpolate(&mut table, &env.vars, &mut problems);
        let raw: RawConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid {
            problems: vec![Problem { key: String::new(), message: e.message().to_string() }],
        })?;
        match (build(raw, env), problems.is_empty()) {
            (Ok(config), true) => Ok(config),
            (Ok(_), false) => Err(ConfigError::Invalid { problems }),
            (Err(more), _) => {
                problems.extend(more);
                Err(ConfigError::Invalid { problems })
            }
        }
    }
}

/// The reference configuration: every key at its default.
const REFERENCE: &str = include_str!("../../tests/fixtures/config/node.toml");

/// The effective configuration of a valid `text`, as TOML: every key, the file's
/// values (after `${VAR}` and `LOGFERRY_*`) over the defaults.
pub fn effective_toml(text: &str, env: &EnvView) -> Result<String, ConfigError> {
    let config = Config::from_toml_str_with_env(text, env)?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::syntax(text, &e))?;
    env::apply_overrides(&mut table, &env.vars);
    env::interpolate(&mut table, &env.vars, &mut Vec::new());
    let mut merged: toml::Table = toml::from_str(REFERENCE).expect("the reference config parses");
    let reference_route = merged["sink"]["route"].as_table().cloned().unwrap_or_default();
    merged.remove("sink");
    // A sink's keys depend on its type: taken as written, with the keys every sink
    // has filled in (its share of the buffer, its route).
    for sink in &config.sinks {
        let path: Vec<&str> = if sink.at == "sink" { vec!["sink"] } else { vec!["sinks", &sink.name] };
        let written = path.iter().try_fold(&table, |t, k| t.get(*k).and_then(toml::Value::as_table)).cloned().unwrap_or_default();
        let mut filled = written;
        filled.insert("max_bytes".into(), toml::Value::Integer(sink.max_bytes as i64));
        let when_full = WHEN_FULL.iter().find(|(_, w)| *w == sink.when_full).map_or("block", |(n, _)| n);
        filled.insert("when_full".into(), toml::Value::String(when_full.into()));
        let mut route = reference_route.clone();
        if let Some(toml::Value::Table(written)) = filled.remove("route") {
            merge(&mut route, written);
        }
        filled.insert("route".into(), toml::Value::Table(route));
        match path.as_slice() {
            [one] => {
                merged.insert((*one).into(), toml::Value::Table(filled));
            }
            _ => {
                let sinks = merged.entry("sinks").or_insert_with(|| toml::Value::Table(Default::default()));
                if let toml::Value::Table(sinks) = sinks {
                    sinks.insert(sink.name.clone(), toml::Value::Table(filled));
                }
            }
        }
    }
    table.remove("sink");
    table.remove("sinks");
    fill_multiline_defaults(&mut table);
    merge(&mut merged, table);
    Ok(toml::to_string_pretty(&merged).unwrap_or_default())
}

/// Each `[[multiline]]` entry as written, with `max_lines` and `flush_timeout` filled
/// in where it leaves them out.
fn fill_multiline_defaults(table: &mut toml::Table) {
    let Some(toml::Value::Array(entries)) = table.get_mut("multiline") else { return };
    for entry in entries.iter_mut().filter_map(toml::Value::as_table_mut) {
        entry.entry("max_lines").or_insert(toml::Value::Integer(i64::from(multiline::DEFAULT_MAX_LINES)));
        let flush = humantime::format_duration(multiline::DEFAULT_FLUSH_TIMEOUT).to_string();
        entry.entry("flush_timeout").or_insert(toml::Value::String(flush));
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Builds the config, or returns every problem met on the way.
fn build(raw: RawConfig, env: &EnvView) -> Result<Config, Vec<Problem>> {
    let mut ck = Checker::default();
    ck.unknown_keys("", &raw.unknown, raw::TOP_KEYS);
    let data_dir = ck.absolute_path("data_dir", raw.data_dir, DEFAULT_DATA_DIR);
    let shutdown_timeout = ck.duration(
        "shutdown_timeout",
        raw.shutdown_timeout,
        Duration::from_secs(20),
        false,
    );
    let tail = ck.table("tail", raw.tail);
    let tail = build_tail(&mut ck, tail, env);
    let decode = ck.table("decode", raw.decode);
    let (decode, message_format, partial_flush_timeout) = build_decode(&mut ck, decode);
    let buffer = ck.table("buffer", raw.buffer);
    let buffer = build_buffer(&mut ck, buffer);
    let sinks = sink::build_sinks(&mut ck, raw.sink, raw.sinks, env, &buffer);
    let multiline = multiline::build_multiline(&mut ck, raw.multiline);
    let metrics = ck.table("metrics", raw.metrics);
    let metrics_listen = build_metrics(&mut ck, metrics);
    let log = ck.table("log", raw.log);
    let log = build_log(&mut ck, log);
    if !ck.problems.is_empty() {
        return Err(ck.problems);
    }
    Ok(Config {
        data_dir,
        shutdown_timeout,
        tail,
        decode,
        message_format,
        partial_flush_timeout,
        buffer,
        sinks,
        multiline,
        metrics_listen,
        log,
    })
}

fn build_tail(ck: &mut Checker, raw: RawTail, env: &EnvView) -> TailConfig {
    ck.unknown_keys("tail", &raw.unknown, raw::TAIL_KEYS);
    let (include, include_set) = build_include(ck, raw.include);
    let exclude = ck.strings("tail.exclude", raw.exclude, &[]);
    let start_at = [("beginning", StartAt::Beginning), ("end", StartAt::End)];
    let watch = [("inotify", WatchMode::Inotify), ("poll", WatchMode::Poll)];
    let secs = Duration::from_secs;
    TailConfig {
        include,
        include_set,
        exclude: ck.globs("tail.exclude", &exclude, GlobKind::ExcludePath),
        roots: ck.absolute_paths("tail.roots", raw.roots, DEFAULT_ROOTS),
        start_at: ck.choice("tail.start_at", raw.start_at, StartAt::Beginning, &start_at),
        watch: ck.choice("tail.watch", raw.watch, WatchMode::Inotify, &watch),
        rescan_interval: ck.duration("tail.rescan_interval", raw.rescan_interval, secs(10), true),
        busy_poll_interval: ck.duration("tail.busy_poll_interval", raw.busy_poll_interval, Duration::from_millis(500), true),
        rotate_wait: ck.duration("tail.rotate_wait", raw.rotate_wait, secs(30), false),
        checkpoint_interval: ck.duration(
            "tail.checkpoint_interval",
            raw.checkpoint_interval,
            Duration::from_millis(200),
            true,
        ),
        max_open_files: ck.count("tail.max_open_files", raw.max_open_files, 1024, 1, None),
        read_bytes_per_turn: ck.count(
            "tail.read_bytes_per_turn",
            raw.read_bytes_per_turn,
            512 << 10,
            MIN_READ_BYTES_PER_TURN,
            Some(MAX_READ_BYTES_PER_TURN),
        ),
        read_threads: ck.count("tail.read_threads", raw.read_threads, 2, 1, Some(MAX_READ_THREADS)),
        pods: PodFilter {
            namespaces: build_names(ck, "tail", "namespaces", raw.include_namespaces, raw.exclude_namespaces, &mut Vec::new()),
            pods: build_names(ck, "tail", "pods", raw.include_pods, raw.exclude_pods, &mut Vec::new()),
            containers: build_names(ck, "tail", "containers", raw.include_containers, raw.exclude_containers, &mut Vec::new()),
            own_pod: match ck.bool("tail.exclude_own_pod", raw.exclude_own_pod, true) {
                true => env.own_pod(),
                false => None,
            },
        },
    }
}

/// The include globs, as written and as a set; at least one.
fn build_include(ck: &mut Checker, field: List) -> (Vec<String>, GlobSet) {
    if matches!(&field, Some(Field::Ok(list)) if list.is_empty()) {
        let msg = format!("must list at least one glob, e.g. {DEFAULT_INCLUDE:?}");
        ck.report("tail.include", msg);
    }
    let items = ck.strings("tail.include", field, DEFAULT_INCLUDE);
    let set = ck.globs("tail.include", &items, GlobKind::IncludePath);
    (items.into_iter().map(|item| item.value).collect(), set)
}

/// `<at>.include_<what>` and `<at>.exclude_<what>` (in `[tail]`, or a sink's route);
/// an empty include list lets all in. `written` gets each non-empty list as written
/// (`include_<what>`, its globs).
fn build_names(ck: &mut Checker, at: &str, what: &str, include: List, exclude: List, written: &mut Vec<(String, Vec<String>)>) -> NameFilter {
    let mut globs = |key: String, field: List| {
        let items = ck.strings(&format!("{at}.{key}"), field, &[]);
        let set = ck.globs(&format!("{at}.{key}"), &items, GlobKind::Name);
        if !items.is_empty() {
            written.push((key, items.iter().map(|i| i.value.clone()).collect()));
        }
        (!items.is_empty()).then_some(set)
    };
    NameFilter {
        include: globs(format!("include_{what}"), include),
        exclude: globs(format!("exclude_{what}"), exclude).unwrap_or_default(),
    }
}

fn build_decode(ck: &mut Checker, raw: RawDecode) -> (DecodeOptions, MessageFormat, Duration) {
    ck.unknown_keys("decode", &raw.unknown, raw::DECODE_KEYS);
    let formats = [
        ("auto", FormatChoice::Auto),
        ("docker", FormatChoice::Docker),
        ("cri", FormatChoice::Cri),
    ];
    let defaults = DecodeOptions::default();
    let decode = DecodeOptions {
        format: ck.choice("decode.format", raw.format, defaults.format, &formats),
        max_message_bytes: ck.count(
            "decode.max_message_bytes",
            raw.max_message_bytes,
            defaults.max_message_bytes,
            1,
            Some(MAX_MESSAGE_BYTES_LIMIT),
        ),
        oversize: ck.choice(
            "decode.oversize",
            raw.oversize,
            defaults.oversize,
            &[("truncate", Oversize::Truncate), ("drop", Oversize::Drop)],
        ),
    };
    let message_format = ck.choice(
        "decode.message_format",
        raw.message_format,
        MessageFormat::default(),
        &[
            ("string", MessageFormat::String),
            ("json", MessageFormat::Json),
        ],
    );
    let partial_flush_timeout = ck.duration(
        "decode.partial_flush_timeout",
        raw.partial_flush_timeout,
        Duration::from_secs(5),
        true,
    );
    (decode, message_format, partial_flush_timeout)
}

fn build_buffer(ck: &mut Checker, raw: RawBuffer) -> BufferConfig {
    ck.unknown_keys("buffer", &raw.unknown, raw::BUFFER_KEYS);
    BufferConfig {
        max_bytes: ck.count("buffer.max_bytes", raw.max_bytes, 1 << 30, MIN_BUFFER_BYTES, None) as u64,
        when_full: ck.choice("buffer.when_full", raw.when_full, WhenFull::Block, &WHEN_FULL),
        fsync_interval: ck.duration(
            "buffer.fsync_interval",
            raw.fsync_interval,
            Duration::from_millis(200),
            true,
        ),
        fsync_bytes: ck.count("buffer.fsync_bytes", raw.fsync_bytes, 32 << 20, 1 << 20, None) as u64,
        memory_bytes: ck.count("buffer.memory_bytes", raw.memory_bytes, crate::buffer::DEFAULT_MEMORY_BYTES as usize, 0, Some(1 << 30)) as u64,
    }
}

fn build_log(ck: &mut Checker, raw: RawLog) -> LogConfig {
    ck.unknown_keys("log", &raw.unknown, raw::LOG_KEYS);
    let level = ck.get("log.level", raw.level, "a string").unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        ck.report("log.level", format!("{level:?} is not a level or filter ({e}); e.g. \"info\", \"warn\", \"logferry=debug,info\""));
    }
    let formats = [("auto", LogFormat::Auto), ("json", LogFormat::Json), ("text", LogFormat::Text)];
    LogConfig { level, format: ck.choice("log.format", raw.format, LogFormat::Auto, &formats) }
}

fn build_metrics(ck: &mut Checker, raw: RawMetrics) -> Option<std::net::SocketAddr> {
    ck.unknown_keys("metrics", &raw.unknown, raw::METRICS_KEYS);
    let Some(field) = raw.listen else {
        return Some(std::net::SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT)));
    };
    let listen = ck.get("metrics.listen", Some(field), "a string")?;
    match listen.as_str() {
        "" => None,
        text => match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                ck.report("metrics.listen", format!("{text:?} is not an address like \"0.0.0.0:9180\" (\"\" turns the listener off)"));
                None
            }
        },
    }
}

#[cfg(test)]
mod tests;
