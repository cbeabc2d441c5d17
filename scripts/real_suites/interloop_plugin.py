"""pytest plugin that runs another project's test suite on interloop's loop.

Loaded with ``-p interloop_plugin`` (its directory on PYTHONPATH) when
``INTERLOOP_SUITE_LOOP=interloop``; with any other value it only records which loop
classes the suite created, so the asyncio reference run goes through the same code.

- asyncio's policy becomes interloop's, so ``asyncio.new_event_loop()`` (aiohttp's
  ``pyloop`` fixture, anyio's asyncio runner used by uvicorn's tests, ``asyncio.Runner``)
  makes an ``interloop.Loop``;
- uvicorn's ``--loop auto`` (the default of ``uvicorn.Config``) is pointed at interloop,
  as ``--loop interloop:new_event_loop`` would.

``INTERLOOP_SUITE_EXCLUDE`` and ``INTERLOOP_SUITE_SELECT`` (node-id globs, one a line)
deselect tests: every test matching an exclusion, and in a file named by a selection
pattern every test matching none of them.

At the end of the session the plugin writes to the file named by
``INTERLOOP_SUITE_OUT`` each test's outcome (``passed``, ``failed`` or ``skipped``;
a failure in any phase counts) and the loop classes the suite made, so the runner
can compare runs and check that the suite really ran on the loop it was meant to.
"""
from __future__ import annotations

import asyncio
import collections
import fnmatch
import json
import os

_seen: collections.Counter[str] = collections.Counter()
_outcomes: dict[str, str] = {}
_ON_INTERLOOP = os.environ.get("INTERLOOP_SUITE_LOOP") == "interloop"


def interloop_loop_factory(use_subprocess: bool = False):
    """uvicorn loop setup (the signature of its ``LOOP_FACTORIES`` entries)."""
    import interloop

    return interloop.new_event_loop


def _count_loops(cls: type) -> None:
    # Every loop (interloop's included) runs BaseEventLoop.__init__, whatever made it.
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        _seen[f"{type(self).__module__}.{type(self).__qualname__}"] += 1
        init(self, *args, **kwargs)

    cls.__init__ = __init__


def pytest_configure(config):
    _count_loops(asyncio.BaseEventLoop)
    if not _ON_INTERLOOP:
        return
    import interloop

    interloop.install()
    try:
        import uvicorn.config
    except ImportError:
        return
    uvicorn.config.LOOP_FACTORIES["auto"] = "interloop_plugin:interloop_loop_factory"


def _patterns(var: str) -> list[str]:
    return [p for p in os.environ.get(var, "").splitlines() if p.strip()]


def pytest_collection_modifyitems(config, items):
    exclude = _patterns("INTERLOOP_SUITE_EXCLUDE")
    select = _patterns("INTERLOOP_SUITE_SELECT")
    select_files = {p.split("::", 1)[0] for p in select}
    keep, drop = [], []
    for item in items:
        node = item.nodeid
        out = any(fnmatch.fnmatchcase(node, p) for p in exclude) or (
            node.split("::", 1)[0] in select_files
            and not any(fnmatch.fnmatchcase(node, p) for p in select)
        )
        (drop if out else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_logreport(report):
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped and _outcomes.get(report.nodeid) != "failed":
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_unconfigure(config):
    out = os.environ.get("INTERLOOP_SUITE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"outcomes": _outcomes, "loops": dict(_seen)}, f)
