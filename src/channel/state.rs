//! A channel's shared state, the process-wide registry of channels, and the
//! notifiers that wake waiting loops. No Python object is touched here,
//! so every lock below is held only for a few queue operations and never while a
//! GIL is being waited for (docs/design.md, trap 2).
use crate::buffer::Region;
use crate::event_loop::sources::SourceWake;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Which side of a channel a waiter waits on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    /// Waits for an item (or for the channel to close).
    Recv,
    /// Waits for room (or for the channel to close).
    Send,
}

/// Outcome of a non-blocking send.
#[derive(PartialEq, Eq, Debug)]
pub(crate) enum SendResult {
    Sent,
    Full,
    Closed,
}

/// One queued message: its bytes (a tag byte, then a pickle or raw data) and the
/// buffers it carries by reference (see `crate::buffer`).
pub(crate) struct Message {
    pub(crate) data: Vec<u8>,
    pub(crate) bufs: Vec<Arc<Region>>,
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message {
            data,
            bufs: Vec::new(),
        }
    }
}

impl PartialEq for Message {
    fn eq(&self, o: &Self) -> bool {
        self.data == o.data
            && self.bufs.len() == o.bufs.len()
            && self
                .bufs
                .iter()
                .zip(&o.bufs)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message({:?}, {} buffers)", self.data, self.bufs.len())
    }
}

/// Outcome of a non-blocking receive.
#[derive(PartialEq, Debug)]
pub(crate) enum RecvResult {
    Item(Message),
    Empty,
    Closed,
}

/// Wakes one event loop (one per loop and interpreter) from any thread: waiters
/// are identified by a token the loop chose; `notify` queues the token and wakes
/// the loop when the queue goes from empty to non-empty, so a burst of wake-ups
/// costs one wake. The loop is woken through its eventfd (watched with
/// `add_reader`), or, when interloop's own loop drains this notifier natively
/// (`native_loop.rs`), through that loop's waker.
pub(crate) struct Notifier {
    pub(super) wake: SourceWake,
    tokens: Mutex<Vec<u64>>,
    /// Its loop is gone: waiters of this notifier are skipped when waking.
    closed: AtomicBool,
}

impl Notifier {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Notifier {
            wake: SourceWake::new()?,
            tokens: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// The loop that watched this notifier is gone: a wake-up sent to one of its
    /// waiters would be lost, so channels skip them from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn fd(&self) -> i32 {
        self.wake.fd()
    }

    pub(crate) fn notify(&self, token: u64) {
        let first = {
            let mut t = self.tokens.lock();
            t.push(token);
            t.len() == 1
        };
        if first {
            self.wake.wake();
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.tokens.lock().is_empty()
    }

    /// Takes every queued token. The fd is cleared *before* the tokens are taken,
    /// so a token queued meanwhile either is taken now or set the fd again.
    pub(crate) fn drain(&self) -> Vec<u64> {
        self.wake.clear();
        std::mem::take(&mut *self.tokens.lock())
    }
}

struct Waiter {
    notifier: Arc<Notifier>,
    token: u64,
}

impl Waiter {
    fn is(&self, n: &Arc<Notifier>, token: u64) -> bool {
        self.token == token && Arc::ptr_eq(&self.notifier, n)
    }
}

/// The first waiter whose loop still exists (the others are dropped).
fn pop_live(q: &mut VecDeque<Waiter>) -> Option<Waiter> {
    while let Some(w) = q.pop_front() {
        if !w.notifier.is_closed() {
            return Some(w);
        }
    }
    None
}

struct Inner {
    queue: VecDeque<Message>,
    closed: bool,
    recv_waiters: VecDeque<Waiter>,
    send_waiters: VecDeque<Waiter>,
}

/// One channel: a bounded FIFO of pickled messages shared by every interpreter.
///
/// Waiting protocol (no polling, no lost wake-up):
/// 1. A waiter first tries the operation (`try_send` / `try_recv`).
/// 2. If it could not proceed it calls `wait(side, notifier, token)`, which re-checks
///    under the lock: if the operation could proceed now it returns `false` (go to
///    1); otherwise the waiter is queued and will be woken exactly once.
/// 3. Every change that may let one waiter proceed wakes one waiter of that side
///    (a send wakes a receiver; a receive of a bounded channel wakes a sender);
///    `close` wakes all. A woken waiter goes to 1 (another task may have been
///    faster; then it waits again).
/// 4. A waiter that gives up (cancelled) calls `unwait`; if it was already woken
///    (`unwait` returns false) it passes the wake-up on with `wake_one`, so no
///    item or free slot is left with nobody woken for it.
pub(crate) struct Channel {
    pub(crate) id: u64,
    pub(crate) maxsize: usize,
    inner: Mutex<Inner>,
}

impl Channel {
    fn has_room(&self, g: &Inner) -> bool {
        self.maxsize == 0 || g.queue.len() < self.maxsize
    }

