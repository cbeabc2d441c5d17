"""Shared fixtures for the differential loop suite.

Every behaviour test that takes the ``loop`` (or ``loop_kind`` / ``new_loop``)
fixture runs twice: once on asyncio's own loop, once on interloop's. A test
that passes on asyncio and fails on interloop is a compatibility bug.

Fixtures
--------
``loop_kind``
    ``"asyncio"`` or ``"interloop"``: the parametrization itself. A module whose
    every test runs on both loops (pool, channels, buffers) uses it for all of
    them with ``pytestmark = pytest.mark.usefixtures("loop_kind")`` and runs its
    coroutines with ``run(main())`` (from this file) on the current kind of loop.
``new_loop``
    A zero-argument factory for a fresh, unset loop of that kind. Use it for
    tests that need a loop of their own (closed loops, ``asyncio.run``...).
    Loops it makes are closed at teardown if the test did not close them.
``loop``
    A fresh loop of that kind, set as the current loop, closed at teardown.
    It carries a guard exception handler (uvloop's tearDown approach): any
    call to ``call_exception_handler`` fails the test at teardown. A test that
    *expects* the exception handler to be called installs its own handler
    (``loop.set_exception_handler(...)``), which replaces the guard.

Markers
-------
``interloop_xfail(reason, **params)``
    The test is a known interloop bug: xfail (strict) on interloop only,
    still a plain test on asyncio. With ``params`` (e.g. ``debug=True``),
    only the parametrizations with those values are marked.
"""
from __future__ import annotations

import asyncio
import gc

import pytest

LOOP_KINDS = ("asyncio", "interloop")


def _dump_this_interpreters_stacks(terminal):
    """pytest-timeout's stack dump, limited to this interpreter's threads.

    Its own dump calls ``sys._current_frames()``, which on 3.13 also walks the
    frames of pool workers' threads in other interpreters without their GILs; one
    such dump ended in a double free. faulthandler walks only this interpreter."""
    import faulthandler
    import sys

    terminal.sep("+", "Timeout: stacks of this interpreter's threads (stderr)")
    sys.stdout.flush()
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)


try:
    import pytest_timeout
except ImportError:  # pragma: no cover - pytest-timeout is a test dependency
    pass
else:
    pytest_timeout.dump_stacks = _dump_this_interpreters_stacks


def make_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind``; not set as the current loop."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    import interloop

    return interloop.new_event_loop()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "interloop_xfail(reason, **params): known interloop bug; strict xfail on "
        "interloop only (and only for the given parameter values)",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("interloop_xfail")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("loop_kind") != "interloop":
            continue
        only = {k: v for k, v in marker.kwargs.items() if k != "reason"}
        if any(callspec.params.get(k) != v for k, v in only.items()):
            continue
        reason = marker.args[0] if marker.args else marker.kwargs["reason"]
        item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


_current_kind = None  # the running test's loop_kind, for run()


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request) -> str:
    global _current_kind
    _current_kind = request.param
    yield request.param
    _current_kind = None


def run(coro):
    """``asyncio.run(coro)`` on a new loop of the running test's ``loop_kind``."""
    assert _current_kind is not None, "run() needs the loop_kind fixture"
    return asyncio.run(coro, loop_factory=lambda: make_loop(_current_kind))


@pytest.fixture
def new_loop(loop_kind):
    made = []

    def factory() -> asyncio.AbstractEventLoop:
        loop = make_loop(loop_kind)
        made.append(loop)
        return loop

    yield factory
    for loop in made:
        if not loop.is_running() and not loop.is_closed():
            loop.close()


class UnexpectedExceptionHandlerCall(AssertionError):
    pass


@pytest.fixture
def loop(loop_kind):
    loop = make_loop(loop_kind)
    asyncio.set_event_loop(loop)
    unexpected = []

    def guard(loop, context):
        unexpected.append(context)

    loop.set_exception_handler(guard)
    try:
        yield loop
    finally:
        try:
            if not loop.is_closed():
                # Let pending close callbacks (transports, asyncgens) run.
                loop.run_until_complete(asyncio.sleep(0))
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()
        finally:
            asyncio.set_event_loop(None)
            # Destructors of leftover tasks/futures report through the
            # handler too: collect now, while the guard is still recording.
            gc.collect()
    if unexpected:
        lines = "\n".join(repr(c) for c in unexpected)
        raise UnexpectedExceptionHandlerCall(
            f"unexpected call_exception_handler call(s) on {loop_kind}:\n{lines}"
        )
