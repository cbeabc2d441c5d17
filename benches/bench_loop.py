"""Loop overhead: the cost of the event loop's own machinery.

Each case gets a fresh loop in a fresh process, warms it up on a small batch, collects
garbage, then times only the workload: wall time (`time.perf_counter`, the reported
figure) and, beside it, the process's CPU time (`cpu_s`), which other work on a shared
machine disturbs much less.
"""
from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.metadata
import sys
from time import perf_counter, process_time
from typing import Callable, Dict

from harness import Case, Suite

# The loops compared, by the module that provides them; asyncio's own loop on Linux is
# the selector loop that `asyncio.run` uses.
LOOPS = ("asyncio", "uvloop", "rloop", "interloop")
# Issue 2's goal on the call_soon chain, create_task + await and sleep(0).
ISSUE_TARGET = ("rloop", 1.2)
WARMUP_FRACTION = 20  # warm up on n // 20 operations before the timed run

Timing = Dict[str, float]  # {"value": wall seconds, "cpu_s": CPU seconds}


class Stopwatch:
    """Wall time and this process's CPU time (all its threads) over the same span."""

    def __init__(self) -> None:
        self._cpu = process_time()
        self._wall = perf_counter()

    def read(self) -> Timing:
        wall = perf_counter() - self._wall
        return {"value": wall, "cpu_s": process_time() - self._cpu}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name not in LOOPS:
        raise ValueError(f"unknown loop {name!r}; known: {', '.join(LOOPS)}")
    module = importlib.import_module(name)
    factory = getattr(module, "new_event_loop", None)
    if factory is None:
        raise RuntimeError(f"{name} has no new_event_loop (yet)")
    return factory


def probe_loop(name: str) -> str:
    """Starts and stops the loop once; returns its version."""
    loop = loop_factory(name)()
    try:
        async def nothing() -> int:
            await asyncio.sleep(0)
            return 42

        if loop.run_until_complete(nothing()) != 42:
            raise RuntimeError("a trivial coroutine returned the wrong value")
    finally:
        loop.close()
    if name == "asyncio":
        return f"CPython {sys.version.split()[0]}"
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = getattr(sys.modules[name], "__version__", "?")
    if name == "interloop":
        version += " (this checkout)"
    return version


def on_loop(workload: Callable[[asyncio.AbstractEventLoop, int], Timing]):
    """Turns `workload(loop, n) -> Timing` into a case's `measure(variant, n)`."""

    def measure(variant: str, n: int) -> Timing:
        loop = loop_factory(variant)()
        try:
            workload(loop, max(1, n // WARMUP_FRACTION))
            gc.collect()
            return workload(loop, n)
        finally:
            loop.close()

    measure.__name__ = workload.__name__
    return measure


def time_coroutine(loop: asyncio.AbstractEventLoop, coro_fn) -> Timing:
    """Runs `coro_fn()` on the loop, timing it from inside the loop (so that starting
    and stopping the loop is not counted)."""

    async def timed() -> Timing:
        watch = Stopwatch()
        await coro_fn()
        return watch.read()

    return loop.run_until_complete(timed())


# --------------------------------------------------------------------------- workloads


def call_soon_chain(loop: asyncio.AbstractEventLoop, n: int) -> Timing:
    done = loop.create_future()
    remaining = n

    def step() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            loop.call_soon(step)
        else:
            done.set_result(None)

    watch = Stopwatch()
    loop.call_soon(step)
    loop.run_until_complete(done)
    return watch.read()


def call_soon_batch(loop: asyncio.AbstractEventLoop, n: int) -> Timing:
    done = loop.create_future()
    remaining = n

    def callback() -> None:
        nonlocal remaining
        remaining -= 1
        if not remaining:
            done.set_result(None)

    watch = Stopwatch()
    call_soon = loop.call_soon
    for _ in range(n):
        call_soon(callback)
    loop.run_until_complete(done)
    return watch.read()


async def _trivial() -> None:
    return None


def create_task_await(loop: asyncio.AbstractEventLoop, n: int) -> Timing:
    async def main() -> None:
        for _ in range(n):
            await loop.create_task(_trivial())

    return time_coroutine(loop, main)


def gather_tasks(loop: asyncio.AbstractEventLoop, n: int) -> Timing:
    async def main() -> None:
        await asyncio.gather(*[_trivial() for _ in range(n)])

    return time_coroutine(loop, main)


def sleep_zero(loop: asyncio.AbstractEventLoop, n: int) -> Timing:
    async def main() -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    return time_coroutine(loop, main)


class _Mailbox:
    """One value at a time, handed over through a fresh future each round."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future = loop.create_future()

    def put(self, value: int) -> None:
        self._future.set_result(value)

    async def get(self) -> int:
        value = await self._future
        self._future = self._loop.create_future()
        return value


def future_ping_pong(loop: asyncio.AbstractEventLoop, n: int) -> Timing:
    async def main() -> None:
        to_pong, to_ping = _Mailbox(loop), _Mailbox(loop)

        async def ping() -> None:
            for i in range(n):
                to_pong.put(i)
                if await to_ping.get() != i:
                    raise AssertionError("ping-pong out of order")

        async def pong() -> None:
            for _ in range(n):
                to_ping.put(await to_pong.get())

        await asyncio.gather(ping(), pong())

    return time_coroutine(loop, main)


SUITE = Suite(
    name="loop",
    title="Loop overhead",
    description=(
        "The event loop's own machinery, no I/O. Times are the median wall time of the "
        "whole workload; a ratio above 1 means faster than asyncio's loop."
    ),
    variants=LOOPS,
    baseline="asyncio",
    subject="interloop",
    probe=probe_loop,
    order=10,
    figures={
        "cpu_s": "CPU time of the benchmark process over the same span; other work on "
        "a shared machine disturbs it much less than wall time",
    },
    cases=(
        Case("call_soon_chain", "call_soon chain: each callback schedules the next",
             on_loop(call_soon_chain), n=1_000_000, quick_n=10_000, target=ISSUE_TARGET),
        Case("call_soon_batch", "call_soon batch: n callbacks queued, then run",
             on_loop(call_soon_batch), n=1_000_000, quick_n=10_000),
        Case("create_task_await", "create_task + await of a trivial coroutine, one at a time",
             on_loop(create_task_await), n=200_000, quick_n=2_000, target=ISSUE_TARGET),
        Case("gather", "gather of n trivial coroutines",
             on_loop(gather_tasks), n=200_000, quick_n=2_000),
        Case("sleep_zero", "await asyncio.sleep(0) in one task",
             on_loop(sleep_zero), n=1_000_000, quick_n=10_000, target=ISSUE_TARGET),
        Case("future_ping_pong", "round trips between two tasks through futures",
             on_loop(future_ping_pong), n=200_000, quick_n=2_000),
    ),
)
