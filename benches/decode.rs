//! Micro-benchmarks of the decode → encode path, on inputs generated here (deterministic,
//! in memory, no files). Every group reports `Throughput::Bytes`:
//!
//! - `docker_parse`: [`docker::parse`] alone, one call per line, on a few MB of Docker
//!   json-file lines (lines are pre-split; finding the newlines is not measured).
//!   Bytes: the lines, newlines included. Inputs:
//!   - `plain`: short text lines (60–300 B) whose `log` has no escape but the final `\n`
//!     — the zero-copy fast path;
//!   - `json_app`: short JSON application logs, so the `log` is full of `\"` — the
//!     unescape-into-scratch path;
//!   - `html_escapes`: short lines with `<`, `>`, `&` written as `\u003c`, `\u003e`,
//!     `\u0026` (as Go's encoder writes them) plus some `\"`;
//!   - `mixed_file`: the lines of the `file_decoder/docker` file below (the replay
//!     corpus's mix: short, 1–4 KiB and 20–120 KiB messages, the long ones in 16 KiB
//!     pieces).
//! - `cri_parse`: [`cri::parse`] alone on CRI lines: `short` (complete 60–300 B
//!   messages) and `mixed_file` (the lines of `file_decoder/cri`). Bytes as above.
//! - `file_decoder`: [`FileDecoder::line`] for every line of a whole in-memory file,
//!   then `finish`, as replay drives it (format auto-detected, default options), for
//!   `docker` and `cri`. The files mix messages as `benches/gen_corpus.py` does,
//!   including messages over 16 KiB split into pieces with complete and split messages
//!   of the other stream interleaved between them, so this measures parsing plus
//!   reassembly. Compare with `*_parse/mixed_file` for the cost of the decoder layer.
//!   Bytes: the file.
//! - `encode`: [`EventEncoder::encode`] of events into one reused `Vec`, cleared each
//!   time it passes 256 KiB (replay's batch size), with a Kubernetes fragment:
//!   `string_mixed` (the events of the `file_decoder` file), `string_short` (short
//!   events only: per-event overhead dominates) and `json_mode_short` (the same with
//!   `MessageFormat::Json`, which checks whether each message is a JSON object).
//!   Bytes: the events' messages (not the output).
//! - `route`: [`Router::route`] of every event with a route of 10 `drop_messages`
//!   patterns of the kind operators write (health checks, probes, debug levels), few
//!   of which match: nearly every message is searched whole. `mixed` (the events of
//!   the `file_decoder` file) and `short` (the short events). Bytes: the messages.
//!
//! Setup checks that the generated files decode to the expected number of events,
//! rejoined events and message bytes, so a broken generator cannot go unnoticed.
//!
//! Run: `cargo bench --bench decode` (or `-- docker_parse` for one group).

use std::hint::black_box;
use std::ops::Range;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

use logferry::decode::{cri, docker, DecodeOptions, FileDecoder};
use logferry::event::{Event, EventEncoder, KubeMeta, MessageFormat, Nanos, Stream};
use logferry::route::Router;

/// Size of the per-kind line sets (`plain`, `json_app`, …).
const LINES_BYTES: usize = 4_000_000;
/// Size of each whole file (`mixed_file`, `file_decoder`).
const FILE_BYTES: usize = 8_000_000;
/// Docker and containerd cut lines at this many bytes.
const MAX_PIECE: usize = 16 * 1024;
/// 2026-11-21T10:00:00Z, where the generated clocks start.
const BASE_NANOS: Nanos = 1_795_255_200 * 1_000_000_000;
/// replay's batch size: the encode output is cleared when it passes this.
const BATCH_BYTES: usize = 256 * 1024;

// ----------------------------------------------------------------------------- inputs

