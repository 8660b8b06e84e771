//! The disk buffer with several sinks: one log, a cursor per sink. Against a model
//! under random routed appends, reads and out-of-order acknowledgements per sink,
//! commits and restarts; and the shares: a sink that drops its oldest does so alone,
//! a sink that blocks holds appends back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use logferry::buffer::{Buffer, BufferOptions, SinkShare, WhenFull};

const SINKS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A record of this length for the sinks of this mask (never empty).
    Append(usize, u16),
    Read(usize),
    Ack(usize, prop::sample::Index),
    PersistAck,
    Sync,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3000, 1u16..(1 << SINKS)).prop_map(|(l, m)| Op::Append(l, m)),
        4 => (0..SINKS).prop_map(Op::Read),
        5 => (0..SINKS, any::<prop::sample::Index>()).prop_map(|(c, i)| Op::Ack(c, i)),
        2 => Just(Op::PersistAck),
        1 => Just(Op::Sync),
        2 => Just(Op::Restart),
    ]
}

fn shares(max_bytes: u64, when_full: [WhenFull; SINKS]) -> Vec<SinkShare> {
    ["archive", "team-a", "audit"].iter().zip(when_full).map(|(n, w)| SinkShare { name: n.to_string(), max_bytes, when_full: w }).collect()
}

fn opts() -> BufferOptions {
    BufferOptions { max_bytes: 1 << 30, segment_bytes: 16 * 1024, when_full: WhenFull::Block, memory_bytes: 8 * 1024, hold: Duration::ZERO }
}

fn open(dir: &Path) -> Buffer {
    Buffer::open_for(dir, opts(), &shares(1 << 30, [WhenFull::Block; SINKS])).expect("the buffer opens").0
}

fn read_all(b: &Buffer, sink: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let recs = b.read_for(sink, 1 << 20, Duration::ZERO).unwrap();
        if recs.is_empty() {
            return out;
        }
        out.extend(recs.into_iter().map(|r| (r.seq, r.payload.to_vec())));
    }
}

/// One sink's side of the model.
#[derive(Default, Clone)]
struct SinkModel {
    /// Records for this sink it may still be handed (not acknowledged and saved).
    owed: BTreeMap<u64, Vec<u8>>,
    handed: u64,
    in_flight: Vec<u64>,
    acked: BTreeSet<u64>,
    persisted: BTreeSet<u64>,
}

#[derive(Default)]
struct Model {
    sinks: [SinkModel; SINKS],
    highest: u64,
    /// Everything at or below is acknowledged or durable.
    durable: u64,
}

