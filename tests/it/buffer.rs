//! The disk buffer against an in-memory model, under random appends, reads, acks,
//! syncs, group commits, restarts, torn writes at random offsets and flipped bytes.
//! Its memory tier is small here (8 KiB, records up to 3,000 bytes), so records are
//! read from memory, written when memory is full, some after being read and some
//! after being acknowledged (then never), and lost from memory at a crash.
//!
//! After every restart the buffer must hand out every record that was durable and
//! not acknowledged (less one whose bytes were flipped), nothing that was acknowledged
//! and persisted, nothing it never held, each with its exact payload, in order; and a
//! new sequence number must never be one that survived or was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use logferry::buffer::segment::{scan_bytes, HEADER_LEN};
use logferry::buffer::{list_segments, Buffer, BufferOptions, WhenFull};

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Sync,
    /// Group commit that writes nothing by age: fsync what was written, return the
    /// safe sequence number (acknowledged or fsynced below it).
    Commit,
    /// Asks for the safe sequence number between commits.
    SafeSeq,
    Read,
    Ack(prop::sample::Index),
    PersistAck,
    /// Damage the saved acknowledgements (cut or garbled), then restart.
    DamageAcks(prop::sample::Index),
    /// Restart; optionally cut the newest segment at a point after its durable part.
    Restart { tear: Option<prop::sample::Index> },
    /// Flip a byte in a durable part of some segment, then restart.
    Flip(prop::sample::Index, prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3000).prop_map(Op::Append),
        1 => Just(Op::Sync),
        2 => Just(Op::Commit),
        2 => Just(Op::SafeSeq),
        3 => Just(Op::Read),
        4 => any::<prop::sample::Index>().prop_map(Op::Ack),
        2 => Just(Op::PersistAck),
        1 => any::<prop::sample::Index>().prop_map(Op::DamageAcks),
        2 => prop::option::of(any::<prop::sample::Index>()).prop_map(|tear| Op::Restart { tear }),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Op::Flip(a, b)),
    ]
}

fn payload(seq_hint: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq_hint as usize * 31 + i * 7) as u8).collect()
}

#[derive(Default)]
struct Model {
    /// Every record the buffer may still hold.
    records: BTreeMap<u64, Vec<u8>>,
    acked: BTreeSet<u64>,
    /// Acknowledged and saved: never handed out again (acknowledged out of order).
    persisted: BTreeSet<u64>,
    /// Records acknowledged, saved and not handed out again since, which damaged
    /// acknowledgements may bring back (sent twice, never lost).
    acked_gone: BTreeMap<u64, Vec<u8>>,
    /// The saved acknowledgements were damaged: at the next restart acknowledged
    /// records may come back.
    acks_damaged: bool,
    /// Everything at or below is acknowledged or durable.
    durable: u64,
    /// Records a flip may have destroyed.
    damaged: BTreeSet<u64>,
    in_flight: Vec<u64>,
    /// The last record handed out by `read`.
    handed: u64,
    highest: u64,
    /// The newest segment and its length at the last fsync the test knows of (sync,
    /// commit, restart): a crash may cut anything written after it.
    synced: Option<(PathBuf, u64)>,
}

fn opts() -> BufferOptions {
    // No waiting for acknowledgements in `append` (one thread plays both sides here).
    BufferOptions { max_bytes: 1 << 30, segment_bytes: 16 * 1024, when_full: WhenFull::Block, memory_bytes: 8 * 1024, hold: Duration::ZERO }
}

fn open(dir: &Path) -> Buffer {
    Buffer::open(dir, opts()).expect("the buffer opens after any crash").0
}

fn read_all(b: &Buffer) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let recs = b.read(1 << 20, Duration::ZERO).unwrap();
        if recs.is_empty() {
            return out;
        }
        out.extend(recs.into_iter().map(|r| (r.seq, r.payload.to_vec())));
    }
}