/// SplitMix64: a small, fast, deterministic generator; no `rand` dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn hex(&mut self, out: &mut String, n: usize) {
        for _ in 0..n {
            out.push(char::from(b"0123456789abcdef"[self.below(16)]));
        }
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "request", "handler", "connection", "timeout", "retrying", "cache", "miss", "hit", "upstream", "backend",
    "session", "token", "expired", "user", "account", "order", "payment", "invoice", "queue", "consumer",
    "partition", "offset", "commit", "rollback", "transaction", "worker", "pool", "thread", "job", "completed",
    "failed", "started", "pending", "retry", "backoff", "endpoint", "route", "resolved", "dns", "tls",
    "handshake", "socket", "reset", "gateway", "proxy", "latency", "bytes", "received", "sent", "flushed",
    "buffer", "metric", "rate", "limit", "tenant", "region", "node", "pod", "container", "config", "reloaded",
    "schema", "query", "rows", "returned", "snapshot", "replica", "leader", "heartbeat", "ok", "the", "a", "of",
    "to", "in", "for", "with", "on", "from", "is", "was", "not", "batch", "item",
];
/// Multi-byte UTF-8 words, sprinkled in at a low rate.
#[rustfmt::skip]
const MB_WORDS: &[&str] = &[
    "café", "Zürich", "Müller", "Straße", "Kraków", "日本", "東京", "処理中", "完了しました", "错误", "数据库",
    "서울", "ошибка", "€42", "→", "✓", "😀", "🚀",
];
const CJK_SENTENCES: &[&str] =
    &["データベースへの接続がタイムアウトしました。", "请求处理失败，正在重试。", "연결이 재설정되었습니다。"];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"];
const LOGGERS: &[&str] = &["svc.http", "svc.db", "svc.cache", "orders.api", "payments.worker", "auth.jwt"];
const NAMES: &[&str] = &["alice", "bob", "carol", "dave", "Zoë", "José", "田中", "erin"];

/// Appends words until `s` is about `len` bytes long (never longer).
fn words(r: &mut Rng, s: &mut String, len: usize, mb_rate: f64) {
    loop {
        let w = if r.chance(mb_rate) { r.pick(MB_WORDS) } else { r.pick(WORDS) };
        if s.len() + w.len() + 1 > len {
            return;
        }
        if !s.is_empty() && !s.ends_with(['"', ' ', '[', '>']) {
            s.push(' ');
        }
        s.push_str(w);
    }
}

fn clock_text(r: &mut Rng) -> String {
    format!("2026-11-21 10:{:02}:{:02}.{:03}", r.below(60), r.below(60), r.below(1000))
}

/// A short text line with nothing Docker would escape.
fn plain_message(r: &mut Rng) -> String {
    let len = r.between(60, 300);
    let mut s = format!(
        "{} {:<5} [worker-{}] GET /api/v1/items/{} {} {}ms",
        clock_text(r),
        r.pick(LEVELS),
        r.below(16),
        r.below(10_000_000),
        [200, 200, 200, 201, 404, 500][r.below(6)],
        r.below(900)
    );
    words(r, &mut s, len, 0.012);
    s
}