    pub(crate) fn try_send(&self, data: Message) -> SendResult {
        let w = {
            let mut g = self.inner.lock();
            if g.closed {
                return SendResult::Closed;
            }
            if !self.has_room(&g) {
                return SendResult::Full;
            }
            g.queue.push_back(data);
            pop_live(&mut g.recv_waiters)
        };
        if let Some(w) = w {
            w.notifier.notify(w.token);
        }
        SendResult::Sent
    }

    pub(crate) fn try_recv(&self) -> RecvResult {
        let (item, w) = {
            let mut g = self.inner.lock();
            match g.queue.pop_front() {
                Some(item) => {
                    let w = if self.maxsize != 0 {
                        pop_live(&mut g.send_waiters)
                    } else {
                        None
                    };
                    (item, w)
                }
                None if g.closed => return RecvResult::Closed,
                None => return RecvResult::Empty,
            }
        };
        if let Some(w) = w {
            w.notifier.notify(w.token);
        }
        RecvResult::Item(item)
    }

    /// Step 2 of the protocol: `true` if the waiter was queued, `false` if it can
    /// proceed now.
    pub(crate) fn wait(&self, side: Side, notifier: &Arc<Notifier>, token: u64) -> bool {
        let mut g = self.inner.lock();
        let ready = match side {
            Side::Recv => g.closed || !g.queue.is_empty(),
            Side::Send => g.closed || self.has_room(&g),
        };
        if ready {
            return false;
        }
        let w = Waiter {
            notifier: notifier.clone(),
            token,
        };
        match side {
            Side::Recv => g.recv_waiters.push_back(w),
            Side::Send => g.send_waiters.push_back(w),
        }
        true
    }

    /// Removes a queued waiter; `false` if it is not queued (it was woken).
    pub(crate) fn unwait(&self, side: Side, notifier: &Arc<Notifier>, token: u64) -> bool {
        let removed = {
            let mut g = self.inner.lock();
            let q = match side {
                Side::Recv => &mut g.recv_waiters,
                Side::Send => &mut g.send_waiters,
            };
            q.iter()
                .position(|w| w.is(notifier, token))
                .and_then(|i| q.remove(i))
        };
        removed.is_some()
    }

    /// Wakes one waiter of `side` (step 4: passing a wake-up on).
    pub(crate) fn wake_one(&self, side: Side) {
        let w = {
            let mut g = self.inner.lock();
            match side {
                Side::Recv => pop_live(&mut g.recv_waiters),
                Side::Send => pop_live(&mut g.send_waiters),
            }
        };
        if let Some(w) = w {
            w.notifier.notify(w.token);
        }
    }

    /// Closes the channel; returns whether it was open. What is queued stays
    /// receivable; every waiter is woken (receivers drain, then see `Closed`).
    pub(crate) fn close(&self) -> bool {
        let (was_open, waiters) = {
            let mut g = self.inner.lock();
            let was_open = !g.closed;
            g.closed = true;
            let mut ws: Vec<Waiter> = g.recv_waiters.drain(..).collect();
            ws.extend(g.send_waiters.drain(..));
            (was_open, ws)
        };
        for w in waiters {
            w.notifier.notify(w.token);
        }
        was_open
    }

