"""The two-loop parametrization of the pool, channel and buffer tests.

``from twoloops import loop_kind, run`` in a test module makes every test in it run
twice: on asyncio's own loop (pool completions and channel wake-ups through an
eventfd and ``add_reader``) and on interloop's (drained natively by the loop).
Tests call ``run(main())`` to run their coroutine on the current kind of loop.
"""
import asyncio

import pytest

import interloop

_factory = None


@pytest.fixture(autouse=True, params=["asyncio", "interloop"])
def loop_kind(request):
    global _factory
    _factory = asyncio.new_event_loop if request.param == "asyncio" else interloop.new_event_loop
    yield request.param
    _factory = None


def new_loop():
    """A fresh loop of the current kind."""
    return _factory()


def run(coro):
    return asyncio.run(coro, loop_factory=_factory)
