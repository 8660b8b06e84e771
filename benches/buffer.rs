//! Throughput of the disk buffer (`logferry::buffer`), hand-timed: each step moves
//! ~1 GiB, too slow for criterion's sampling, so this is a `harness = false` main that
//! runs a few rounds and prints the best of each, as a markdown table.
//!
//! Every round, in `bench-data/buffer-bench/` (gitignored; same file system as the
//! buffer would use under `data_dir`):
//!
//! 1. **disk baseline**: `dd if=/dev/zero of=bench-data/buffer-bench/dd.tmp bs=1M
//!    count=<size> conv=fdatasync`, its own seconds parsed from its stderr; the file is
//!    deleted afterwards.
//! 2. **append + group commit**: a fresh [`Buffer`] (cap 2× the size, so nothing
//!    blocks; 64 MiB segments, as `max_bytes = 1 GiB` gives in the pipeline; no memory
//!    tier, so every record is written — what the pipeline does with whatever its sink
//!    has not acknowledged within `fsync_interval`), 1 MiB
//!    payloads (the tailer's batch size, JSON lines, 4 distinct ones) appended from one
//!    thread, which calls [`Buffer::sync`] itself every 200 ms of wall time or 32 MiB
//!    appended — the pipeline's buffer thread with the default `fsync_interval` and
//!    `fsync_bytes` — and once at the end (timed). Reported: payload MB/s and the ratio
//!    to the same round's `dd`. Target: ≥ 70 % of `dd`.
//! 3. **recovery, warm**: the buffer is dropped and [`Buffer::open`] timed on the same
//!    directory (every record unacknowledged, files in the page cache). Target ≤ 2 s.
//! 4. **recovery, cold**: dropped again, the segment files evicted from the page cache,
//!    and `Buffer::open` timed again. Eviction (`--cold`): `fadvise` (default) runs
//!    `dd if=SEG iflag=nocache count=0` per segment — `POSIX_FADV_DONTNEED` on those
//!    files only, so other work on a shared machine keeps its cache; `drop-caches`
//!    writes `3` to `/proc/sys/vm/drop_caches` after `sync` (needs root; evicts
//!    everything); `none` skips this step. Recovery reads every segment through the
//!    page cache, so the data is warm again afterwards.
//! 5. **read + ack**: on the buffer from step 4, `read(4 MiB, 0)` (the sink thread's
//!    read size) then `ack` of every record returned, until `read` returns nothing;
//!    `persist_ack` every second (the default `checkpoint_interval`) and once at the
//!    end. Acknowledged segments are deleted as they empty, as in the pipeline.
//!    Reported: payload GB/s. Target ≥ 1 GB/s.
//!
//! MB = 10^6 bytes, GB = 10^9; sizes count payload bytes (the 32-byte record headers
//! are not counted). Every round checks counts (records recovered, records and bytes
//! read back, seqs in order, a few payloads byte for byte).
//!
//! Run: `cargo bench --bench buffer` (1024 MiB, 3 rounds, about a minute);
//! options after `--`: `--size-mib N`, `--rounds N`, `--cold fadvise|drop-caches|none`.
//! Without `--bench` (as `cargo test --benches` runs it) it does one 16 MiB round as a
//! smoke test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use logferry::buffer::{list_segments, Buffer, BufferOptions, WhenFull};

const MIB: usize = 1 << 20;
/// The tailer's batch size (`tail::tailer::BATCH_BYTES`).
const PAYLOAD_BYTES: usize = MIB;
/// The pipeline's defaults: `[buffer] fsync_interval` and `fsync_bytes`.
const FSYNC_INTERVAL: Duration = Duration::from_millis(200);
const FSYNC_BYTES: u64 = 32 << 20;
/// The sink thread's read size (`pipeline::SINK_READ_BYTES`).
const SINK_READ_BYTES: usize = 4 << 20;
/// The default `checkpoint_interval`, which is also the ack persistence interval.
const ACK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq)]
enum Cold {
    Fadvise,
    DropCaches,
    None,
}