/// A short JSON application log: a dozen or more `"` to escape.
fn json_message(r: &mut Rng) -> String {
    let len = r.between(180, 340); // the fixed fields take ~150 of it
    let mut s = format!(
        r#"{{"level":"{}","ts":"2026-11-21T10:{:02}:{:02}.{:03}Z","logger":"{}","trace_id":""#,
        ["info", "info", "info", "debug", "warn", "error"][r.below(6)],
        r.below(60),
        r.below(60),
        r.below(1000),
        r.pick(LOGGERS)
    );
    r.hex(&mut s, 32);
    s.push_str(r#"","user":""#);
    s.push_str(r.pick(NAMES));
    s.push_str(r#"","msg":""#);
    if r.chance(0.1) {
        s.push_str(r#"user \"bob\" said: "#); // an escaped quote inside the app's JSON
    }
    words(r, &mut s, len.saturating_sub(25), 0.012);
    s.push_str(&format!(r#"","duration_ms":{}.{:03}}}"#, r.below(500), r.below(1000)));
    s
}

/// A short line with HTML or a query string: `<`, `>`, `&` and `"`.
fn html_message(r: &mut Rng) -> String {
    let len = r.between(80, 300);
    let mut s = format!("GET /search?q={}&lang=en&page={} 200 ", r.pick(WORDS), r.below(50));
    while s.len() < len {
        s.push_str(&format!(r#"<div class="item" data-id="{}">"#, r.below(100_000)));
        let end = s.len() + 30;
        words(r, &mut s, end, 0.05);
        s.push_str(" &amp; ");
        s.push_str(r.pick(WORDS));
        s.push_str("</div>");
    }
    s
}

/// 1–4 KiB: a JSON payload with many quoted fields, or long text with tabs.
fn medium_message(r: &mut Rng) -> String {
    let len = r.between(1024, 4096);
    if r.chance(0.5) {
        let mut s = format!(r#"{{"level":"info","msg":"batch processed","batch":{},"items":["#, r.below(100_000));
        while s.len() + 120 < len {
            s.push_str(&format!(r#"{{"id":{},"sku":"SKU-"#, r.below(1_000_000)));
            r.hex(&mut s, 8);
            s.push_str(r#"","name":""#);
            let end = s.len() + 40;
            words(r, &mut s, end, 0.1);
            s.push_str(&format!(r#"","qty":{}}},"#, r.between(1, 9)));
        }
        s.push_str(r#"{}],"trace_id":""#);
        r.hex(&mut s, 32);
        s.push_str(r#""}"#);
        s
    } else {
        let mut s = format!("{} ERROR request failed:", clock_text(r));
        while s.len() + 80 < len {
            s.push_str("\tat com.example.orders.OrderService.handle(OrderService.java:");
            s.push_str(&r.below(900).to_string());
            s.push(')');
        }
        s
    }
}

/// 20–120 KiB, so always split: a dump of text, base64, JSON records or CJK text.
fn large_message(r: &mut Rng) -> String {
    let len = r.between(20 * 1024 + 100, 120 * 1024);
    let mut s = format!("{} DEBUG [batch-{}] payload dump: ", clock_text(r), r.below(32));
    while s.len() + 200 < len {
        match r.below(4) {
            0 => {
                let end = s.len() + 1000;
                words(r, &mut s, end, 0.05);
            }
            1 => {
                const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                s.extend((0..1000).map(|_| char::from(B64[r.below(64)])));
            }
            2 => {
                for _ in 0..8 {
                    s.push_str(&format!(
                        r#"{{"id":{},"name":"{}","city":"Zürich","score":0.{}}},"#,
                        r.below(1_000_000),
                        r.pick(NAMES),
                        r.below(10_000)
                    ));
                }
            }
            _ => {
                for _ in 0..10 {
                    s.push_str(r.pick(CJK_SENTENCES));
                }
            }
        }
    }
    s.push_str(" <end of dump>");
    s
}

/// The replay corpus's mix: ~70% short, ~25% medium, ~5% large.
fn mixed_message(r: &mut Rng) -> String {
    let x = r.below(100);
    if x < 70 {
        match r.below(10) {
            0..=4 => plain_message(r),
            5..=8 => json_message(r),
            _ => html_message(r),
        }
    } else if x < 95 {
        medium_message(r)
    } else {
        large_message(r)
    }
}

/// Escapes `s` the way Docker (Go's `encoding/json`) does inside a string.
fn json_escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fmt {
    Docker,
    Cri,
}

/// A generated log file: its bytes, where each line is (without its `\n`), and what
/// decoding it must produce.
struct LogFile {
    data: Vec<u8>,
    lines: Vec<Range<usize>>,
    messages: u64,
    split_messages: u64,
    message_bytes: u64,
}

impl LogFile {
    fn lines(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.lines.iter().map(|r| (&self.data[r.clone()], r.start as u64))
    }
}

/// One physical line to write: a piece of a message.
struct Piece {
    stream: Stream,
    bytes: Vec<u8>,
    /// Docker: the raw piece already ends in `\n` when last. CRI: tag `F`.
    last: bool,
    first: bool,
}

struct Writer {
    fmt: Fmt,
    file: LogFile,
    /// Nanoseconds since `BASE_NANOS`.
    clock: u64,
}

impl Writer {
    fn new(fmt: Fmt) -> Self {
        let file = LogFile { data: Vec::new(), lines: Vec::new(), messages: 0, split_messages: 0, message_bytes: 0 };
        Self { fmt, file, clock: 0 }
    }

    /// Cuts a message into the pieces the runtime writes: Docker cuts the message plus
    /// its `\n` at UTF-8 boundaries, containerd cuts the bare message at exact byte counts.
    fn pieces(&mut self, stream: Stream, msg: &str) -> Vec<Piece> {
        let msg = msg.as_bytes();
        self.file.messages += 1;
        self.file.message_bytes += msg.len() as u64;
        let mut out = Vec::new();
        match self.fmt {
            Fmt::Docker => {
                let mut raw = msg.to_vec();
                raw.push(b'\n');
                let mut start = 0;
                while raw.len() - start > MAX_PIECE {
                    let mut cut = start + MAX_PIECE;
                    while raw[cut] & 0xC0 == 0x80 {
                        cut -= 1;
                    }
                    out.push(raw[start..cut].to_vec());
                    start = cut;
                }
                out.push(raw[start..].to_vec());
            }
            Fmt::Cri => out.extend(msg.chunks(MAX_PIECE).map(<[u8]>::to_vec)),
        }
        self.file.split_messages += u64::from(out.len() > 1);
        let n = out.len();
        out.into_iter().enumerate().map(|(i, bytes)| Piece { stream, bytes, last: i + 1 == n, first: i == 0 }).collect()
    }

    fn write(&mut self, r: &mut Rng, p: &Piece) {
        // A new message comes up to 2 ms after the last; a message's pieces within 40 µs.
        self.clock += if p.first { r.between(1_000, 2_000_000) } else { r.between(0, 40_000) } as u64;
        let (secs, frac) = (self.clock / 1_000_000_000, self.clock % 1_000_000_000);
        let mut ts = format!("2026-11-21T{:02}:{:02}:{:02}", 10 + secs / 3600, secs / 60 % 60, secs % 60);
        let stream = p.stream.as_str();
        let d = &mut self.file.data;
        let start = d.len();
        match self.fmt {
            Fmt::Docker => {
                // Go's RFC3339Nano: trailing zeros of the fraction trimmed.
                if frac != 0 {
                    ts.push_str(format!(".{frac:09}").trim_end_matches('0'));
                }
                d.extend_from_slice(b"{\"log\":\"");
                json_escape(d, &p.bytes);
                d.extend_from_slice(format!("\",\"stream\":\"{stream}\",\"time\":\"{ts}Z\"}}").as_bytes());
            }
            Fmt::Cri => {
                let tag = if p.last { 'F' } else { 'P' };
                d.extend_from_slice(format!("{ts}.{frac:09}Z {stream} {tag} ").as_bytes());
                d.extend_from_slice(&p.bytes);
            }
        }
        self.file.lines.push(start..d.len());
        d.push(b'\n');
    }
}

/// A file of about `size` bytes with one message from `gen` per logical line; ~15% on
/// stderr. Between the pieces of a split message, short messages (and sometimes a split
/// one) of the other stream are interleaved, as in `benches/gen_corpus.py`.
fn log_file(fmt: Fmt, seed: u64, size: usize, gen: fn(&mut Rng) -> String) -> LogFile {
    let mut r = Rng(seed);
    let mut w = Writer::new(fmt);
    while w.file.data.len() < size {
        let stream = if r.chance(0.11) { Stream::Stderr } else { Stream::Stdout };
        let other = if stream == Stream::Stdout { Stream::Stderr } else { Stream::Stdout };
        let msg = gen(&mut r);
        let seq = w.pieces(stream, &msg);
        let mut others = Vec::new();
        if seq.len() > 1 {
            for _ in 1..seq.len() {
                if r.chance(0.3) {
                    others.extend(w.pieces(other, &plain_message(&mut r)));
                }
            }
            if r.chance(0.12) {
                others.extend(w.pieces(other, &large_message(&mut r)));
            }
        }
        // Merge: the first piece first, then the rest of both in random order, each
        // sequence keeping its own order.
        let (mut a, mut b) = (seq.into_iter(), others.into_iter());
        let first = a.next().expect("a message has a piece");
        w.write(&mut r, &first);
        loop {
            let (ra, rb) = (a.len(), b.len());
            let p = match (ra, rb) {
                (0, 0) => break,
                (_, 0) => a.next(),
                (0, _) => b.next(),
                _ if r.below(ra + rb) < rb => b.next(),
                _ => a.next(),
            };
            w.write(&mut r, &p.expect("counted"));
        }
    }
    w.file
}

/// Decodes `file` once and checks it yields exactly what was written.
fn check_decodes(name: &str, file: &LogFile) {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let (mut bytes, mut scratch) = (0u64, Vec::new());
    // A Docker value passed through is still escaped: its text is what was written.
    let mut emit = |ev: &Event<'_>| bytes += ev.text(&mut scratch).len() as u64;
    for (line, offset) in file.lines() {
        dec.line(line, offset, BASE_NANOS, &mut emit);
    }
    dec.finish(&mut emit);
    let s = dec.stats;
    assert_eq!(
        (s.events, s.rejoined, bytes),
        (file.messages, file.split_messages, file.message_bytes),
        "{name}: (events, rejoined, message bytes) differ from what was generated"
    );
    assert_eq!(
        (s.malformed, s.partial, s.truncated, s.missing_stream, s.missing_time),
        (0, 0, 0, 0, 0),
        "{name}: (malformed, partial, truncated, missing stream, missing time) should all be 0"
    );
}

/// The events of a file, owned: (time, stream, message range in one buffer).
struct Events {
    text: Vec<u8>,
    events: Vec<(Nanos, Stream, Range<usize>)>,
}

impl Events {
    fn of(file: &LogFile) -> Self {
        let mut out = Events { text: Vec::new(), events: Vec::new() };
        let mut dec = FileDecoder::new(&DecodeOptions::default());
        let mut scratch = Vec::new();
        let mut emit = |ev: &Event<'_>| {
            let start = out.text.len();
            // The application's text (a Docker value passed through is unescaped).
            out.text.extend_from_slice(ev.text(&mut scratch));
            out.events.push((ev.time, ev.stream, start..out.text.len()));
        };
        for (line, offset) in file.lines() {
            dec.line(line, offset, BASE_NANOS, &mut emit);
        }
        dec.finish(&mut emit);
        out
    }

    fn message_bytes(&self) -> u64 {
        self.text.len() as u64
    }
}

// ----------------------------------------------------------------------------- benches

/// Short measurements: `cargo bench` should finish in a few minutes on 2 shared cores.
fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
}

fn line_bytes(file: &LogFile) -> u64 {
    file.data.len() as u64
}

fn bench_docker_parse(c: &mut Criterion, mixed: &LogFile) {
    let sets = [
        ("plain", log_file(Fmt::Docker, 11, LINES_BYTES, plain_message)),
        ("json_app", log_file(Fmt::Docker, 12, LINES_BYTES, json_message)),
        ("html_escapes", log_file(Fmt::Docker, 13, LINES_BYTES, html_message)),
    ];
    let mut g = c.benchmark_group("docker_parse");
    configure(&mut g);
    // One scratch buffer for the whole run, as `FileDecoder` keeps one per file.
    let mut scratch = Vec::with_capacity(MAX_PIECE * 6);
    for (name, file) in sets.iter().map(|(n, f)| (*n, f)).chain([("mixed_file", mixed)]) {
        g.throughput(Throughput::Bytes(line_bytes(file)));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for (line, _) in file.lines() {
                    let d = docker::parse(black_box(line), &mut scratch).expect("generated lines are valid");
                    n += d.log.len() + usize::from(d.complete);
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn bench_cri_parse(c: &mut Criterion, mixed: &LogFile) {
    let short = log_file(Fmt::Cri, 21, LINES_BYTES, |r| match r.below(10) {
        0..=4 => plain_message(r),
        5..=8 => json_message(r),
        _ => html_message(r),
    });
    let mut g = c.benchmark_group("cri_parse");
    configure(&mut g);
    for (name, file) in [("short", &short), ("mixed_file", mixed)] {
        g.throughput(Throughput::Bytes(line_bytes(file)));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for (line, _) in file.lines() {
                    let l = cri::parse(black_box(line)).expect("generated lines are valid");
                    n += l.message.len() + usize::from(l.complete);
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn bench_file_decoder(c: &mut Criterion, docker: &LogFile, cri: &LogFile) {
    let mut g = c.benchmark_group("file_decoder");
    configure(&mut g);
    for (name, file) in [("docker", docker), ("cri", cri)] {
        g.throughput(Throughput::Bytes(line_bytes(file)));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut dec = FileDecoder::new(&DecodeOptions::default());
                let mut n = 0usize;
                let mut emit = |ev: &Event<'_>| n += ev.message.len();
                for (line, offset) in file.lines() {
                    dec.line(black_box(line), offset, BASE_NANOS, &mut emit);
                }
                dec.finish(&mut emit);
                black_box((n, dec.stats.events))
            })
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion, mixed: &LogFile) {
    let kube = KubeMeta {
        namespace: "bench-ns".into(),
        pod: "app-0-7d9f8c6b5-x2k4p".into(),
        pod_uid: Some("0b6f1c8e-3a52-4c1d-9d0e-5f2a7b8c9d10".into()),
        container: "app".into(),
        restart_count: Some(0),
    }
    .json_fragment();
    let mixed = Events::of(mixed);
    let short = Events::of(&log_file(Fmt::Cri, 31, LINES_BYTES, |r| match r.below(10) {
        0..=4 => plain_message(r),
        5..=8 => json_message(r),
        _ => html_message(r),
    }));
    let mut g = c.benchmark_group("encode");
    configure(&mut g);
    for (name, events, format) in [
        ("string_mixed", &mixed, MessageFormat::String),
        ("string_short", &short, MessageFormat::String),
        ("json_mode_short", &short, MessageFormat::Json),
    ] {
        g.throughput(Throughput::Bytes(events.message_bytes()));
        let mut out = Vec::with_capacity(BATCH_BYTES * 2);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut enc = EventEncoder::new(format);
                let mut written = 0usize;
                for (time, stream, range) in &events.events {
                    let ev = Event::raw(*time, *stream, black_box(&events.text[range.clone()]));
                    enc.encode(&ev, &kube, &mut out);
                    if out.len() >= BATCH_BYTES {
                        written += out.len();
                        black_box(&out);
                        out.clear();
                    }
                }
                written += out.len();
                out.clear();
                black_box(written)
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let docker = log_file(Fmt::Docker, 1, FILE_BYTES, mixed_message);
    let cri = log_file(Fmt::Cri, 1, FILE_BYTES, mixed_message);
    check_decodes("docker file", &docker);
    check_decodes("cri file", &cri);
    bench_docker_parse(c, &docker);
    bench_cri_parse(c, &cri);
    bench_file_decoder(c, &docker, &cri);
    bench_encode(c, &docker);
    bench_route(c, &docker);
}

/// Ten patterns of the kind a `drop_messages` list holds.
const DROP_PATTERNS: &str = r#"['^GET /healthz', '^GET /readyz', 'kube-probe/', 'level=debug\b', '"level":"debug"', '^\s*$', 'ELB-HealthChecker/', '"GET /metrics HTTP/1\.[01]" 200', '(?i)^debug:', 'heartbeat ok$']"#;

fn bench_route(c: &mut Criterion, mixed: &LogFile) {
    let toml = format!("[sink]\ntype = \"stdout\"\n[sink.route]\ndrop_messages = {DROP_PATTERNS}\n");
    let config = logferry::config::Config::from_toml_str_with_env(&toml, &Default::default()).expect("the route is valid");
    let router = Router::new(config.sinks.into_iter().map(|s| s.route).collect());
    let mixed = Events::of(mixed);
    let short = Events::of(&log_file(Fmt::Cri, 41, LINES_BYTES, |r| match r.below(10) {
        0..=4 => plain_message(r),
        5..=8 => json_message(r),
        _ => html_message(r),
    }));
    let mut g = c.benchmark_group("route");
    configure(&mut g);
    for (name, events) in [("drop10_mixed", &mixed), ("drop10_short", &short)] {
        g.throughput(Throughput::Bytes(events.message_bytes()));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut kept = 0usize;
                for (_, _, range) in &events.events {
                    kept += usize::from(router.route(1, black_box(&events.text[range.clone()])) != 0);
                }
                black_box(kept)
            })
        });
    }
    g.finish();
}

criterion_group!(decode, benches);
criterion_main!(decode);
