//! A server group: the workers of one `serve` run. Shared by every interpreter of
//! the process through a registry of ids (like channels): the supervisor stops
//! the group and reads its counters; each worker registers its waker and counts
//! into its own slot. No Python object is touched here.
use crate::sched::Stats;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One worker's counters (written by that worker only).
pub struct WorkerStats {
    /// `completed`: responses finished; `failed`: requests answered with a server
    /// error by the server itself (app exception, 5xx it chose); latency: request
    /// head parsed to response finished.
    pub stats: Stats,
    pub inflight: AtomicU64,
    pub connections: AtomicU64,
}

pub struct Group {
    pub id: u64,
    stopping: AtomicBool,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    pub workers: Vec<WorkerStats>,
    /// The TLS configuration every worker's connections use (`--ssl-certfile`),
    /// set before the workers start.
    tls: OnceLock<Arc<rustls::ServerConfig>>,
}

impl Group {
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Asks every worker to shut down gracefully (any thread).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for w in self.wakers.lock().iter() {
            let _ = w.wake();
        }
    }

    /// A worker's poll wakes up through `w` when the group stops. A worker that
    /// registers after `stop` is woken at once.
    pub fn add_waker(&self, w: Arc<mio::Waker>) {
        let mut g = self.wakers.lock();
        if self.stopping() {
            let _ = w.wake();
        }
        g.push(w);
    }

    /// Sets the TLS configuration (once, before the workers start).
    pub fn set_tls(&self, cfg: Arc<rustls::ServerConfig>) -> bool {
        self.tls.set(cfg).is_ok()
    }

    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.get().cloned()
    }

    pub fn remove_waker(&self, w: &Arc<mio::Waker>) {
        self.wakers.lock().retain(|x| !Arc::ptr_eq(x, w));
    }
}

static REGISTRY: OnceLock<Mutex<HashMap<u64, Arc<Group>>>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> &'static Mutex<HashMap<u64, Arc<Group>>> {
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

pub fn create(workers: usize) -> Arc<Group> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let g = Arc::new(Group {
        id,
        stopping: AtomicBool::new(false),
        wakers: Mutex::new(Vec::new()),
        tls: OnceLock::new(),
        workers: (0..workers.max(1))
            .map(|_| WorkerStats {
                stats: Stats::new(1),
                inflight: AtomicU64::new(0),
                connections: AtomicU64::new(0),
            })
            .collect(),
    });
    registry().lock().insert(id, g.clone());
    g
}

pub fn get(id: u64) -> Option<Arc<Group>> {
    registry().lock().get(&id).cloned()
}

/// Forgets the group (workers that still hold it keep it alive).
pub fn remove(id: u64) -> bool {
    registry().lock().remove(&id).is_some()
}
