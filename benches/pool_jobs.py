"""Jobs for benches/bench_pool.py (importable by workers, processes and interpreters)."""
import asyncio
import threading
import time


def cpu(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


async def acpu(n):
    return cpu(n)


def cpu_timed(n):
    """``cpu(n)``, and where its time went: (thread CPU seconds, start, end, thread id);
    start and end are ``perf_counter`` readings (CLOCK_MONOTONIC, comparable across
    threads and processes)."""
    c, t = time.thread_time(), time.perf_counter()
    cpu(n)
    return time.thread_time() - c, t, time.perf_counter(), threading.get_native_id()


async def acpu_timed(n):
    return cpu_timed(n)


def noop():
    return None


async def anoop():
    return None
