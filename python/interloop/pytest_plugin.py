"""interloop's pytest plugin (registered through the ``pytest11`` entry point).

It does nothing unless one of its options is given, so installing interloop changes
nobody's test runs:

``--interloop``
    Async tests and fixtures run on interloop's loop: pytest-asyncio's tests through
    its ``pytest_asyncio_loop_factories`` hook, and everything that makes its loop
    through asyncio's policy (``unittest.IsolatedAsyncioTestCase`` without a
    ``loop_factory``, AnyIO's asyncio backend without one, ``asyncio.run``).

``--interloop-workers N|auto``
    Runs the tests on N runners of this process (``auto``: one per core): the main
    interpreter, which collects and reports, and N-1 own-GIL sub-interpreters; see
    ``interloop._pytest``.

``--interloop-main run|report``
    Whether the main interpreter runs tests too (``run``, the default) or only
    collects and reports, the N workers all being sub-interpreters (``report``).

``--interloop-dist load|loadscope|loadfile``
    How tests are handed out: one at a time to whichever worker is free (``load``),
    or a module's (or class's) tests together (``loadscope``), or a file's (``loadfile``).

This module is imported by every pytest run where interloop is installed: it must
stay cheap and import nothing of interloop's until an option asks for it.
"""
from __future__ import annotations

import os
import sys

import pytest

_DISTS = ("load", "loadscope", "loadfile")


def _workers_on_command_line() -> bool:
    """Whether this process's command line (or PYTEST_ADDOPTS) asks for workers:
    read before pytest parses it, so that the assertion rewriting of the plugins
    imported after this one is recorded for the workers (``_pytest/rewrite.py``).
    The ini file's addopts and ``pytest.main([...])`` are not seen here: then the
    recording starts at configuration, and workers rewrite the rest themselves."""
    words = sys.argv[1:] + os.environ.get("PYTEST_ADDOPTS", "").split()
    return any(w == "--interloop-workers" or w.startswith("--interloop-workers=")
               for w in words)


def _in_pool_worker() -> bool:
    from ._wire import IN_WORKER  # (imported with the package already)

    return IN_WORKER


_recorder = None
if _workers_on_command_line() and not _in_pool_worker():
    # (a worker's interpreter sees the same sys.argv; its session records nothing)
    from ._pytest.rewrite import Recorder

    _recorder = Recorder()
    if not _recorder.install():
        _recorder = None


def _workers(value: str) -> int:
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1))
    try:
        n = int(value)
    except ValueError:
        raise pytest.UsageError(
            f"--interloop-workers: expected a number of workers or 'auto', got {value!r}"
        ) from None
    if n < 0:
        raise pytest.UsageError(f"--interloop-workers: must be >= 0, got {n}")
    return n


def pytest_addoption(parser):
    group = parser.getgroup("interloop", "interloop (asyncio loop and sub-interpreter workers)")
    group.addoption(
        "--interloop", action="store_true", default=False,
        help="run async tests and fixtures on interloop's event loop "
             "(pytest-asyncio, asyncio's policy); workers keep asyncio's loop",
    )
    group.addoption(
        "--interloop-workers", dest="interloop_workers", default=None, metavar="N",
        help="run tests on N runners in this process ('auto': one per core): the main "
             "interpreter and N-1 own-GIL sub-interpreters, all taking tests from one "
             "queue (0 or 1: in the main interpreter as usual)",
    )
    group.addoption(
        "--interloop-main", dest="interloop_main", default="run", choices=("run", "report"),
        help="with --interloop-workers: the main interpreter runs tests too (run, the "
             "default), or only collects and reports while N sub-interpreters run them "
             "(report)",
    )
    group.addoption(
        "--interloop-dist", dest="interloop_dist", default="load", choices=_DISTS,
        help="load: hand tests one by one to free runners (default); loadscope: a "
             "module's or class's tests go to one runner; loadfile: a file's tests do",
    )


def in_worker(config) -> bool:
    """True inside a worker's own session (``config.workerinput`` as xdist sets it)."""
    return bool(getattr(config, "workerinput", {}).get("interloop_worker"))


class _InterloopLoop:
    """Registered with ``--interloop``: interloop's loop for pytest-asyncio and asyncio's policy."""

    def __init__(self):
        self._old_policy = None

    def install(self):
        import asyncio

        import interloop

        self._old_policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(interloop.EventLoopPolicy())

    def uninstall(self):
        import asyncio

        if self._old_policy is not None:
            asyncio.set_event_loop_policy(self._old_policy)
            self._old_policy = None

    # pytest-asyncio >= 1.3 asks this hook for loop factories; one factory keeps the
    # test ids unchanged. Optional: without pytest-asyncio the hook does not exist.
    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(self, config, item):
        import interloop

        return {"interloop": interloop.new_event_loop}


def pytest_configure(config):
    if in_worker(config):
        # Inside a worker: the loop stays asyncio's (interloop's native module
        # cannot load in a sub-interpreter), and there is no nested pool.
        return
    if config.getoption("interloop"):
        plugin = _InterloopLoop()
        plugin.install()
        config.pluginmanager.register(plugin, "interloop-loop")
    global _recorder
    recorder, _recorder = _recorder, None
    value = config.getoption("interloop_workers")
    n = 0 if value is None else _workers(value)
    if n == 0 or (n == 1 and config.getoption("interloop_main") == "run"):
        if recorder is not None:
            recorder.uninstall()
        return  # the main interpreter alone: a serial run
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--interloop-workers and pytest-xdist's -n cannot be combined")
    if getattr(config.option, "usepdb", False) or getattr(config.option, "trace", False):
        raise pytest.UsageError("--interloop-workers cannot be combined with --pdb or --trace")
    from ._pytest.controller import Controller

    if recorder is None:
        from ._pytest.rewrite import Recorder

        recorder = Recorder()
        recorder.install()
    config.pluginmanager.register(Controller(config, n, recorder), "interloop-controller")


def pytest_unconfigure(config):
    plugin = config.pluginmanager.get_plugin("interloop-loop")
    if plugin is not None:
        plugin.uninstall()
        config.pluginmanager.unregister(plugin)
