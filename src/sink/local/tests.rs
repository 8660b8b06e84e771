use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::LocalShipper;
use crate::buffer::{Buffer, BufferOptions, WhenFull};
use crate::metrics::SinkCounters;
use crate::sink::{ShipReport, ShipSettings, Target};

/// A file sink on a fresh buffer, running on its thread.
struct Running {
    buffer: Buffer,
    counters: Arc<SinkCounters>,
    writer_done: Arc<AtomicBool>,
    out: std::path::PathBuf,
    thread: thread::JoinHandle<ShipReport>,
    _dir: tempfile::TempDir,
}

fn file_sink() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = Buffer::open(&dir.path().join("buffer"), BufferOptions::with_cap(64 << 20, WhenFull::Block)).unwrap();
    let (counters, writer_done) = (Arc::new(SinkCounters::new()), Arc::new(AtomicBool::new(false)));
    let out = dir.path().join("out.jsonl");
    let ship = ShipSettings {
        buffer: buffer.clone(),
        cursor: 0,
        writer_done: writer_done.clone(),
        ack_interval: Duration::from_millis(200),
        counters: counters.clone(),
        target: Target::File(out.clone()),
    };
    let shipper = LocalShipper::open(ship).unwrap();
    let thread = thread::spawn(move || shipper.run().unwrap());
    Running { buffer, counters, writer_done, out, thread, _dir: dir }
}

impl Running {
    fn append(&self, n: usize) {
        self.buffer.append(0, 1, Bytes::from(format!("{{\"n\":{n}}}\n"))).unwrap();
    }

    fn wait_for_events(&self, n: u64) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.counters.records_ok.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < until, "the sink wrote {} of {n} events in 30 s", self.counters.records_ok.load(Ordering::Relaxed));
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn writes(&self) -> u64 {
        self.counters.requests_ok.load(Ordering::Relaxed)
    }

    /// Stops the sink and checks that the file holds events 0..n, in order.
    fn finish(self, n: usize) {
        self.writer_done.store(true, Ordering::Release);
        self.buffer.close();
        let report = self.thread.join().unwrap();
        assert_eq!(report.events, n as u64);
        let expected: String = (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        assert_eq!(std::fs::read_to_string(&self.out).unwrap(), expected);
    }
}

#[test]
fn records_announced_together_go_in_one_write() {
    // The buffer thread appends a tailer round's records quietly and announces them
    // once: the idle sink wakes once and writes them all in one go.
    let sink = file_sink();
    sink.buffer.hold_announcements();
    for i in 0..20 {
        sink.append(i);
    }
    sink.buffer.announce();
    sink.wait_for_events(20);
    assert_eq!(sink.writes(), 1);
    // Later ones are the next write.
    sink.buffer.hold_announcements();
    for i in 20..25 {
        sink.append(i);
    }
    sink.buffer.announce();
    sink.wait_for_events(25);
    assert_eq!(sink.writes(), 2);
    sink.finish(25);
}

#[test]
fn a_record_reaching_an_idle_sink_is_written_without_waiting_for_more() {
    // Nothing else comes: the record is written all the same (no gathering window
    // holds it), and so is every one of a trickle.
    let sink = file_sink();
    sink.append(0);
    sink.wait_for_events(1);
    for i in 1..10 {
        sink.append(i);
        sink.wait_for_events(i as u64 + 1);
    }
    assert_eq!(sink.writes(), 10);
    sink.finish(10);
}
