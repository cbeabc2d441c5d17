"""The Python face of interloop's event loop.

`Loop` puts the native core (`_interloop.LoopCore`: ready queue, timers, mio reactor,
thread-safe waker, all in Rust) in front of asyncio's own Unix selector loop in the
method resolution order. Everything on the hot path resolves to the native core; the
long tail of the asyncio API (exception handlers, executors, async generators,
sockets, transports, signals, subprocesses) is inherited from asyncio and runs on top
of the native reactor, because asyncio's inherited code reaches the reactor only
through the methods the core overrides (`_add_reader`, `_add_callback`, `call_soon`,
`call_at`, `_write_to_self`, ...). See docs/design.md.
"""
from __future__ import annotations

import asyncio
import inspect
from asyncio import constants, sslproto
import selectors
import sys
import threading
from asyncio import base_events, events, format_helpers, unix_events
from asyncio.log import logger
from collections.abc import Mapping

from . import _interloop
from ._transports import (
    DatagramTransport,
    ReadPipeTransport,
    SocketTransport,
    WritePipeTransport,
)

__all__ = ("Loop", "new_event_loop", "run", "EventLoopPolicy", "install")

_TimerHandle = _interloop.TimerHandle

# 3.13 added a keyword-only `debug` to format_helpers._format_callback_source.
_FORMAT_TAKES_DEBUG = "debug" in inspect.signature(
    format_helpers._format_callback_source
).parameters


def _format_callback(handle) -> str:
    loop = handle._loop
    if _FORMAT_TAKES_DEBUG:
        debug = loop.get_debug() if loop is not None else False
        return format_helpers._format_callback_source(
            handle._callback, handle._args, debug=debug
        )
    return format_helpers._format_callback_source(handle._callback, handle._args)


# ---- helpers the native core calls (slow paths only) ------------------------------

def _extract_stack():
    """Creation traceback of a handle, in debug mode (frame 1 is the caller of the
    native `call_soon`, there being no Python frame for native code)."""
    return format_helpers.extract_stack(sys._getframe(1))


def _handle_repr_info(handle) -> list[str]:
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if isinstance(handle, _TimerHandle):
        info.append(f"when={handle._when}")
    if handle._callback is not None:
        info.append(_format_callback(handle))
    tb = handle._source_traceback
    if tb:
        frame = tb[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return info


def _handle_repr(handle) -> str:
    return "<{}>".format(" ".join(_handle_repr_info(handle)))


def _report_callback_error(loop, handle, exc) -> None:
    context = {
        "message": f"Exception in callback {_format_callback(handle)}",
        "exception": exc,
        "handle": handle,
    }
    tb = handle._source_traceback
    if tb:
        context["source_traceback"] = tb
    loop.call_exception_handler(context)


# ---- the loop ---------------------------------------------------------------------

class _ReactorView(selectors.BaseSelector):
    """What asyncio's inherited code sees as `loop._selector`: a read-only view of the
    native reactor's registrations (transport reprs ask it whether a descriptor is
    polled). Registration goes through the loop's `_add_reader` and friends."""

    def __init__(self, core):
        self._core = core
        self._closed = False

    def get_key(self, fileobj):
        if self._closed:
            raise RuntimeError("Selector is closed")
        reader, writer = self._core._io_handles(fileobj)
        if reader is None and writer is None:
            raise KeyError(f"{fileobj!r} is not registered")
        events_ = (selectors.EVENT_READ if reader is not None else 0) | (
            selectors.EVENT_WRITE if writer is not None else 0
        )
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return selectors.SelectorKey(fileobj, fd, events_, (reader, writer))

    def get_map(self):
        return _ReactorMap(self)

    def register(self, fileobj, events, data=None):
        raise NotImplementedError("register through loop.add_reader/add_writer")

    def unregister(self, fileobj):
        raise NotImplementedError("unregister through loop.remove_reader/remove_writer")

    def select(self, timeout=None):
        raise NotImplementedError("interloop's reactor is polled natively")

    def close(self):
        self._closed = True
        self._core = None


class _ReactorMap(Mapping):
    def __init__(self, view):
        self._view = view

    def __getitem__(self, fileobj):
        return self._view.get_key(fileobj)

    def get(self, fileobj, default=None):
        try:
            return self._view.get_key(fileobj)
        except (KeyError, ValueError):
            return default

    def __iter__(self):
        return iter(self._view._core._io_fds())

    def __len__(self):
        return self._view._core._queue_sizes()[2]


# The attributes asyncio's loop classes (BaseEventLoop, BaseSelectorEventLoop,
# _UnixSelectorEventLoop; 3.12 and 3.13) set on the instance, less those the native
# core provides itself. `Loop` keeps them in slots, so that the instance's __dict__
# is never made: CPython then specializes `loop.call_soon(...)` and every other
# method lookup on the loop (LOAD_ATTR_METHOD_LAZY_DICT), and asyncio's C tasks
# find `loop.call_soon` without a dictionary lookup. An attribute set that is not in
# this list still works; it only makes the dict and loses that speed-up.
_ASYNCIO_INSTANCE_ATTRIBUTES = (
    "_asyncgens", "_asyncgens_shutdown_called", "_clock_resolution", "_closed",
    "_coroutine_origin_tracking_enabled", "_coroutine_origin_tracking_saved_depth",
    "_csock", "_current_handle", "_debug", "_default_executor", "_exception_handler",
    "_executor_shutdown_called", "_internal_fds", "_old_agen_hooks", "_ready",
    "_scheduled", "_selector", "_signal_handlers", "_ssock", "_stopping",
    "_task_factory", "_thread_id", "_timer_cancelled_count", "_transports",
    "_unix_server_sockets", "slow_callback_duration",
)


def _no_op(_future):
    pass


def _probe_c_callers(loop):
    """Lets the core learn how asyncio's C futures and tasks call `call_soon`
    (src/event_loop/call_soon.rs): one C future, one done-callback, resolved while the core
    listens. Without the C accelerator there is nothing to learn."""
    c_future = getattr(asyncio.futures, "_CFuture", None)
    if c_future is None or asyncio.Future is not c_future:
        return
    future = c_future(loop=loop)
    future.add_done_callback(_no_op)
    loop._probe_c_callers(future.set_result)


class Loop(_interloop.LoopCore, unix_events.SelectorEventLoop):
    """An asyncio event loop whose core runs in Rust.

    A drop-in for asyncio's loop: use it through `interloop.run(main())`,
    `asyncio.run(main(), loop_factory=interloop.new_event_loop)`, or the policy.
    """

    __slots__ = tuple(
        name for name in _ASYNCIO_INSTANCE_ATTRIBUTES
        if not any(name in vars(k) for k in (_interloop.LoopCore, *unix_events.SelectorEventLoop.__mro__))
    )

    def __init__(self, selector=None):
        if selector is not None:
            raise TypeError("interloop.Loop polls with its own reactor; selector must be None")
        super().__init__(_ReactorView(self))
        _probe_c_callers(self)

    def _make_self_pipe(self):
        super()._make_self_pipe()
        # The self-pipe only carries signal wake-ups: the core need not poll for it
        # between every two callbacks (call_soon_threadsafe uses a native waker).
        self._set_internal_fd(self._ssock.fileno())

    def _close_self_pipe(self):
        self._set_internal_fd(-1)
        super()._close_self_pipe()

    # -- running and stopping ------------------------------------------------------
    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_core()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        try:
            super().close()
        finally:
            self._core_close()

    # -- transports ------------------------------------------------------------------
    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        self._ensure_fd_no_transport(sock)
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    def _make_ssl_transport(
        self, rawsock, protocol, sslcontext, waiter=None, *, server_side=False,
        server_hostname=None, extra=None, server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        # asyncio's TLS (sslproto) over our socket transport, as asyncio's own loop
        # layers it over its socket transport.
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    # -- called by the native core ---------------------------------------------------
    def _handle_callback_exception(self, handle, exc):
        _report_callback_error(self, handle, exc)

    def _warn_slow_callback(self, handle, dt):
        logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), dt)

    def _timer_handle_cancelled(self, handle):
        # asyncio's TimerHandle calls this; ours count cancellations natively.
        pass


