//! The S3 delivery loop, on the shared core (`core`): chunks of JSON lines in, objects
//! out, acknowledgements once every object holding a chunk's lines is written.
//!
//! ```text
//! chunks ─► key prefix per event (namespace, day…) ─► an open object per prefix:
//!    ▲                                                 compressed block by block
//!    │                                                   │ full (object_max_bytes as
//!    │                                                   ▼ stored) or old: sealed
//!    └── ack(seq) once every object with its lines ◄── PutObject ×N
//!        was written
//! ```
//!
//! - An open object is compressed as it fills, a block of [`BLOCK_BYTES`] at a time:
//!   the object is a series of gzip members or zstd frames, which every gzip and zstd
//!   reader reads as one stream. So its size as stored is known while it fills (the
//!   threshold is on what S3 stores and bills: at 1 MB/s of logs a prefix gets an object
//!   a minute, not one per 8 MiB of JSON), and an open object holds at most one block
//!   uncompressed.
//! - Each chunk counts the objects holding its lines; it is acknowledged when all of
//!   them were written. A failed put is retried with backoff, the same key and bytes.
//! - Object names never collide: the node, the time the object was sealed, this
//!   process's start and a sequence number (see `batch::s3`).
//! - Memory is bounded: open objects together hold at most [`OPEN_BYTES`] (then the
//!   largest is sealed early), and sealed ones not yet written (waiting or in flight)
//!   at most [`QUEUE_BYTES`] (then no more chunks are taken).
//! - The buffers of objects written are filled again (at most `max_in_flight` of them
//!   kept, freed when the sink is idle): an object of 8 MiB was otherwise mapped,
//!   faulted in page by page and unmapped, every time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::client::{Failure, FailureKind};
use super::core::{earliest, Chunk, Delivered, Failures, Ledger, Loop};
use super::pace::Pacer;
use super::s3::S3;
use crate::batch::s3::{KeyPrefixes, PrefixId};
use crate::config::{Compression, S3Config};
use crate::metrics::SinkCounters;
use crate::sink::backoff::{seed, Backoff};

/// Open objects together, at most (then the largest is sealed early).
const OPEN_BYTES: usize = 32 << 20;
/// Sealed objects not yet written (waiting or in flight), at most (then no more chunks
/// are taken).
const QUEUE_BYTES: usize = 32 << 20;

/// JSON lines are compressed in blocks of this much (the last one of an object shorter),
/// or an eighth of `object_max_bytes` if less: an object goes over the threshold by at
/// most the difference between two blocks compressed, a few percent.
const BLOCK_BYTES: usize = 1 << 20;

/// An object being filled.
struct OpenObject {
    /// Its key's prefix.
    prefix: String,
    /// The block being filled (uncompressed).
    block: Vec<u8>,
    /// The blocks compressed so far: the object's body.
    stored: Vec<u8>,
    /// The last block's size compressed: about what the next one will add.
    last_stored: usize,
    raw_bytes: usize,
    lines: u64,
    /// The chunks with lines in it, ascending, each once.
    chunks: Vec<u64>,
    opened: Instant,
}

/// An object ready to be written (or written again).
pub(super) struct Sealed {
    key: String,
    /// Shared with the put in flight, so a retry needs no copy.
    body: bytes::Bytes,
    raw_bytes: usize,
    lines: u64,
    chunks: Vec<u64>,
}

type Answer = (Sealed, Instant, Result<(), Failure>);

/// The S3 delivery loop.
pub struct S3Delivery<A: FnMut(u64)> {
    s3: S3,
    config: S3Config,
    prefixes: KeyPrefixes,
    pacer: Pacer,
    /// By prefix id.
    open: HashMap<PrefixId, OpenObject>,
    /// What the open objects hold, blocks and stored bytes.
    open_bytes: usize,
    compressor: BlockCompressor,
    ready: VecDeque<Sealed>,
    /// Sealed objects not yet written, waiting or in flight.
    unwritten_bytes: usize,
    retry_at: Option<Instant>,
    backoff: Backoff,
    ledger: Ledger<A>,
    in_flight: JoinSet<Answer>,
    counters: Arc<SinkCounters>,
    done: Delivered,
    failures: Failures,
    /// This process's start (ns), in every object name, and the objects named so far.
    run: i64,
    named: u64,
    /// Buffers of objects written, emptied, for the next objects' stored bytes.
    spares: Vec<Vec<u8>>,
}