/// Restart and check what comes back against the model.
fn restart_and_check(dir: &Path, m: &mut Model) -> Result<Buffer, TestCaseError> {
    let b = open(dir);
    m.synced = newest_segment(dir);
    let got = read_all(&b);
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order: {seqs:?}");
    for (seq, p) in &got {
        prop_assert!(m.acks_damaged || !m.persisted.contains(seq), "acknowledged and persisted record {seq} came back");
        prop_assert_eq!(m.records.get(seq).or(m.acked_gone.get(seq)), Some(p), "record {} is not what was written", seq);
    }
    let got_set: BTreeSet<u64> = seqs.iter().copied().collect();
    for (seq, _) in m.records.iter().filter(|(s, _)| !m.persisted.contains(s) && **s <= m.durable) {
        if !m.acked.contains(seq) && !m.damaged.contains(seq) {
            prop_assert!(got_set.contains(seq), "durable unacked record {seq} lost");
        }
    }
    // What did not come back is gone; what did is unacknowledged again.
    for seq in &seqs {
        if let Some(p) = m.acked_gone.remove(seq) {
            m.records.insert(*seq, p);
        }
        m.persisted.remove(seq);
    }
    let persisted = &m.persisted;
    let gone: Vec<(u64, Vec<u8>)> = m.records.iter().filter(|(s, _)| !got_set.contains(s) && persisted.contains(s)).map(|(s, p)| (*s, p.clone())).collect();
    m.acked_gone.extend(gone);
    m.records.retain(|s, _| got_set.contains(s));
    m.acked.clear();
    m.damaged.clear();
    m.in_flight = seqs;
    // A lost record's number may be given again (it was never acknowledged); what
    // survived, and what was acknowledged and persisted, never is.
    // (Unless the saved acknowledgements were damaged: then the numbers of
    // acknowledged records no longer on disk are unknown and may be given again.)
    let acked_highest = if m.acks_damaged { 0 } else { m.persisted.last().copied().unwrap_or(0) };
    if m.acks_damaged {
        // What did not come back despite that is gone for good (its segment deleted).
        m.persisted.clear();
        m.acked_gone.clear();
    }
    m.acks_damaged = false;
    m.highest = m.in_flight.last().copied().unwrap_or(0).max(acked_highest);
    m.durable = m.highest;
    m.handed = m.highest;
    Ok(b)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::default();
    let mut b = open(dir.path());
    for op in ops {
        match op {
            Op::Append(len) => {
                let p = payload(m.highest + 1, len);
                let seq = b.append(m.highest as i64, 1, p.clone().into()).unwrap();
                prop_assert!(seq > m.highest, "seq {seq} reused (highest was {})", m.highest);
                // A number is given again only if no record with it is left on disk.
                m.acked_gone.remove(&seq);
                m.persisted.remove(&seq);
                m.highest = seq;
                m.records.insert(seq, p);
            }
            Op::Sync => {
                m.durable = b.sync().unwrap();
                m.synced = newest_segment(dir.path());
                // Numbers past `highest` may have been used by records lost since
                // (saved as no longer outstanding): never given again.
                prop_assert!(m.durable >= m.highest, "after sync everything is safe: {} < {}", m.durable, m.highest);
                m.highest = m.durable;
            }
            Op::Commit => {
                let safe = b.commit(Duration::from_secs(3600)).unwrap();
                m.synced = newest_segment(dir.path());
                prop_assert!(safe >= m.durable, "the safe point went back: {} < {}", safe, m.durable);
                m.durable = safe;
            }
            Op::SafeSeq => {
                let safe = b.safe_seq();
                prop_assert!(safe >= m.durable, "the safe point went back: {} < {}", safe, m.durable);
                m.durable = safe;
            }
            Op::Read => {
                for r in b.read(8 * 1024, Duration::ZERO).unwrap() {
                    let next = m.records.range(m.handed + 1..).next().map(|(s, _)| *s);
                    prop_assert_eq!(Some(r.seq), next, "records are handed out in order, none skipped");
                    m.handed = r.seq;
                    prop_assert_eq!(m.records.get(&r.seq).map(|p| &p[..]), Some(&r.payload[..]));
                    m.in_flight.push(r.seq);
                }
            }
            Op::Ack(i) if !m.in_flight.is_empty() => {
                let seq = m.in_flight.remove(i.index(m.in_flight.len()));
                b.ack(seq);
                m.acked.insert(seq);
            }
            Op::Ack(_) => {}
            Op::PersistAck => {
                b.persist_ack().unwrap();
                // Persisted: every record acknowledged, in whatever order.
                m.persisted.extend(m.acked.iter().copied());
            }
            Op::DamageAcks(at) => {
                b.close();
                drop(b);
                let path = logferry::buffer::acks::path(dir.path(), "default");
                if let Ok(text) = fs::read(&path) {
                    // A whole file is damaged (cut short, or cut and followed by junk);
                    // one damaged already is left as it is: cutting it again could
                    // bring back an older whole file, which no disk does.
                    if text.ends_with(b"\nend\n") {
                        let i = at.index(text.len());
                        let mut bad = text[..i].to_vec();
                        if i % 2 == 1 {
                            bad.extend_from_slice(b"\n7 3\n");
                        }
                        fs::write(&path, bad).unwrap();
                    }
                    // Acknowledged records may come back; none may be lost.
                    m.acks_damaged = true;
                }
                b = restart_and_check(dir.path(), &mut m)?;
            }
            Op::Restart { tear } => {
                b.close();
                drop(b);
                if let Some(at) = tear {
                    tear_newest(dir.path(), &m, at);
                }
                b = restart_and_check(dir.path(), &mut m)?;
            }
            Op::Flip(which, at) => {
                b.sync().unwrap();
                m.durable = m.highest;
                b.close();
                drop(b);
                flip(dir.path(), &mut m, which, at);
                b = restart_and_check(dir.path(), &mut m)?;
            }
        }
    }
    Ok(())
}

