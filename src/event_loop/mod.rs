//! The main loop core: ready queue, timer heap, mio reactor, thread-safe waker.
//! (Named `event_loop` because `loop` is a Rust keyword.)
mod core;
pub(crate) mod fast;
mod handle;
mod objref;
pub(crate) mod reader;
pub(crate) mod sources;
mod timers;

pub(crate) use self::core::LoopCore;
pub(crate) use handle::{Handle, TimerHandle};

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LoopCore>()?;
    fast::install(m.py())?;
    m.add_class::<Handle>()?;
    m.add_class::<TimerHandle>()?;
    Ok(())
}
