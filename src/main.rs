//! The `logferry` command line: parses flags, runs a command, prints the whole error
//! chain and exits with a meaningful status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use logferry::config::{Config, ConfigError, MultilineConfig};
use logferry::decode::multiline::Parser as TraceParser;
use logferry::decode::{DecodeOptions, FormatChoice, Oversize, DEFAULT_MAX_MESSAGE_BYTES};
use logferry::event::MessageFormat;
use logferry::replay::{self, ReplayOptions};
use logferry::sink::Target;

/// Exit status when some inputs could not be read (the rest were processed).
const EXIT_PARTIAL: u8 = 1;
/// Exit status for a usage or configuration problem (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "logferry", version, about = "Ships Kubernetes container logs; replays log files locally.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the node's container logs and ship them to the configured sink (the
    /// DaemonSet's entrypoint). Stops on SIGTERM/SIGINT after draining.
    Run(RunArgs),
    /// Decode container log files (Docker or CRI, plain or .gz, files or directories)
    /// and write one JSON event per logical line.
    Replay(ReplayArgs),
    /// Validate a configuration: print every problem with its key path, or the
    /// effective configuration. Exit 0 if valid, 64 if not.
    Check(RunArgs),
    /// Prove that logs land: write marked lines (to stdout, as a pod, or to a CRI log
    /// file with --emit), then read each destination back until all arrived. Exit 0
    /// only if every line landed whole and once everywhere; 1 if not.
    Verify(VerifyArgs),
    /// Look at the disk buffer.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
}

