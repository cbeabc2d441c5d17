//! Completions flowing back to the caller, and the caller's handle on a pool.
//!
//! Workers push finished jobs into [`completions::Completions`] (a mutex-guarded
//! vector) and write its eventfd only when the vector goes from empty to non-empty,
//! so a burst of results costs one wake-up. The caller's loop drains the whole batch
//! in one call: with asyncio that is an `add_reader` callback; interloop's own loop
//! drains it natively each iteration instead (the pool attaches the queue to the
//! loop as a completion source, `PoolCore.attach_loop`, and producers then wake the
//! loop directly: no eventfd write, no reader callback).

mod completions;
mod core;
mod fill;
mod frames;

pub(crate) use self::core::register;
