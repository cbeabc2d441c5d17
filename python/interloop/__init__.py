"""interloop: an asyncio event loop in Rust, with async work on every core."""
from ._interloop import __version__  # noqa: F401

# --- parallel engine (issue 4): sub-interpreter worker pools ---------------------
from ._pool import InterpreterExecutor, Pool, RemoteError, spawn  # noqa: E402,F401
# --- end parallel engine ---------------------------------------------------------
