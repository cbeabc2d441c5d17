//! The work-stealing scheduler: one `crossbeam_deque::Injector` for submissions from
//! the caller, one `Worker`/`Stealer` deque per worker thread for nested `spawn`.
//!
//! Nothing in this module touches Python: jobs are ids plus opaque bytes, and it
//! depends on no other module of the crate. The worker threads (the `interp` module)
//! call [`Scheduler::take`] from their driver; the caller's side (the `bridge`
//! module) calls [`Scheduler::submit`] and [`Scheduler::cancel`].
//!
//! # Job life cycle
//! 1. `submit` allocates a `JobId`, records a [`JobCtl`] (state `QUEUED`) in the job
//!    table and pushes the job on the injector (caller) or on the submitting worker's
//!    own deque (nested spawn). Then it wakes at most one worker that asked for work.
//! 2. A worker asks for a job (`take`) only when its loop has capacity: own deque
//!    first (LIFO, hot caches for divide and conquer), then the injector, then the
//!    other workers' deques (steal, counted in `stolen`).
//! 3. The worker moves the job `QUEUED -> RUNNING` with a CAS, after storing its own
//!    index in the job. A job whose CAS fails was cancelled while queued: it is dropped.
//! 4. If `take` finds nothing it registers the worker as wanting work and looks once
//!    more (Dekker-style, both sides fence `SeqCst`; see `handshake.rs`), so a
//!    submission racing with a worker going idle is never missed.
//! 5. The worker posts exactly one completion per job it started (`complete`), which
//!    removes the job from the table and routes the bytes to the job's origin: the
//!    caller's completion queue or the inbox of the worker that spawned it. A job
//!    run by the very worker that spawned it is not routed: that worker's driver
//!    resolved it in place (by reference, no pickling, no wake-up).
//!
//! # Cancellation
//! 1. `cancel(id)` looks the job up. Not found: already completed, nothing to do.
//! 2. `QUEUED -> CANCELLED` by CAS: the job never runs; it is removed from the table
//!    now and dropped when a worker pops it (step 3 above).
//! 3. `RUNNING`: a cancel request is put in the running worker's inbox and the
//!    worker is woken; its driver cancels the task (`CancelledError` at the next
//!    await). With `interrupt`, the caller additionally schedules a pending call in
//!    the worker interpreter (`interrupt` in the `interp` module).
//! 4. The caller's awaitable is already resolved (cancelled) by the caller itself, so
//!    a late completion for a cancelled job is dropped by the caller's drain.
//!
//! # Shutdown
//! 1. The caller resolves or cancels every future it handed out, then calls
//!    `shutdown`: each worker's inbox gets `shutdown = true` and the worker is woken.
//! 2. A worker's driver sees the flag, cancels its tasks, closes its loop and returns;
//!    the worker thread ends its interpreter and marks itself exited (`exited`).
//! 3. The caller waits on `exited` with a timeout and without holding the GIL; the
//!    workers that did not exit in time are reported by index (they are stuck in
//!    code that cannot be interrupted) and their threads are left detached.

mod handshake;
mod job;
mod park;
mod stats;
mod sync;

pub(crate) use job::{Job, JobCtl, JobId, JobState, Origin};
pub(crate) use park::WakeFd;
pub(crate) use stats::{Padded, Stats, StatsSnapshot};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use handshake::Handshake;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a worker's driver is told when it is woken.
#[derive(Default)]
pub(crate) struct Inbox {
    /// `(job, interrupt)` for running jobs the caller cancelled.
    pub(crate) cancels: Vec<(JobId, bool)>,
    /// Results of jobs this worker spawned (nested `spawn`).
    pub(crate) completions: Vec<Completion>,
    pub(crate) shutdown: bool,
}

/// One finished job (or a control message, see `kind`), as bytes.
pub(crate) struct Completion {
    pub(crate) job: JobId,
    pub(crate) kind: u8,
    pub(crate) data: Vec<u8>,
}

/// A job's flag (`Job::flags`): the job may be interrupted in CPU-bound code when
/// cancelled (`interrupt` in the `interp` module).
pub(crate) const JOB_FLAG_INTERRUPT: u32 = 1;

