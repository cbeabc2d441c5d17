"""Instruction counts per tiny pool job, for before/after comparisons that the shared
machine's load cannot blur (results: docs/benchmarks.md, "Pool: instructions per job").

    INTERLOOP_POOL_SPIN_US=0 valgrind --tool=callgrind --separate-threads=yes \\
        --callgrind-out-file=cg.%p python benches/pool_callgrind.py N [pool|floor] [interloop]

``pool200`` / ``run200`` do the N jobs as N/200 gathers of 200 (``submit`` / ``run``):
the cost per job with 200 pending rather than N. ``run`` is one gather of N ``run``
coroutines.

Run with N=0 and N=4000 and subtract: per-thread totals (`summary:` line of
`cg.PID-01` = the caller, `-02`/`-03` = the workers) divided by 4000 are the cost of
one job. Spinning is turned off (a spin under valgrind counts instructions while it
waits). ``floor`` is the same `gather` with bare asyncio futures resolved in one
callback: what asyncio itself costs per job, without any pool. ``interloop`` runs the
caller on interloop's loop instead of asyncio's.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interloop  # noqa: E402
import pool_jobs  # noqa: E402


def _jobs(method, batch=None):
    """A mode: N no-op jobs through ``Pool.<method>``, in one gather (``batch``
    None) or in gathers of ``batch``, after 20 warm-up jobs."""
    async def mode(n):
        async with interloop.Pool(2) as p:
            await asyncio.gather(*(p.run(pool_jobs.noop) for _ in range(20)))
            call = getattr(p, method)
            size, rounds = (batch, n // batch) if batch else (n, 1)
            for _ in range(rounds):
                await asyncio.gather(*(call(pool_jobs.noop) for _ in range(size)))
    return mode


async def floor(n):
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(n)]

    def resolve():
        for f in futs:
            f.set_result(None)
    loop.call_soon(resolve)
    await asyncio.gather(*futs)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    mode = sys.argv[2] if len(sys.argv) > 2 else "pool"
    factory = interloop.new_event_loop if sys.argv[3:] == ["interloop"] else None
    modes = {"pool": _jobs("submit"), "pool200": _jobs("submit", 200),
             "run": _jobs("run"), "run200": _jobs("run", 200), "floor": floor}
    asyncio.run(modes[mode](n), loop_factory=factory)
