"""A CPU-heavy async workload, for the README demo and the benchmarks.

``crunch(n)`` is pure-Python CPU work in slices, with an ``await`` between slices,
like a request handler that parses, computes and yields. On one asyncio loop, many
``crunch`` calls share one core; on an ``interloop.Pool`` they run on every core.
"""
import asyncio


def _slice(seed, n):
    # integer hashing (an LCG with xor-shift): pure bytecode, no C helpers
    x = seed
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x


async def crunch(n, slices=10):
    """About ``n`` rounds of integer hashing, split in ``slices`` with an await between."""
    x = n
    per = max(1, n // slices)
    for _ in range(slices):
        x = _slice(x, per)
        await asyncio.sleep(0)
    return x & 0xFFFF


if __name__ == "__main__":
    import time
    t = time.perf_counter()
    print(asyncio.run(crunch(1_000_000)), f"{time.perf_counter() - t:.3f}s")