def new_event_loop() -> Loop:
    """Return a new interloop event loop."""
    return Loop()


def run(main, *, debug=None, loop_factory=None, **run_kwargs):
    """Run a coroutine on a new interloop loop and return its result, as `asyncio.run`."""
    wire = sys.modules.get("interloop._wire")
    if wire is not None and wire._loading_main is not None:
        # A pool worker runs the caller's script to find a function: the script's
        # unguarded entry point must not start the program again there.
        if asyncio.iscoroutine(main):
            main.close()
        wire.check_not_loading_main("interloop.run()")
    if events._get_running_loop() is not None:
        # Checked before asyncio.Runner makes a loop, as asyncio.run does.
        raise RuntimeError("interloop.run() cannot be called from a running event loop")
    if loop_factory is None:
        loop_factory = new_event_loop
    with asyncio.Runner(debug=debug, loop_factory=loop_factory, **run_kwargs) as runner:
        return runner.run(main)


# asyncio's own Unix policy, so that what it offers besides loops works the same on
# ours: on 3.12/3.13 the (deprecated) child watcher API, `asyncio.set_child_watcher`/
# `get_child_watcher` (interloop's loop reaps its own children with pidfds and does
# not need a watcher; one that is set is kept, as asyncio's policy keeps it).
_BasePolicy = (
    getattr(unix_events, "_UnixDefaultEventLoopPolicy", None)
    or getattr(events, "BaseDefaultEventLoopPolicy", None)
    or getattr(events, "_BaseDefaultEventLoopPolicy")
)


class EventLoopPolicy(_BasePolicy):
    """An event loop policy whose loops are interloop loops (asyncio 3.12/3.13 style).

    Policies are deprecated from Python 3.14 on; prefer `interloop.run` or
    `asyncio.run(..., loop_factory=interloop.new_event_loop)`.
    """

    def __init__(self):
        if sys.version_info >= (3, 14):
            import warnings

            warnings.warn(
                "interloop.EventLoopPolicy is deprecated: asyncio deprecates policies "
                "from Python 3.14; use interloop.run() or asyncio.run(..., "
                "loop_factory=interloop.new_event_loop)",
                DeprecationWarning,
                stacklevel=2,
            )
        super().__init__()

    def _loop_factory(self):
        return new_event_loop()

    def __repr__(self):
        return f"<interloop.EventLoopPolicy at {id(self):#x}>"


def install() -> None:
    """Make interloop the loop of `asyncio.run()` and `asyncio.new_event_loop()` by
    installing `EventLoopPolicy` (deprecated with policies from Python 3.14)."""
    if sys.version_info >= (3, 14):
        import warnings

        warnings.warn(
            "interloop.install() is deprecated: asyncio deprecates policies from "
            "Python 3.14; use interloop.run() instead",
            DeprecationWarning,
            stacklevel=2,
        )
        import warnings as _w

        with _w.catch_warnings():
            _w.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(EventLoopPolicy())
        return
    asyncio.set_event_loop_policy(EventLoopPolicy())
