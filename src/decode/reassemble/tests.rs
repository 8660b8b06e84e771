//! The reassembler's unit and property tests.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn run(max: usize, oversize: Oversize, frags: &[(Stream, &[u8], bool)]) -> (Vec<(Stream, Vec<u8>, bool)>, DecodeStats) {
    let mut r = Reassembler::new(max, oversize);
    let mut stats = DecodeStats::default();
    let mut out = Vec::new();
    for (i, &(stream, bytes, last)) in frags.iter().enumerate() {
        let f = Fragment { stream, time: i as i64, bytes, escaped: false, last, offset: i as u64 * 100 };
        r.push(f, &mut stats, &mut |e| out.push((e.stream, e.message.to_vec(), e.truncated)));
    }
    r.flush_all(&mut stats, &mut |e| out.push((e.stream, e.message.to_vec(), e.truncated)));
    (out, stats)
}

use Stream::{Stderr as E, Stdout as O};

/// The capacities of the thread's spares, larger first.
fn spare_capacities() -> [usize; 2] {
    let spares = SPARES.take();
    let mut capacities = [spares[0].capacity(), spares[1].capacity()];
    SPARES.set(spares);
    capacities.sort_unstable_by(|a, b| b.cmp(a));
    capacities
}

fn spare_capacity() -> usize {
    spare_capacities()[0]
}

/// A thread's split messages share buffers: the next one starts in the last
/// one's, none grows again; one past [`SPARE_MAX_BYTES`] is not kept.
#[test]
fn a_thread_reuses_the_buffer_of_its_last_split_message() {
    let mut r = Reassembler::new(4 << 20, Oversize::Truncate);
    let mut stats = DecodeStats::default();
    let piece = vec![b'x'; 16 << 10];
    let mut message_at = |r: &mut Reassembler, pieces: usize, stream: Stream| {
        let mut at = None;
        for k in 0..pieces {
            let f = Fragment { stream, time: 0, bytes: &piece, escaped: false, last: k + 1 == pieces, offset: 0 };
            r.push(f, &mut stats, &mut |e| {
                assert_eq!(e.message.len(), pieces * piece.len());
                at = Some(e.message.as_ptr());
            });
        }
        at.expect("emitted")
    };
    assert_eq!(spare_capacity(), 0);
    let first = message_at(&mut r, 7, O);
    let kept = spare_capacity();
    assert!(kept >= 7 * piece.len(), "{kept}");
    assert_eq!(message_at(&mut r, 5, E), first, "the next message starts in the spare");
    assert_eq!(message_at(&mut r, 7, O), first);
    assert_eq!(spare_capacity(), kept, "nothing grew");
    message_at(&mut r, 80, O); // 1.25 MiB
    assert_eq!(spare_capacity(), 0, "too large to keep, and the spare went into it");
    message_at(&mut r, 3, O);
    assert!(spare_capacity() >= 3 * piece.len());
}

/// Messages split on stdout and stderr at once each get a spare: after one round,
/// neither grows again.
#[test]
fn both_streams_split_at_once_reuse_two_buffers() {
    let mut r = Reassembler::new(4 << 20, Oversize::Truncate);
    let mut stats = DecodeStats::default();
    let piece = vec![b'x'; 16 << 10];
    let mut round = |r: &mut Reassembler| {
        let mut at = Vec::new();
        for k in 0..6 {
            for stream in [O, E] {
                let f = Fragment { stream, time: 0, bytes: &piece, escaped: false, last: k == 5, offset: 0 };
                r.push(f, &mut stats, &mut |e| at.push(e.message.as_ptr()));
            }
        }
        at.sort_unstable();
        at
    };
    SPARES.take();
    let first = round(&mut r);
    let kept = spare_capacities();
    assert!(kept[1] >= 6 * piece.len(), "both kept: {kept:?}");
    assert_eq!(round(&mut r), first, "both messages start in a spare");
    assert_eq!(spare_capacities(), kept, "nothing grew");
}

#[test]
fn interleaved_streams_never_mix() {
    let (out, stats) = run(
        1 << 20,
        Oversize::Truncate,
        &[(O, b"aa", false), (E, b"11", false), (O, b"bb", false), (E, b"22", true), (O, b"cc", true)],
    );
    assert_eq!(out, vec![(E, b"1122".to_vec(), false), (O, b"aabbcc".to_vec(), false)]);
    assert_eq!(stats.rejoined, 2);
}