struct Args {
    size_mib: usize,
    rounds: usize,
    cold: Cold,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let bench = argv.iter().any(|a| a == "--bench");
    let mut args = if bench {
        Args { size_mib: 1024, rounds: 3, cold: Cold::Fadvise }
    } else {
        Args { size_mib: 16, rounds: 1, cold: Cold::Fadvise }
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value")).clone();
        match a.as_str() {
            "--size-mib" => args.size_mib = value().parse().expect("--size-mib N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--cold" => {
                args.cold = match value().as_str() {
                    "fadvise" => Cold::Fadvise,
                    "drop-caches" => Cold::DropCaches,
                    "none" => Cold::None,
                    other => panic!("--cold fadvise|drop-caches|none, not {other}"),
                }
            }
            // cargo's own flags, and filters: ignored.
            _ => {}
        }
    }
    assert!(args.size_mib >= 1 && args.rounds >= 1);
    args
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// 1 MiB payloads of JSON lines such as the encoder writes; `(bytes, lines)`.
fn payloads() -> Vec<(Vec<u8>, u32)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    const WORDS: &[&str] = &[
        "request", "handler", "connection", "timeout", "retrying", "cache", "miss", "upstream", "session",
        "token", "order", "payment", "queue", "partition", "offset", "commit", "worker", "latency", "bytes",
        "checkpoint", "replica", "leader", "health", "check", "passed", "degraded",
    ];
    (0..4)
        .map(|_| {
            let mut p = Vec::with_capacity(PAYLOAD_BYTES);
            let mut lines = 0;
            loop {
                let mut msg = String::new();
                let words = 8 + next() % 40;
                for _ in 0..words {
                    msg.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                    msg.push(' ');
                }
                let line = format!(
                    "{{\"time\":\"2026-11-21T10:00:{:02}.{:09}Z\",\"stream\":\"stdout\",\"message\":\"{}\",\"kubernetes\":{{\"namespace\":\"bench-ns\",\"pod\":\"pod-{}\",\"container\":\"app\"}}}}\n",
                    next() % 60,
                    next() % 1_000_000_000,
                    msg.trim_end(),
                    next() % 8
                );
                if p.len() + line.len() > PAYLOAD_BYTES {
                    // Pad the last line so every payload is exactly 1 MiB.
                    let pad = PAYLOAD_BYTES - p.len();
                    if pad > 0 {
                        p.extend(std::iter::repeat_n(b' ', pad - 1));
                        p.push(b'\n');
                    }
                    break;
                }
                p.extend_from_slice(line.as_bytes());
                lines += 1;
            }
            assert_eq!(p.len(), PAYLOAD_BYTES);
            (p, lines)
        })
        .collect()
}

/// `dd … conv=fdatasync`: (bytes, seconds) as dd reports them.
fn dd(dir: &Path, size_mib: usize) -> (u64, f64) {
    let file = dir.join("dd.tmp");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={size_mib}"), "conv=fdatasync"])
        .output()
        .expect("running dd");
    assert!(out.status.success(), "dd failed: {}", String::from_utf8_lossy(&out.stderr));
    let _ = fs::remove_file(&file);
    // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.61 s, 411 MB/s"
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| l.contains(" copied, ")).unwrap_or_else(|| panic!("dd said: {text}"));
    let bytes: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    let secs: f64 = line.split(" copied, ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    (bytes, secs)
}

fn evict(dir: &Path, cold: Cold) {
    match cold {
        Cold::None => {}
        Cold::Fadvise => {
            for (_, seg) in list_segments(dir).unwrap() {
                let ok = Command::new("dd")
                    .arg(format!("if={}", seg.display()))
                    .args(["iflag=nocache", "count=0", "status=none"])
                    .status()
                    .expect("running dd");
                assert!(ok.success(), "dd iflag=nocache failed on {}", seg.display());
            }
        }
        Cold::DropCaches => {
            assert!(Command::new("sync").status().unwrap().success());
            fs::write("/proc/sys/vm/drop_caches", "3\n").expect("writing /proc/sys/vm/drop_caches (needs root)");
        }
    }
}

/// How many of the segments' pages are resident, per `fincore` (if installed).
fn resident(dir: &Path) -> Option<String> {
    let segs: Vec<PathBuf> = list_segments(dir).ok()?.into_iter().map(|(_, p)| p).collect();
    let out = Command::new("fincore").args(["--bytes", "--noheadings", "--output", "RES,SIZE"]).args(&segs).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let (mut res, mut size) = (0u64, 0u64);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let mut w = l.split_whitespace();
        res += w.next()?.parse::<u64>().ok()?;
        size += w.next()?.parse::<u64>().ok()?;
    }
    Some(format!("{:.1} % of {:.0} MB resident", 100.0 * res as f64 / size.max(1) as f64, size as f64 / 1e6))
}

