//! Replay: push log files through decode → encode → a local sink, once, from start to
//! end — "run my node's logs through it on my laptop and show me what would ship".
//!
//! Files are plain or gzipped, Docker or CRI; each container's rotation set is read as
//! one stream ([`plan`]). An unreadable file is reported by name and skipped; the rest
//! are still replayed. A failing output (disk full, closed pipe) stops the replay.

pub mod plan;
mod progress;

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decode::reassemble::IN_PLACE_SPAN;
use crate::decode::{DecodeOptions, DecodeStats, FileDecoder, Window};
use crate::event::{time, Event, EventEncoder, KubeMeta, MessageFormat};
use crate::route::{Filtered, Mask, Router};
use crate::batch::cloudwatch::{age, Age};
use crate::sink::aws::core::Delivered;
use crate::sink::aws::{AwsSink, Background};
use crate::sink::{JsonLines, SinkError, Target};
use crate::tail::lines::{LineKind, LineReader};
pub use plan::{FileSet, SourceFile};
use progress::Progress;

/// Output is handed to the sink in batches of about this size.
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub paths: Vec<PathBuf>,
    pub decode: DecodeOptions,
    pub message_format: MessageFormat,
    /// Where events go, one per sink of `router` (`replay --config`: every
    /// configured sink); none: decode only (`--dry-run`).
    pub outputs: Vec<Target>,
    pub show_progress: bool,
    /// Which events the sink takes (`replay --config`: its route); a container it
    /// does not select is not read.
    pub router: Arc<Router>,
    /// Stack traces grouped (`replay --config`: its `[[multiline]]`; `--multiline`).
    pub multiline: Vec<crate::config::MultilineConfig>,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub sets: usize,
    /// Bytes of log data decoded (after decompression).
    pub bytes: u64,
    /// Bytes read from disk (differs from `bytes` for `.gz` files).
    pub disk_bytes: u64,
    pub stats: DecodeStats,
    pub elapsed: Duration,
    /// Paths that could not be read (fully), with why.
    pub failures: Vec<(PathBuf, String)>,
    /// What the AWS sinks delivered (summed over them).
    pub delivered: Option<Delivered>,
    /// CloudWatch Logs: events found, before shipping, too old / too new to be accepted.
    pub out_of_range: Option<(u64, u64)>,
    /// Events the routes left out (summed over the sinks), and streams (containers)
    /// no route selected.
    pub filtered: u64,
    pub unselected_sets: usize,
}

