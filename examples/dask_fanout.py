"""Two levels of parallelism: Dask spreads jobs over machines, and each job fans out
over its machine's cores through ``interloop.spawn`` (that machine's own Pool).

    dask scheduler --host 127.0.0.1 --port 8786 &
    PYTHONPATH=examples dask worker tcp://127.0.0.1:8786 --nworkers 2 --nthreads 1 &
    python examples/dask_fanout.py tcp://127.0.0.1:8786

Needs ``pip install 'interloop[dask]'``. This file must be importable on every worker
(``PYTHONPATH`` above).
"""
import asyncio
import sys
import time

import interloop


def count_primes(lo, hi):
    """Plain CPU work: primes in [lo, hi)."""
    n = 0
    for k in range(max(lo, 2), hi):
        if all(k % d for d in range(2, int(k ** 0.5) + 1)):
            n += 1
    return n


async def machine_job(lo, hi, pieces=8):
    """Runs on a Dask worker's event loop; splits its range over that machine's cores."""
    step = (hi - lo + pieces - 1) // pieces
    parts = await asyncio.gather(*(interloop.spawn(count_primes, a, min(a + step, hi))
                                   for a in range(lo, hi, step)))
    return sum(parts)


async def main(address, n=400_000, jobs=4):
    # The jobs are sent from this file imported as a module, not from __main__: Dask
    # would send __main__'s functions by value, but what a job spawns on its machine's
    # Pool travels by module and name, so it must be importable there.
    import dask_fanout
    step = n // jobs
    async with interloop.DaskPool(address) as pool:
        t = time.perf_counter()
        counts = await asyncio.gather(*(pool.run(dask_fanout.machine_job, a, a + step)
                                        for a in range(0, n, step)))
        took = time.perf_counter() - t
        print(f"{sum(counts)} primes below {n} in {took:.2f}s "
              f"({jobs} Dask jobs on {pool.workers} workers, each fanned out with spawn)")


if __name__ == "__main__":
    interloop.run(main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8786"))
