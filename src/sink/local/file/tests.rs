//! The file sink's unit tests.
use super::*;

fn write_all(file: &mut OutputFile, pieces: &[&[u8]]) {
    for p in pieces {
        file.append(p);
        file.sync().unwrap();
    }
}

#[test]
fn a_stage_starts_on_a_block_and_a_large_one_on_a_huge_page_keeping_its_bytes_as_it_grows() {
    let mut stage = Stage::with_capacity(64 << 10);
    assert_eq!(stage.bytes().as_ptr() as usize % ALIGN, 0);
    let bytes: Vec<u8> = (0..3 * HUGE_PAGE + 77).map(|i| (i % 253) as u8).collect();
    for chunk in bytes.chunks(100_003) {
        stage.extend(chunk);
    }
    assert_eq!(stage.bytes(), &bytes[..]);
    assert_eq!(stage.bytes().as_ptr() as usize % HUGE_PAGE, 0, "grown past a huge page, the stage starts on one");
    stage.consume(2 * ALIGN);
    assert_eq!(stage.bytes(), &bytes[2 * ALIGN..]);
    assert_eq!(Stage::with_capacity(STAGE_BYTES).bytes().as_ptr() as usize % HUGE_PAGE, 0);
}

#[test]
fn a_stage_holds_a_write_and_the_record_that_crosses_it_without_growing() {
    // The partial block carried over, a write's worth but a byte, then the largest
    // record a tailer's batch is sized for (`tail.read_bytes_per_turn` at its default):
    // a catch-up's stage never grows (growing holds the old stage and its copy at once).
    let largest_record = crate::tail::tailer::BATCH_BYTES + 2 * (512 << 10);
    let mut stage = Stage::with_capacity(STAGE_BYTES);
    let at = stage.bytes().as_ptr();
    for (byte, len) in [(b'a', ALIGN - 1), (b'b', super::super::LOCAL_WRITE_BYTES - 1), (b'c', largest_record)] {
        stage.extend(&vec![byte; len]);
    }
    assert_eq!(stage.len(), ALIGN - 1 + super::super::LOCAL_WRITE_BYTES - 1 + largest_record);
    assert_eq!(stage.bytes().as_ptr(), at, "the stage grew");
}

#[test]
fn appends_exactly_what_it_is_given_across_partial_blocks() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut f = OutputFile::open_with(&path, false, direct).unwrap();
        let mut want = Vec::new();
        for (i, n) in [1usize, 4095, 1, 4096, 10_000, 3, 70_000, 12_289].into_iter().enumerate() {
            let piece: Vec<u8> = (0..n).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            f.append(&piece);
            want.extend_from_slice(&piece);
            if i % 2 == 1 {
                f.sync().unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), want, "direct={direct} after piece {i}");
            }
        }
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}

#[test]
fn reopening_an_existing_file_appends_after_its_unaligned_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut existing = vec![b'x'; 4999];
    existing.push(b'\n');
    std::fs::write(&path, &existing).unwrap();
    let mut f = OutputFile::open(&path, false).unwrap();
    let mut ys = vec![b'y'; 8999];
    ys.push(b'\n');
    write_all(&mut f, &[b"first\n", &ys]);
    drop(f);
    let mut f = OutputFile::open(&path, false).unwrap();
    write_all(&mut f, &[b"again\n"]);
    let mut want = existing;
    want.extend_from_slice(b"first\n");
    want.extend_from_slice(&ys);
    want.extend_from_slice(b"again\n");
    assert_eq!(std::fs::read(&path).unwrap(), want);
    assert_eq!(OutputFile::open(&path, true).unwrap().durable, 0, "truncate empties the file");
    assert!(std::fs::read(&path).unwrap().is_empty());
}

