//! A job and its shared control block.
use super::sync::{AtomicUsize, Ordering};
use std::time::Instant;

pub(crate) type JobId = u64;

/// Who is waiting for a job's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The pool's owner (the `bridge` module's queue).
    Caller,
    /// A worker that spawned the job from inside (nested `spawn`).
    Worker(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobState {
    Queued,
    Running(usize),
    Cancelled,
    Finished,
}

// Packed state: low 2 bits tag, the rest is the worker index when running.
const QUEUED: usize = 0;
const RUNNING: usize = 1;
const CANCELLED: usize = 2;
const FINISHED: usize = 3;

/// Shared between the queue entry, the job table and the canceller.
pub(crate) struct JobCtl {
    pub(crate) id: JobId,
    pub(crate) origin: Origin,
    pub(crate) submitted_at: Instant,
    state: AtomicUsize,
}

impl JobCtl {
    pub(crate) fn new(id: JobId, origin: Origin) -> Self {
        JobCtl {
            id,
            origin,
            submitted_at: Instant::now(),
            state: AtomicUsize::new(QUEUED),
        }
    }

    pub(crate) fn state(&self) -> JobState {
        let s = self.state.load(Ordering::Acquire);
        match s & 3 {
            QUEUED => JobState::Queued,
            RUNNING => JobState::Running(s >> 2),
            CANCELLED => JobState::Cancelled,
            _ => JobState::Finished,
        }
    }

    /// `QUEUED -> RUNNING(worker)`; false if the job was cancelled first.
    pub(crate) fn try_start(&self, worker: usize) -> bool {
        self.state
            .compare_exchange(
                QUEUED,
                RUNNING | (worker << 2),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// `QUEUED -> CANCELLED`; on failure returns the state that won.
    pub(crate) fn try_cancel_queued(&self) -> Result<(), JobState> {
        match self
            .state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(self.state()),
        }
    }

    pub(crate) fn finish(&self) {
        self.state.store(FINISHED, Ordering::Release);
    }
}

/// A unit of work: the pickled `(fn, args, kwargs)` of the caller, opaque here.
pub(crate) struct Job {
    pub(crate) ctl: std::sync::Arc<JobCtl>,
    pub(crate) payload: Vec<u8>,
    pub(crate) flags: u32,
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::{JobCtl, JobState, Origin};
    use loom::sync::Arc;
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
}
