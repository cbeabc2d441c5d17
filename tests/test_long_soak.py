"""Long runs, on interloop's loop: a pool soak with random cancellations, many TCP
connections, many loops. Marked ``long``: the repeated test runs deselect them
(pyproject's ``-m "not long"``); ``scripts/test-all`` runs them once, on 3.13
(``bash scripts/dev soak`` runs only them). Sizes, the issue's by default:

    INTERLOOP_SOAK_JOBS         pool jobs           (default 1,000,000)
    INTERLOOP_SOAK_CONNECTIONS  TCP connections     (default 100,000)
    INTERLOOP_SOAK_LOOPS        loops               (default 10,000)

Their figures (time, RSS) are in docs/benchmarks.md, "Long runs".

Each checks that nothing leaks (futures, stashed buffers, descriptors) and that
the resident set stops growing once warm: it may grow by less than 5% from the
end of the warm-up to the end of the run (printed; ``-s`` shows it).
"""
import asyncio
import gc
import os
import random
import sys
import warnings

import pytest

import interloop
from interloop import _channel

import poolfuncs as pf

pytestmark = pytest.mark.long

JOBS = int(os.environ.get("INTERLOOP_SOAK_JOBS", 1_000_000))
CONNECTIONS = int(os.environ.get("INTERLOOP_SOAK_CONNECTIONS", 100_000))
LOOPS = int(os.environ.get("INTERLOOP_SOAK_LOOPS", 10_000))


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fds():
    return len(os.listdir("/proc/self/fd"))


def assert_flat(warm, end, what):
    summary = (f"{what}: RSS {warm / 2**20:.1f} MiB after warm-up, "
               f"{end / 2**20:.1f} MiB at the end ({(end / warm - 1) * 100:+.1f}%)")
    print(summary)
    assert end < warm * 1.05, summary


@pytest.mark.skipif(sys.version_info < (3, 12, 4), reason="pool workers need CPython >= 3.12.4")
def test_pool_soak_with_random_cancellations():
    """JOBS jobs over 2 workers in rounds; 10% cancelled at random moments, half of
    those submitted with interrupt=True; plain, async and buffer-carrying jobs."""
    rnd = random.Random(14)
    per_round = 20_000
    rounds = max(2, JOBS // per_round)
    view = memoryview(bytearray(1 << 16))
    kinds = []

    async def one_round(pool):
        n = per_round
        resolved = bytearray(n)
        futs = []
        cancel = set(rnd.sample(range(n), n // 10))
        for i in range(n):
            interrupt = i in cancel and i % 2 == 0
            r = rnd.random()
            if r < 0.01:
                f, want = pool.submit(pf.view_len, view, interrupt=interrupt), len(view)
            elif r < 0.2:
                f, want = pool.submit(pf.aadd, i, 1, interrupt=interrupt), i + 1
            else:
                f, want = pool.submit(pf.ident, i, interrupt=interrupt), i
            f.add_done_callback(lambda _f, i=i: resolved.__setitem__(i, resolved[i] + 1))
            futs.append((f, want))
            if i % 500 == 499:
                await asyncio.sleep(0)
                # Cancel some of those submitted so far: queued, running or done.
                for j in [j for j in cancel if j <= i and rnd.random() < 0.5]:
                    futs[j][0].cancel()
                    cancel.discard(j)
        for j in cancel:
            futs[j][0].cancel()
        await asyncio.wait([f for f, _ in futs])
        for f, want in futs:
            if not f.cancelled():
                assert f.result() == want
        assert set(resolved) == {1}, "every future resolves exactly once"
        kinds.append(sum(f.cancelled() for f, _ in futs))

    async def main():
        async with interloop.Pool(2) as pool:
            warm = None
            for k in range(rounds):
                await one_round(pool)
                assert not pool._pending and not pool._stashes
                if k == 1:
                    gc.collect()
                    warm = rss()
            for _ in range(200):
                if _channel._n.stash_len() == 0:
                    break
                await asyncio.sleep(0.01)
            assert _channel._n.stash_len() == 0, "stashed buffers left behind"
            s = pool.stats()
            assert s["submitted"] == rounds * per_round
            assert s["completed"] + s["failed"] + s["cancelled"] == s["submitted"]
            assert s["failed"] == 0 and s["pending"] == 0
            assert_flat(warm, rss(), "pool soak")
        assert sum(kinds) > 0

    interloop.run(main())


def test_tcp_connections_opened_used_and_closed():
    """CONNECTIONS connections (20,000 where the kernel does not reuse TIME_WAIT
    pairs), 50 at a time, each echoing one message, client and server in this
    process: no descriptor left open, RSS flat."""
    batch = 50
    connections = CONNECTIONS
    try:
        with open("/proc/sys/net/ipv4/tcp_tw_reuse") as f:
            tw_reuse = int(f.read())
    except (OSError, ValueError):
        tw_reuse = 0
    if tw_reuse == 0:
        # Without reuse of TIME_WAIT pairs (Linux reuses them on loopback by default),
        # the ~28,000 ephemeral ports run out within the minute they stay in TIME_WAIT.
        connections = min(connections, 20_000)

    async def handle(reader, writer):
        data = await reader.readline()
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        msg = b"%d\n" % i
        writer.write(msg)
        assert await reader.readline() == msg
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        base_fds = fds()
        warm = None
        done = 0
        while done < connections:
            await asyncio.gather(*(client(port, done + i) for i in range(batch)))
            done += batch
            if warm is None and done >= min(connections // 5, 5000):
                gc.collect()
                warm = rss()
        for _ in range(100):  # the server side closes after the client has read
            if fds() <= base_fds:
                break
            await asyncio.sleep(0.01)
        assert fds() == base_fds, "descriptors left open"
        assert_flat(warm, rss(), "tcp connections")
        server.close()
        await server.wait_closed()

    interloop.run(main())


def test_many_loops_made_run_and_closed():
    """LOOPS loops in a row, each running tasks, a timer and a reader: RSS and
    descriptors flat, no warning (unclosed resources, never-awaited coroutines)."""
    async def body():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0, fut.set_result, 1)
        r, w = os.pipe()
        try:
            got = loop.create_future()
            loop.add_reader(r, lambda: got.done() or got.set_result(os.read(r, 10)))
            os.write(w, b"x")
            t = asyncio.create_task(asyncio.sleep(0, 2))
            assert (await fut, await got, await t) == (1, b"x", 2)
            loop.remove_reader(r)
        finally:
            os.close(r)
            os.close(w)

    base_fds = fds()
    warm = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(LOOPS):
            loop = interloop.new_event_loop()
            try:
                loop.run_until_complete(body())
            finally:
                loop.close()
            if i == min(LOOPS // 5, 1000):
                gc.collect()
                warm = rss()
        # A closed interloop loop keeps its descriptors until it is freed
        # (tests/test_loop_suite_findings.py): let the last one go.
        del loop
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert fds() == base_fds
    assert_flat(warm, rss(), "loops")