impl OpenObject {
    fn new(prefix: String) -> Self {
        Self { prefix, block: Vec::new(), stored: Vec::new(), last_stored: 0, raw_bytes: 0, lines: 0, chunks: Vec::new(), opened: Instant::now() }
    }

    /// What it holds in memory: its block as allocated, its stored bytes and their
    /// room for the next block compressed (about what a fresh buffer has spare; a
    /// reused one's beyond it belongs to the spares, which are bounded on their own).
    fn held(&self) -> usize {
        self.block.capacity() + self.stored.len() + (self.stored.capacity() - self.stored.len()).min(BLOCK_BYTES)
    }
}

impl<A: FnMut(u64)> S3Delivery<A> {
    pub fn new(s3: S3, config: S3Config, ledger: Ledger<A>, counters: Arc<SinkCounters>) -> Self {
        let prefixes = KeyPrefixes::new(config.key_prefix.clone(), config.node.clone(), config.cluster.clone());
        let pacer = Pacer::new(config.pacing);
        counters.set_rate(0.0, pacer.requests_per_second());
        let backoff = Backoff::try_new(Duration::from_millis(100), config.retry_max_wait.max(Duration::from_millis(100)), seed()).expect("valid bounds");
        Self {
            s3,
            prefixes,
            pacer,
            open: HashMap::new(),
            open_bytes: 0,
            compressor: BlockCompressor::new(config.compression),
            ready: VecDeque::new(),
            unwritten_bytes: 0,
            retry_at: None,
            backoff,
            ledger,
            in_flight: JoinSet::new(),
            counters,
            done: Delivered::default(),
            failures: Failures::default(),
            run: crate::event::time::now(),
            named: 0,
            spares: Vec::new(),
            config,
        }
    }

    /// Adds one line (without its newline) of chunk `seq` to its prefix's object.
    fn add_line(&mut self, line: &[u8], seq: u64, now_ns: i64) {
        let (id, prefix) = self.prefixes.prefix(line, now_ns);
        let obj = self.open.entry(id).or_insert_with(|| OpenObject::new(prefix.to_owned()));
        if obj.chunks.last() != Some(&seq) {
            obj.chunks.push(seq);
            self.ledger.wait(seq);
        }
        let held = obj.held();
        obj.block.extend_from_slice(line);
        obj.block.push(b'\n');
        obj.lines += 1;
        obj.raw_bytes += line.len() + 1;
        let max = self.config.object_max_bytes;
        let full = obj.block.len() >= BLOCK_BYTES.min(max / 8);
        if full {
            if obj.stored.capacity() == 0 {
                obj.stored = self.spares.pop().unwrap_or_default();
            }
            self.compressor.flush(obj);
        }
        self.open_bytes = self.open_bytes + obj.held() - held;
        // Sealed once the next block would take it over the threshold.
        if full && obj.stored.len() + obj.last_stored > max {
            self.seal(id);
        }
    }

    /// Seals the largest open object while the open ones hold too much.
    fn bound_open(&mut self) {
        while self.open_bytes > OPEN_BYTES {
            let Some(id) = self.open.iter().max_by_key(|(_, o)| o.held()).map(|(id, _)| *id) else { return };
            self.seal(id);
        }
    }

    /// Closes the open object of prefix `id`: compresses its last block, names it,
    /// queues it to be written.
    fn seal(&mut self, id: PrefixId) {
        let Some(mut obj) = self.open.remove(&id) else { return };
        self.open_bytes -= obj.held();
        self.compressor.flush(&mut obj);
        self.named += 1;
        let stamp = crate::event::time::format_rfc3339(crate::event::time::now());
        let stamp: String = stamp[..19].chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
        let key = format!("{}{}-{stamp}Z-{:x}-{:06}{}", obj.prefix, self.config.node, self.run, self.named, self.config.compression.extension());
        let body = bytes::Bytes::from(obj.stored);
        self.unwritten_bytes += body.len();
        self.ready.push_back(Sealed { key, body, raw_bytes: obj.raw_bytes, lines: obj.lines, chunks: obj.chunks });
    }