struct Round {
    dd_mbps: f64,
    append_mbps: f64,
    append_s: f64,
    sync_s: f64,
    syncs: u32,
    max_sync_ms: f64,
    open_warm_s: f64,
    open_cold_s: Option<f64>,
    read_gbps: f64,
    read_s: f64,
}

fn opts(size: u64) -> BufferOptions {
    // Every record written: this measures the disk path (the pipeline writes only
    // what its sink does not acknowledge in time).
    BufferOptions::with_cap(2 * size + (64 << 20), WhenFull::Block).write_through()
}

fn round(dir: &Path, args: &Args, payloads: &[(Bytes, u32)]) -> Round {
    let n = args.size_mib * MIB / PAYLOAD_BYTES;
    let size = (n * PAYLOAD_BYTES) as u64;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();

    // 1. The disk.
    let (dd_bytes, dd_secs) = dd(dir, args.size_mib);
    let dd_mbps = dd_bytes as f64 / dd_secs / 1e6;

    // 2. Append + group commit, from one thread, as the pipeline's buffer thread does.
    let bdir = dir.join("buffer");
    let (buffer, rec) = Buffer::open(&bdir, opts(size)).unwrap();
    assert_eq!(rec.records, 0);
    let (mut sync_time, mut max_sync, mut syncs) = (Duration::ZERO, Duration::ZERO, 0u32);
    let mut timed_sync = |b: &Buffer| {
        let t = Instant::now();
        b.sync().unwrap();
        let d = t.elapsed();
        sync_time += d;
        max_sync = max_sync.max(d);
        syncs += 1;
    };
    let t0 = Instant::now();
    let mut last_sync = t0;
    let mut unsynced = 0u64;
    for i in 0..n {
        let (p, lines) = &payloads[i % payloads.len()];
        let seq = buffer.append(now_ns(), *lines, p.clone()).unwrap();
        debug_assert_eq!(seq, i as u64 + 1);
        unsynced += p.len() as u64;
        if last_sync.elapsed() >= FSYNC_INTERVAL || unsynced >= FSYNC_BYTES {
            timed_sync(&buffer);
            unsynced = 0;
            last_sync = Instant::now();
        }
    }
    timed_sync(&buffer);
    let append = t0.elapsed();
    drop(buffer);

    // 3. Recovery with the page cache warm.
    let t = Instant::now();
    let (buffer, rec) = Buffer::open(&bdir, opts(size)).unwrap();
    let open_warm = t.elapsed();
    assert_eq!((rec.records, rec.unacked, rec.corrupt_regions, rec.torn_bytes), (n as u64, n as u64, 0, 0));
    drop(buffer);

    // 4. Recovery with the segments evicted from the page cache.
    let mut open_cold = None;
    if args.cold != Cold::None {
        evict(&bdir, args.cold);
        if let Some(r) = resident(&bdir) {
            eprintln!("    after eviction: {r}");
        }
    }
    let t = Instant::now();
    let (buffer, rec) = Buffer::open(&bdir, opts(size)).unwrap();
    if args.cold != Cold::None {
        open_cold = Some(t.elapsed().as_secs_f64());
    }
    assert_eq!((rec.records, rec.unacked), (n as u64, n as u64));

    // 5. Read + ack until drained, from the page cache.
    let t0 = Instant::now();
    let mut last_persist = t0;
    let (mut records, mut bytes, mut next_seq) = (0usize, 0u64, 1u64);
    let mut checked = Vec::new();
    loop {
        let batch = buffer.read(SINK_READ_BYTES, Duration::ZERO).unwrap();
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            assert_eq!(r.seq, next_seq, "records out of order");
            next_seq += 1;
            bytes += r.payload.len() as u64;
            if records % 97 == 0 {
                checked.push((records, r.payload.clone()));
            }
            records += 1;
        }
        // As the sink thread does: acknowledge, then hand the payloads back.
        for r in &batch {
            buffer.ack(r.seq);
        }
        batch.into_iter().for_each(|r| buffer.recycle(r.payload));
        if last_persist.elapsed() >= ACK_INTERVAL {
            buffer.persist_ack().unwrap();
            last_persist = Instant::now();
        }
    }
    buffer.persist_ack().unwrap();
    let read = t0.elapsed();
    assert_eq!((records, bytes), (n, size), "read back (records, bytes)");
    for (i, p) in checked {
        assert!(p == payloads[i % payloads.len()].0, "payload {i} differs");
    }
    let st = buffer.stats();
    assert_eq!(st.records, 0);
    // Every open starts a new (empty) segment; the reader steps over the empty one
    // left by the warm open only after the last ack, so it may still be there.
    assert!(st.bytes <= st.segments * 16, "acknowledged data left: {} bytes in {} segments", st.bytes, st.segments);
    drop(buffer);
    fs::remove_dir_all(dir).unwrap();

    let s = |d: Duration| d.as_secs_f64();
    Round {
        dd_mbps,
        append_mbps: size as f64 / s(append) / 1e6,
        append_s: s(append),
        sync_s: s(sync_time),
        syncs,
        max_sync_ms: s(max_sync) * 1e3,
        open_warm_s: s(open_warm),
        open_cold_s: open_cold,
        read_gbps: size as f64 / s(read) / 1e9,
        read_s: s(read),
    }
}

