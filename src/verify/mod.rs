//! `logferry verify`: proves that logs land. Writes lines marked with a run's token
//! (short to well over 16 KiB) to its own stdout — run as a pod, they go through the
//! container runtime and the node's logferry — or to a CRI log file (`--emit`, to try
//! it locally), then watches each destination of the configuration until every line
//! was found, and reports per destination which were found whole and once, which are
//! missing, duplicated or cut, and how long they took to land.
//!
//! ```text
//! marks ─► stdout / --emit file ─► (runtime, logferry run) ─► S3 / CloudWatch / file
//!                                                                   │
//!               report ◄── tally per destination ◄── look (poll) ◄──┘
//! ```

pub mod look;
pub mod marks;
mod tally;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, NamedSink, SinkConfig};
use look::{CloudWatchPlace, FilePlace, Place, S3Place};
use marks::Marks;
pub use tally::Tally;

/// What to verify, and how.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only this sink (default: every sink verify can read back).
    pub sink: Option<String>,
    pub lines: u32,
    /// Give up after this long.
    pub timeout: Duration,
    /// Once every line was seen, look once more after this long (for duplicates).
    pub settle: Duration,
    /// Between looks.
    pub poll: Duration,
    /// Write the lines as a CRI log file here instead of to stdout.
    pub emit: Option<PathBuf>,
    /// Where the pod's metadata comes from when not from `emit`'s path.
    pub who: Who,
    /// The bucket a Firehose sink's stream delivers to, and the prefix (a key template,
    /// as the `s3` sink's `key_prefix`).
    pub firehose_bucket: Option<String>,
    pub firehose_prefix: String,
}

/// The writing pod's names, as far as known (from the downward API's environment in
/// a cluster, or `--emit`'s path).
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
}

/// The outcome, per destination checked.
pub struct Verdict {
    pub run: String,
    pub written: usize,
    pub sinks: Vec<(String, String, Tally)>,
    /// Notes for the report (a sink not checked and why, a route that skips the pod).
    pub notes: Vec<String>,
}

impl Verdict {
    /// Every destination got every line whole and once.
    pub fn passed(&self) -> bool {
        !self.sinks.is_empty() && self.sinks.iter().all(|(_, _, t)| t.passed())
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let split = (0..self.written as u32).filter(|&s| Marks::length(s) > marks::RUNTIME_PIECE).count();
        writeln!(f, "logferry verify: run {}: {} lines written, {} of them over 16 KiB (split by the runtime)", self.run, self.written, split)?;
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        for (name, place, tally) in &self.sinks {
            writeln!(f, "  sink {name:?} — {place}:\n    {tally}")?;
        }
        match self.passed() {
            true => write!(f, "PASSED: every line landed whole and once at every destination"),
            false => write!(f, "FAILED: see MISSING / DUPLICATED / CUT above"),
        }
    }
}

/// Writes the marked lines, then watches until all landed or the time is up.
pub fn verify(config: &Config, opts: &VerifyOptions) -> anyhow::Result<Verdict> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(run(config, opts))
}

async fn run(config: &Config, opts: &VerifyOptions) -> anyhow::Result<Verdict> {
    let chosen = choose_sinks(config, opts)?;
    let who = match &opts.emit {
        Some(path) => who_from_path(path)?,
        None => opts.who.clone(),
    };
    let marks = Marks::new(opts.lines);
    let start_ms = marks::now_ms();
    let mut notes = route_notes(&chosen, &who);
    let written = write(&marks, opts)?;
    let end_ms = marks::now_ms();
    let mut places = Vec::new();
    for sink in &chosen {
        match place(sink, &who, opts, start_ms, end_ms).await? {
            Some(p) => places.push((sink.name.clone(), p)),
            None => notes.push(format!("sink {:?} ({}): not checked: it writes to stdout, which verify cannot read back", sink.name, sink.config.name())),
        }
    }
    if places.is_empty() {
        anyhow::bail!("no sink to check: verify reads back s3, cloudwatch, firehose (with --firehose-bucket) and file sinks");
    }
    let mut tallies: Vec<Tally> = places.iter().map(|_| Tally::new(&marks, &written)).collect();
    watch(&marks, opts, &mut places, &mut tallies).await;
    Ok(Verdict {
        run: marks.token().to_owned(),
        written: written.len(),
        sinks: places.into_iter().zip(tallies).map(|((name, place), t)| (name, place.describe(), t)).collect(),
        notes,
    })
}