#[test]
fn a_character_cut_between_pieces_comes_out_whole() {
    let (out, _) = run(1 << 20, Oversize::Truncate, &[(O, b"\xe6\x97", false), (O, b"\xa5", true)]);
    assert_eq!(out[0].1, "日".as_bytes());
}

#[test]
fn oversize_truncates_at_a_character_boundary() {
    let (out, stats) = run(5, Oversize::Truncate, &[(O, b"abc", false), (O, "d日e".as_bytes(), false), (O, b"f", true)]);
    assert_eq!(out, vec![(O, b"abcd".to_vec(), true)]);
    assert_eq!(stats.truncated, 1);
    let (out, _) = run(3, Oversize::Truncate, &[(O, b"abcdef", true)]);
    assert_eq!(out, vec![(O, b"abc".to_vec(), true)]);
}

#[test]
fn oversize_drop_consumes_the_rest_of_the_message() {
    let (out, stats) = run(4, Oversize::Drop, &[(O, b"abc", false), (O, b"def", false), (O, b"g", true), (O, b"ok", true)]);
    assert_eq!(out, vec![(O, b"ok".to_vec(), false)]);
    assert_eq!(stats.dropped_oversize, 1);
    let (out, stats) = run(4, Oversize::Drop, &[(O, b"abcdef", true)]);
    assert!(out.is_empty());
    assert_eq!(stats.dropped_oversize, 1);
}

#[test]
fn unfinished_messages_flush_as_partial() {
    let mut r = Reassembler::new(100, Oversize::Truncate);
    let mut stats = DecodeStats::default();
    let f = |stream, offset| Fragment { stream, time: 7, bytes: b"x", escaped: false, last: false, offset };
    r.push(f(E, 10), &mut stats, &mut |_| panic!("nothing complete yet"));
    r.push(f(O, 20), &mut stats, &mut |_| panic!("nothing complete yet"));
    assert_eq!(r.oldest_pending_offset(), Some(10));
    let mut partial = Vec::new();
    r.flush_all(&mut stats, &mut |e| partial.push((e.stream, e.partial, e.time)));
    assert_eq!(partial, vec![(O, true, 7), (E, true, 7)]);
    assert_eq!(r.oldest_pending_offset(), None);
    assert_eq!(stats.partial, 2);
}

#[test]
fn after_a_gap_the_first_message_of_each_stream_is_partial() {
    let mut r = Reassembler::new(100, Oversize::Truncate);
    let mut stats = DecodeStats::default();
    let mut out = Vec::new();
    let f = |stream, bytes, last| Fragment { stream, time: 1, bytes, escaped: false, last, offset: 0 };
    r.push(f(O, b"head-", false), &mut stats, &mut |_| panic!("nothing complete yet"));
    r.gap(&mut stats, &mut |e| out.push((e.stream, e.message.to_vec(), e.partial)));
    // The hole held the end of "head-" and perhaps the head of what follows.
    for (stream, bytes, last) in [(O, &b"tail"[..], true), (O, b"next", true), (E, b"err-", false), (E, b"end", true), (E, b"e2", true)] {
        r.push(f(stream, bytes, last), &mut stats, &mut |e| out.push((e.stream, e.message.to_vec(), e.partial)));
    }
    let want: Vec<(Stream, Vec<u8>, bool)> = vec![
        (O, b"head-".to_vec(), true),
        (O, b"tail".to_vec(), true),
        (O, b"next".to_vec(), false),
        (E, b"err-end".to_vec(), true),
        (E, b"e2".to_vec(), false),
    ];
    assert_eq!(out, want);
    assert_eq!(stats.partial, 3);
}