fn restart_and_check(dir: &Path, m: &mut Model) -> Result<Buffer, TestCaseError> {
    let b = open(dir);
    let mut highest = 0;
    for (c, s) in m.sinks.iter_mut().enumerate() {
        let got = read_all(&b, c);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sink {c} out of order: {seqs:?}");
        for (seq, p) in &got {
            prop_assert!(!s.persisted.contains(seq), "sink {c}: acknowledged and saved record {seq} came back");
            prop_assert_eq!(s.owed.get(seq), Some(p), "sink {}: record {} is not one of its own", c, seq);
        }
        let got_set: BTreeSet<u64> = seqs.iter().copied().collect();
        for seq in s.owed.keys().filter(|&&q| q <= m.durable && !s.acked.contains(&q)) {
            prop_assert!(got_set.contains(seq), "sink {c}: durable record {seq} it never acknowledged was lost");
        }
        s.owed.retain(|q, _| got_set.contains(q));
        s.acked.clear();
        s.handed = seqs.last().copied().unwrap_or(0);
        s.in_flight = seqs;
        highest = highest.max(s.in_flight.last().copied().unwrap_or(0));
    }
    // A number may be given again only if nothing kept it: no record came back with
    // it and no sink saved it as acknowledged.
    let persisted = m.sinks.iter().filter_map(|s| s.persisted.last().copied()).max().unwrap_or(0);
    m.highest = highest.max(persisted);
    m.durable = m.highest;
    Ok(b)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::default();
    let mut b = open(dir.path());
    for op in ops {
        match op {
            Op::Append(len, mask) => {
                let p: Vec<u8> = (0..len).map(|i| (m.highest as usize * 31 + i * 7) as u8).collect();
                let seq = b.append_to(mask, m.highest as i64, 1, p.clone().into()).unwrap();
                prop_assert!(seq > m.highest, "seq {seq} reused (highest was {})", m.highest);
                m.highest = seq;
                for (c, s) in m.sinks.iter_mut().enumerate() {
                    s.persisted.remove(&seq);
                    if mask & (1 << c) != 0 {
                        s.owed.insert(seq, p.clone());
                    }
                }
            }
            Op::Read(c) => {
                let s = &mut m.sinks[c];
                for r in b.read_for(c, 8 * 1024, Duration::ZERO).unwrap() {
                    let next = s.owed.range(s.handed + 1..).map(|(q, _)| *q).find(|q| !s.acked.contains(q));
                    prop_assert_eq!(Some(r.seq), next, "sink {}: its records in order, none skipped, none of another's", c);
                    prop_assert_eq!(s.owed.get(&r.seq).map(|p| &p[..]), Some(&r.payload[..]));
                    s.handed = r.seq;
                    s.in_flight.push(r.seq);
                }
            }
            Op::Ack(c, i) => {
                let s = &mut m.sinks[c];
                if !s.in_flight.is_empty() {
                    let seq = s.in_flight.remove(i.index(s.in_flight.len()));
                    b.ack_for(c, seq);
                    s.acked.insert(seq);
                }
            }
            Op::PersistAck => {
                b.persist_ack().unwrap();
                for s in &mut m.sinks {
                    s.persisted.extend(s.acked.iter().copied());
                    let persisted = &s.persisted;
                    s.owed.retain(|q, _| !persisted.contains(q));
                }
            }
            Op::Sync => {
                m.durable = b.sync().unwrap();
                prop_assert!(m.durable >= m.highest, "after sync everything is safe");
            }
            Op::Restart => {
                b.close();
                drop(b);
                b = restart_and_check(dir.path(), &mut m)?;
            }
        }
    }
    // Every record every sink acknowledged is released: with everything acknowledged,
    // no segment but the newest is left.
    for c in 0..SINKS {
        for (seq, _) in read_all(&b, c) {
            b.ack_for(c, seq);
        }
        for seq in std::mem::take(&mut m.sinks[c].in_flight) {
            b.ack_for(c, seq);
        }
    }
    prop_assert_eq!(b.stats().records, 0);
    prop_assert!(b.stats().segments <= 1, "{:?}", b.stats());
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    #[test]
    fn each_sink_gets_exactly_its_records_through_restarts(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}

/// Sinks A (blocks) and B (drops its oldest, a small share): B stuck, A keeping up.
/// B drops within its share; A receives every record; appends never wait.
#[test]
fn a_sink_that_drops_its_oldest_does_so_alone() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions { segment_bytes: 16 * 1024, ..BufferOptions::with_cap(1 << 20, WhenFull::Block) };
    let shares = vec![
        SinkShare { name: "a".into(), max_bytes: 1 << 20, when_full: WhenFull::Block },
        SinkShare { name: "b".into(), max_bytes: 64 * 1024, when_full: WhenFull::DropOldest },
    ];
    let (b, _) = Buffer::open_for(dir.path(), opts, &shares).unwrap();
    let mut a_got = Vec::new();
    for i in 0..200u64 {
        b.append_to(0b11, i as i64, 1, vec![b'x'; 2000].into()).unwrap();
        for r in b.read_for(0, 1 << 20, Duration::ZERO).unwrap() {
            a_got.push(r.seq);
            b.ack_for(0, r.seq);
        }
    }
    assert_eq!(a_got, (1..=200).collect::<Vec<_>>(), "A gets everything, in order");
    let bs = b.sink_stats(1);
    assert!(bs.bytes <= 64 * 1024, "B stays within its share: {bs:?}");
    assert!(bs.dropped_records > 100, "{bs:?}");
    assert_eq!(bs.records + bs.dropped_records, 200, "{bs:?}");
    assert_eq!(b.sink_stats(0).dropped_records, 0);
    let left: Vec<u64> = read_all(&b, 1).into_iter().map(|r| r.0).collect();
    assert_eq!(left.len() as u64, bs.records);
    assert_eq!(*left.last().unwrap(), 200, "B keeps its newest");
    assert!(b.stats().bytes <= 96 * 1024, "what only B held went with its drops: {:?}", b.stats());
}

/// A sink that blocks holds appends back once its share is full, and lets them go
/// when it acknowledges; records for the other sink alone are not held back.
#[test]
fn a_sink_that_blocks_holds_back_only_appends_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions { segment_bytes: 16 * 1024, ..BufferOptions::with_cap(1 << 20, WhenFull::Block).write_through() };
    let shares = vec![
        SinkShare { name: "a".into(), max_bytes: 1 << 20, when_full: WhenFull::Block },
        SinkShare { name: "b".into(), max_bytes: 64 * 1024, when_full: WhenFull::Block },
    ];
    let (b, _) = Buffer::open_for(dir.path(), opts, &shares).unwrap();
    let payload = || bytes::Bytes::from(vec![b'y'; 4000]);
    let mut n = 0;
    while b.try_append_for(0b10, 0, 1, payload(), Duration::from_millis(20)).is_ok() {
        n += 1;
        assert!(n < 100, "B's share never filled");
    }
    assert!(n >= 10, "B's share held {n} records");
    // A's records still go in.
    for _ in 0..50 {
        b.try_append_for(0b01, 0, 1, payload(), Duration::from_millis(20)).expect("A is not held back by B");
    }
    // B acknowledges: room again.
    for r in read_all(&b, 1) {
        b.ack_for(1, r.0);
    }
    b.try_append_for(0b10, 0, 1, payload(), Duration::from_millis(20)).expect("room once B acknowledged");
}

