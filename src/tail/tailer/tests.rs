//! The tailer's unit tests.
use std::sync::mpsc;

use super::*;
use crate::config::{Config, EnvView};

#[test]
fn the_room_bell_rings_once_per_refusal() {
    let (wake, wakes) = mpsc::channel();
    let bell = RoomBell { waiting: Arc::default(), wake };
    bell.ring();
    assert!(wakes.try_recv().is_err(), "nobody waits: no wake-up");
    bell.waiting.store(true, Ordering::Release);
    bell.ring();
    bell.ring();
    assert!(matches!(wakes.try_recv(), Ok(Wake::Room)));
    assert!(wakes.try_recv().is_err(), "one wake-up per wait");
}

const STREAMS: usize = 4;
const LINES: usize = 20_000;

fn write_pods(root: &Path) {
    for i in 0..STREAMS {
        let dir = root.join(format!("var/log/pods/ns_pod{i}_uid{i}/app"));
        std::fs::create_dir_all(&dir).unwrap();
        let lines: String =
            (0..LINES).map(|n| format!("2026-11-22T00:00:00.000000000Z stdout F s{i}-{n:06} with some padding to fill turns\n")).collect();
        std::fs::write(dir.join("0.log"), lines).unwrap();
    }
}

/// A tailer's settings for the pod logs under `root` (`tail` adds to the `[tail]` table).
fn settings_for_pods(root: &Path, tail: &str) -> TailerSettings {
    let text = format!(
        "data_dir = \"{r}/data\"\n[tail]\ninclude = [\"{r}/var/log/pods/*/*/*.log\"]\nroots = [\"{r}/var/log/pods\"]\n{tail}[sink]\ntype = \"stdout\"\n",
        r = root.display()
    );
    let config = Config::from_toml_str_with_env(&text, &EnvView::default()).unwrap();
    TailerSettings {
        tail: config.tail.clone(),
        decode: config.decode,
        message_format: config.message_format,
        partial_flush_timeout: config.partial_flush_timeout,
        router: Arc::new(crate::route::Router::everything()),
        multiline: Arc::default(),
    }
}

/// The stream number and line number of each event, in the order shipped.
fn shipped(data: &[u8]) -> Vec<(usize, usize)> {
    data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        let msg = v["message"].as_str().unwrap();
        let (stream, rest) = msg[1..].split_once('-').unwrap();
        (stream.parse().unwrap(), rest[..6].parse().unwrap())
    }).collect()
}