/// Replays every file under `opts.paths`. Read problems end up in
/// [`Summary::failures`]; only an output failure is an `Err`.
pub fn replay(opts: &ReplayOptions) -> Result<Summary, SinkError> {
    let started = Instant::now();
    let (sets, plan_errors) = plan::plan(&opts.paths);
    let mut summary = Summary { sets: sets.len(), ..Summary::default() };
    for e in plan_errors {
        summary.failures.push((e.path, e.error.to_string()));
    }
    for output in &opts.outputs {
        if let Target::Aws { sink, data_dir, letters } = output {
            if let AwsSink::CloudWatch(c) = sink.as_ref() {
                let file = data_dir.join("dead-letter").join(format!("{letters}.jsonl"));
                warn_out_of_range(&sets, opts, c.retention_days, &file, &mut summary);
            }
        }
    }
    let mut out = Output::new(opts);
    for output in &opts.outputs {
        let sink = match output {
            Target::Aws { sink, data_dir, letters } => {
                let counters = std::sync::Arc::new(crate::metrics::SinkCounters::new());
                Sink::Remote(Background::start(sink.as_ref().clone(), data_dir, letters, counters).map_err(SinkError::Remote)?)
            }
            target => Sink::Lines(JsonLines::open(target, true)?),
        };
        out.sinks.push(OutSink { sink, batch: Vec::with_capacity(BATCH_BYTES * 2) });
    }
    let total: u64 = sets.iter().flat_map(|s| &s.files).map(|f| f.size).sum();
    let mut progress = Progress::new(opts.show_progress, total);
    for set in &sets {
        replay_set(set, opts, &mut out, &mut progress, &mut summary)?;
    }
    summary.delivered = out.finish()?;
    summary.filtered = out.filtered.0.iter().sum();
    progress.finish();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Says up front how many events CloudWatch Logs will refuse for their time.
fn warn_out_of_range(sets: &[FileSet], opts: &ReplayOptions, retention_days: u32, dead_letters: &std::path::Path, summary: &mut Summary) {
    let (old, new) = count_out_of_range(sets, opts, retention_days);
    if old + new > 0 {
        eprintln!(
            "logferry: warning: {old} event(s) are older than CloudWatch Logs accepts (14 days, or the retention of {retention_days} days) and {new} more than 2 h ahead; they will be set aside in {}, not shipped",
            dead_letters.display()
        );
    }
    summary.out_of_range = Some((old, new));
}

/// Decodes every set once, counting events CloudWatch Logs would refuse for their
/// time: (too old, too new).
fn count_out_of_range(sets: &[FileSet], opts: &ReplayOptions, retention_days: u32) -> (u64, u64) {
    let now_ms = time::now().div_euclid(1_000_000);
    let counting = ReplayOptions { outputs: Vec::new(), show_progress: false, ..opts.clone() };
    let mut out = Output { ages: Some((now_ms, retention_days, 0, 0)), ..Output::new(opts) };
    let mut progress = Progress::new(false, 0);
    let mut scratch = Summary::default();
    for set in sets {
        let _ = replay_set(set, &counting, &mut out, &mut progress, &mut scratch);
    }
    out.ages.map_or((0, 0), |(_, _, old, new)| (old, new))
}

/// Encodes events into each sink's batch and hands full batches to the sinks.
struct Output {
    encoder: EventEncoder,
    /// One per sink, in the router's order.
    sinks: Vec<OutSink>,
    /// An event for several sinks is encoded here once, then copied to each.
    scratch: Vec<u8>,
    /// Counting CloudWatch Logs' time limits instead: (now ms, retention days, too
    /// old, too new).
    ages: Option<(i64, u32, u64, u64)>,
    router: Arc<Router>,
    /// The sinks taking stdout and stderr of the stream being replayed.
    masks: [Mask; 2],
    filtered: Filtered,
    /// The read buffer, lent to each file's reader in turn: a reader of its own
    /// zeroed and faulted in 256 KiB per file, for a file of one line too. It is
    /// [`READ_BUFFER`] long: a split message waits in it (see `decode::reassemble`),
    /// and is moved to the front only when a read finds it at the end.
    read_buffer: Vec<u8>,
}

struct OutSink {
    sink: Sink,
    batch: Vec<u8>,
}

enum Sink {
    Lines(JsonLines),
    /// An AWS sink's delivery loop, on its own thread.
    Remote(Background),
}

impl Output {
    fn new(opts: &ReplayOptions) -> Self {
        Output {
            encoder: EventEncoder::new(opts.message_format),
            sinks: Vec::new(),
            scratch: Vec::new(),
            ages: None,
            router: opts.router.clone(),
            masks: [0; 2],
            filtered: Filtered::default(),
            read_buffer: vec![0; READ_BUFFER],
        }
    }

    #[inline]
    fn event(&mut self, ev: &Event<'_>, kube: &[u8]) {
        let mask = self.masks[ev.stream.index()];
        let kept = if self.router.inspects(mask) { self.router.route(mask, self.encoder.text(ev)) } else { mask };
        self.filtered.count(self.router.all(), kept);
        if kept == 0 {
            return;
        }
        if let Some((now, retention, old, new)) = &mut self.ages {
            match age(ev.time.div_euclid(1_000_000), *now, *retention) {
                Age::TooOld => *old += 1,
                Age::TooNew => *new += 1,
                Age::Ok => {}
            }
        }
        if self.sinks.is_empty() {
            return;
        }
        if kept.count_ones() == 1 {
            let one = &mut self.sinks[kept.trailing_zeros() as usize];
            self.encoder.encode(ev, kube, &mut one.batch);
            return;
        }
        self.scratch.clear();
        self.encoder.encode(ev, kube, &mut self.scratch);
        for (i, out) in self.sinks.iter_mut().enumerate() {
            if kept & (1 << i) != 0 {
                out.batch.extend_from_slice(&self.scratch);
            }
        }
    }

    #[inline]
    fn ship_if_full(&mut self) -> Result<(), SinkError> {
        for out in &mut self.sinks {
            if out.batch.len() >= BATCH_BYTES {
                out.ship()?;
            }
        }
        Ok(())
    }

    /// Ships what is left and waits for every sink; what the AWS sinks delivered,
    /// summed.
    fn finish(&mut self) -> Result<Option<Delivered>, SinkError> {
        let mut total: Option<Delivered> = None;
        for out in &mut self.sinks {
            out.ship()?;
            let delivered = match &mut out.sink {
                Sink::Lines(sink) => sink.finish().map(|()| None)?,
                Sink::Remote(sink) => Some(sink.finish().map_err(SinkError::Remote)?),
            };
            if let Some(d) = delivered {
                let t = total.get_or_insert_with(Delivered::default);
                t.add(&d);
            }
        }
        Ok(total)
    }
}

impl OutSink {
    fn ship(&mut self) -> Result<(), SinkError> {
        match &mut self.sink {
            Sink::Lines(sink) => sink.write_batch(&self.batch)?,
            Sink::Remote(sink) if !self.batch.is_empty() => {
                // Sent first: while the sink's queue is full, the send waits for the
                // sink to take a chunk, whose buffer then comes back as a spare (one
                // looked for before the send found none, and a fresh buffer was
                // mapped and faulted in for nearly every batch).
                sink.send(std::mem::take(&mut self.batch)).map_err(SinkError::Remote)?;
                self.batch = sink.spare().unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES * 2));
            }
            Sink::Remote(_) => {}
        }
        self.batch.clear();
        Ok(())
    }
}

