"""Recursive divide and conquer on a pool: each job spawns its two halves from
inside its worker (``interloop.spawn`` pushes them to that worker's own deque) and
idle workers steal them. The stats show the steals.

    python examples/parallel_fib.py [n] [workers]
"""
import asyncio
import os
import sys
import time

import interloop


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def pfib(n, cutoff=20):
    if n < cutoff:
        return fib(n)  # small enough: plain CPU work in this worker
    a, b = await asyncio.gather(interloop.spawn(pfib, n - 1, cutoff),
                                interloop.spawn(pfib, n - 2, cutoff))
    return a + b


async def main(n, workers):
    t = time.perf_counter()
    expected = fib(n)
    serial = time.perf_counter() - t
    async with interloop.Pool(workers) as pool:
        await pool.run(fib, 1)  # workers started
        t = time.perf_counter()
        got = await pool.run(pfib, n)
        parallel = time.perf_counter() - t
        stats = pool.stats()
    assert got == expected, (got, expected)
    print(f"fib({n}) = {got}")
    print(f"serial {serial:.3f}s, pool of {workers} {parallel:.3f}s, speed-up {serial / parallel:.2f}x")
    print(f"jobs {stats['submitted']}, stolen {stats['stolen']} "
          f"(jobs a worker took from another worker's deque)")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 2)
    asyncio.run(main(n, workers))