    /// (queued messages, closed, waiting receivers, waiting senders)
    /// Spins (yielding the CPU now and then) up to `budget` until a receive could
    /// proceed (an item is queued or the channel is closed); returns whether it can.
    /// For a receiver about to sleep right after activity: a reply that comes within
    /// microseconds then costs no wake-up of its thread.
    pub(crate) fn spin_until_receivable(&self, budget: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + budget;
        let mut i = 0u32;
        loop {
            if i % 8 == 0 {
                let g = self.inner.lock();
                if g.closed || !g.queue.is_empty() {
                    return true;
                }
                drop(g);
                if std::time::Instant::now() >= deadline {
                    return false;
                }
            }
            i = i.wrapping_add(1);
            crate::sched::spin_pause(i);
        }
    }

    pub(crate) fn info(&self) -> (usize, bool, usize, usize) {
        let g = self.inner.lock();
        (
            g.queue.len(),
            g.closed,
            g.recv_waiters.len(),
            g.send_waiters.len(),
        )
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Never called with the registry locked: `open` drops pins after unlocking.
        registry().lock().remove(&self.id);
    }
}

// --- registry: channel id -> channel, so a channel can be pickled as its id ---------

struct Entry {
    channel: Weak<Channel>,
    /// Strong reference kept while a pickled copy is in flight (see `pin`).
    pinned: Option<Arc<Channel>>,
    pins: usize,
}

fn registry() -> &'static Mutex<HashMap<u64, Entry>> {
    static R: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn create(maxsize: usize) -> Arc<Channel> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let ch = Arc::new(Channel {
        id,
        maxsize,
        inner: Mutex::new(Inner {
            queue: VecDeque::new(),
            closed: false,
            recv_waiters: VecDeque::new(),
            send_waiters: VecDeque::new(),
        }),
    });
    registry().lock().insert(
        id,
        Entry {
            channel: Arc::downgrade(&ch),
            pinned: None,
            pins: 0,
        },
    );
    ch
}

/// A pickled copy of `ch` is in flight: keep the channel alive until it is
/// unpickled (`open(id, true)`), even if every handle is dropped meanwhile. A copy
/// that is never unpickled keeps its channel alive until the process ends.
pub(crate) fn pin(ch: &Arc<Channel>) {
    let mut r = registry().lock();
    if let Some(e) = r.get_mut(&ch.id) {
        e.pins += 1;
        e.pinned = Some(ch.clone());
    }
}

