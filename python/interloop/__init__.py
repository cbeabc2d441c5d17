"""interloop: an asyncio event loop in Rust, with async work on every core.

    import interloop
    interloop.run(main())                     # or:
    asyncio.run(main(), loop_factory=interloop.new_event_loop)

    async with interloop.Pool() as pool:      # async work in own-GIL sub-interpreters
        r = await pool.run(mymod.crunch, 10)

    async with interloop.DaskPool("tcp://scheduler:8786") as pool:   # the same, on Dask
        r = await pool.run(mymod.crunch, 10)
"""
from ._interloop import __version__
from ._channel import Channel, ChannelClosed, ChannelEmpty, ChannelFull
from ._loop import EventLoopPolicy, Loop, install, new_event_loop, run
from ._executor import InterpreterExecutor
from ._pool import Pool, RemoteError, spawn


def serve(app, **options):
    """Serves the ASGI app ``"module:attribute"`` with interloop's HTTP/1.1 server
    on every core (own-GIL sub-interpreters) until SIGINT/SIGTERM; returns the exit
    status. Options are uvicorn's (``interloop serve --help``)."""
    from ._serve.run import serve as _serve
    return _serve(app, **options)


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
    "serve",
    "spawn",
]


def __getattr__(name):
    # DaskPool needs the optional `distributed`: imported on first use only (and kept
    # out of __all__, so that `from interloop import *` does not import it).
    if name == "DaskPool":
        from ._dask import DaskPool
        globals()["DaskPool"] = DaskPool
        return DaskPool
    raise AttributeError(f"module 'interloop' has no attribute {name!r}")