/// Escaped pieces (as a Docker value passed through) join escaped; a raw piece, or
/// the escaped size passing the cap, turns the message raw, so the cap counts the
/// application's bytes.
#[test]
fn escaped_pieces_stay_escaped_until_a_raw_piece_or_the_cap() {
    let run = |max: usize, frags: &[(&[u8], bool, bool)]| {
        let mut r = Reassembler::new(max, Oversize::Truncate);
        let mut stats = DecodeStats::default();
        let mut out = Vec::new();
        for &(bytes, escaped, last) in frags {
            let f = Fragment { stream: O, time: 0, bytes, escaped, last, offset: 0 };
            r.push(f, &mut stats, &mut |e| out.push((e.message.to_vec(), e.escaped, e.truncated)));
        }
        out
    };
    let (esc, raw) = (true, false);
    assert_eq!(run(100, &[(br#"a\"b"#, esc, false), (br#"\tc"#, esc, true)]), vec![(br#"a\"b\tc"#.to_vec(), esc, false)]);
    assert_eq!(run(100, &[(br#"a\""#, esc, false), (br#""raw"#, raw, false), (br#"\n"#, esc, true)]), vec![(b"a\"\"raw\n".to_vec(), raw, false)]);
    // 6 bytes escaped, 3 as written: within a cap of 5.
    assert_eq!(run(5, &[(br#"\"\"\""#, esc, true)]), vec![(br#"""""#.to_vec(), raw, false)]);
    assert_eq!(run(5, &[(br#"ab\"\"\"cd"#, esc, true)]), vec![(br#"ab""""#.to_vec(), raw, true)]);
    assert_eq!(run(4, &[(br#"\"\""#, esc, false), (br#"\""#, esc, true)]), vec![(br#"""""#.to_vec(), raw, false)]);
    assert_eq!(run(4, &[(br#"\"\""#, esc, false), (br#"\"x\u00e9"#, esc, true)]), vec![(br#""""x"#.to_vec(), raw, true)]);
}

/// One piece as a test lays it out: a line of `pad` header bytes, then the piece,
/// or (`rewritten`) the piece in the decoder's own bytes.
#[derive(Debug, Clone)]
struct Piece {
    stream: Stream,
    bytes: Vec<u8>,
    last: bool,
    escaped: bool,
    pad: usize,
    rewritten: bool,
}

fn piece() -> impl Strategy<Value = Piece> {
    let bytes = prop_oneof![vec(any::<u8>(), 0..24), Just(br#"a\"b\u00e9"#.to_vec())];
    let pad = prop_oneof![4 => 0usize..8, 1 => Just(80_000usize)];
    (any::<bool>(), bytes, any::<bool>(), any::<bool>(), pad, proptest::bool::weighted(0.3)).prop_map(
        |(stderr, bytes, last, escaped, pad, rewritten)| Piece { stream: if stderr { E } else { O }, bytes, last, escaped, pad, rewritten },
    )
}

type Seen = (Stream, Vec<u8>, bool, bool, bool, i64);

fn seen(e: &Event<'_>) -> Seen {
    (e.stream, e.message.to_vec(), e.escaped, e.truncated, e.partial, e.time)
}

/// The pieces pushed one by one, copied ([`Reassembler::push`]).
fn copied(max: usize, pieces: &[Piece], gap_at: usize) -> (Vec<Seen>, DecodeStats) {
    let mut r = Reassembler::new(max, Oversize::Truncate);
    let (mut stats, mut out) = (DecodeStats::default(), Vec::new());
    for (i, p) in pieces.iter().enumerate() {
        if i == gap_at {
            r.gap(&mut stats, &mut |e| out.push(seen(e)));
        }
        let f = Fragment { stream: p.stream, time: i as i64, bytes: &p.bytes, escaped: p.escaped, last: p.last, offset: 0 };
        r.push(f, &mut stats, &mut |e| out.push(seen(e)));
    }
    r.flush_all(&mut stats, &mut |e| out.push(seen(e)));
    (out, stats)
}

/// The same pieces as lines of one stream, each decoded in a window of its own (a
/// fresh copy of the bytes kept, as a reader that moved them would hand out; the
/// same for the own bytes, appended to while something is kept, as the decoder
/// does), and let go of where `let_go` says.
fn in_place(max: usize, pieces: &[Piece], gap_at: usize, let_go: &[bool]) -> (Vec<Seen>, DecodeStats, usize) {
    let mut stream = Vec::new();
    let mut lines = Vec::new();
    for p in pieces {
        let start = stream.len();
        stream.resize(start + p.pad, b'h');
        stream.extend_from_slice(&p.bytes);
        lines.push((start, stream.len()));
        stream.push(b'\n');
    }
    let mut r = Reassembler::new(max, Oversize::Truncate);
    let (mut stats, mut out, mut in_pieces) = (DecodeStats::default(), Vec::new(), 0);
    let mut own = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let (start, end) = lines[i];
        if i == gap_at {
            r.gap(&mut stats, &mut |e| out.push(seen(e)));
        }
        if r.keep_from().is_none() {
            own.clear();
        }
        let from = r.keep_from().map_or(start, |k| k as usize);
        let window_bytes = stream[from..end].to_vec();
        let window = Window { bytes: &window_bytes, offset: from as u64 };
        if p.rewritten {
            own.extend_from_slice(&p.bytes);
        }
        let own_now = own.clone();
        let bytes = if p.rewritten { &own_now[own.len() - p.bytes.len()..] } else { &window_bytes[start + p.pad - from..] };
        let f = Fragment { stream: p.stream, time: i as i64, bytes, escaped: p.escaped, last: p.last, offset: start as u64 };
        r.push_in(f, window, &own_now, &mut stats, &mut |e| {
            in_pieces += usize::from(e.message.whole().is_none());
            out.push(seen(e))
        });
        r.bound(window, &own_now);
        if let_go.get(i) == Some(&true) || i + 1 == gap_at || i + 1 == pieces.len() {
            let from = r.keep_from().map_or(end, |k| k as usize);
            let (kept, own_now) = (stream[from..end].to_vec(), own.clone());
            r.detach(Window { bytes: &kept, offset: from as u64 }, &own_now);
            assert_eq!(r.keep_from(), None);
        }
    }
    r.flush_all(&mut stats, &mut |e| out.push(seen(e)));
    (out, stats, in_pieces)
}

proptest::proptest! {
    /// Split messages left in place come out exactly as when every piece is
    /// copied: same bytes, flags, times and counts, whatever the streams'
    /// interleaving, escaped and raw pieces, the cap, gaps, the span, and where
    /// the caller lets go of the bytes it keeps.
    #[test]
    fn pieces_left_in_place_come_out_as_pieces_copied(
        pieces in vec(piece(), 0..40),
        let_go in vec(proptest::bool::weighted(0.2), 40),
        max in prop_oneof![8usize..64, Just(1usize << 20)],
        gap_at in 0usize..60,
    ) {
        let (want, want_stats) = copied(max, &pieces, gap_at);
        let (got, got_stats, _) = in_place(max, &pieces, gap_at, &let_go);
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(got_stats, want_stats);
    }
}

/// A split message read into one window (or rewritten into the own bytes) is
/// emitted as its pieces there, uncopied;
/// one spreading past [`IN_PLACE_SPAN`], or of more than [`IN_PLACE_PIECES`]
/// pieces, is copied.
#[test]
fn a_message_read_into_one_window_stays_there() {
    let p = |bytes: &[u8], last, pad| Piece { stream: O, bytes: bytes.to_vec(), last, escaped: false, pad, rewritten: false };
    let (out, stats, in_pieces) = in_place(1 << 20, &[p(b"ab", false, 3), p(b"", false, 3), p(b"cd", true, 3)], 99, &[]);
    assert_eq!((out[0].1.as_slice(), in_pieces, stats.rejoined), (&b"abcd"[..], 1, 1));
    let own = Piece { rewritten: true, ..p(b"XY", false, 3) };
    let (out, _, in_pieces) = in_place(1 << 20, &[p(b"ab", false, 3), own, p(b"cd", true, 3)], 99, &[]);
    assert_eq!((out[0].1.as_slice(), in_pieces), (&b"abXYcd"[..], 1), "a rewritten piece stays in the own bytes");
    let far = [p(b"ab", false, 0), p(b"cd", false, 200_000), p(b"ef", true, 80_000)];
    let (out, _, in_pieces) = in_place(1 << 20, &far, 99, &[]);
    assert_eq!((out[0].1.as_slice(), in_pieces), (&b"abcdef"[..], 0));
    let many: Vec<Piece> = (0..=IN_PLACE_PIECES).map(|i| p(b"x", i == IN_PLACE_PIECES, 0)).collect();
    let (out, _, in_pieces) = in_place(1 << 20, &many, 99, &[]);
    assert_eq!((out[0].1.len(), in_pieces), (IN_PLACE_PIECES + 1, 0));
}

#[test]
fn cut_keeps_complete_characters() {
    assert_eq!(cut_at_char_boundary(b"ab"), b"ab");
    assert_eq!(cut_at_char_boundary("a日".as_bytes()), "a日".as_bytes());
    assert_eq!(cut_at_char_boundary(&"a日".as_bytes()[..3]), b"a");
    assert_eq!(cut_at_char_boundary(&"a😀".as_bytes()[..4]), b"a");
    assert_eq!(cut_at_char_boundary(b""), b"");
    assert_eq!(cut_at_char_boundary(b"\xff"), b"\xff");
}
