//! Scheduler unit tests (no Python involved). Run with
//! `PYO3_PYTHON=.venv-3.13/bin/python cargo test --lib`.
use super::*;
use std::sync::atomic::AtomicBool;
use std::thread;

#[derive(Clone, Default)]
struct VecSink(Arc<Mutex<Vec<Completion>>>);

impl CompletionSink for VecSink {
    fn push(&self, c: Completion) {
        self.0.lock().push(c);
    }
}

fn sched(n: usize) -> (Arc<Scheduler>, Vec<Worker<Job>>, VecSink) {
    let sink = VecSink::default();
    let (s, locals) = Scheduler::new(n, Box::new(sink.clone())).unwrap();
    (s, locals, sink)
}

#[test]
fn submitted_jobs_are_taken_once_in_order() {
    let (s, locals, _) = sched(1);
    let ids: Vec<JobId> = (0..5u8)
        .map(|i| s.submit(vec![i], 0, Origin::Caller, None))
        .collect();
    let mut seen = Vec::new();
    while let Some(j) = s.take(0, &locals[0]) {
        assert_eq!(j.ctl.state(), JobState::Running(0));
        seen.push((j.ctl.id, j.payload[0]));
    }
    assert_eq!(seen, ids.iter().copied().zip(0..5u8).collect::<Vec<_>>());
    assert_eq!(s.snapshot().running, vec![5]);
}

#[test]
fn idle_worker_registers_and_is_woken_once() {
    let (s, locals, _) = sched(2);
    assert!(s.take(0, &locals[0]).is_none()); // registers worker 0
    s.slots[0].wake.clear();
    s.submit(vec![], 0, Origin::Caller, None);
    assert!(s.slots[0].wake.clear(), "the waiting worker was woken");
    s.submit(vec![], 0, Origin::Caller, None);
    assert!(
        !s.slots[0].wake.clear(),
        "already notified: no second write"
    );
    s.clear_notified(0);
    assert!(s.take(0, &locals[0]).is_some());
}

#[test]
fn busy_worker_is_not_woken() {
    let (s, locals, _) = sched(1);
    assert!(s.take(0, &locals[0]).is_none());
    s.set_busy(0);
    s.slots[0].wake.clear();
    s.submit(vec![], 0, Origin::Caller, None);
    assert!(!s.slots[0].wake.clear());
}

#[test]
fn cancelled_queued_job_is_skipped() {
    let (s, locals, _) = sched(1);
    let a = s.submit(vec![1], 0, Origin::Caller, None);
    let b = s.submit(vec![2], 0, Origin::Caller, None);
    assert_eq!(s.cancel(a, false), None);
    let j = s.take(0, &locals[0]).unwrap();
    assert_eq!(j.ctl.id, b);
    assert!(s.take(0, &locals[0]).is_none());
    assert_eq!(s.snapshot().cancelled, 1);
}

#[test]
fn cancelling_a_running_job_asks_its_worker() {
    let (s, locals, _) = sched(2);
    let a = s.submit(vec![], 0, Origin::Caller, None);
    let _j = s.take(1, &locals[1]).unwrap();
    assert_eq!(s.cancel(a, true), Some(1));
    let inbox = s.take_inbox(1);
    assert_eq!(inbox.cancels, vec![(a, true)]);
    assert!(s.slots[1].wake.clear());
}

#[test]
fn completion_routes_to_origin() {
    let (s, locals, sink) = sched(2);
    let a = s.submit(vec![], 0, Origin::Caller, None);
    let j = s.take(0, &locals[0]).unwrap();
    assert!(s.complete(0, j.ctl.id, kind::OK, b"r".to_vec()));
    assert!(
        !s.complete(0, j.ctl.id, kind::OK, b"r".to_vec()),
        "second completion is ignored"
    );
    let got = sink
        .0
        .lock()
        .drain(..)
        .map(|c| (c.job, c.data))
        .collect::<Vec<_>>();
    assert_eq!(got, vec![(a, b"r".to_vec())]);

    // nested: worker 0 spawns, worker 1 steals and completes; the result goes to worker 0
    let child = s.submit(vec![], 0, Origin::Worker(0), Some(&locals[0]));
    let j = s.take(1, &locals[1]).unwrap();
    assert_eq!(j.ctl.id, child);
    assert_eq!(s.snapshot().stolen, 1);
    s.complete(1, child, kind::ERR, vec![]);
    let inbox = s.take_inbox(0);
    assert_eq!(inbox.completions.len(), 1);
    assert_eq!(inbox.completions[0].job, child);
    let snap = s.snapshot();
    assert_eq!((snap.completed, snap.failed, snap.latency.0), (1, 1, 2));
}

