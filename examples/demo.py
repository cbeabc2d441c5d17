"""interloop demo: the same asyncio program on asyncio's loop and on interloop's.

The program is ordinary asyncio code: 20k concurrent tasks that sleep on timers and
pass tokens through queues, plus a socket pair streaming 20 MiB through the loop's
sock_* methods. It runs unchanged on both loops; the timings are printed side by side.

    bash scripts/dev demo
"""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interloop  # noqa: E402

TASKS = 20_000
ROUNDS = 5
STREAM_BYTES = 20 * 1024 * 1024
CHUNK = 64 * 1024


async def worker(i: int, inbox: asyncio.Queue, outbox: asyncio.Queue) -> int:
    total = 0
    for _ in range(ROUNDS):
        await asyncio.sleep(0.001 * (i % 5))  # timers
        token = await inbox.get()
        total += token
        await outbox.put(token + 1)
    return total


async def tasks_and_timers() -> int:
    queues = [asyncio.Queue() for _ in range(TASKS + 1)]
    for _ in range(ROUNDS):
        queues[0].put_nowait(1)
    async with asyncio.TaskGroup() as tg:
        ts = [tg.create_task(worker(i, queues[i], queues[i + 1])) for i in range(TASKS)]
    return sum(t.result() for t in ts)


async def socket_stream() -> int:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    payload = os.urandom(CHUNK)

    async def send():
        for _ in range(STREAM_BYTES // CHUNK):
            await loop.sock_sendall(a, payload)
        a.shutdown(socket.SHUT_WR)

    async def recv():
        got = 0
        buf = bytearray(CHUNK)
        while True:
            n = await loop.sock_recv_into(b, buf)
            if not n:
                return got
            got += n

    try:
        _, got = await asyncio.gather(send(), recv())
    finally:
        a.close()
        b.close()
    return got


async def program() -> tuple[int, int]:
    return await tasks_and_timers(), await socket_stream()


def timed(loop_factory) -> tuple[float, tuple[int, int]]:
    t0 = time.perf_counter()
    result = asyncio.run(program(), loop_factory=loop_factory)
    return time.perf_counter() - t0, result


def main() -> None:
    print(f"interloop {interloop.__version__} on CPython {sys.version.split()[0]}")
    print(f"workload: {TASKS} tasks x {ROUNDS} rounds of timers+queues, "
          f"{STREAM_BYTES >> 20} MiB through a socket pair\n")
    t_asyncio, r1 = timed(asyncio.new_event_loop)
    print(f"  asyncio loop   {t_asyncio:7.3f} s")
    t_inter, r2 = timed(interloop.new_event_loop)
    print(f"  interloop loop {t_inter:7.3f} s   ({t_asyncio / t_inter:.2f}x)")
    assert r1 == r2, (r1, r2)
    print(f"\nsame results on both loops: {r2}")

    try:
        import parallel_demo  # the pool half, when the parallel engine is present
    except ImportError:
        return
    parallel_demo.main()


if __name__ == "__main__":
    main()