/// Looks at every place until each has seen every line (then once more after
/// `settle`, for late duplicates) or the time is up.
async fn watch(marks: &Marks, opts: &VerifyOptions, places: &mut [(String, Place)], tallies: &mut [Tally]) {
    let began = Instant::now();
    let mut all_seen_at: Option<Instant> = None;
    let mut said = Instant::now();
    loop {
        for ((_, place), tally) in places.iter_mut().zip(tallies.iter_mut()) {
            match place.look(marks.token()).await {
                Ok(found) => found.into_iter().for_each(|s| tally.add(marks, &s)),
                Err(e) => tally.failed(format!("{e:#}")),
            }
        }
        let now = Instant::now();
        if tallies.iter().all(Tally::all_seen) {
            let since = *all_seen_at.get_or_insert(now);
            if now.duration_since(since) >= opts.settle {
                return;
            }
        }
        if now.duration_since(began) >= opts.timeout {
            return;
        }
        if now.duration_since(said) >= Duration::from_secs(30) {
            said = now;
            let progress: Vec<String> = places.iter().zip(tallies.iter()).map(|((n, _), t)| format!("{n}: {} of {}", t.seen(), marks.count())).collect();
            eprintln!("logferry verify: waiting ({:.0} s): {}", now.duration_since(began).as_secs_f64(), progress.join(", "));
        }
        let left = opts.timeout.saturating_sub(now.duration_since(began));
        let wait = if all_seen_at.is_some() { opts.settle.min(opts.poll) } else { opts.poll };
        tokio::time::sleep(wait.min(left).max(Duration::from_millis(10))).await;
    }
}

/// The pod's names from a `/var/log/pods/<namespace>_<pod>_<uid>/<container>/N.log` path.
fn who_from_path(path: &std::path::Path) -> anyhow::Result<Who> {
    let meta = crate::tail::meta::from_pods_path(path).ok_or_else(|| {
        anyhow::anyhow!("--emit {}: not a kubelet log path; use <dir>/var/log/pods/<namespace>_<pod>_<uid>/<container>/0.log, which `logferry run` follows", path.display())
    })?;
    Ok(Who { namespace: Some(meta.namespace), pod: Some(meta.pod), pod_uid: meta.pod_uid, container: Some(meta.container) })
}

/// The sinks to check: the one named, or all of them.
fn choose_sinks<'a>(config: &'a Config, opts: &VerifyOptions) -> anyhow::Result<Vec<&'a NamedSink>> {
    let chosen: Vec<&NamedSink> = match &opts.sink {
        Some(name) => {
            let sink = config.sinks.iter().find(|s| &s.name == name).ok_or_else(|| {
                let names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
                anyhow::anyhow!("--sink {name}: the configuration has no sink of that name (it has {})", names.join(", "))
            })?;
            if matches!(sink.config, SinkConfig::Firehose(_)) && opts.firehose_bucket.is_none() {
                anyhow::bail!("--sink {name} is a Firehose sink: name the bucket its delivery stream writes to with --firehose-bucket (and --firehose-prefix)");
            }
            vec![sink]
        }
        None => config.sinks.iter().filter(|s| !matches!(s.config, SinkConfig::Firehose(_)) || opts.firehose_bucket.is_some()).collect(),
    };
    Ok(chosen)
}

/// A sink whose route does not take the writing pod will not get the lines: said up
/// front, so that a failure names its likely cause.
fn route_notes(sinks: &[&NamedSink], who: &Who) -> Vec<String> {
    let (Some(ns), Some(pod), Some(container)) = (&who.namespace, &who.pod, &who.container) else { return Vec::new() };
    sinks
        .iter()
        .filter(|s| !s.route.selects(ns, pod, container))
        .map(|s| format!("sink {:?}: its route does not select namespace {ns:?}, pod {pod:?}, container {container:?}: the lines are not expected there", s.name))
        .collect()
}

/// Writes the lines where the options say; when each was written.
fn write(marks: &Marks, opts: &VerifyOptions) -> anyhow::Result<Vec<i64>> {
    match &opts.emit {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {} to write the marked lines", path.display()))?;
            marks.write_cri(&mut file).with_context(|| format!("writing {}", path.display()))
        }
        None => marks.write_plain(&mut std::io::stdout().lock()).context("writing the marked lines to stdout"),
    }
}

