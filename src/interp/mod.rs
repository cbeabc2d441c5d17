//! Raw-FFI layer for own-GIL sub-interpreters: each worker thread creates one
//! interpreter, installs the worker-side native module in it and runs the Python
//! driver (`python/interloop/_worker.py`, after `_wire.py`) until shutdown.
//!
//! Nothing here may use PyO3's safe API: PyO3's statics (type objects, reference
//! pool, `GILOnceCell`s) are process-wide and belong to the main interpreter. Only
//! bytes and Rust-owned data cross between interpreters.

mod ctx;
mod frames;
mod module;
mod worker;

pub(crate) use ctx::interrupt;
pub(crate) use frames::{current_frames, layout_ok as frames_layout_ok};
pub(crate) use module::init_module_def;
pub(crate) use worker::{worker_main, WorkerConfig, DRIVER_MODULES};
