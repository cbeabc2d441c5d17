//! A job and its shared control block.
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

pub(crate) type JobId = u64;

/// Who is waiting for a job's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The pool's owner, through `crate::bridge`.
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