/// Cuts the newest segment somewhere after what the last fsync covered (a segment
/// newer than that one was fsynced only up to its header).
fn tear_newest(dir: &Path, m: &Model, at: prop::sample::Index) {
    let segs = list_segments(dir).unwrap();
    let (_, path) = segs.last().unwrap();
    let len = fs::metadata(path).unwrap().len();
    let synced_end = match &m.synced {
        Some((p, l)) if p == path => *l,
        _ => HEADER_LEN,
    };
    if len > synced_end {
        let cut = synced_end + at.index((len - synced_end) as usize) as u64;
        OpenOptions::new().write(true).open(path).unwrap().set_len(cut).unwrap();
    }
}

/// The newest segment and its length.
fn newest_segment(dir: &Path) -> Option<(PathBuf, u64)> {
    let (_, path) = list_segments(dir).unwrap().pop()?;
    let len = fs::metadata(&path).unwrap().len();
    Some((path, len))
}

/// Flips one byte inside a record of some segment; that record may be lost.
fn flip(dir: &Path, m: &mut Model, which: prop::sample::Index, at: prop::sample::Index) {
    let segs = list_segments(dir).unwrap();
    let (_, path) = &segs[which.index(segs.len())];
    let mut bytes = fs::read(path).unwrap();
    let scan = scan_bytes(&bytes, logferry::buffer::segment::VERSION);
    if scan.records.is_empty() {
        return;
    }
    let i = HEADER_LEN as usize + at.index(bytes.len() - HEADER_LEN as usize);
    if let Some(r) = scan.records.iter().find(|r| (r.offset..r.offset + r.framed).contains(&(i as u64))) {
        m.damaged.insert(r.seq);
        bytes[i] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    #[test]
    fn buffer_matches_its_model_through_crashes(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}

#[test]
fn drop_oldest_makes_room_and_counts_what_it_dropped() {
    let opts = BufferOptions { segment_bytes: 16 * 1024, ..BufferOptions::with_cap(64 * 1024, WhenFull::DropOldest) };
    drop_oldest_makes_room_and_counts_what_it_dropped_with(opts.write_through());
    drop_oldest_makes_room_and_counts_what_it_dropped_with(opts);
}

fn drop_oldest_makes_room_and_counts_what_it_dropped_with(opts: BufferOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = Buffer::open(dir.path(), opts).unwrap();
    for i in 0..100 {
        b.append(i, 1, vec![b'x'; 2000].into()).unwrap();
    }
    let s = b.stats();
    assert!(s.bytes + s.memory_bytes <= 64 * 1024, "{s:?}");
    assert!(s.dropped_records > 50, "{s:?}");
    assert_eq!(s.records + s.dropped_records, 100, "{s:?}");
    let left = read_all(&b);
    assert_eq!(left.len() as u64, s.records);
    assert_eq!(left.last().unwrap().0, 100, "the newest records are kept");
}

#[test]
fn block_waits_for_acks_then_continues() {
    let opts = BufferOptions { segment_bytes: 16 * 1024, ..BufferOptions::with_cap(64 * 1024, WhenFull::Block) };
    block_waits_for_acks_then_continues_with(opts.write_through());
    // The cap counts what memory holds too (here up to 16 KiB).
    block_waits_for_acks_then_continues_with(opts);
}

fn block_waits_for_acks_then_continues_with(opts: BufferOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = Buffer::open(dir.path(), opts).unwrap();
    let writer = {
        let b = b.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                b.append(i, 1, vec![b'y'; 2000].into()).unwrap();
            }
        })
    };
    // Nobody acknowledges yet: the writer must end up waiting for room.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !b.stats().backpressure {
        assert!(std::time::Instant::now() < deadline, "the writer never waited: {:?}", b.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let held = |s: logferry::buffer::BufferStats| s.bytes + s.memory_bytes;
    assert!(held(b.stats()) <= 64 * 1024, "{:?}", b.stats());
    assert!(!writer.is_finished());
    let mut got = 0;
    while got < 200 {
        for r in b.read(1 << 20, Duration::from_millis(50)).unwrap() {
            b.ack(r.seq);
            got += 1;
        }
        assert!(held(b.stats()) <= 64 * 1024, "{:?}", b.stats());
    }
    writer.join().unwrap();
    assert!(!b.stats().backpressure);
    assert_eq!(b.stats().dropped_records, 0);
}