/// Where one sink's lines can be read back; `None` for stdout.
async fn place(sink: &NamedSink, who: &Who, opts: &VerifyOptions, start_ms: i64, end_ms: i64) -> anyhow::Result<Option<Place>> {
    // The names as the templates order them. A sink's own node and cluster are known
    // (empty, logferry writes `unknown`); `None` is not known.
    let names = |node: Option<String>, cluster: Option<String>| -> [Option<String>; 6] {
        [who.namespace.clone(), who.pod.clone(), who.pod_uid.clone(), who.container.clone(), node, cluster]
    };
    let configured = |v: &str| Some(if v.is_empty() { "unknown" } else { v }.to_owned());
    Ok(Some(match &sink.config {
        SinkConfig::Stdout => return Ok(None),
        SinkConfig::File { path } => Place::File(FilePlace::new(path.clone())),
        SinkConfig::S3(c) => {
            let prefixes = s3_prefixes(&c.key_prefix, &names(configured(&c.node), configured(&c.cluster)), start_ms, end_ms);
            Place::S3(S3Place::connect(c.region.as_deref(), c.endpoint.as_deref(), &c.bucket, prefixes, start_ms).await?)
        }
        SinkConfig::Firehose(c) => {
            let bucket = opts.firehose_bucket.as_deref().expect("chosen only with a bucket");
            let template = crate::batch::s3::KeyTemplate::parse(&opts.firehose_prefix).map_err(|e| anyhow::anyhow!("--firehose-prefix: {e}"))?;
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let prefixes = s3_prefixes(&template, &names(env("NODE_NAME"), env("CLUSTER_NAME")), start_ms, end_ms);
            Place::S3(S3Place::connect(c.region.as_deref(), c.endpoint.as_deref(), bucket, prefixes, start_ms).await?)
        }
        SinkConfig::CloudWatch(c) => {
            let n = names(configured(&c.node), configured(&c.cluster));
            let v: [Option<&str>; 6] = std::array::from_fn(|i| n[i].as_deref());
            let group = c.log_group.known_prefix(&v, true);
            let stream = c.log_stream.known_prefix(&v, false);
            let stream = (!stream.0.is_empty()).then_some(stream);
            Place::CloudWatch(CloudWatchPlace::connect(c.region.as_deref(), c.endpoint.as_deref(), group, stream, start_ms).await?)
        }
    }))
}

/// The prefixes the lines can be under: the template over the pod's names (kubernetes
/// fields in the cloudwatch order: namespace, pod, pod_uid, container, node, cluster)
/// for each day and hour the writing spanned, cut at the first name not known.
fn s3_prefixes(template: &crate::batch::s3::KeyTemplate, names: &[Option<String>; 6], start_ms: i64, end_ms: i64) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut t = start_ms.div_euclid(3_600_000) * 3_600_000;
    while t <= end_ms {
        let (date, hour) = crate::batch::s3::date_and_hour(t * 1_000_000);
        let v = [names[0].as_deref(), names[1].as_deref(), names[3].as_deref(), names[4].as_deref(), names[5].as_deref(), Some(date.as_str()), Some(hour.as_str())];
        let prefix = template.known_prefix(&v);
        if !out.contains(&prefix) {
            out.push(prefix);
        }
        t += 3_600_000;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_each_hour_written_and_stop_at_what_is_unknown() {
        let t = crate::batch::s3::KeyTemplate::parse("fluentd/prod/{namespace}/dt={date}/").unwrap();
        let names = [Some("verify".to_string()), Some("v-1".into()), None, Some("verify".into()), Some("n1".into()), Some("".into())];
        // 2026-12-06T23:59:00Z to 2026-12-07T00:01:00Z: two days.
        let start = 1_796_601_540_000;
        assert_eq!(s3_prefixes(&t, &names, start, start + 120_000), ["fluentd/prod/verify/dt=20261206/", "fluentd/prod/verify/dt=20261207/"]);
        assert_eq!(s3_prefixes(&t, &names, start, start + 10_000), ["fluentd/prod/verify/dt=20261206/"]);
        let unknown = [None, None, None, None, Some("n1".into()), None];
        assert_eq!(s3_prefixes(&t, &unknown, start, start + 10_000), ["fluentd/prod/"]);
    }
}
