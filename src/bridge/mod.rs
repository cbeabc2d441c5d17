//! Completions flowing back to the caller, and the caller's handle on a pool.
//!
//! Workers push finished jobs into [`Completions`] (a mutex-guarded vector) and
//! write its eventfd only when the vector goes from empty to non-empty, so a burst
//! of results costs one wake-up. The caller's loop drains the whole batch in one
//! call ([`Completions::drain`]): with asyncio that is an `add_reader` callback;
//! interloop's own loop drains it natively each iteration instead (it attaches the
//! `Arc<Completions>` from [`PoolCore::completions`] as a completion source, and
//! producers then wake the loop directly: no eventfd write, no reader callback).

mod completions;
mod core;
mod fill;

pub(crate) use self::core::register;