#[test]
fn helper_turns_keep_every_stream_whole_and_in_order_while_the_next_stage_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_pods(root);
    let settings = settings_for_pods(root, "read_bytes_per_turn = 65536\nwatch = \"poll\"\n");
    // A next stage with room for one batch that takes its time: helpers' turns
    // often come back to a full channel.
    let (batch_tx, batch_rx) = crate::tail::handoff::batch_queue(1);
    let (_wake_tx, wake_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let tailer = Tailer::new(settings, HashMap::new(), true, Watch::polling_only(), wake_rx, batch_tx, stop.clone());
    let tail = std::thread::spawn(move || tailer.run());
    let mut data = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while data.iter().filter(|&&b| b == b'\n').count() < STREAMS * LINES {
        assert!(Instant::now() < deadline, "not everything arrived");
        if let Ok(batch) = batch_rx.recv_timeout(Duration::from_millis(100)) {
            batch.encoded.parts.iter().for_each(|p| data.extend_from_slice(&p.data));
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(batch) = batch_rx.recv() {
        batch.encoded.parts.iter().for_each(|p| data.extend_from_slice(&p.data));
    }
    let stats = tail.join().unwrap();
    let got = shipped(&data);
    for i in 0..STREAMS {
        let lines: Vec<usize> = got.iter().filter(|(s, _)| *s == i).map(|(_, n)| *n).collect();
        assert!(lines.iter().copied().eq(0..LINES), "stream {i}: {} events, not 0..{LINES} in order", lines.len());
    }
    assert_eq!(got.len(), STREAMS * LINES);
    assert!(stats.helper_turns > 0 && stats.turns > 0, "turns: {} own, {} by the helper", stats.turns, stats.helper_turns);
}

#[test]
fn spares_in_use_are_kept_and_those_unused_for_a_trim_are_freed() {
    let buffer = |tag: u8| {
        let mut b = Vec::with_capacity(64);
        b.push(tag);
        b
    };
    let mut spares = Spares::default();
    // Each round takes eight; they come back together after it, and a trim falls
    // between rounds: all eight are kept for the next round, none allocated.
    spares.held.extend((0..8).map(buffer));
    for round in 0..5u8 {
        let taken: Vec<_> = (0..8).map(|_| spares.take().expect("a spare for every batch of the round")).collect();
        assert!(taken.iter().all(|b| b.is_empty()), "handed out empty");
        spares.held.extend((0..8).map(|i| buffer(round * 8 + i)));
        spares.trim();
        assert_eq!(spares.held.len(), 8, "round {round}");
    }
    // A burst leaves twenty: kept until a trim with none of them taken frees all but
    // four, the oldest first.
    spares.held.clear();
    spares.trim();
    spares.held.extend((0..20).map(buffer));
    spares.trim();
    assert_eq!(spares.held.len(), 20, "they came back after the last trim");
    spares.trim();
    assert_eq!(spares.held.len(), SPARE_BATCH_BUFFERS);
    assert_eq!(spares.held.iter().map(|b| b[0]).collect::<Vec<_>>(), [16, 17, 18, 19], "the most recent are kept");
    // Never fewer than four, however idle.
    spares.trim();
    assert_eq!(spares.held.len(), SPARE_BATCH_BUFFERS);
}

/// The glue between the polled streams and `moves`: a busy stream's file is watched;
/// after a rotation the next poll learns of it from the watch and the stream looks its
/// path up again (the follower alone would trust it for `PATH_RECHECK`); once quiet,
/// the watch is removed.
#[test]
fn a_polled_stream_learns_of_its_rotation_from_the_watch_on_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let app = root.join("var/log/pods/ns_pod_uid/app");
    std::fs::create_dir_all(&app).unwrap();
    let live = app.join("0.log");
    let line = |n: usize| format!("2026-11-22T00:00:00.000000000Z stdout F line-{n:03}\n");
    std::fs::write(&live, line(0)).unwrap();
    let settings = settings_for_pods(root, "");
    let (batch_tx, _batch_rx) = crate::tail::handoff::batch_queue(16);
    let (_wake_tx, wake_rx) = mpsc::channel();
    let mut tailer = Tailer::new(settings, HashMap::new(), true, Watch::polling_only(), wake_rx, batch_tx, Arc::default());
    let mut now = Instant::now();
    tailer.rescan(now);
    let key: Arc<Path> = Arc::from(live.as_path());
    assert!(tailer.streams.contains_key(&key));
    tailer.poll_dir(app.clone(), now);
    assert_eq!(tailer.moves.len(), 1, "this test needs inotify");
    tailer.read_round(now);
    let rotations = |t: &Tailer| t.streams[&key].follower.stats.rotations;

    // Rotated while polled: no lookup of the path would see it before PATH_RECHECK.
    let mut file = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
    std::io::Write::write_all(&mut file, line(1).as_bytes()).unwrap();
    std::fs::rename(&live, app.join("0.log.20261122-000001")).unwrap();
    std::fs::write(&live, line(2)).unwrap();
    now += tailer.settings.tail.busy_poll_interval;
    tailer.poll_hot(now);
    tailer.read_round(now);
    assert_eq!(rotations(&tailer), 1, "the watch reported the rename and the path was looked up");
    assert_eq!(tailer.moves.len(), 1, "the new file is watched");

    // Quiet: watched by directory again, no longer by file.
    now += hot::COOL_AFTER;
    tailer.poll_hot(now);
    assert_eq!(tailer.moves.len(), 0);
    assert!(!tailer.streams[&key].follower.path_watched());
}