/// Completion kinds. Job results are < 16; control messages from workers are >= 16
/// and carry the worker index in `job`. (Some are only produced by the Python driver.)
pub(crate) mod kind {
    pub(crate) const OK: u8 = 0;
    pub(crate) const ERR: u8 = 1;
    pub(crate) const REMOTE_ERR: u8 = 2;
    pub(crate) const CANCELLED: u8 = 3;
    /// The worker ended (its driver failed) while running the job; data is a message.
    pub(crate) const LOST: u8 = 4;
    /// A large `bytes`/`bytearray` result was copied into the caller's object
    /// (`bridge::fill`); made by the copier, not by a worker.
    pub(crate) const FILLED: u8 = 5;
    pub(crate) const WORKER_READY: u8 = 16;
    pub(crate) const WORKER_FAILED: u8 = 17;
    pub(crate) const WORKER_EXITED: u8 = 18;
}

/// Where completions for the caller go (implemented by the `bridge` module).
pub(crate) trait CompletionSink: Send + Sync {
    fn push(&self, c: Completion);
}

/// Per-worker state shared with everyone.
pub(crate) struct WorkerSlot {
    stealer: Stealer<Job>,
    pub(crate) wake: WakeFd,
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) running: AtomicUsize,
    /// `PyInterpreterState*` of the worker, 0 until created and after teardown.
    /// Other threads (interrupts) use it only while holding this mutex; the worker
    /// zeroes it under the mutex before its interpreter ends.
    pub(crate) interp: Mutex<usize>,
    exited: Mutex<bool>,
    exited_cv: Condvar,
}

const JOB_SHARDS: usize = 16;

pub(crate) struct Scheduler {
    injector: Injector<Job>,
    pub(crate) slots: Vec<WorkerSlot>,
    /// The job table, sharded by id so the caller inserting new jobs and workers
    /// removing finished ones rarely meet on one lock.
    jobs: Vec<Mutex<HashMap<JobId, Arc<JobCtl>>>>,
    /// Written by the submitter on every job: kept off the lines workers read.
    next_id: Padded<AtomicU64>,
    /// Who to wake for new work (step 4 of the life cycle).
    handshake: Handshake,
    pub(crate) stats: Stats,
    sink: Box<dyn CompletionSink>,
}

impl Scheduler {
    /// A scheduler for `n` workers; returns the local deques to move into the threads.
    pub(crate) fn new(
        n: usize,
        sink: Box<dyn CompletionSink>,
    ) -> std::io::Result<(Arc<Self>, Vec<Worker<Job>>)> {
        let locals: Vec<Worker<Job>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let mut slots = Vec::with_capacity(n);
        for w in &locals {
            slots.push(WorkerSlot {
                stealer: w.stealer(),
                wake: WakeFd::new()?,
                inbox: Mutex::new(Inbox::default()),
                running: AtomicUsize::new(0),
                interp: Mutex::new(0),
                exited: Mutex::new(false),
                exited_cv: Condvar::new(),
            });
        }
        let s = Scheduler {
            injector: Injector::new(),
            slots,
            jobs: (0..JOB_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            next_id: Padded(AtomicU64::new(1)),
            handshake: Handshake::new(n),
            stats: Stats::new(n),
            sink,
        };
        Ok((Arc::new(s), locals))
    }

    fn shard(&self, id: JobId) -> &Mutex<HashMap<JobId, Arc<JobCtl>>> {
        &self.jobs[(id as usize) % JOB_SHARDS]
    }

    /// Jobs in the table (queued or running), for tests.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn table_len(&self) -> usize {
        self.jobs.iter().map(|s| s.lock().len()).sum()
    }

