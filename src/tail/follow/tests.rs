//! The follower's unit tests.
use super::members::Lookup;
use super::*;

fn cri_lines(n: usize, tail: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout F line {i:06} {}\n", "x".repeat(100)).as_bytes());
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Regression: a stream whose turn ended mid-buffer kept its read buffer (256 KiB
/// to ~1.3 MiB) until its next turn; with a thousand streams after downtime that
/// was over 600 MiB. Every turn now ends holding nothing.
#[test]
fn a_turn_ends_holding_no_read_buffer_and_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let data = cri_lines(20_000, "2026-11-21T10:00:00.000000001Z stdout F incompl");
    std::fs::write(&path, &data).unwrap();
    let mut f = Follower::new(path.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    let mut pool = Vec::new();
    let mut got = Vec::new();
    let now = Instant::now();
    let mut turns = 0;
    loop {
        turns += 1;
        let outcome = f.read(100_000, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| got.push(e.message.to_vec())).unwrap();
        assert_eq!(f.held_bytes(), 0, "turn {turns} ended holding a buffer");
        assert!(pool.len() <= MAX_POOLED_BUFFERS);
        if outcome != ReadOutcome::More {
            break;
        }
    }
    assert!(turns > 10, "the budget ended turns ({turns})");
    assert_eq!(got.len(), 20_000);
    assert!(got.iter().enumerate().all(|(i, m)| m.starts_with(format!("line {i:06} ").as_bytes())));
    // The incomplete line is read again, whole, once it is finished.
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, b"ete\n").unwrap();
    f.read(100_000, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| got.push(e.message.to_vec())).unwrap();
    assert_eq!(got.last().unwrap(), b"incomplete");
    assert_eq!(f.position().unwrap().offset, data.len() as u64 + 4);
}

/// A pooled read buffer of a size no fresh one has, to tell whether turns kept it.
const MARKED: usize = READ_SIZE + 4096;

/// A follower of a new `0.log` holding `data`, and a pool of one marked buffer.
fn follower_with_marked_buffer(data: &[u8]) -> (tempfile::TempDir, PathBuf, Follower, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("0.log");
    std::fs::write(&live, data).unwrap();
    let f = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    (dir, live, f, vec![Vec::with_capacity(MARKED)])
}

/// One turn's messages.
fn turn(f: &mut Follower, pool: &mut Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    f.read(1 << 20, Instant::now(), 0, Duration::from_secs(30), pool, &mut |e, _| got.push(e.message.to_vec())).unwrap();
    got
}

fn capacities(pool: &[Vec<u8>]) -> Vec<usize> {
    pool.iter().map(Vec::capacity).collect()
}

/// At a rotation the finished file's read buffer goes on with the next file: it was
/// dropped with the finished file, and a fresh one faulted in, at every rotation.
#[test]
fn a_rotation_keeps_the_read_buffer() {
    let (dir, live, mut f, mut pool) = follower_with_marked_buffer(&cri_lines(100, ""));
    assert_eq!(turn(&mut f, &mut pool).len(), 100);
    assert_eq!(capacities(&pool), [MARKED], "a stream opened in its turn reads into the pool's buffer");
    let mut file = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
    std::io::Write::write_all(&mut file, &cri_lines(50, "")).unwrap();
    std::fs::rename(&live, dir.path().join("0.log.20261121-100001")).unwrap();
    std::fs::write(&live, cri_lines(70, "")).unwrap();
    assert_eq!(turn(&mut f, &mut pool).len(), 120);
    assert_eq!(f.stats.rotations, 1);
    assert_eq!(capacities(&pool), [MARKED], "the same buffer, no fresh one");
}

/// A turn at `now`, with the messages it emitted.
fn turn_at(f: &mut Follower, pool: &mut Vec<Vec<u8>>, now: Instant) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    f.read(1 << 20, now, 0, Duration::from_secs(30), pool, &mut |e, _| got.push(e.message.to_vec())).unwrap();
    got
}