#[test]
fn records_appended_quietly_are_announced_before_the_appender_waits_for_room() {
    // The buffer thread holds announcements while it appends a round: if the buffer
    // fills meanwhile, the sink must still hear of what it may take, or the two wait
    // for each other. The reader here waits as long as it likes: only an
    // announcement wakes it.
    let opts = BufferOptions { segment_bytes: 16 * 1024, ..BufferOptions::with_cap(64 * 1024, WhenFull::Block) };
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = Buffer::open(dir.path(), opts).unwrap();
    let writer = {
        let b = b.clone();
        std::thread::spawn(move || {
            b.hold_announcements();
            for i in 0..200 {
                b.append(i, 1, vec![b'q'; 2000].into()).unwrap();
            }
            b.announce();
        })
    };
    let (done, finished) = std::sync::mpsc::channel();
    let reader = {
        let b = b.clone();
        std::thread::spawn(move || {
            let mut got = 0;
            while got < 200 {
                for r in b.read(1 << 20, Duration::from_secs(3600)).unwrap() {
                    b.ack(r.seq);
                    got += 1;
                }
            }
            done.send(got).unwrap();
        })
    };
    assert_eq!(finished.recv_timeout(Duration::from_secs(60)), Ok(200), "the reader was never told of records appended quietly");
    writer.join().unwrap();
    reader.join().unwrap();
}

#[test]
fn oldest_unacked_age_follows_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
    let sec = 1_000_000_000;
    for t in [10 * sec, 11 * sec, 12 * sec, 13 * sec] {
        b.append(t, 1, Bytes::from_static(b"line\n")).unwrap();
    }
    assert_eq!(b.stats().oldest_unacked_time, Some(10 * sec));
    b.ack(1);
    b.ack(2);
    assert_eq!(b.stats().oldest_unacked_time, Some(12 * sec));
    b.ack(4);
    assert_eq!(b.stats().oldest_unacked_time, Some(12 * sec), "3 is still out");
    b.ack(3);
    assert_eq!(b.stats().oldest_unacked_time, None);
}

#[test]
fn a_segment_cut_before_its_header_or_unreadable_does_not_stop_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
        b.append(1, 1, Bytes::from_static(b"kept\n")).unwrap();
        b.sync().unwrap();
    }
    // A crash while a new segment was being created, and a segment of garbage.
    fs::write(dir.path().join("00000000000000f0.seg"), b"LFB").unwrap();
    fs::write(dir.path().join("00000000000000f1.seg"), vec![7u8; 100]).unwrap();
    let (b, rec) = Buffer::open(dir.path(), opts()).expect("recovery never fails on a segment");
    assert_eq!(rec.torn_bytes, 3);
    assert_eq!(rec.corrupt_regions, 1);
    assert!(dir.path().join("00000000000000f1.seg.unreadable").exists());
    assert_eq!(read_all(&b).len(), 1);
}

#[test]
fn payloads_handed_back_are_reused_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
        // Read from memory: the batch's own vector comes back, capacity and all.
        let mut batch = Vec::with_capacity(64 * 1024);
        batch.extend_from_slice(b"one\n");
        b.append(1, 1, batch.into()).unwrap();
        let r = b.read(1 << 20, Duration::ZERO).unwrap().remove(0);
        b.ack(r.seq);
        b.recycle(r.payload);
        let spare = b.spare().expect("the payload came back");
        assert!(spare.is_empty() && spare.capacity() >= 64 * 1024, "capacity {}", spare.capacity());
        b.append(2, 1, vec![b'x'; 5000].into()).unwrap();
        b.sync().unwrap();
    }
    // Read from disk after a restart: the vector it was read into comes back.
    let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
    let r = b.read(1 << 20, Duration::ZERO).unwrap().remove(0);
    assert_eq!(r.payload.len(), 5000);
    b.ack(r.seq);
    b.recycle(r.payload);
    let spare = b.spare().expect("the payload came back");
    assert!(spare.is_empty() && spare.capacity() >= 5000, "capacity {}", spare.capacity());
}

