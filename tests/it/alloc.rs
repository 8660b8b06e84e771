//! The hot path does not allocate per line: once buffers have grown to fit the input,
//! decoding and encoding unsplit lines performs no heap allocation at all.
//!
//! A counting global allocator (per thread, so other tests running in parallel do not
//! interfere) measures it over the second half of an input whose first half warmed
//! the buffers up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use logferry::decode::{DecodeOptions, FileDecoder};
use logferry::event::{EventEncoder, KubeMeta, MessageFormat};
use logferry::tail::lines::LineReader;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations while decoding and encoding the second half of `half` twice over.
fn allocations_in_steady_state(half: &[u8]) -> (u64, u64) {
    let input = [half, half].concat();
    let opts = DecodeOptions::default();
    let mut decoder = FileDecoder::new(&opts);
    let mut encoder = EventEncoder::new(MessageFormat::String);
    let kube = KubeMeta { namespace: "ns".into(), pod: "p".into(), container: "c".into(), ..Default::default() }
        .json_fragment();
    let mut out = Vec::with_capacity(4 << 20);
    let mut reader = LineReader::new(Cursor::new(&input[..]), 1 << 20, 0);
    let mut before = None;
    while let Some(line) = reader.next_line().unwrap() {
        if before.is_none() && line.offset >= half.len() as u64 {
            before = Some((allocations(), decoder.stats.events));
        }
        decoder.line(line.bytes, line.offset, 0, &mut |ev| encoder.encode(ev, &kube, &mut out));
        if out.len() > 2 << 20 {
            out.clear();
        }
    }
    let (allocs, events) = before.unwrap();
    (allocations() - allocs, decoder.stats.events - events)
}

fn docker_lines() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..5000 {
        let line = match i % 3 {
            0 => format!(r#"{{"log":"GET /items/{i} 200 12ms\n","stream":"stdout","time":"2026-11-21T10:00:00.{i:09}Z"}}"#),
            1 => format!(r#"{{"log":"{{\"level\":\"info\",\"msg\":\"item {i} \u003cok\u003e\"}}\n","stream":"stderr","time":"2026-11-21T10:00:01.5Z"}}"#),
            _ => format!(r#"{{"log":"tab\there é 日本 {i}\n","stream":"stdout","time":"2026-11-21T10:00:02Z"}}"#),
        };
        v.extend_from_slice(line.as_bytes());
        v.push(b'\n');
    }
    v
}

fn cri_lines() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..5000 {
        let stream = if i % 4 == 0 { "stderr" } else { "stdout" };
        v.extend_from_slice(format!("2026-11-21T10:00:00.{i:09}Z {stream} F line {i} \"quoted\" é\n").as_bytes());
    }
    v
}

#[test]
fn docker_lines_decode_and_encode_without_allocating() {
    let (allocs, events) = allocations_in_steady_state(&docker_lines());
    assert_eq!(events, 5000);
    assert_eq!(allocs, 0);
}

#[test]
fn cri_lines_decode_and_encode_without_allocating() {
    let (allocs, events) = allocations_in_steady_state(&cri_lines());
    assert_eq!(events, 5000);
    assert_eq!(allocs, 0);
}

/// The S3 sink's key prefix per event: once each pod's prefix for the hour was rendered,
/// finding it again allocates nothing — for the same pod line after line, and for pods
/// taking turns.
#[test]
fn s3_key_prefixes_do_not_allocate_per_line() {
    use logferry::batch::s3::{KeyPrefixes, KeyTemplate};
    let mut p = KeyPrefixes::new(KeyTemplate::parse("logs/{namespace}/dt={date}/").unwrap(), "n".into(), "c".into());
    let lines: Vec<String> = (0..1_000)
        .map(|i| format!(r#"{{"time":"2026-12-06T10:00:00.{i:09}Z","stream":"stdout","message":"m {i}","kubernetes":{{"namespace":"ns{}","pod":"p{}","container":"app"}}}}"#, i / 100 % 3, i / 10 % 7))
        .collect();
    let mut sum = 0;
    for l in &lines {
        sum += p.prefix(l.as_bytes(), 0).0;
    }
    let before = allocations();
    for l in &lines {
        sum += p.prefix(l.as_bytes(), 0).0;
    }
    assert_eq!(allocations() - before, 0, "allocations per line in the S3 key prefixes ({sum})");
}