    fn accepted(&mut self, sealed: Sealed) {
        self.backoff.reset();
        self.failures.succeeded();
        self.pacer.succeeded();
        let c = &self.counters;
        c.succeeded();
        c.records_ok.fetch_add(sealed.lines, Ordering::Relaxed);
        c.bytes.fetch_add(sealed.raw_bytes as u64, Ordering::Relaxed);
        c.objects.fetch_add(1, Ordering::Relaxed);
        c.stored_bytes.fetch_add(sealed.body.len() as u64, Ordering::Relaxed);
        self.unwritten_bytes -= sealed.body.len();
        self.done.records += 1;
        self.done.bytes += sealed.raw_bytes as u64;
        self.done.stored_bytes += sealed.body.len() as u64;
        for seq in sealed.chunks {
            self.ledger.settle(seq);
            self.ledger.try_ack(seq, false);
        }
        if self.spares.len() < self.config.max_in_flight {
            self.spares.extend(crate::buffer::reclaim(sealed.body));
        }
    }

    fn failed(&mut self, sealed: Sealed, sent: Instant, failure: Failure) {
        if failure.kind == FailureKind::Throttled {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            self.pacer.throttled(sent);
        }
        if self.failures.failed(&self.counters, &failure, 1) {
            match failure.kind {
                FailureKind::Permanent => tracing::error!(bucket = self.s3.bucket(), key = %sealed.key, error = %failure.message, "S3 refused the object; the data stays buffered and is retried until this is fixed"),
                _ => tracing::warn!(bucket = self.s3.bucket(), key = %sealed.key, error = %failure.message, "S3 put failed; retrying with backoff"),
            }
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let at = Instant::now() + self.backoff.next_wait();
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.max(at)));
        self.ready.push_front(sealed);
    }
}

/// Compresses an open object's block onto its stored bytes: a gzip member at
/// libdeflate's level 1 (a block is in memory whole, which is what libdeflate wants;
/// several times faster than zlib at a similar ratio on logs), a zstd frame at level 1,
/// or the block as it is. One per delivery loop: the compressors' state is reused.
struct BlockCompressor {
    compression: Compression,
    gzip: Option<libdeflater::Compressor>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl BlockCompressor {
    fn new(compression: Compression) -> Self {
        Self { compression, gzip: None, zstd: None }
    }

    /// Moves `obj`'s block, compressed, onto its stored bytes. The stored bytes grow by
    /// exactly what a block may need (not doubling: an object of 8 MiB holds 8 MiB and
    /// a block's slack; growing a large allocation is a remap, not a copy).
    fn flush(&mut self, obj: &mut OpenObject) {
        if obj.block.is_empty() {
            return;
        }
        let before = obj.stored.len();
        let block = &obj.block;
        let out = &mut obj.stored;
        match self.compression {
            Compression::None => {
                out.reserve_exact(block.len());
                out.extend_from_slice(block);
            }
            Compression::Gzip => {
                let gz = self.gzip.get_or_insert_with(|| libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).expect("1 is a level")));
                let bound = gz.gzip_compress_bound(block.len());
                out.reserve_exact(bound);
                out.resize(before + bound, 0);
                let n = gz.gzip_compress(block, &mut out[before..]).expect("the bound fits the compressed data");
                out.truncate(before + n);
            }
            Compression::Zstd => {
                let z = self.zstd.get_or_insert_with(|| zstd::bulk::Compressor::new(1).expect("zstd's level 1"));
                let bound = zstd::zstd_safe::compress_bound(block.len());
                out.reserve_exact(bound);
                out.resize(before + bound, 0);
                let n = z.compress_to_buffer(block, &mut out[before..]).expect("the bound fits the compressed data");
                out.truncate(before + n);
            }
        }
        obj.last_stored = obj.stored.len() - before;
        obj.block.clear();
    }
}

