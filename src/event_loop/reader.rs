//! The hook a native reader callback implements, so the reactor can treat it
//! specially without knowing its type. `transport` installs the hook for its
//! readers (`transport::register`); the loop asks it once per `add_reader`, not
//! per event, and keeps the answer on the I/O handle.
use pyo3::prelude::*;
use std::sync::OnceLock;

/// Runs a reader callback's work without calling the object (no `tp_call`, no
/// argument parsing); same effect as `callback()`.
pub(crate) type DirectRead = fn(Python<'_>, &Bound<'_, PyAny>) -> PyResult<()>;

/// What the loop may assume of one reader callback.
#[derive(Clone, Copy, Default)]
pub(crate) struct NativeReader {
    /// It reads until the descriptor is known drained, or re-arms itself when it
    /// may have left data unread (`LoopCore::rearm_fd`): the reactor then skips the
    /// re-arm it otherwise makes after each event.
    pub(crate) drains_itself: bool,
    /// A direct call for it, if it has one.
    pub(crate) direct: Option<DirectRead>,
}

/// Classifies a reader callback (`None`: an ordinary callable).
pub(crate) type Classify = fn(&Bound<'_, PyAny>) -> Option<NativeReader>;

static CLASSIFY: OnceLock<Classify> = OnceLock::new();

/// Installs the classifier (once per process; later calls are ignored).
pub(crate) fn install(classify: Classify) {
    let _ = CLASSIFY.set(classify);
}

/// What the installed classifier says of `callback`.
pub(crate) fn classify(callback: &Bound<'_, PyAny>) -> NativeReader {
    CLASSIFY.get().and_then(|f| f(callback)).unwrap_or_default()
}