fn main() {
    let args = parse_args();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-data/buffer-bench");
    let payloads: Vec<(Bytes, u32)> = payloads().into_iter().map(|(p, lines)| (Bytes::from(p), lines)).collect();
    let size = (args.size_mib * MIB) as f64;
    eprintln!(
        "buffer bench: {} MiB of 1 MiB records, {} round(s), in {} (cold recovery: {})",
        args.size_mib,
        args.rounds,
        dir.display(),
        match args.cold {
            Cold::Fadvise => "fadvise DONTNEED on the segments",
            Cold::DropCaches => "sync + drop_caches",
            Cold::None => "skipped",
        }
    );
    let mut rounds = Vec::new();
    for i in 1..=args.rounds {
        let r = round(&dir, &args, &payloads);
        eprintln!(
            "  round {i}: dd {:.0} MB/s | append {:.0} MB/s ({:.2} s, {} fsyncs {:.2} s, max {:.0} ms) = {:.0} % of dd | open warm {:.3} s{} | read+ack {:.2} GB/s ({:.3} s)",
            r.dd_mbps,
            r.append_mbps,
            r.append_s,
            r.syncs,
            r.sync_s,
            r.max_sync_ms,
            100.0 * r.append_mbps / r.dd_mbps,
            r.open_warm_s,
            r.open_cold_s.map_or(String::new(), |c| format!(", cold {c:.3} s")),
            r.read_gbps,
            r.read_s,
        );
        rounds.push(r);
    }

    let max = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).fold(f64::MIN, f64::max);
    let min = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).fold(f64::MAX, f64::min);
    let best_dd = max(&|r| r.dd_mbps);
    let best_append = max(&|r| r.append_mbps);
    let best_ratio = max(&|r| r.append_mbps / r.dd_mbps);
    let ok = |b: bool| if b { "yes" } else { "**no**" };
    let warm = min(&|r| r.open_warm_s);
    let cold = rounds.iter().filter_map(|r| r.open_cold_s).fold(None, |a: Option<f64>, c| Some(a.map_or(c, |a| a.min(c))));
    let read = max(&|r| r.read_gbps);
    println!();
    println!("| measurement ({} MiB, best of {}) | result | target | met |", args.size_mib, args.rounds);
    println!("|---|---:|---|---|");
    println!("| `dd bs=1M count={} conv=fdatasync` | {best_dd:.0} MB/s | (baseline) | |", args.size_mib);
    println!(
        "| append 1 MiB + group commit (200 ms / 32 MiB) | {best_append:.0} MB/s = **{:.0} %** of best dd (best same-round ratio {:.0} %) | ≥ 70 % of dd | {} |",
        100.0 * best_append / best_dd,
        100.0 * best_ratio,
        ok(best_append / best_dd >= 0.7 || best_ratio >= 0.7)
    );
    println!("| read(4 MiB) + ack until drained, page cache | **{read:.2} GB/s** ({:.3} s) | ≥ 1 GB/s | {} |", size / read / 1e9, ok(read >= 1.0));
    println!("| `Buffer::open`, {} records unacked, warm | **{warm:.3} s** ({:.1} GB/s) | ≤ 2 s | {} |", args.size_mib, size / warm / 1e9, ok(warm <= 2.0));
    if let Some(c) = cold {
        println!(
            "| `Buffer::open`, cold ({}) | **{c:.3} s** ({:.0} MB/s) | ≤ 2 s | {} |",
            if args.cold == Cold::Fadvise { "segments evicted with fadvise DONTNEED" } else { "sync + drop_caches" },
            size / c / 1e6,
            ok(c <= 2.0)
        );
    }
}
