//! The main loop core: ready queue, timer heap, mio reactor, thread-safe waker.
//! (Named `event_loop` because `loop` is a Rust keyword.)
mod call_soon;
mod core;
mod handle;
mod objref;
mod python;
mod reactor;
pub(crate) mod reader;
mod ready;
mod run;
pub(crate) mod sources;
mod timer_heap;
mod timers;

pub(crate) use self::core::LoopCore;
pub(crate) use handle::{Handle, TimerHandle};

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LoopCore>()?;
    call_soon::install(m.py())?;
    m.add_class::<Handle>()?;
    m.add_class::<TimerHandle>()?;
    Ok(())
}