/// A watched path is looked up once after the watch is set, then trusted until the
/// tailer reports a move (or for `PATH_RECHECK`): a rotation the watch would have
/// reported is seen only once it is; without a watch, at the next end of the file.
#[test]
fn a_watched_path_is_trusted_until_a_move_is_reported_or_it_is_old() {
    let (dir, live, mut f, mut pool) = follower_with_marked_buffer(&cri_lines(100, ""));
    let t0 = Instant::now();
    f.set_path_watched(true);
    assert_eq!(turn_at(&mut f, &mut pool, t0).len(), 100, "the first end looks the path up and trusts it");
    let rotate = |n: usize, stamp: &str| {
        let mut file = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
        std::io::Write::write_all(&mut file, &cri_lines(n, "")).unwrap();
        std::fs::rename(&live, dir.path().join(format!("0.log.{stamp}"))).unwrap();
        std::fs::write(&live, cri_lines(7, "")).unwrap();
    };
    rotate(5, "20261121-100001");
    assert_eq!(turn_at(&mut f, &mut pool, t0 + Duration::from_secs(1)).len(), 5, "trusted: the old file is read on");
    assert_eq!(f.stats.rotations, 0);
    f.set_path_watched(true); // the move reported, the new file watched
    assert_eq!(turn_at(&mut f, &mut pool, t0 + Duration::from_secs(2)).len(), 7, "looked up: the new file");
    assert_eq!(f.stats.rotations, 1);

    // Trusted again (the lookup at the new file's end), but not for ever.
    rotate(2, "20261121-100002");
    assert_eq!(turn_at(&mut f, &mut pool, t0 + Duration::from_secs(3)).len(), 2);
    assert_eq!(f.stats.rotations, 1);
    assert_eq!(turn_at(&mut f, &mut pool, t0 + Duration::from_secs(3) + PATH_RECHECK).len(), 7, "looked up again after PATH_RECHECK");
    assert_eq!(f.stats.rotations, 2);

    // Not watched: looked up at every end.
    f.set_path_watched(false);
    rotate(1, "20261121-100003");
    assert_eq!(turn_at(&mut f, &mut pool, t0 + Duration::from_secs(20)).len(), 8);
    assert_eq!(f.stats.rotations, 3);
}

/// A file truncated in place (copytruncate) is read again from its start in the
/// same read buffer.
#[test]
fn a_truncation_keeps_the_read_buffer() {
    let (_dir, live, mut f, mut pool) = follower_with_marked_buffer(&cri_lines(100, "2026-11-21T10:00:00.000000001Z stdout F incompl"));
    assert_eq!(turn(&mut f, &mut pool).len(), 100);
    std::fs::write(&live, cri_lines(3, "")).unwrap();
    let again = turn(&mut f, &mut pool);
    assert_eq!(f.stats.truncations, 1);
    assert_eq!(capacities(&pool), [MARKED], "the same buffer, no fresh one");
    assert_eq!(again.len(), 3);
    assert!(again.iter().enumerate().all(|(i, m)| m.starts_with(format!("line {i:06} ").as_bytes())), "read again from the start");
}

/// A rotated file deleted before it was read leaves a hole: the message pending
/// before it is flushed `partial` (not joined to pieces of another message), and
/// the first message after it is flagged `partial` too, its head may be lost.
#[test]
fn rotated_files_deleted_unread_leave_a_marked_gap() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("0.log");
    let cri = |tag: &str, msg: &str| format!("2026-11-21T10:00:00.000000001Z stdout {tag} {msg}\n");
    std::fs::write(&live, cri("F", "a1") + &cri("P", "head-")).unwrap();
    let mut f = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    let (mut pool, mut got, now) = (Vec::new(), Vec::new(), Instant::now());
    let mut read = |f: &mut Follower, got: &mut Vec<(String, bool)>| {
        f.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| {
            got.push((String::from_utf8(e.message.to_vec()).unwrap(), e.partial))
        })
        .unwrap()
    };
    read(&mut f, &mut got);
    // Two rotations while the follower is away; the middle file is seen, then
    // deleted unread (the kubelet keeping too few files for a slow reader).
    std::fs::rename(&live, dir.path().join("0.log.20261121-100001")).unwrap();
    std::fs::write(&live, cri("P", "middle-") + &cri("F", "end")).unwrap();
    std::fs::rename(&live, dir.path().join("0.log.20261121-100002")).unwrap();
    std::fs::write(&live, cri("F", "tail") + &cri("F", "next")).unwrap();
    f.observe_rotations();
    std::fs::remove_file(dir.path().join("0.log.20261121-100002")).unwrap();
    read(&mut f, &mut got);
    let want = [("a1", false), ("head-", true), ("tail", true), ("next", false)];
    assert_eq!(got, want.map(|(m, p)| (m.to_string(), p)));
    assert_eq!(f.stats.rotated_unread_bytes, (cri("P", "middle-") + &cri("F", "end")).len() as u64);
}

