//! The tailer's hand-off of batches to the buffer thread: a bounded queue whose
//! sender says when the receiver is woken.
//!
//! A round of the tailer fills a batch every 256 KiB, a millisecond or so apart. A
//! channel would wake the buffer thread for each, and the buffer thread the sinks: on
//! a live node that is three or four wake-ups of each thread per round where one does.
//! Here a batch is queued without a word ([`BatchSender::try_send`]) and the receiver
//! is woken once, when the round ends ([`BatchSender::ring`]) or the queue is full (a
//! sender that is refused must be heard). A receiver awake for its own reasons (a
//! timer, the batch before) takes whatever is queued, rung or not.

use std::collections::VecDeque;
use std::sync::mpsc::{RecvTimeoutError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A queue of at most `cap` items between one sender and one receiver.
pub fn batch_queue<T>(cap: usize) -> (BatchSender<T>, BatchReceiver<T>) {
    assert!(cap > 0, "a queue holds at least one item");
    let shared = Arc::new(Shared {
        state: Mutex::new(State { queue: VecDeque::with_capacity(cap), waiting: false, rings: 0, sender_waits: false, sender_gone: false, receiver_gone: false, poked: false }),
        cap,
        rung: Condvar::new(),
        room: Condvar::new(),
    });
    (BatchSender { shared: shared.clone() }, BatchReceiver { shared })
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The most items queued at once.
    cap: usize,
    /// The receiver's: rung by the sender.
    rung: Condvar,
    /// The sender's, in [`BatchSender::send`]: an item was taken.
    room: Condvar,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver sleeps in [`BatchReceiver::recv_timeout`]: only then does a ring
    /// cost a wake-up (and a system call).
    waiting: bool,
    /// Times the receiver was woken by the sender (for tests).
    rings: u64,
    /// The sender waits in [`BatchSender::send`] for room.
    sender_waits: bool,
    sender_gone: bool,
    receiver_gone: bool,
    /// A [`BatchReceiver::poker`] was called: the next wait returns at once.
    poked: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After an item was taken: tells a sender waiting for room (after unlocking).
    fn taken(&self, st: MutexGuard<'_, State<T>>) {
        let tell = st.sender_waits;
        drop(st);
        if tell {
            self.room.notify_one();
        }
    }
}

/// The tailer's end.
pub struct BatchSender<T> {
    shared: Arc<Shared<T>>,
}

/// The buffer thread's end.
pub struct BatchReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> BatchSender<T> {
    /// Queues `item` without waking the receiver, unless the queue is full now (the
    /// receiver must make room). Refused when full or when the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut st = self.shared.lock();
        if st.receiver_gone {
            return Err(TrySendError::Disconnected(item));
        }
        let refused = st.queue.len() >= self.shared.cap;
        let item = if refused { Some(item) } else { st.queue.push_back(item); None };
        if st.queue.len() >= self.shared.cap {
            self.wake(st);
        }
        match item {
            Some(item) => Err(TrySendError::Full(item)),
            None => Ok(()),
        }
    }

    /// Wakes the receiver for what is queued (nothing if the queue is empty or the
    /// receiver is awake: it takes what is queued before it sleeps).
    pub fn ring(&self) {
        let st = self.shared.lock();
        if !st.queue.is_empty() {
            self.wake(st);
        }
    }

    /// Queues `item`, waiting while the queue is full, and rings. Fails only when the
    /// receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let mut st = self.shared.lock();
        while st.queue.len() >= self.shared.cap && !st.receiver_gone {
            if take_waiting(&mut st) {
                self.shared.rung.notify_one();
            }
            st.sender_waits = true;
            st = self.shared.room.wait(st).unwrap_or_else(|p| p.into_inner());
            st.sender_waits = false;
        }
        if st.receiver_gone {
            return Err(item);
        }
        st.queue.push_back(item);
        self.wake(st);
        Ok(())
    }

    /// Wakes the receiver if it sleeps (after unlocking: woken under the lock, it
    /// would only block on it).
    fn wake(&self, mut st: MutexGuard<'_, State<T>>) {
        let sleeping = take_waiting(&mut st);
        drop(st);
        if sleeping {
            self.shared.rung.notify_one();
        }
    }
}

/// Whether the receiver sleeps; counted as a ring if it does, and marked awake so
/// that a second ring before it runs costs nothing.
fn take_waiting<T>(st: &mut State<T>) -> bool {
    let sleeping = std::mem::replace(&mut st.waiting, false);
    st.rings += u64::from(sleeping);
    sleeping
}

impl<T> Drop for BatchSender<T> {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.rung.notify_one();
    }
}

