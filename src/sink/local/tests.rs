use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Gather, LocalShipper};
use crate::buffer::{Buffer, BufferOptions, WhenFull};
use crate::metrics::SinkCounters;
use crate::sink::{ShipReport, ShipSettings, Target};

/// A file sink on a fresh buffer, gathering as `gather` says, running on its thread.
struct Running {
    buffer: Buffer,
    counters: Arc<SinkCounters>,
    writer_done: Arc<AtomicBool>,
    out: std::path::PathBuf,
    thread: thread::JoinHandle<ShipReport>,
    _dir: tempfile::TempDir,
}

fn file_sink(gather: Gather) -> Running {
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
    let mut shipper = LocalShipper::open(ship).unwrap();
    shipper.gather = gather;
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
fn records_arriving_together_at_an_idle_sink_go_in_one_write() {
    // A quiet window far longer than the appends take: they are one write, the first
    // (which an idle sink would write at once) included.
    let sink = file_sink(Gather { quiet: Duration::from_secs(2), most: Duration::from_secs(60) });
    sink.append(0);
    thread::sleep(Duration::from_millis(50));
    for i in 1..20 {
        sink.append(i);
    }
    sink.wait_for_events(20);
    assert_eq!(sink.writes(), 1);
    // Later ones are the next write.
    for i in 20..25 {
        sink.append(i);
    }
    sink.wait_for_events(25);
    assert_eq!(sink.writes(), 2);
    sink.finish(25);
}

#[test]
fn a_steady_trickle_is_written_at_least_every_most() {
    // Never quiet for long enough: without the bound, nothing would be written until
    // the sink stops.
    let sink = file_sink(Gather { quiet: Duration::from_secs(600), most: Duration::from_millis(100) });
    for i in 0..30 {
        sink.append(i);
        thread::sleep(Duration::from_millis(20));
    }
    sink.wait_for_events(30);
    assert!(sink.writes() >= 2, "{} writes", sink.writes());
    sink.finish(30);
}

#[test]
fn gathering_ends_after_the_quiet_window_or_the_bound() {
    let g = Gather { quiet: Duration::from_millis(5), most: Duration::from_millis(50) };
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    assert_eq!(g.left(t0, t0, t0), Duration::from_millis(5));
    assert_eq!(g.left(t0, ms(2), ms(4)), Duration::from_millis(3));
    assert_eq!(g.left(t0, ms(2), ms(7)), Duration::ZERO, "quiet for 5 ms");
    assert_eq!(g.left(t0, ms(48), ms(48)), Duration::from_millis(2), "the bound is nearer");
    assert_eq!(g.left(t0, ms(50), ms(50)), Duration::ZERO, "50 ms since the first");
    assert_eq!(g.left(t0, ms(60), ms(61)), Duration::ZERO);
}
