"""interloop: an asyncio event loop in Rust, with async work on every core.

    import interloop
    interloop.run(main())                     # or:
    asyncio.run(main(), loop_factory=interloop.new_event_loop)

    async with interloop.Pool() as pool:      # async work in own-GIL sub-interpreters
        r = await pool.run(mymod.crunch, 10)
"""
from ._interloop import __version__
from ._channel import Channel, ChannelClosed, ChannelEmpty, ChannelFull
from ._loop import EventLoopPolicy, Loop, install, new_event_loop, run
from ._executor import InterpreterExecutor
from ._pool import Pool, RemoteError, spawn

__all__ = [
    "__version__",
    "Channel",
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelFull",
    "EventLoopPolicy",
    "InterpreterExecutor",
    "Loop",
    "Pool",
    "RemoteError",
    "install",
    "new_event_loop",
    "run",
    "spawn",
]