/// Regression: the buffer thread cut batches at a quarter of `max_bytes` (256 MiB by
/// default) while recovery refused records over 64 MiB as corrupt, so a large batch
/// written during an outage was lost at the next start. The largest record the
/// buffer admits is now one recovery reads back.
#[test]
fn a_record_of_the_largest_admitted_size_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions { max_bytes: 4 << 30, ..opts() }.write_through();
    let (b, _) = Buffer::open(dir.path(), opts).unwrap();
    let limit = b.record_limit();
    assert_eq!(limit, logferry::buffer::segment::MAX_RECORD_LEN as usize);
    let mut payload = vec![b'x'; limit];
    payload[limit - 1] = b'\n';
    let seq = b.append(1, 1, bytes::Bytes::from(payload.clone())).unwrap();
    b.sync().unwrap();
    drop(b);
    let (b, rec) = Buffer::open(dir.path(), opts).unwrap();
    assert_eq!((rec.unacked, rec.corrupt_regions), (1, 0), "{rec:?}");
    let back = read_all(&b);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, seq);
    assert!(back[0].1 == payload, "the payload came back changed");
}

/// Saved acknowledgements are synced while a segment holds a record, and until one
/// save was since the start (whose directory fsync makes recovery's deletions
/// durable); otherwise they protect nothing (a machine crash that damages the file
/// sends nothing again), so they are replaced without the two syncs. Either way the
/// file holds them and a restart reads them back.
#[test]
fn acknowledgements_are_synced_only_while_they_protect_something() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
    let saved = |b: &Buffer| (b.stats().ack_saves_synced, b.stats().ack_saves_unsynced);
    let in_memory = |b: &Buffer, text: &'static [u8]| {
        let seq = b.append(1, 1, Bytes::from_static(text)).unwrap();
        assert_eq!(b.read(1 << 20, Duration::ZERO).unwrap().len(), 1);
        b.ack(seq);
        b.persist_ack().unwrap();
        seq
    };

    b.persist_ack().unwrap();
    assert_eq!(saved(&b), (0, 0), "nothing acknowledged, nothing saved");
    in_memory(&b, b"the first after the start\n");
    assert_eq!(saved(&b), (1, 0), "the first save after a start is synced");
    let first = in_memory(&b, b"in memory only\n");
    assert_eq!(b.stats().written_records, 0, "no record left memory");
    assert_eq!(saved(&b), (1, 1), "nothing on disk: saved without syncing");
    let acked = logferry::buffer::acks::read(dir.path(), "default").unwrap();
    assert!(acked.contains(first), "the unsynced save is in the file: {acked:?}");

    let second = b.append(2, 1, Bytes::from_static(b"on disk, acknowledged\n")).unwrap();
    let third = b.append(3, 1, Bytes::from_static(b"on disk, outstanding\n")).unwrap();
    b.sync().unwrap();
    assert_eq!(b.stats().written_records, 2);
    assert_eq!(b.read(1 << 20, Duration::ZERO).unwrap().len(), 2);
    b.ack(second);
    b.persist_ack().unwrap();
    assert_eq!(saved(&b), (2, 1), "a record on disk: synced");
    b.ack(third);
    in_memory(&b, b"beside acknowledged records on disk\n");
    assert_eq!(saved(&b), (3, 1), "records on disk, all acknowledged: still synced");

    b.close();
    drop(b);
    let (b, _) = Buffer::open(dir.path(), opts()).unwrap();
    assert!(read_all(&b).is_empty(), "nothing acknowledged comes back");
    let fourth = in_memory(&b, b"after the restart\n");
    assert!(fourth > third, "numbers go on past what was saved: {fourth}");
    assert_eq!(b.stats().segments, 1, "recovery deleted the acknowledged segment");
    assert_eq!(saved(&b), (1, 0), "the first save after a start is synced");
    in_memory(&b, b"in memory again\n");
    assert_eq!(saved(&b), (1, 1), "then nothing on disk: not synced");
}