fn replay_set(
    set: &FileSet,
    opts: &ReplayOptions,
    out: &mut Output,
    progress: &mut Progress,
    summary: &mut Summary,
) -> Result<(), SinkError> {
    out.masks = out.router.for_container(set.kube.as_ref());
    if out.masks == [0; 2] {
        summary.unselected_sets += 1;
        return Ok(());
    }
    let multiline = crate::config::multiline::rule_for(&opts.multiline, set.kube.as_ref());
    let mut decoder = FileDecoder::new(&opts.decode).with_multiline(multiline);
    let kube = set.kube.as_ref().map(KubeMeta::json_fragment).unwrap_or_default();
    for file in &set.files {
        summary.files += 1;
        match replay_file(file, opts, &mut decoder, &kube, out, progress, summary) {
            Ok(()) => {}
            Err(FileError::Input(e)) => summary.failures.push((file.path.clone(), e.to_string())),
            Err(FileError::Output(e)) => return Err(e),
        }
        progress.file_done(file.size);
    }
    decoder.finish(&mut |ev| out.event(ev, &kube));
    summary.stats.add(&decoder.stats);
    out.ship_if_full()
}

enum FileError {
    Input(io::Error),
    Output(SinkError),
}

impl From<SinkError> for FileError {
    fn from(e: SinkError) -> Self {
        FileError::Output(e)
    }
}

/// Counts bytes read from disk, for progress on compressed files.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

fn open_input(file: &SourceFile, count: Rc<Cell<u64>>) -> io::Result<Box<dyn Read>> {
    let counted = Counted { inner: File::open(&file.resolved)?, count };
    Ok(if file.gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(128 * 1024, counted)))
    } else {
        Box::new(counted)
    })
}

/// The read buffer's length: four times a split message's [`IN_PLACE_SPAN`], so that
/// the bytes moved to make room for a read are a small part of those read.
const READ_BUFFER: usize = 4 * IN_PLACE_SPAN as usize;

/// Lines longer than this are cut (a Docker line holds at most 16 KiB of `log`,
/// escaped up to six times over, so only a non-container file gets near it).
fn max_line(opts: &DecodeOptions) -> usize {
    (opts.max_message_bytes + 64 * 1024).max(256 * 1024)
}