    pub(crate) fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Step 1 of the life cycle. `local` is the submitting worker's own deque.
    pub(crate) fn submit(
        &self,
        payload: Vec<u8>,
        flags: u32,
        origin: Origin,
        local: Option<&Worker<Job>>,
    ) -> JobId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ctl = Arc::new(JobCtl::new(id, origin));
        self.shard(id).lock().insert(id, ctl.clone());
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            ctl,
            payload,
            flags,
        };
        let me = match (local, origin) {
            (Some(w), Origin::Worker(i)) => {
                w.push(job);
                Some(i)
            }
            _ => {
                self.injector.push(job);
                None
            }
        };
        self.notify_one(me);
        id
    }

    /// Wakes one worker (not `except`) that asked for work and is not yet notified,
    /// unless a worker spins for work (it will find the job without a wake-up).
    pub(crate) fn notify_one(&self, except: Option<usize>) {
        if let Some(i) = self.handshake.pick_wakeup(except) {
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            self.slots[i].wake.notify();
        }
    }

    /// Steps 2 to 4 of the life cycle, for worker `me`.
    pub(crate) fn take(&self, me: usize, local: &Worker<Job>) -> Option<Job> {
        let slot = &self.slots[me];
        let mut registered = false;
        loop {
            let mut retry = false;
            let mut stolen = false;
            let found = local.pop().or_else(|| loop {
                match self.injector.steal() {
                    Steal::Success(j) => break Some(j),
                    Steal::Retry => continue,
                    Steal::Empty => break None,
                }
            });
            let found = found.or_else(|| {
                let n = self.slots.len();
                for k in 1..n {
                    match self.slots[(me + k) % n].stealer.steal() {
                        Steal::Success(j) => {
                            stolen = true;
                            return Some(j);
                        }
                        Steal::Retry => retry = true,
                        Steal::Empty => {}
                    }
                }
                None
            });
            if let Some(job) = found {
                if job.ctl.try_start(me) {
                    self.handshake.unregister(me);
                    slot.running.fetch_add(1, Ordering::Relaxed);
                    if stolen {
                        self.stats.stolen.fetch_add(1, Ordering::Relaxed);
                    }
                    // More work left behind: let another idle worker have it.
                    if !self.injector.is_empty() || !local.is_empty() {
                        self.notify_one(Some(me));
                    }
                    return Some(job);
                }
                continue; // cancelled while queued: drop it
            }
            if retry {
                continue;
            }
            if registered {
                return None;
            }
            self.handshake.register(me);
            registered = true;
        }
    }

    /// `take`, but when nothing is queued, first spin up to `spin` for a job to appear
    /// (at most one worker spins at a time: three busy threads on two cores would
    /// slow everyone down). A job submitted while a worker spins costs its submitter
    /// no `write(2)` and the worker no wake-up from `epoll_wait`, which is most of
    /// a round trip's latency. The driver asks for a spin only right after running
    /// a job, with nothing else to do, so an idle pool never spins.
    ///
    /// No lost wake-up: a submitter pushes, fences and reads `spinning`; the spinner
    /// clears `spinning`, fences and then looks (in `take`). Either the submitter sees
    /// the flag cleared (and wakes someone who registered) or the spinner's look sees
    /// the job.
    pub(crate) fn take_spinning(
        &self,
        me: usize,
        local: &Worker<Job>,
        spin: Duration,
    ) -> Option<Job> {
        if !spin.is_zero() && local.is_empty() && !self.has_work() && self.handshake.start_spin() {
            self.stats.spins.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + spin;
            let mut i = 0u32;
            let hit = loop {
                if !local.is_empty() || self.has_work() {
                    break true;
                }
                i = i.wrapping_add(1);
                if i % 32 == 0 && Instant::now() >= deadline {
                    break false;
                }
                spin_pause(i);
            };
            if hit {
                self.stats.spin_hits.fetch_add(1, Ordering::Relaxed);
            }
            self.handshake.stop_spin();
        }
        self.take(me, local)
    }

    /// The worker has no capacity (or other ready work): do not wake it for new jobs.
    pub(crate) fn set_busy(&self, me: usize) {
        self.handshake.unregister(me);
    }

    /// Clears the "notified" flag; called by the worker when it wakes up.
    pub(crate) fn clear_notified(&self, me: usize) {
        self.handshake.clear_notified(me);
    }

    /// Is there a job any worker could take?
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.slots.iter().any(|s| !s.stealer.is_empty())
    }

    /// Step 5 of the life cycle. Returns false if the job was unknown.
    pub(crate) fn complete(&self, worker: usize, id: JobId, kind: u8, data: Vec<u8>) -> bool {
        let ctl = self.shard(id).lock().remove(&id);
        let Some(ctl) = ctl else { return false };
        ctl.finish();
        self.slots[worker].running.fetch_sub(1, Ordering::Relaxed);
        match kind {
            kind::OK => self.stats.completed.fetch_add(1, Ordering::Relaxed),
            kind::CANCELLED => self.stats.cancelled.fetch_add(1, Ordering::Relaxed),
            _ => self.stats.failed.fetch_add(1, Ordering::Relaxed),
        };
        self.stats.record_latency(ctl.submitted_at.elapsed());
        // A job its own spawner ran was resolved in place by that worker's driver.
        if ctl.origin != Origin::Worker(worker) {
            self.route(
                ctl.origin,
                Completion {
                    job: id,
                    kind,
                    data,
                },
            );
        }
        true
    }

    /// Sends a completion (or control message) to `origin`.
    pub(crate) fn route(&self, origin: Origin, c: Completion) {
        match origin {
            Origin::Caller => self.sink.push(c),
            Origin::Worker(i) => self.post(i, |inbox| inbox.completions.push(c)),
        }
    }

    fn post(&self, worker: usize, f: impl FnOnce(&mut Inbox)) {
        let slot = &self.slots[worker];
        {
            let mut inbox = slot.inbox.lock();
            f(&mut inbox);
        }
        slot.wake.notify();
    }

    /// Cancellation steps 1 to 3. Returns the worker running the job, if it runs.
    pub(crate) fn cancel(&self, id: JobId, interrupt: bool) -> Option<usize> {
        let ctl = self.shard(id).lock().get(&id).cloned();
        let ctl = ctl?;
        match ctl.try_cancel_queued() {
            Ok(()) => {
                self.shard(id).lock().remove(&id);
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(JobState::Running(w)) => {
                self.post(w, |inbox| inbox.cancels.push((id, interrupt)));
                Some(w)
            }
            Err(_) => None,
        }
    }

    /// Shutdown step 1.
    pub(crate) fn shutdown(&self) {
        for i in 0..self.slots.len() {
            self.post(i, |inbox| inbox.shutdown = true);
        }
    }

    /// Takes everything in worker `me`'s inbox.
    pub(crate) fn take_inbox(&self, me: usize) -> Inbox {
        std::mem::take(&mut *self.slots[me].inbox.lock())
    }

    /// Shutdown step 2 (called by the worker thread as its very last act).
    pub(crate) fn mark_exited(&self, me: usize) {
        let s = &self.slots[me];
        *s.exited.lock() = true;
        s.exited_cv.notify_all();
    }

    /// Shutdown step 3: waits until `deadline` for every worker; returns the stuck ones.
    pub(crate) fn wait_exited(&self, timeout: Duration) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        let mut stuck = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let mut done = s.exited.lock();
            while !*done {
                if s.exited_cv.wait_until(&mut done, deadline).timed_out() {
                    break;
                }
            }
            if !*done {
                stuck.push(i);
            }
        }
        stuck
    }

    /// Jobs running on `worker` right now (for naming stuck workers).
    pub(crate) fn running_on(&self, worker: usize) -> Vec<JobId> {
        let mut v: Vec<JobId> = Vec::new();
        for shard in &self.jobs {
            let jobs = shard.lock();
            v.extend(
                jobs.values()
                    .filter(|c| c.state() == JobState::Running(worker))
                    .map(|c| c.id),
            );
        }
        v.sort_unstable();
        v
    }

    pub(crate) fn queued(&self) -> usize {
        self.injector.len() + self.slots.iter().map(|s| s.stealer.len()).sum::<usize>()
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(
            self.queued(),
            self.slots
                .iter()
                .map(|s| s.running.load(Ordering::Relaxed))
                .collect(),
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

/// One step of a bounded spin. Mostly `sched_yield`: with three busy threads on two
/// cores (the caller, a spinning worker, a working one) a pure busy loop can hold
/// the very core that the thread it waits for needs; yielding lets that thread run.
#[inline]
pub(crate) fn spin_pause(i: u32) {
    if i % 4 == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}
