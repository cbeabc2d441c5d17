//! The handshake between workers going idle and submitters (life-cycle step 4 in
//! `sched/mod.rs`): who must be woken so that no job is left queued while every
//! worker sleeps.
//!
//! - A worker that found nothing to take registers (`wants_work`, then a `SeqCst`
//!   fence) and looks once more before it sleeps.
//! - A submitter pushes the job, fences (`SeqCst`) and then reads the flags: it wakes
//!   one registered worker that is not already notified.
//!
//! Dekker-style: with both fences, either the worker's second look sees the job or
//! the submitter sees the worker registered. A worker that spins for work after its
//! last job (`start_spin`) makes submitters skip the wake-up; when it stops
//! (`stop_spin`: clear, fence) it looks again, so the same argument covers it.
//! The model tests at the end run this code under loom.
use super::sync::{fence, AtomicBool, AtomicUsize, Ordering};

/// One worker's side of the handshake.
struct Idle {
    /// Set by the worker when it has capacity and found no job; cleared when it
    /// takes one or becomes busy.
    wants_work: AtomicBool,
    /// Set by whoever chose to wake the worker for new work; cleared by the worker.
    notified: AtomicBool,
}

pub(crate) struct Handshake {
    idle: Vec<Idle>,
    /// Where the round robin of wake-ups starts next.
    next: AtomicUsize,
    /// Set while one worker spins for new work; submitters then skip the wake-up.
    spinning: AtomicBool,
}

impl Handshake {
    pub(crate) fn new(workers: usize) -> Self {
        Handshake {
            idle: (0..workers)
                .map(|_| Idle {
                    wants_work: AtomicBool::new(false),
                    notified: AtomicBool::new(false),
                })
                .collect(),
            next: AtomicUsize::new(0),
            spinning: AtomicBool::new(false),
        }
    }

    /// The submitter's side, after it queued a job: the worker (not `except`) it
    /// must wake, if any. The caller wakes it; the worker is marked notified, so
    /// concurrent submitters do not wake it twice.
    #[inline]
    pub(crate) fn pick_wakeup(&self, except: Option<usize>) -> Option<usize> {
        // Pairs with the fences in `register` and `stop_spin`.
        fence(Ordering::SeqCst);
        if self.spinning.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.idle.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let s = &self.idle[i];
            Some(i) != except
                && s.wants_work.load(Ordering::SeqCst)
                && !s.notified.swap(true, Ordering::AcqRel)
        })
    }

    /// The worker's side when it found nothing: register, then look once more
    /// before sleeping.
    #[inline]
    pub(crate) fn register(&self, me: usize) {
        self.idle[me].wants_work.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The worker took a job or has no capacity: do not wake it for new jobs.
    #[inline]
    pub(crate) fn unregister(&self, me: usize) {
        self.idle[me].wants_work.store(false, Ordering::SeqCst);
    }

    /// The worker woke up: it may be notified again.
    pub(crate) fn clear_notified(&self, me: usize) {
        self.idle[me].notified.store(false, Ordering::Release);
    }

    /// Claims the right to spin for work (one worker at a time); false if another
    /// worker spins.
    pub(crate) fn start_spin(&self) -> bool {
        self.spinning
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends a spin; the worker must look for work afterwards (then register).
    pub(crate) fn stop_spin(&self) {
        self.spinning.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The handshake under loom. crossbeam-deque is not loom-aware, so the queue is
    //! a counter here; everything else is the code above.
    use super::Handshake;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use loom::sync::Arc;
    use loom::thread;

    fn try_pop(q: &AtomicUsize) -> bool {
        let mut n = q.load(SeqCst);
        while n > 0 {
            match q.compare_exchange(n, n - 1, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(m) => n = m,
            }
        }
        false
    }

    /// `Scheduler::take` for worker `me`: look, register, look again.
    fn take(hs: &Handshake, q: &AtomicUsize, me: usize) -> bool {
        if try_pop(q) {
            hs.unregister(me);
            return true;
        }
        hs.register(me);
        if try_pop(q) {
            hs.unregister(me);
            return true;
        }
        false
    }

    /// `Scheduler::submit`: push, then wake whom the handshake picks.
    fn submit(hs: &Handshake, q: &AtomicUsize, woken: &[AtomicBool]) {
        q.fetch_add(1, SeqCst);
        if let Some(i) = hs.pick_wakeup(None) {
            woken[i].store(true, SeqCst);
        }
    }

    /// A worker going idle racing with a submission: the job is taken by the
    /// worker or the worker is woken. Never stranded.
    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let hs = Arc::new(Handshake::new(1));
            let q = Arc::new(AtomicUsize::new(0));
            let woken = Arc::new([AtomicBool::new(false)]);
            let submitter = {
                let (hs, q, woken) = (hs.clone(), q.clone(), woken.clone());
                thread::spawn(move || submit(&hs, &q, &woken[..]))
            };
            let got = take(&hs, &q, 0);
            submitter.join().unwrap();
            if !got {
                // The worker now sleeps on its wake fd: it must have been woken.
                assert!(
                    woken[0].load(SeqCst),
                    "job queued, worker asleep, not woken"
                );
                assert!(try_pop(&q));
            }
        });
    }

    /// A spinning worker suppresses the submitter's wake-up; when it stops spinning
    /// (`stop_spin`, then `take`) it must see the job, or the submitter must have
    /// seen a registered worker and woken it. Worker 1 is parked, registered.
    #[test]
    fn no_lost_wakeup_with_a_spinner() {
        loom::model(|| {
            let hs = Arc::new(Handshake::new(2));
            hs.register(1); // parked, waiting for work
            assert!(hs.start_spin()); // worker 0 spins
            let q = Arc::new(AtomicUsize::new(0));
            let woken = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
            let submitter = {
                let (hs, q, woken) = (hs.clone(), q.clone(), woken.clone());
                thread::spawn(move || submit(&hs, &q, &woken[..]))
            };
            // The spinner gives up after one look, then takes.
            let mut got = try_pop(&q);
            hs.stop_spin();
            if !got {
                got = take(&hs, &q, 0);
            }
            submitter.join().unwrap();
            if !got {
                assert!(
                    woken[0].load(SeqCst) || woken[1].load(SeqCst),
                    "job queued, both workers asleep, none woken"
                );
                assert!(try_pop(&q));
            }
        });
    }

    /// Two submitters, one idle worker: it is woken at most once per notification
    /// (`notified`), and woken at all unless it took a job itself.
    #[test]
    fn one_wakeup_for_two_submissions() {
        loom::model(|| {
            let hs = Arc::new(Handshake::new(1));
            let q = Arc::new(AtomicUsize::new(0));
            let wakeups = Arc::new(AtomicUsize::new(0));
            hs.register(0);
            let subs: Vec<_> = (0..2)
                .map(|_| {
                    let (hs, q, w) = (hs.clone(), q.clone(), wakeups.clone());
                    thread::spawn(move || {
                        q.fetch_add(1, SeqCst);
                        if hs.pick_wakeup(None).is_some() {
                            w.fetch_add(1, SeqCst);
                        }
                    })
                })
                .collect();
            for s in subs {
                s.join().unwrap();
            }
            assert_eq!(wakeups.load(SeqCst), 1);
        });
    }
}
