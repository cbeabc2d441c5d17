//! loom models of the scheduler's lock-free protocols (tokio-style model checking).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" PYO3_PYTHON=$PWD/.venv-3.13/bin/python \
//!     CARGO_TARGET_DIR=target/loom cargo test --lib --release sched::loom
//! ```
//! crossbeam-deque and parking_lot are not loom-aware, so the queue is modelled by
//! a counter and the locks by loom's; the job state machine is the real `JobCtl`
//! (its atomics switch to loom's under `cfg(loom)`).
use super::job::{JobCtl, JobState, Origin};
use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// Cancellation step 2 vs life-cycle step 3: a queued job is either started by
/// exactly one worker or cancelled, never both, never neither.
#[test]
fn start_and_cancel_race_has_one_winner() {
    loom::model(|| {
        let ctl = Arc::new(JobCtl::new(1, Origin::Caller));
        let (c1, c2) = (ctl.clone(), ctl.clone());
        let w0 = thread::spawn(move || c1.try_start(0));
        let w1 = thread::spawn(move || c2.try_start(1));
        let cancelled = ctl.try_cancel_queued().is_ok();
        let (s0, s1) = (w0.join().unwrap(), w1.join().unwrap());
        assert_eq!(s0 as u8 + s1 as u8 + cancelled as u8, 1);
        match ctl.state() {
            JobState::Cancelled => assert!(cancelled),
            JobState::Running(w) => assert!((w == 0 && s0) || (w == 1 && s1)),
            s => panic!("unexpected {s:?}"),
        }
    });
}

/// Life-cycle step 4: a worker going idle (register `wants_work`, fence, look again)
/// racing with a submission (push, fence, wake a worker that wants work): the job is
/// either taken by the worker or the worker is woken. Never stranded.
#[test]
fn no_lost_wakeup() {
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
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let wants = Arc::new(AtomicBool::new(false));
        let notified = Arc::new(AtomicBool::new(false));
        let woken = Arc::new(AtomicBool::new(false)); // the eventfd
        let submitter = {
            let (q, w, n, k) = (
                queue.clone(),
                wants.clone(),
                notified.clone(),
                woken.clone(),
            );
            thread::spawn(move || {
                q.fetch_add(1, SeqCst); // injector.push
                fence(SeqCst); // notify_one
                if w.load(SeqCst) && !n.swap(true, AcqRel) {
                    k.store(true, SeqCst);
                }
            })
        };
        // Scheduler::take on the worker
        let mut got = try_pop(&queue);
        if !got {
            wants.store(true, SeqCst);
            fence(SeqCst);
            got = try_pop(&queue);
        }
        submitter.join().unwrap();
        if !got {
            // the worker now sleeps in epoll on its fd: it must have been woken
            assert!(
                woken.load(SeqCst),
                "job queued, worker asleep and not woken"
            );
            assert!(try_pop(&queue));
        }
    });
}

/// `take_spinning` vs a submission: a spinning worker suppresses the submitter's
/// wake-up, so when it stops spinning (clear `spinning`, fence, then `take`: look,
/// register `wants_work`, fence, look again) it must see the job, or the submitter
/// must have seen it register and woken it. Two workers: the spinner and one that
/// is already parked, registered (which a skipped wake-up leaves asleep).
#[test]
fn no_lost_wakeup_with_a_spinner() {
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
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let spinning = Arc::new(AtomicBool::new(true)); // the spinner holds the flag
        let wants = Arc::new(AtomicBool::new(false)); // the spinner's wants_work
        let woken = Arc::new(AtomicBool::new(false)); // the spinner's eventfd
        let other_woken = Arc::new(AtomicBool::new(false)); // the parked worker's eventfd
        let submitter = {
            let (q, s, w, k, o) = (
                queue.clone(),
                spinning.clone(),
                wants.clone(),
                woken.clone(),
                other_woken.clone(),
            );
            thread::spawn(move || {
                q.fetch_add(1, SeqCst); // injector.push
                fence(SeqCst); // notify_one
                if s.load(SeqCst) {
                    return; // a spinner will find it
                }
                // round robin: either worker that wants work (the parked one always does)
                if w.load(SeqCst) {
                    k.store(true, SeqCst);
                } else {
                    o.store(true, SeqCst);
                }
            })
        };
        // The spinner gives up (one look, then the deadline) ...
        let mut got = queue.load(SeqCst) > 0 && try_pop(&queue);
        spinning.store(false, SeqCst);
        fence(SeqCst);
        // ... then `take`.
        if !got {
            got = try_pop(&queue);
        }
        if !got {
            wants.store(true, SeqCst);
            fence(SeqCst);
            got = try_pop(&queue);
        }
        submitter.join().unwrap();
        if !got && !other_woken.load(SeqCst) {
            assert!(
                woken.load(SeqCst),
                "job queued, both workers asleep, none woken"
            );
        }
        if !got {
            assert!(try_pop(&queue));
        }
    });
}

/// The completion queue (`bridge::Completions`): producers push under the lock and
/// write the fd only when the queue was empty; the consumer clears the fd, then takes
/// the batch. No completion is left in the queue with the fd clear.
#[test]
fn completions_are_never_stranded() {
    loom::model(|| {
        let queue = Arc::new(Mutex::new(Vec::new()));
        let fd = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..2)
            .map(|i| {
                let (q, fd) = (queue.clone(), fd.clone());
                thread::spawn(move || {
                    let was_empty = {
                        let mut v = q.lock().unwrap();
                        v.push(i);
                        v.len() == 1
                    };
                    if was_empty {
                        fd.store(true, SeqCst);
                    }
                })
            })
            .collect();
        // one drain, concurrent with the producers
        let mut seen = 0;
        if fd.load(SeqCst) {
            fd.store(false, SeqCst);
            seen += std::mem::take(&mut *queue.lock().unwrap()).len();
        }
        for p in producers {
            p.join().unwrap();
        }
        let left = queue.lock().unwrap().len();
        assert_eq!(seen + left, 2);
        if left > 0 {
            assert!(fd.load(SeqCst), "completions waiting but the fd is clear");
        }
    });
}
