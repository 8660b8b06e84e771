//! A second reading thread for backlogs.
//!
//! Reading, decoding and encoding a backlog is all CPU, and the tailer is one thread.
//! When two or more streams each have more to read than one turn takes (a restart
//! after downtime, a burst), the tailer lends one of them to a [`Helper`] for a turn
//! and reads another itself; it takes the stream back before doing anything else, so
//! a stream is never read by two threads, and everything but the turn itself — the
//! ready queue, descriptors, positions, batches — stays with the tailer. The helper
//! encodes into a batch buffer of its own, which the tailer ships as the next batch.
//!
//! On a busy node with no backlog no stream qualifies and the helper sleeps.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;
use std::time::Instant;

use std::sync::Arc;

use super::turn::{take_turn, Encoded, Followed, Routing, Turn, TurnLimits};
use crate::event::{EventEncoder, MessageFormat, Nanos};
use crate::route::Router;

/// One turn to read: the stream and where to encode its events.
pub struct Job {
    pub stream: Followed,
    /// The routes now (a reload may have changed them since the last job).
    pub router: Arc<Router>,
    pub data: Encoded,
    pub now: Instant,
    pub read_time: Nanos,
}

/// A turn read: the stream back, the encoded events, what the turn did.
pub struct Done {
    pub stream: Followed,
    pub data: Encoded,
    pub turn: Turn,
}

/// A thread that reads turns handed to it, one at a time.
pub struct Helper {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
}

impl Helper {
    pub fn spawn(format: MessageFormat, limits: TurnLimits) -> io::Result<Self> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        thread::Builder::new().name("tail-helper".into()).spawn(move || {
            let mut encoder = EventEncoder::new(format);
            let mut buffers = Vec::new();
            for job in job_rx {
                let Job { mut stream, router, mut data, now, read_time } = job;
                let routing = Routing { router: &router, masks: stream.routes };
                let turn = take_turn(&mut stream.follower, routing, limits, now, read_time, &mut buffers, &mut encoder, &mut data);
                if done_tx.send(Done { stream, data, turn }).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs, done })
    }

    pub fn start(&self, job: Job) {
        self.jobs.send(job).expect("the tail helper thread is gone");
    }

    /// Waits for the turn started last.
    pub fn finish(&self) -> Done {
        self.done.recv().expect("the tail helper thread is gone")
    }
}