/// A directory listing taken while the kubelet compresses can lack a rotated file
/// that is there (its plain name already removed as the listing reached it, its
/// `.gz` created after the listing passed): only a file not on disk is lost.
#[test]
fn a_rotated_file_is_looked_for_plain_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("0.log");
    std::fs::write(dir.path().join("0.log.20261121-100002.gz"), b"").unwrap();
    std::fs::write(dir.path().join("0.log.20261121-100004"), b"").unwrap();
    assert!(rotated_exists(&live, "20261121-100002"));
    assert!(rotated_exists(&live, "20261121-100004"));
    assert!(!rotated_exists(&live, "20261121-100003"));
}

/// Regression (a SIGKILL test on CI): a restart resuming in the most recently
/// rotated file while the kubelet compressed it listed the plain file, found it gone
/// when it looked, and called the position lost — the next message flagged partial
/// and everything before it in the file sent again. It is looked for again.
#[test]
fn a_position_in_a_file_compressed_while_looking_is_found_in_its_gz() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("0.log");
    let cri = |msg: &str| format!("2026-11-21T10:00:00.000000001Z stdout F {msg}\n");
    std::fs::write(&live, cri("first") + &cri("second")).unwrap();
    let mut f = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    let (mut pool, now) = (Vec::new(), Instant::now());
    f.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |_, _| {}).unwrap();
    let pos = f.position().unwrap();
    std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&live).unwrap(), cri("after").as_bytes()).unwrap();
    let rotated = dir.path().join("0.log.20261121-100001");
    std::fs::rename(&live, &rotated).unwrap();
    std::fs::write(&live, cri("live")).unwrap();
    let stale = list_members(&live).unwrap();
    // The kubelet compresses the rotated file between the listing and the look.
    let plain = std::fs::read(&rotated).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    std::fs::write(dir.path().join("0.log.20261121-100001.gz"), gz.finish().unwrap()).unwrap();
    std::fs::remove_file(&rotated).unwrap();

    let mut g = Follower::new(live.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    assert!(matches!(g.find_position(&stale, &pos).unwrap(), Lookup::Vanished));
    assert!(g.open_at(pos).unwrap());
    assert_eq!(g.stats.lost_positions, 0);
    let mut got = Vec::new();
    for _ in 0..3 {
        g.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| {
            got.push((String::from_utf8(e.message.to_vec()).unwrap(), e.partial))
        })
        .unwrap();
    }
    assert_eq!(got, [("after".to_string(), false), ("live".to_string(), false)]);
}

/// Regression: a turn that spent its budget inside a message the runtime split
/// ended there, and the stream held the pieces read so far until its next turn —
/// on a node catching up (most bytes in long lines) nearly every stream did, tens
/// of MiB across a thousand. A turn now reads such a message to its last piece.
#[test]
fn a_turn_ends_between_messages_not_inside_a_split_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let mut data = Vec::new();
    let piece = "p".repeat(16 * 1024);
    for i in 0..200 {
        for _ in 0..4 {
            data.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout P {piece}\n").as_bytes());
        }
        data.extend_from_slice(format!("2026-11-21T10:00:00.000000001Z stdout F end {i}\n").as_bytes());
    }
    std::fs::write(&path, &data).unwrap();
    let mut f = Follower::new(path, b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    let (mut pool, mut got, now) = (Vec::new(), Vec::new(), Instant::now());
    let mut turns = 0;
    loop {
        turns += 1;
        // A budget of a piece and a half: every turn would end inside a message.
        let outcome = f.read(24 * 1024, now, 0, Duration::from_secs(30), &mut pool, &mut |e, _| got.push(e.message.len())).unwrap();
        assert!(!f.has_pending(), "turn {turns} ended inside a split message");
        if outcome != ReadOutcome::More {
            break;
        }
    }
    let want: Vec<usize> = (0..200).map(|i: usize| 4 * 16 * 1024 + format!("end {i}").len()).collect();
    assert_eq!(got, want, "every message whole");
    assert!(turns >= 100, "about one message per turn ({turns} turns)");
}