impl<T> BatchReceiver<T> {
    /// The first item queued: at once if there is one; otherwise waits up to
    /// `timeout` for a ring. `Disconnected` once the sender is gone and the queue
    /// empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.shared.lock();
        loop {
            if let Some(item) = st.queue.pop_front() {
                self.shared.taken(st);
                return Ok(item);
            }
            if st.sender_gone {
                return Err(RecvTimeoutError::Disconnected);
            }
            if std::mem::take(&mut st.poked) {
                return Err(RecvTimeoutError::Timeout);
            }
            st.waiting = true;
            st = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                Some(left) if left.is_zero() => {
                    st.waiting = false;
                    return Err(RecvTimeoutError::Timeout);
                }
                Some(left) => self.shared.rung.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0,
                None => self.shared.rung.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
            st.waiting = false;
        }
    }

    /// Something another thread calls to end the receiver's wait (now, or its next
    /// one if it is awake) without an item: [`Self::recv_timeout`] returns `Timeout`.
    pub fn poker(&self) -> impl Fn() + Send + Sync + 'static
    where
        T: Send + 'static,
    {
        let shared = self.shared.clone();
        move || {
            let mut st = shared.lock();
            st.poked = true;
            let sleeping = take_waiting(&mut st);
            drop(st);
            if sleeping {
                shared.rung.notify_one();
            }
        }
    }

    /// The first item queued, if any, without waiting.
    pub fn try_recv(&self) -> Option<T> {
        let mut st = self.shared.lock();
        let item = st.queue.pop_front()?;
        self.shared.taken(st);
        Some(item)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Waits for the next item, however long. `None` once the sender is gone and the
    /// queue empty.
    pub fn recv(&self) -> Option<T> {
        self.recv_timeout(Duration::MAX).ok()
    }
}

impl<T> Drop for BatchReceiver<T> {
    fn drop(&mut self) {
        self.shared.lock().receiver_gone = true;
        self.shared.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// Waits until the receiver sleeps in `recv_timeout`.
    fn until_waiting<T>(tx: &BatchSender<T>) {
        while !tx.shared.lock().waiting {
            thread::yield_now();
        }
    }

    fn rings<T>(tx: &BatchSender<T>) -> u64 {
        tx.shared.lock().rings
    }

    #[test]
    fn a_batch_queued_is_taken_by_a_receiver_that_looks_and_wakes_a_sleeping_one_only_when_rung() {
        let (tx, rx) = batch_queue(4);
        tx.try_send(1).unwrap();
        tx.ring();
        assert_eq!(rings(&tx), 0, "a receiver awake is not rung");
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(1));
        tx.ring();
        assert_eq!(rings(&tx), 0, "an empty queue is not rung");

        let waiter = thread::spawn(move || {
            let mut got = vec![rx.recv_timeout(Duration::from_secs(3600)).unwrap()];
            got.extend(std::iter::from_fn(|| rx.try_recv()));
            got
        });
        until_waiting(&tx);
        tx.try_send(2).unwrap();
        tx.try_send(3).unwrap();
        assert_eq!(rings(&tx), 0, "queued without a word");
        tx.ring();
        assert_eq!(rings(&tx), 1);
        assert_eq!(waiter.join().unwrap(), vec![2, 3]);
    }

    #[test]
    fn a_receiver_that_times_out_takes_what_was_queued_unrung() {
        let (tx, rx) = batch_queue(4);
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
        tx.try_send(7).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(7));
    }

    #[test]
    fn a_ring_wakes_the_receiver_for_what_is_queued() {
        let (tx, rx) = batch_queue(4);
        let waiter = thread::spawn(move || {
            let mut got = vec![rx.recv_timeout(Duration::from_secs(3600)).unwrap()];
            got.extend(std::iter::from_fn(|| rx.try_recv()));
            got
        });
        until_waiting(&tx);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        tx.ring();
        assert_eq!(waiter.join().unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn a_full_queue_wakes_the_receiver_and_refuses_the_next() {
        let (tx, rx) = batch_queue(2);
        let waiter = thread::spawn(move || {
            let first = rx.recv_timeout(Duration::from_secs(3600)).unwrap();
            (first, rx)
        });
        until_waiting(&tx);
        tx.try_send(1).unwrap();
        assert_eq!(rings(&tx), 0);
        tx.try_send(2).unwrap();
        assert_eq!(rings(&tx), 1, "the item that fills the queue rings");
        let (first, rx) = waiter.join().unwrap();
        assert_eq!(first, 1);
        tx.try_send(3).unwrap();
        assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn a_poke_ends_the_wait_without_an_item_and_one_made_while_awake_is_kept() {
        let (tx, rx) = batch_queue::<u32>(2);
        let poke = rx.poker();
        poke();
        assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Err(RecvTimeoutError::Timeout), "poked while awake");
        let waiter = thread::spawn(move || (rx.recv_timeout(Duration::from_secs(3600)), rx));
        until_waiting(&tx);
        poke();
        let (got, rx) = waiter.join().unwrap();
        assert_eq!(got, Err(RecvTimeoutError::Timeout), "poked while waiting");
        tx.try_send(7).unwrap();
        poke();
        assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(7), "an item first");
        assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Err(RecvTimeoutError::Timeout), "then the poke");
    }

    #[test]
    fn send_waits_for_room_and_the_ends_see_each_other_go() {
        let (tx, rx) = batch_queue(1);
        tx.try_send(1).unwrap();
        let sender = thread::spawn(move || {
            tx.send(2).unwrap();
            // Dropped here: the receiver drains, then hears it is gone.
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(1));
        sender.join().unwrap();
        assert_eq!(rx.recv(), Some(2));
        assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Err(RecvTimeoutError::Disconnected));

        let (tx, rx) = batch_queue(1);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)));
        assert_eq!(tx.send(2), Err(2));
    }
}