fn replay_file(
    file: &SourceFile,
    opts: &ReplayOptions,
    decoder: &mut FileDecoder,
    kube: &[u8],
    out: &mut Output,
    progress: &mut Progress,
    summary: &mut Summary,
) -> Result<(), FileError> {
    let disk = Rc::new(Cell::new(0));
    let input = open_input(file, disk.clone()).map_err(FileError::Input)?;
    let mut reader = LineReader::new(input, max_line(&opts.decode), 0);
    if let Some(unused) = reader.lend(std::mem::take(&mut out.read_buffer)) {
        out.read_buffer = unused;
    }
    let mut read_time = time::now();
    let mut seen = 0;
    let result = loop {
        let line = match reader.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break Ok(()),
            Err(e) => break Err(FileError::Input(e)),
        };
        let emit = &mut |ev: &Event<'_>| out.event(ev, kube);
        if line.kind == LineKind::Overlong {
            decoder.overlong_line(line.bytes, line.offset, read_time, emit);
            // What is skipped of it is not to be kept.
            let_go_of_kept(&mut reader, decoder);
        } else {
            let window = Window { bytes: line.window, offset: line.window_offset };
            decoder.line_in(window, line.offset, read_time, emit);
            // The pieces of a split message wait where they were read.
            reader.keep_from(decoder.keep_from());
        }
        if let Err(e) = out.ship_if_full() {
            break Err(e.into());
        }
        if reader.bytes_read() != seen {
            seen = reader.bytes_read();
            read_time = time::now();
            progress.update(disk.get(), summary.stats.events + decoder.stats.events);
        }
    };
    // The next file of the set is read into another buffer.
    let_go_of_kept(&mut reader, decoder);
    // A last line without a newline: the file ended for good, so it is a line.
    if let Some(line) = reader.take_unterminated() {
        decoder.line(line.bytes, line.offset, read_time, &mut |ev| out.event(ev, kube));
    }
    summary.bytes += reader.bytes_read();
    summary.disk_bytes += disk.get();
    if let Some(buffer) = reader.reclaim() {
        out.read_buffer = buffer;
    }
    result
}

/// Copies the pieces of split messages left in `reader`'s buffer out of it, and lets
/// the reader reuse those bytes.
fn let_go_of_kept<R: std::io::Read>(reader: &mut LineReader<R>, decoder: &mut FileDecoder) {
    let (kept, offset) = reader.kept();
    decoder.detach(Window { bytes: kept, offset });
    reader.keep_from(None);
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let s = &self.stats;
        write!(f, "replayed {} files ({} streams): {} bytes", self.files, self.sets, self.bytes)?;
        if self.disk_bytes != self.bytes {
            write!(f, " ({} on disk)", self.disk_bytes)?;
        }
        writeln!(f, " in {:.3} s, {:.1} MB/s", secs, self.bytes as f64 / 1e6 / secs)?;
        write!(
            f,
            "  events {}  lines {}  rejoined {}  malformed {}  truncated {}  dropped {}  partial {}",
            s.events, s.lines, s.rejoined, s.malformed, s.truncated, s.dropped_oversize, s.partial
        )?;
        if s.missing_stream + s.missing_time > 0 {
            write!(f, "  missing stream {}  missing time {}", s.missing_stream, s.missing_time)?;
        }
        if s.groups + s.groups_flushed > 0 {
            write!(f, "\n  multiline: {} lines grouped into {} events  flushed {}  capped {}", s.grouped_lines, s.groups, s.groups_flushed, s.groups_capped)?;
        }
        if let Some(d) = &self.delivered {
            write!(f, "\n  delivered {} records, {} bytes", d.records, d.bytes)?;
            if d.billed_bytes > 0 {
                write!(f, " (billed as {}, {:.3}×)", d.billed_bytes, d.billed_bytes as f64 / d.bytes.max(1) as f64)?;
            }
            if d.stored_bytes > 0 {
                write!(f, " (stored {} bytes, {:.3}×)", d.stored_bytes, d.stored_bytes as f64 / d.bytes.max(1) as f64)?;
            }
            write!(f, "  truncated {}  dead letters {}", d.truncated, d.dead_letters)?;
        }
        if self.filtered + self.unselected_sets as u64 > 0 {
            write!(f, "\n  left out by the routes: {} events, {} streams not read", self.filtered, self.unselected_sets)?;
        }
        if !self.failures.is_empty() {
            write!(f, "\n  {} path(s) could not be read", self.failures.len())?;
        }
        Ok(())
    }
}