#[test]
fn a_job_run_by_its_spawner_is_not_routed() {
    let (s, locals, sink) = sched(1);
    let child = s.submit(vec![], 0, Origin::Worker(0), Some(&locals[0]));
    let j = s.take(0, &locals[0]).unwrap();
    assert_eq!(j.ctl.origin, Origin::Worker(0));
    assert!(s.complete(0, child, kind::OK, vec![]));
    assert!(s.take_inbox(0).completions.is_empty());
    assert!(sink.0.lock().is_empty());
    assert_eq!(s.snapshot().completed, 1);
}

#[test]
fn own_deque_is_lifo_and_preferred() {
    let (s, locals, _) = sched(1);
    let q = s.submit(vec![], 0, Origin::Caller, None);
    let a = s.submit(vec![], 0, Origin::Worker(0), Some(&locals[0]));
    let b = s.submit(vec![], 0, Origin::Worker(0), Some(&locals[0]));
    let order: Vec<JobId> =
        std::iter::from_fn(|| s.take(0, &locals[0]).map(|j| j.ctl.id)).collect();
    assert_eq!(order, vec![b, a, q]);
}

#[test]
fn shutdown_and_stuck_workers() {
    let (s, _locals, _) = sched(2);
    s.shutdown();
    assert!(s.take_inbox(0).shutdown && s.take_inbox(1).shutdown);
    let s2 = s.clone();
    let t = thread::spawn(move || s2.mark_exited(0));
    let stuck = s.wait_exited(Duration::from_millis(50));
    t.join().unwrap();
    assert_eq!(stuck, vec![1]);
}

/// Many submitters, two workers, nested spawns, random cancellations: every job
/// ends exactly once (completed by a worker, or cancelled while queued).
#[test]
fn stress_every_job_ends_exactly_once() {
    const PER_THREAD: u64 = 20_000;
    let (s, locals, sink) = sched(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (me, local) in locals.into_iter().enumerate() {
        let (s, stop) = (s.clone(), stop.clone());
        workers.push(thread::spawn(move || {
            let (mut taken, mut nested) = (0u64, 0u64);
            loop {
                match s.take(me, &local) {
                    Some(j) => {
                        if j.payload[0] == 1 {
                            // nested spawn onto our own deque, stealable by the other
                            s.submit(vec![0], 0, Origin::Worker(me), Some(&local));
                            nested += 1;
                        }
                        assert!(s.complete(me, j.ctl.id, kind::OK, vec![]));
                        taken += 1;
                    }
                    None => {
                        if stop.load(Ordering::SeqCst) && !s.has_work() {
                            return (taken, nested);
                        }
                        s.slots[me].wake.wait(5);
                        s.slots[me].wake.clear();
                        s.clear_notified(me);
                        let _ = s.take_inbox(me);
                    }
                }
            }
        }));
    }
    let submitters: Vec<_> = (0..2u64)
        .map(|t| {
            let s = s.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let id = s.submit(vec![(i % 3 == 0) as u8], 0, Origin::Caller, None);
                    if (i + t) % 10 == 0 {
                        s.cancel(id, false);
                    }
                }
            })
        })
        .collect();
    for t in submitters {
        t.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for slot in &s.slots {
        slot.wake.notify();
    }
    let (taken, nested) = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let snap = s.snapshot();
    assert_eq!(snap.submitted, 2 * PER_THREAD + nested);
    assert_eq!(snap.completed + snap.cancelled, snap.submitted);
    assert_eq!(taken, snap.completed);
    assert!(snap.cancelled > 0);
    assert_eq!(sink.0.lock().len() as u64, snap.completed - nested);
    assert_eq!(snap.queued, 0);
    assert_eq!(s.table_len(), 0, "no job left behind in the table");
}