#[test]
fn a_torn_last_line_left_by_a_crash_is_cut_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut torn = b"{\"a\":1}\n".repeat(10_000);
    torn.extend_from_slice(&[b'x'; 70_000]); // a half-written line, longer than a read-back chunk
    std::fs::write(&path, &torn).unwrap();
    let mut f = OutputFile::open(&path, false).unwrap();
    write_all(&mut f, &[b"{\"b\":2}\n"]);
    let mut want = b"{\"a\":1}\n".repeat(10_000);
    want.extend_from_slice(b"{\"b\":2}\n");
    assert_eq!(std::fs::read(&path).unwrap(), want);

    std::fs::write(&path, b"no newline at all").unwrap();
    let mut f = OutputFile::open(&path, false).unwrap();
    write_all(&mut f, &[b"line\n"]);
    assert_eq!(std::fs::read(&path).unwrap(), b"line\n");
}

#[test]
fn a_staged_batch_larger_than_the_stage_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut f = OutputFile::open(&path, false).unwrap();
    let big: Vec<u8> = (0..STAGE_BYTES * 2 + 123).map(|i| (i % 251) as u8).collect();
    write_all(&mut f, &[b"head\n", &big]);
    let got = std::fs::read(&path).unwrap();
    assert_eq!(&got[..5], b"head\n");
    assert_eq!(&got[5..], &big[..]);
}

/// What the file holds after synced appends, restarts (a reopen cuts a partial last
/// line) and unsynced appends lost to a restart; with writes submitted to the I/O
/// thread, awaited, and overlapped by the next appends.
#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Sync,
    Submit,
    Wait,
    Restart,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0usize..20_000).prop_map(Op::Append),
        1 => Just(Op::Sync),
        2 => Just(Op::Submit),
        1 => Just(Op::Wait),
        1 => Just(Op::Restart),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn the_file_holds_exactly_what_was_synced(ops in proptest::collection::vec(op(), 1..40), direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut f = OutputFile::open_with(&path, false, direct).unwrap();
        // Durable; submitted and maybe still in flight; staged since.
        let (mut synced, mut submitted, mut staged) = (Vec::new(), Vec::new(), Vec::new());
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append(n) => {
                    // Newline-terminated pieces now and then, so restarts keep some.
                    let mut piece: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
                    if i % 3 == 0 {
                        piece.push(b'\n');
                    }
                    f.append(&piece);
                    staged.extend_from_slice(&piece);
                }
                Op::Sync => {
                    f.sync().unwrap();
                    synced.append(&mut submitted);
                    synced.append(&mut staged);
                    proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), synced.clone());
                }
                Op::Submit => {
                    // Lands the write before, starts this one.
                    f.submit().unwrap();
                    synced.append(&mut submitted);
                    submitted.append(&mut staged);
                }
                Op::Wait => {
                    f.wait().unwrap();
                    synced.append(&mut submitted);
                    let on_disk = std::fs::read(&path).unwrap();
                    proptest::prop_assert_eq!(on_disk, synced.clone());
                }
                Op::Restart => {
                    // Dropping finishes a write in flight; what was only staged is lost.
                    drop(f);
                    synced.append(&mut submitted);
                    staged.clear();
                    // Reopening cuts what follows the last newline.
                    synced.truncate(synced.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
                    f = OutputFile::open_with(&path, false, direct).unwrap();
                }
            }
        }
        f.sync().unwrap();
        synced.append(&mut submitted);
        synced.append(&mut staged);
        proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), synced);
    }
}

#[test]
fn appends_while_a_write_is_in_flight_go_into_the_next() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut f = OutputFile::open_with(&path, false, direct).unwrap();
        let mut want = Vec::new();
        for (i, n) in [5000usize, 1, 8192, 4095, 300_000, 7].into_iter().enumerate() {
            let mut piece: Vec<u8> = (0..n).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect();
            piece.push(b'\n');
            f.append(&piece);
            want.extend_from_slice(&piece);
            f.submit().unwrap();
        }
        f.wait().unwrap();
        let same = |got: Vec<u8>, want: &[u8]| got.len() == want.len() && got == want;
        assert!(same(std::fs::read(&path).unwrap(), &want), "direct={direct}");
        assert_eq!(f.is_direct(), direct);
        drop(f);
        let mut f = OutputFile::open_with(&path, false, direct).unwrap();
        f.append(b"more\n");
        f.submit().unwrap();
        f.wait().unwrap();
        want.extend_from_slice(b"more\n");
        assert!(same(std::fs::read(&path).unwrap(), &want), "direct={direct}, reopened");
    }
}

