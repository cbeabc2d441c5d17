"""The parallel half of the demo: the same CPU-heavy async workload on one asyncio
loop, and on an interloop pool of own-GIL sub-interpreters (one worker per core).

    python examples/parallel_demo.py
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interloop  # noqa: E402
from workload import crunch  # noqa: E402

JOBS = 16
ROUNDS = 400_000


async def on_one_loop() -> list[int]:
    return await asyncio.gather(*(crunch(ROUNDS) for _ in range(JOBS)))


async def on_pool() -> tuple[list[int], dict]:
    async with interloop.Pool() as pool:
        await pool.run(crunch, 10)  # workers up and warm, so we time the work
        t = time.perf_counter()
        results = await asyncio.gather(*(pool.run(crunch, ROUNDS) for _ in range(JOBS)))
        return results, {"seconds": time.perf_counter() - t, "stats": pool.stats()}


def main() -> None:
    cores = os.cpu_count() or 1
    print(f"\nparallel: {JOBS} CPU-heavy async jobs (crunch({ROUNDS:,})) on {cores} cores")
    t = time.perf_counter()
    serial = asyncio.run(on_one_loop())
    t_serial = time.perf_counter() - t
    print(f"  one asyncio loop              {t_serial:7.3f} s")
    try:
        parallel, info = interloop.run(on_pool())
    except RuntimeError as e:  # CPython 3.12.0-3.12.3 cannot run workers
        print(f"  interloop.Pool unavailable: {e}")
        return
    t_par = info["seconds"]
    print(f"  interloop.Pool ({info['stats']['workers']} workers)   {t_par:7.3f} s   "
          f"({t_serial / t_par:.2f}x)")
    assert parallel == serial, "the pool computed something else"
    print("  same results; stats:", {k: info["stats"][k] for k in ("submitted", "completed", "stolen")})


if __name__ == "__main__":
    main()