impl<A: FnMut(u64)> Loop for S3Delivery<A> {
    type Answer = Answer;

    fn take(&mut self, chunk: &Chunk) -> anyhow::Result<()> {
        let seq = chunk.seq;
        self.ledger.open(seq);
        let now_ns = crate::event::time::now();
        for line in crate::batch::lines(&chunk.data) {
            self.add_line(line, seq, now_ns);
        }
        self.bound_open();
        self.ledger.complete(seq);
        self.ledger.try_ack(seq, false);
        self.done.chunks += 1;
        Ok(())
    }

    /// When the oldest open object is due, or a retry's backoff ends.
    fn deadline(&self) -> Option<Instant> {
        let aged = self.open.values().map(|o| o.opened + self.config.object_max_age).min();
        let retry = self.retry_at.filter(|_| !self.ready.is_empty() && self.in_flight.len() < self.config.max_in_flight);
        earliest(aged, retry)
    }

    /// Seals objects that are old enough (all of them when closing), then writes
    /// sealed ones while there is room in flight.
    async fn dispatch(&mut self, closing: bool) {
        let now = Instant::now();
        let due: Vec<PrefixId> = self.open.iter().filter(|(_, o)| closing || now.duration_since(o.opened) >= self.config.object_max_age).map(|(id, _)| *id).collect();
        for id in due {
            self.seal(id);
        }
        if self.idle() {
            self.spares = Vec::new();
        }
        while self.in_flight.len() < self.config.max_in_flight && !self.ready.is_empty() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            let sealed = self.ready.pop_front().expect("not empty");
            self.pacer.admit(1, 0).await;
            let s3 = self.s3.clone();
            let compression = self.config.compression;
            self.in_flight.spawn(async move {
                let sent = Instant::now();
                let result = s3.put(&sealed.key, sealed.body.clone(), compression).await;
                (sealed, sent, result)
            });
        }
    }

    async fn answer(&mut self, (sealed, sent, result): Answer) -> anyhow::Result<()> {
        match result {
            Ok(()) => self.accepted(sealed),
            Err(failure) => self.failed(sealed, sent, failure),
        }
        self.counters.set_rate(0.0, self.pacer.requests_per_second());
        Ok(())
    }

    fn idle(&self) -> bool {
        self.open.is_empty() && self.ready.is_empty() && self.in_flight.is_empty()
    }

    fn room(&self) -> bool {
        self.unwritten_bytes < QUEUE_BYTES
    }

    fn in_flight(&mut self) -> &mut JoinSet<Answer> {
        &mut self.in_flight
    }

    fn delivered(&self) -> Delivered {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An object compressed block by block reads back whole with an ordinary gzip or
    /// zstd reader (gzip members and zstd frames in a row are one stream to both).
    #[test]
    fn an_object_of_many_blocks_decompresses_as_one_stream() {
        let lines: Vec<String> = (0..5_000).map(|i| format!("{{\"message\":\"line {i} {}\"}}\n", "ab".repeat(i % 50))).collect();
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut c = BlockCompressor::new(compression);
            let mut obj = OpenObject::new(String::new());
            let mut flushes = 0;
            for line in &lines {
                obj.block.extend_from_slice(line.as_bytes());
                if obj.block.len() >= 16 * 1024 {
                    c.flush(&mut obj);
                    flushes += 1;
                }
            }
            c.flush(&mut obj);
            assert!(flushes > 10 && obj.block.is_empty());
            let text = match compression {
                Compression::Gzip => {
                    let mut out = Vec::new();
                    flate2::read::MultiGzDecoder::new(&obj.stored[..]).read_to_end(&mut out).unwrap();
                    out
                }
                Compression::Zstd => zstd::decode_all(&obj.stored[..]).unwrap(),
                Compression::None => obj.stored.clone(),
            };
            assert_eq!(text, lines.concat().into_bytes(), "{compression:?}");
            assert!(compression == Compression::None || obj.stored.len() < text.len() / 3);
        }
    }
}