#[derive(Subcommand)]
enum BufferCommand {
    /// What the buffer holds: segments, records, unacknowledged, oldest age,
    /// corruption found. Reads only.
    Inspect {
        /// The data_dir of the configuration (the buffer is in its `buffer/`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The configuration of the `logferry run` that ships the lines (its sinks are
    /// read back).
    #[arg(long, short)]
    config: PathBuf,
    /// Check only this sink (default: every sink that can be read back).
    #[arg(long)]
    sink: Option<String>,
    /// How many marked lines to write (64 bytes to 70,000: a tenth over 16 KiB).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    lines: u32,
    /// Give up after this long (e.g. 15m, 90s).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Once every line was seen, look again after this long for duplicates.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    settle: std::time::Duration,
    /// Time between looks at the destinations.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    poll: std::time::Duration,
    /// Append the lines, as containerd would, to this log file
    /// (<dir>/var/log/pods/<namespace>_<pod>_<uid>/<container>/0.log) instead of
    /// writing them to stdout: for a local `logferry run` following <dir>.
    #[arg(long)]
    emit: Option<PathBuf>,
    /// The pod's namespace, for the destination's names (default: $POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// The pod's name (default: $POD_NAME).
    #[arg(long, env = "POD_NAME")]
    pod: Option<String>,
    /// The pod's uid (default: $POD_UID).
    #[arg(long, env = "POD_UID")]
    pod_uid: Option<String>,
    /// The container's name (default: $CONTAINER_NAME).
    #[arg(long, env = "CONTAINER_NAME")]
    container: Option<String>,
    /// The bucket a Firehose sink's delivery stream writes to (a Firehose sink is
    /// checked only with it).
    #[arg(long)]
    firehose_bucket: Option<String>,
    /// The stream's S3 prefix, with the s3 sink's placeholders for its partitions
    /// (e.g. "fluentd/prod/{namespace}/dt={date}/").
    #[arg(long, default_value = "")]
    firehose_prefix: String,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Files or directories (walked recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Where events go (default: stdout).
    #[arg(long, value_enum)]
    to: Option<To>,
    /// Ship through the sink of this `logferry run` configuration file (Firehose, say),
    /// decoding as its [decode] says; instead of --to.
    #[arg(long, short, conflicts_with_all = ["to", "output", "format", "max_message_bytes", "oversize", "message_format", "multiline"])]
    config: Option<PathBuf>,
    /// The output file for `--to file`.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The log format; `auto` detects it per file from its first decodable line.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Decode only: count, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// A rejoined message longer than this is truncated or dropped (see --oversize).
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// What to do with a message over --max-message-bytes.
    #[arg(long, value_enum, default_value_t = OversizeArg::Truncate)]
    oversize: OversizeArg,
    /// `json` embeds a message that is a JSON object as an object.
    #[arg(long, value_enum, default_value_t = MessageFormatArg::String)]
    message_format: MessageFormatArg,
    /// Draw a progress bar: `auto` when stderr is a terminal.
    #[arg(long, value_enum, default_value_t = When::Auto)]
    progress: When,
    /// Print no summary.
    #[arg(long, short)]
    quiet: bool,
    /// Group stack traces with this built-in rule, in every file (a run's
    /// `[[multiline]]` entries choose per container; use --config for those).
    #[arg(long, value_enum)]
    multiline: Option<ParserArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ParserArg {
    Java,
    Python,
    Go,
    Ruby,
    Nodejs,
}

impl From<ParserArg> for TraceParser {
    fn from(p: ParserArg) -> TraceParser {
        match p {
            ParserArg::Java => TraceParser::Java,
            ParserArg::Python => TraceParser::Python,
            ParserArg::Go => TraceParser::Go,
            ParserArg::Ruby => TraceParser::Ruby,
            ParserArg::Nodejs => TraceParser::NodeJs,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum To {
    Stdout,
    File,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Docker,
    Cri,
}

#[derive(Clone, Copy, ValueEnum)]
enum OversizeArg {
    Truncate,
    Drop,
}

#[derive(Clone, Copy, ValueEnum)]
enum MessageFormatArg {
    String,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum When {
    Auto,
    Always,
    Never,
}

/// A problem with the command line itself, as opposed to a failure while running.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// glibc's allocator, tuned for a shipper with a memory budget (`run`, and `replay`
/// into a sink): large blocks (batches, staging buffers) are mapped on their own and
/// go back to the system when freed — by default the threshold rises after the first
/// large free and they stay in the heap, where freed ones are kept — and at most two
/// arenas, so that each thread does not keep a heap of its own.
fn keep_the_heap_compact() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    keep_the_heap_compact();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_shipper(args),
        Command::Replay(args) => run_replay(args),
        Command::Check(args) => run_check(args),
        Command::Verify(args) => run_verify(args),
        Command::Buffer { command: BufferCommand::Inspect { data_dir } } => run_inspect(&data_dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            match err.downcast_ref::<ConfigError>() {
                Some(ConfigError::Invalid { problems }) => {
                    eprintln!("logferry: error: the configuration has {} problem(s):", problems.len());
                    problems.iter().for_each(|p| eprintln!("  {p}"));
                }
                _ => eprintln!("logferry: error: {}", error_chain(&err)),
            }
            if err.is::<UsageError>() || err.is::<ConfigError>() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes, `: `-separated; a cause the message above already ends
/// with (a `thiserror` message that shows its source) is not repeated.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn run_shipper(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    init_logging(&config.log);
    let report = logferry::pipeline::run(config, args.config)?;
    let t = &report.tail;
    let d = t.decode();
    tracing::info!(
        events = report.events_shipped,
        bytes = report.bytes_shipped,
        left_in_buffer = report.left_in_buffer,
        buffer_dropped_records = report.buffer.dropped_records,
        buffer_written_bytes = report.buffer.written_bytes,
        lines = d.lines,
        rejoined = d.rejoined,
        malformed = d.malformed,
        partial = d.partial,
        rotations = t.follow.rotations,
        truncations = t.follow.truncations,
        rotated_unread_bytes = t.follow.rotated_unread_bytes,
        read_turns = t.turns,
        helper_read_turns = t.helper_turns,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|source| ConfigError::Read { path: args.config.clone(), source })?;
    let env = logferry::config::EnvView::from_process();
    let effective = logferry::config::effective_toml(&text, &env)?;
    print_out(&format!("# {} is valid. The effective configuration, defaults filled in:\n\n{effective}", args.config.display()));
    Ok(ExitCode::SUCCESS)
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if args.emit.is_none() && std::io::stdout().is_terminal() {
        eprintln!("logferry verify: writing the marked lines to this terminal: run it as a pod (see manifests/verify/), or use --emit FILE");
    }
    let opts = logferry::verify::VerifyOptions {
        sink: args.sink,
        lines: args.lines,
        timeout: args.timeout,
        settle: args.settle,
        poll: args.poll,
        emit: args.emit,
        who: logferry::verify::Who { namespace: args.namespace, pod: args.pod, pod_uid: args.pod_uid, container: args.container },
        firehose_bucket: args.firehose_bucket,
        firehose_prefix: args.firehose_prefix,
    };
    let verdict = logferry::verify::verify(&config, &opts).map_err(|e| match e.to_string().starts_with("--") {
        true => UsageError(format!("{e:#}")).into(),
        false => e,
    })?;
    eprintln!("{verdict}");
    Ok(if verdict.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run_inspect(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let report = logferry::buffer::inspect::inspect(data_dir)?;
    print_out(&report.to_string());
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// logferry's own logs go to stderr: JSON in a container, text on a terminal (or as
/// `log.format` says); `RUST_LOG`, if set, wins over `log.level`.
fn init_logging(log: &logferry::config::LogConfig) {
    use logferry::config::LogFormat;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let terminal = std::io::stderr().is_terminal();
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(terminal).init();
    }
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.config {
        let config = Config::load(path)?;
        let outputs = match args.dry_run {
            true => Vec::new(),
            false => config.sinks.iter().map(|s| Target::from_config(&s.config, &config.data_dir, &s.name)).collect(),
        };
        let opts = ReplayOptions {
            paths: args.paths.clone(),
            decode: config.decode,
            message_format: config.message_format,
            outputs,
            show_progress: show_progress(args.progress),
            router: std::sync::Arc::new(logferry::route::Router::new(config.sinks.iter().map(|s| s.route.clone()).collect())),
            multiline: config.multiline.clone(),
        };
        return finish_replay(&opts, args.quiet);
    }
    let output = match (args.dry_run, args.to.unwrap_or(To::Stdout), args.output) {
        (true, _, _) => None,
        (false, To::Stdout, None) => Some(Target::Stdout),
        (false, To::Stdout, Some(_)) => {
            return Err(UsageError("--output needs --to file".into()).into());
        }
        (false, To::File, Some(path)) => Some(Target::File(path)),
        (false, To::File, None) => {
            return Err(UsageError("--to file needs --output PATH".into()).into());
        }
    };
    if args.max_message_bytes == 0 {
        return Err(UsageError("--max-message-bytes must be at least 1".into()).into());
    }
    let opts = ReplayOptions {
        paths: args.paths,
        decode: DecodeOptions {
            format: match args.format {
                FormatArg::Auto => FormatChoice::Auto,
                FormatArg::Docker => FormatChoice::Docker,
                FormatArg::Cri => FormatChoice::Cri,
            },
            max_message_bytes: args.max_message_bytes,
            oversize: match args.oversize {
                OversizeArg::Truncate => Oversize::Truncate,
                OversizeArg::Drop => Oversize::Drop,
            },
        },
        message_format: match args.message_format {
            MessageFormatArg::String => MessageFormat::String,
            MessageFormatArg::Json => MessageFormat::Json,
        },
        outputs: output.into_iter().collect(),
        show_progress: show_progress(args.progress),
        router: std::sync::Arc::new(logferry::route::Router::everything()),
        multiline: args.multiline.map(|p| vec![MultilineConfig::everywhere(p.into())]).unwrap_or_default(),
    };
    finish_replay(&opts, args.quiet)
}

fn show_progress(when: When) -> bool {
    match when {
        When::Auto => std::io::stderr().is_terminal(),
        When::Always => true,
        When::Never => false,
    }
}

fn finish_replay(opts: &ReplayOptions, quiet: bool) -> anyhow::Result<ExitCode> {
    let summary = replay::replay(opts).context("replay stopped")?;
    for (path, why) in &summary.failures {
        eprintln!("logferry: cannot read {}: {why}", path.display());
    }
    if !quiet {
        eprintln!("{summary}");
    }
    Ok(if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PARTIAL) })
}