/// A restart with sinks renamed, added and removed: each keeps its own records and
/// acknowledgements by name; a new sink starts with what comes next.
#[test]
fn sinks_keep_their_records_by_name_across_a_reconfiguration() {
    let dir = tempfile::tempdir().unwrap();
    let share = |n: &str| SinkShare { name: n.into(), max_bytes: 1 << 30, when_full: WhenFull::Block };
    let opts = opts();
    {
        let (b, _) = Buffer::open_for(dir.path(), opts, &[share("x"), share("y")]).unwrap();
        b.append_to(0b01, 0, 1, "for x\n".into()).unwrap();
        b.append_to(0b10, 0, 1, "for y\n".into()).unwrap();
        b.append_to(0b11, 0, 1, "for both\n".into()).unwrap();
        let first = b.read_for(0, 1 << 20, Duration::ZERO).unwrap();
        b.ack_for(0, first[0].seq);
        b.sync().unwrap();
        b.persist_ack().unwrap();
    }
    // y first now, x gone, z new.
    let (b, rec) = Buffer::open_for(dir.path(), opts, &[share("y"), share("z")]).unwrap();
    assert_eq!(rec.unacked, 2, "x's records are no one's now");
    let y: Vec<Vec<u8>> = read_all(&b, 0).into_iter().map(|r| r.1).collect();
    assert_eq!(y, [b"for y\n".to_vec(), b"for both\n".to_vec()]);
    assert!(read_all(&b, 1).is_empty(), "a new sink gets what comes next");
    let seq = b.append_to(0b10, 0, 1, "for z\n".into()).unwrap();
    assert_eq!(read_all(&b, 1)[0].0, seq);
}

/// What a logferry with one sink left (version-1 segments, `acks`) is read by every
/// sink of the new configuration.
#[test]
fn a_one_sink_buffer_is_shipped_by_every_sink_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
        for i in 0..4 {
            b.append(0, 1, format!("line {i}\n").into_bytes().into()).unwrap();
        }
        b.ack(1);
        b.sync().unwrap();
        b.persist_ack().unwrap();
    }
    // As an older logferry left it: no `sinks` file, the acknowledgements in `acks`.
    std::fs::remove_file(dir.path().join("sinks")).unwrap();
    std::fs::rename(logferry::buffer::acks::path(dir.path(), "default"), dir.path().join("acks")).unwrap();
    let share = |n: &str| SinkShare { name: n.into(), max_bytes: 1 << 30, when_full: WhenFull::Block };
    let (b, _) = Buffer::open_for(dir.path(), opts(), &[share("default"), share("archive")]).unwrap();
    assert_eq!(read_all(&b, 0).iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 4]);
    // Bits keep their positions without a `sinks` file: sink 1 had none.
    assert!(read_all(&b, 1).is_empty());
    b.persist_ack().unwrap();
    assert!(!dir.path().join("acks").exists(), "replaced by one file per sink");
}

/// The buffer thread's wake-up once records are safe: called when the sinks'
/// acknowledgements cover the record asked for (every sink it goes to), at once when
/// they already do, once per request, and never after the request is withdrawn.
#[test]
fn the_safe_waker_is_called_once_every_sink_has_the_record_asked_for() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let share = |n: &str| SinkShare { name: n.into(), max_bytes: 1 << 30, when_full: WhenFull::Block };
    let (b, _) = Buffer::open_for(dir.path(), opts(), &[share("x"), share("y")]).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    b.set_safe_waker(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let called = || calls.load(Ordering::SeqCst);

    let first = b.append_to(0b11, 0, 1, "for both\n".into()).unwrap();
    let second = b.append_to(0b01, 0, 1, "for x\n".into()).unwrap();
    b.wake_when_safe(second);
    b.ack_for(0, second);
    assert_eq!(called(), 0, "the record before is not acknowledged yet");
    b.ack_for(0, first);
    assert_eq!(called(), 0, "y has not acknowledged the first record");
    b.ack_for(1, first);
    assert_eq!(called(), 1, "both records are safe");
    b.ack_for(1, first);
    assert_eq!(called(), 1, "once per request");

    b.wake_when_safe(second);
    assert_eq!(called(), 2, "asked for what is safe already: at once");

    let third = b.append_to(0b01, 0, 1, "for x\n".into()).unwrap();
    b.wake_when_safe(third);
    b.wake_when_safe(0);
    b.ack_for(0, third);
    assert_eq!(called(), 2, "withdrawn");
}
