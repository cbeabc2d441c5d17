"""interloop: an asyncio event loop in Rust, with async work on every core."""
from ._interloop import __version__  # noqa: F401
