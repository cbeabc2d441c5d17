"""interloop: an asyncio event loop in Rust, with async work on every core.

    import interloop
    interloop.run(main())                     # or:
    asyncio.run(main(), loop_factory=interloop.new_event_loop)
"""
from ._interloop import __version__
from ._loop import EventLoopPolicy, Loop, install, new_event_loop, run

__all__ = [
    "__version__",
    "EventLoopPolicy",
    "Loop",
    "install",
    "new_event_loop",
    "run",
]