/// Makes every write through `f`'s current descriptors fail (a read-only
/// descriptor), as a disk gone bad would.
fn break_descriptors(f: &mut OutputFile) {
    let writer = f.writer.as_mut().expect("nothing in flight");
    writer.plain = File::open(&f.path).unwrap();
    writer.direct = None;
}

#[test]
fn a_write_that_fails_in_flight_is_written_again_with_what_was_staged_since() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut f = OutputFile::open(&path, false).unwrap();
    f.append(b"zero\n");
    f.sync().unwrap();
    break_descriptors(&mut f);
    let one = b"one\n".repeat(3000); // more than a block: a carried tail
    f.append(&one);
    f.submit().unwrap();
    f.append(b"two\n"); // staged while the doomed write is in flight
    assert!(f.wait().is_err(), "the write in flight failed");
    assert_eq!(std::fs::read(&path).unwrap(), b"zero\n", "nothing half-written");
    f.wait().unwrap(); // reopens the path and writes it all
    let mut want = b"zero\n".to_vec();
    want.extend_from_slice(&one);
    want.extend_from_slice(b"two\n");
    assert_eq!(std::fs::read(&path).unwrap(), want);
    f.append(b"three\n");
    f.submit().unwrap();
    f.wait().unwrap();
    want.extend_from_slice(b"three\n");
    assert_eq!(std::fs::read(&path).unwrap(), want);
}

#[test]
fn after_a_failed_sync_the_path_is_reopened_and_nothing_staged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut f = OutputFile::open(&path, false).unwrap();
    write_all(&mut f, &[b"one\n"]);
    // Make the next sync fail as a vanished disk would: the descriptors go bad.
    f.failed = true;
    std::fs::remove_file(&path).unwrap();
    f.append(b"two\n");
    f.sync().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two\n", "a replaced file gets what was not yet synced");
}

/// A reader following the file (as `tail -f` does, through the page cache) never
/// reads a length the bytes are not there for. Writing the block holding the old end
/// directly let it read zeros there: this loop saw them within ten thousand reads.
#[test]
fn a_reader_following_the_file_never_reads_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut f = OutputFile::open(&path, false).unwrap();
    assert!(f.is_direct(), "this test needs a file system that takes O_DIRECT for {}", path.display());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (done, path) = (done.clone(), path.clone());
        move || follow_until(&path, &done)
    });
    let line = b"{\"message\":\"a line of a moderate length, so that syncs end mid-block\"}\n";
    for i in 0..3_000 {
        f.append(line);
        f.append(line);
        if i % 2 == 0 {
            f.sync().unwrap();
        } else {
            f.submit().unwrap();
            f.wait().unwrap();
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, zeros) = reader.join().unwrap();
    assert_eq!(zeros, None, "a NUL at this offset, with this file length, after {reads} reads");
    assert_eq!(std::fs::read(&path).unwrap(), line.repeat(6_000));
}

/// Reads the file's last block or two at its current length until `done`; returns the
/// reads made and the first NUL seen (its offset and the length read against).
fn follow_until(path: &Path, done: &std::sync::atomic::AtomicBool) -> (u64, Option<(u64, u64)>) {
    let file = File::open(path).unwrap();
    let mut buf = vec![0u8; 2 * ALIGN];
    let mut reads = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let len = file.metadata().unwrap().len();
        let start = len.saturating_sub(ALIGN as u64 + 1) / ALIGN as u64 * ALIGN as u64;
        let n = file.read_at(&mut buf, start).unwrap();
        reads += 1;
        if let Some(i) = memchr::memchr(0, &buf[..n]) {
            return (reads, Some((start + i as u64, len)));
        }
    }
    (reads, None)
}