/// The channel with this id, if it still exists; `unpin` consumes one pin.
pub(crate) fn open(id: u64, unpin: bool) -> Option<Arc<Channel>> {
    let (ch, released) = {
        let mut r = registry().lock();
        let e = r.get_mut(&id)?;
        let ch = e.channel.upgrade()?;
        let mut released = None;
        if unpin && e.pins > 0 {
            e.pins -= 1;
            if e.pins == 0 {
                released = e.pinned.take();
            }
        }
        (ch, released)
    };
    drop(released); // not the last reference (`ch` is alive): no Drop under the lock
    Some(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_bounded_closed() {
        let ch = create(2);
        assert_eq!(ch.try_send(vec![1].into()), SendResult::Sent);
        assert_eq!(ch.try_send(vec![2].into()), SendResult::Sent);
        assert_eq!(ch.try_send(vec![3].into()), SendResult::Full);
        assert_eq!(ch.try_recv(), RecvResult::Item(vec![1].into()));
        assert!(ch.close());
        assert!(!ch.close());
        assert_eq!(ch.try_send(vec![4].into()), SendResult::Closed);
        assert_eq!(ch.try_recv(), RecvResult::Item(vec![2].into()));
        assert_eq!(ch.try_recv(), RecvResult::Closed);
    }

    #[test]
    fn waiters_are_woken_once_and_can_withdraw() {
        let ch = create(1);
        let n = Arc::new(Notifier::new().unwrap());
        assert!(ch.wait(Side::Recv, &n, 7));
        assert!(ch.wait(Side::Recv, &n, 8));
        assert_eq!(ch.try_send(vec![1].into()), SendResult::Sent);
        assert_eq!(n.drain(), vec![7]);
        assert!(!ch.wait(Side::Recv, &n, 10)); // an item is there: proceed
        assert!(ch.unwait(Side::Recv, &n, 8));
        assert!(!ch.unwait(Side::Recv, &n, 7)); // already woken
        assert!(ch.wait(Side::Send, &n, 11)); // full
        assert_eq!(ch.try_recv(), RecvResult::Item(vec![1].into()));
        assert_eq!(n.drain(), vec![11]);
        assert!(ch.wait(Side::Recv, &n, 12));
        ch.close();
        assert_eq!(n.drain(), vec![12]);
    }

    /// Blocks the calling thread until `side` may proceed (a lost wake-up fails).
    fn park(ch: &Channel, side: Side, n: &Arc<Notifier>, token: &mut u64) {
        *token += 1;
        if ch.wait(side, n, *token) {
            loop {
                assert!(n.wake.wait(10_000), "lost wake-up");
                if n.drain().contains(token) {
                    return;
                }
            }
        }
    }

    #[test]
    fn threads_send_and_receive_nothing_lost_no_lost_wakeup() {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 20_000;
        let ch = create(8);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let ch = ch.clone();
                std::thread::spawn(move || {
                    let n = Arc::new(Notifier::new().unwrap());
                    let mut token = 0;
                    let mut got = Vec::new();
                    loop {
                        match ch.try_recv() {
                            RecvResult::Item(m) => {
                                let d = &m.data;
                                got.push((
                                    d[0] as u64,
                                    u64::from_le_bytes(d[1..9].try_into().unwrap()),
                                ))
                            }
                            RecvResult::Empty => park(&ch, Side::Recv, &n, &mut token),
                            RecvResult::Closed => return got,
                        }
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ch = ch.clone();
                std::thread::spawn(move || {
                    let n = Arc::new(Notifier::new().unwrap());
                    let mut token = 0;
                    for i in 0..PER {
                        let mut msg = vec![p as u8];
                        msg.extend_from_slice(&i.to_le_bytes());
                        loop {
                            match ch.try_send(msg.clone().into()) {
                                SendResult::Sent => break,
                                SendResult::Full => park(&ch, Side::Send, &n, &mut token),
                                SendResult::Closed => panic!("closed early"),
                            }
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        ch.close();
        let mut all = Vec::new();
        for c in consumers {
            let got = c.join().unwrap();
            for p in 0..PRODUCERS {
                let seq: Vec<u64> = got.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]), "per-sender order");
            }
            all.extend(got);
        }
        all.sort();
        let want: Vec<(u64, u64)> = (0..PRODUCERS)
            .flat_map(|p| (0..PER).map(move |i| (p, i)))
            .collect();
        assert_eq!(all, want);
    }

    #[test]
    fn waiters_of_a_closed_notifier_are_skipped() {
        let ch = create(0);
        let (dead, live) = (
            Arc::new(Notifier::new().unwrap()),
            Arc::new(Notifier::new().unwrap()),
        );
        assert!(ch.wait(Side::Recv, &dead, 1));
        assert!(ch.wait(Side::Recv, &live, 2));
        dead.close();
        assert_eq!(ch.try_send(vec![0].into()), SendResult::Sent);
        assert_eq!(live.drain(), vec![2]);
        assert!(dead.drain().is_empty());
    }

    #[test]
    fn registry_pins_keep_a_channel_alive_until_unpickled() {
        let ch = create(0);
        let id = ch.id;
        pin(&ch);
        drop(ch);
        let again = open(id, true).expect("pinned channel is alive");
        drop(again);
        assert!(open(id, false).is_none());
    }
}
