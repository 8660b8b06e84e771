//! `FileDecoder` as a whole: detection, raw lines, flushing rules, checkpoints.

use std::time::Duration;

use super::*;

fn collect(dec: &mut FileDecoder, lines: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for l in lines {
        dec.line(l, offset, 42, &mut |e| out.push((e.message.to_vec(), e.partial)));
        offset += l.len() as u64 + 1;
    }
    out
}

#[test]
fn detects_docker_then_keeps_it() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let out = collect(&mut dec, &[br#"{"log":"a\n"}"#, b"2026-11-21T10:00:00Z stdout F cri here", br#"{"log":"b\n"}"#]);
    assert_eq!(dec.format(), Some(Format::Docker));
    assert_eq!(out.len(), 3);
    assert_eq!(dec.stats.malformed, 1, "a CRI line in a Docker file is raw");
}

#[test]
fn a_forced_format_makes_the_other_raw() {
    let opts = DecodeOptions { format: FormatChoice::Cri, ..DecodeOptions::default() };
    let mut dec = FileDecoder::new(&opts);
    let out = collect(&mut dec, &[br#"{"log":"a\n"}"#]);
    assert_eq!(out, vec![(br#"{"log":"a\n"}"#.to_vec(), false)]);
    assert_eq!(dec.stats.malformed, 1);
}

#[test]
fn raw_lines_get_the_read_time() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let mut times = Vec::new();
    dec.line(b"garbage", 0, 42, &mut |e| times.push(e.time));
    assert_eq!(times, vec![42]);
}

/// The follower says how long it has been caught up with the file's end. While it
/// is not caught up (`None`), a pending piece is never flushed, however long it has
/// waited: its continuation may be in the unread part of the file.
#[test]
fn stale_pieces_flush_only_when_caught_up_and_quiet() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let mut out = Vec::new();
    dec.line(b"2026-11-21T10:00:00Z stdout P first half ", 0, 0, &mut |e| out.push(e.message.to_vec()));
    let timeout = Duration::from_secs(5);
    assert!(!dec.flush_stale(None, timeout, &mut |_| panic!("not caught up: must wait")));
    assert!(!dec.flush_stale(Some(Duration::from_secs(4)), timeout, &mut |_| panic!("not quiet long enough")));
    dec.line(b"2026-11-21T10:00:01Z stdout F second half", 50, 0, &mut |e| out.push(e.message.to_vec()));
    assert_eq!(out, vec![b"first half second half".to_vec()]);

    dec.line(b"2026-11-21T10:00:02Z stderr P never finished", 100, 0, &mut |_| {});
    let mut flushed = Vec::new();
    assert!(dec.flush_stale(Some(timeout), timeout, &mut |e| flushed.push((e.message.to_vec(), e.partial))));
    assert_eq!(flushed, vec![(b"never finished".to_vec(), true)]);
    assert!(!dec.flush_stale(Some(timeout), timeout, &mut |_| panic!("nothing left")));
}

#[test]
fn checkpoints_never_point_inside_a_split_message() {
    let mut dec = FileDecoder::new(&DecodeOptions::default());
    let lines: [&[u8]; 4] = [
        b"2026-11-21T10:00:00Z stdout F whole",
        b"2026-11-21T10:00:00Z stderr P start",
        b"2026-11-21T10:00:00Z stdout P other",
        b"2026-11-21T10:00:00Z stderr F end",
    ];
    let mut offset = 0u64;
    let mut safe = Vec::new();
    for l in lines {
        dec.line(l, offset, 0, &mut |_| {});
        offset += l.len() as u64 + 1;
        safe.push(dec.checkpoint_offset(offset));
    }
    let starts = [0u64, 36, 72, 108];
    assert_eq!(safe, vec![starts[1], starts[1], starts[1], starts[2]]);
}
