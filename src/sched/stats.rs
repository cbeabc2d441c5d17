//! Counters and a latency histogram (submit to completion), all lock-free.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 40; // bucket b holds latencies in [2^(b-1), 2^b) µs

/// A value alone on its cache lines (128 bytes: adjacent-line prefetch pairs lines).
/// For counters written by one side only (the submitter), so that the workers'
/// counters next to them are not invalidated on every submission (false sharing).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct Stats {
    /// Written by submitters on every job; the rest mostly by workers.
    pub(crate) submitted: Padded<AtomicU64>,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) stolen: AtomicU64,
    /// Wake-ups written to idle workers' fds.
    pub(crate) wakeups: AtomicU64,
    /// Spins of a worker for new work after a job, and how many found a job.
    pub(crate) spins: AtomicU64,
    pub(crate) spin_hits: AtomicU64,
    latency_us: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
    workers: usize,
}

pub(crate) struct StatsSnapshot {
    pub(crate) workers: usize,
    pub(crate) queued: usize,
    pub(crate) running: Vec<usize>,
    pub(crate) submitted: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) stolen: u64,
    pub(crate) wakeups: u64,
    pub(crate) spins: u64,
    pub(crate) spin_hits: u64,
    /// (count, mean, p50, p90, p99, max-bucket upper bound), microseconds.
    pub(crate) latency: (u64, f64, f64, f64, f64, f64),
}

impl Stats {
    pub(crate) fn new(workers: usize) -> Self {
        Stats {
            submitted: Padded(AtomicU64::new(0)),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            stolen: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            spins: AtomicU64::new(0),
            spin_hits: AtomicU64::new(0),
            latency_us: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
            workers,
        }
    }

    pub(crate) fn record_latency(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let b = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.latency_us[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queued: usize, running: Vec<usize>) -> StatsSnapshot {
        let counts: Vec<u64> = self
            .latency_us
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let upper = |b: usize| if b == 0 { 1.0 } else { (1u64 << b) as f64 };
        let pct = |p: f64| {
            if total == 0 {
                return 0.0;
            }
            let want = ((total as f64) * p).ceil() as u64;
            let mut acc = 0;
            for (b, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= want {
                    return upper(b);
                }
            }
            upper(BUCKETS - 1)
        };
        let max = counts
            .iter()
            .rposition(|&c| c > 0)
            .map(upper)
            .unwrap_or(0.0);
        let mean = if total == 0 {
            0.0
        } else {
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / total as f64
        };
        StatsSnapshot {
            workers: self.workers,
            queued,
            running,
            submitted: self.submitted.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            stolen: self.stolen.load(Ordering::Relaxed),
            wakeups: self.wakeups.load(Ordering::Relaxed),
            spins: self.spins.load(Ordering::Relaxed),
            spin_hits: self.spin_hits.load(Ordering::Relaxed),
            latency: (total, mean, pct(0.5), pct(0.9), pct(0.99), max),
        }
    }
}
