"""Jobs for benches/bench_pool.py (importable by workers, processes and interpreters)."""
import asyncio


def cpu(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


async def acpu(n):
    return cpu(n)


def noop():
    return None


async def anoop():
    return None