/// Split messages read within one turn come out as their pieces in the read buffer,
/// uncopied, and the buffer does not grow for them; a message whose last piece is
/// written only after the turn ended (its pieces copied out then, as the buffer goes
/// back to the pool) comes out whole at the next.
#[test]
fn split_messages_stay_in_the_read_buffer_within_a_turn() {
    let line = |stream: &str, tag: char, text: &str| format!("2026-11-21T10:00:00.000000001Z {stream} {tag} {text}\n");
    let piece = "p".repeat(16 * 1024);
    let mut data = String::new();
    for i in 0..20 {
        for _ in 0..3 {
            data += &line("stdout", 'P', &piece);
            data += &line("stderr", 'F', &format!("between {i}"));
        }
        data += &line("stdout", 'F', &format!("end {i}"));
    }
    data += &line("stdout", 'P', "first half, ");
    let (_dir, path, mut f, mut pool) = follower_with_marked_buffer(data.as_bytes());
    let mut got = Vec::new();
    let mut emit = |e: &Event<'_>, _: &[u8]| got.push((e.stream, e.message.whole().is_none(), e.message.to_vec()));
    f.read(1 << 30, Instant::now(), 0, Duration::from_secs(30), &mut pool, &mut emit).unwrap();
    assert!(f.has_pending(), "the last message waits for its end");
    assert_eq!(capacities(&pool), vec![MARKED], "the turn read into the pooled buffer and gave it back as it was");
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, line("stdout", 'F', "second half").as_bytes()).unwrap();
    f.read(1 << 30, Instant::now(), 0, Duration::from_secs(30), &mut pool, &mut emit).unwrap();
    let stdout: Vec<_> = got.iter().filter(|(s, ..)| *s == crate::event::Stream::Stdout).collect();
    assert_eq!(stdout.len(), 21);
    for (i, (_, in_pieces, message)) in stdout.iter().take(20).enumerate() {
        assert_eq!(*message, format!("{}end {i}", piece.repeat(3)).into_bytes());
        assert!(in_pieces, "message {i} was copied");
    }
    assert_eq!(stdout[20].2, b"first half, second half", "copied out at the turn's end, finished at the next");
    assert_eq!(got.len(), 21 + 60);
}

/// A stream parked at the end of its live file is seen unchanged (and its turn
/// skipped) until the file is written to, replaced or the stream is on its way out;
/// one parked before the end, or inside an unterminated line, never is.
#[test]
fn a_parked_stream_is_unchanged_until_its_file_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    std::fs::write(&path, cri_lines(10, "")).unwrap();
    let mut f = Follower::new(path.clone(), b"{}".to_vec(), &DecodeOptions::default(), None, StartFrom::Beginning);
    let mut pool = Vec::new();
    let got = std::cell::Cell::new(0);
    let now = Instant::now();
    let mut read = |f: &mut Follower| f.read(1 << 20, now, 0, Duration::from_secs(30), &mut pool, &mut |_, _| got.set(got.get() + 1)).unwrap();
    assert!(!f.parked_unchanged(), "never opened");
    assert_eq!(read(&mut f), ReadOutcome::CaughtUp);
    assert!(f.park());
    assert!(f.parked_unchanged());
    // Written to: a turn reads the new line, and parks unchanged again.
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, &cri_lines(1, "")).unwrap();
    assert!(!f.parked_unchanged());
    assert_eq!(read(&mut f), ReadOutcome::CaughtUp);
    assert!(f.park() && f.parked_unchanged());
    // An unterminated line at the end: parked before it, so not at the end.
    std::io::Write::write_all(&mut file, b"2026-11-21T10:00:00.000000001Z stdout F incompl").unwrap();
    assert_eq!(read(&mut f), ReadOutcome::CaughtUp);
    assert!(f.park());
    assert!(!f.parked_unchanged(), "the unterminated line is read again on reopening");
    std::io::Write::write_all(&mut file, b"ete\n").unwrap();
    assert_eq!(read(&mut f), ReadOutcome::CaughtUp);
    assert!(f.park() && f.parked_unchanged());
    // Replaced by a new file of the same size (a rotation): changed.
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::rename(&path, dir.path().join("0.log.20261121-100000")).unwrap();
    std::fs::write(&path, vec![b'\n'; len]).unwrap();
    assert!(!f.parked_unchanged());
    // On its way out: never skipped.
    assert_eq!(read(&mut f), ReadOutcome::CaughtUp);
    assert!(f.park() && f.parked_unchanged());
    f.mark_gone(now);
    assert!(!f.parked_unchanged());
    assert_eq!(got.get(), 12 + len);
}
