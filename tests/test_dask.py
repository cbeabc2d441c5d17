"""Behaviour of interloop.DaskPool on a 2-process Dask LocalCluster.

One cluster (127.0.0.1 only, no dashboard) serves the whole module; every test runs
on asyncio's loop and on interloop's (``loop_kind``), each with its own asynchronous
client made by the pool on that loop.
"""
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time

import pytest

distributed = pytest.importorskip(
    "distributed", reason="DaskPool needs Dask's distributed (pip install 'interloop[dask]')")
import interloop  # noqa: E402

import daskfuncs as df  # noqa: E402
import poolfuncs as pf  # noqa: E402
from conftest import run  # noqa: E402

pytestmark = pytest.mark.usefixtures("loop_kind")

HERE = os.path.dirname(os.path.abspath(__file__))
POOL_OK = sys.version_info >= (3, 12, 4)
needs_pool = pytest.mark.skipif(
    not POOL_OK, reason="interloop.Pool needs CPython >= 3.12.4 (gh-112140)")

# A worker that dies while running a job makes the scheduler retry the job on
# another worker up to `allowed-failures` times, then fail it with KilledWorker.
# Dask's default (3) costs four worker restarts per test; 1 keeps the tests short.
ALLOWED_FAILURES = 1


class Cluster:
    """The cluster process (``daskcluster.py``): its address, and ``scale(n)``."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "daskcluster.py"), str(ALLOWED_FAILURES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
        self.address = self._answer()

    def _answer(self):
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"the Dask cluster process ended (exit {self.proc.wait()})")
        return line

    def scale(self, n):
        self.proc.stdin.write(f"scale {n}\n")
        self.proc.stdin.flush()
        assert self._answer() == "ok"

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def address(cluster):
    """The scheduler's address, with both workers up (a test may have killed one).
    The test process makes no synchronous Client: one would leave Dask's loop thread
    running in it for the rest of the suite."""
    cluster.scale(2)
    return cluster.address


# -- the one-line swap ------------------------------------------------------------------

def make_pool(kind, address, **kw):
    if kind == "Pool":
        if not POOL_OK:
            pytest.skip("interloop.Pool needs CPython >= 3.12.4 (gh-112140)")
        return interloop.Pool(2, **kw)
    return interloop.DaskPool(address, **kw)


@pytest.mark.parametrize("kind", ["Pool", "DaskPool"])
def test_one_body_runs_on_pool_and_on_daskpool(kind, address):
    async def main():
        async with make_pool(kind, address, max_pending=50) as pool:
            assert await pool.run(pf.add, 1, 2) == 3
            assert await pool.run(pf.aadd, 3, 4) == 7
            assert await pool.run(pf.kw, 1, c=9) == (1, 2, 9)
            assert await pool.submit(pf.noop) is None
            big = {"x": list(range(1000)), "b": b"\x00" * 100_000}
            assert await pool.run(pf.ident, big) == big
            rs = await asyncio.gather(*(pool.run(pf.aadd, i, i) for i in range(100)))
            assert rs == [2 * i for i in range(100)]
            assert [r async for r in pool.map(pf.ident, range(60))] == list(range(60))
            got = [r async for r in pool.map(pf.ident, range(60), ordered=False, window=8)]
            assert sorted(got) == list(range(60))
            with pytest.raises(ValueError, match="bad value 42") as ei:
                await pool.run(pf.boom, "value")
            assert "in boom" in str(ei.value.__cause__)
            with pytest.raises(interloop.RemoteError):
                await pool.run(pf.boom, "lock")
            fut = pool.submit(pf.sleep_then, "late", 30)
            await asyncio.sleep(0.05)
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            s = pool.stats()
            for k in ("workers", "submitted", "completed", "failed", "cancelled",
                      "pending", "latency"):
                assert k in s
            assert s["workers"] == 2 and s["failed"] == 2
            assert s["latency"]["count"] >= 100 and s["latency"]["p50_us"] > 0
            late = pool.submit(pf.sleep_then, "done", 0.05)
        assert late.result() == "done"  # leaving `async with` waits for submitted work
    run(main())


# -- where jobs run -----------------------------------------------------------------------

def test_async_jobs_share_the_workers_loop_plain_jobs_run_in_its_threads(address):
    async def main():
        async with interloop.DaskPool(address) as pool:
            wa = await asyncio.gather(*(pool.run(df.where_async) for _ in range(20)))
            wp = await asyncio.gather(*(pool.run(df.where_plain) for _ in range(20)))
        assert all(w["worker_loop"] and w["main_thread"] for w in wa)
        assert all(w["pid"] != os.getpid() for w in wa + wp)
        # one loop per worker process, not one asyncio.run per job
        assert len({w["loop"] for w in wa}) <= 2 < len(wa)
        assert len({w["pid"] for w in wa}) == len({(w["pid"], w["loop"]) for w in wa})
        assert not any(w["running_loop"] or w["main_thread"] for w in wp)
    run(main())


@needs_pool
def test_spawn_inside_a_dask_worker_uses_that_machines_pool(address):
    async def main():
        async with interloop.DaskPool(address) as pool:
            r = await pool.run(df.spawn_inside, 6)
            assert await pool.run(pf.pfib, 20) == pf.fib(20)  # nested spawns
        assert r["pid"] != os.getpid()
        for env in r["envs"]:
            assert env["pid"] == r["pid"]          # in the Dask worker's process,
            assert env["tid"] != r["tid"]          # on a pool worker thread,
            assert isinstance(env["index"], int)   # in a sub-interpreter
            assert HERE in env["path"]
    run(main())


# -- results and errors -------------------------------------------------------------------

@pytest.mark.parametrize("kind,exc_type,text", [
    ("value", ValueError, "bad value 42"),
    ("custom", pf.CustomError, "custom trouble"),
    ("exit", SystemExit, "3"),
])
def test_exception_keeps_type_and_worker_traceback(address, kind, exc_type, text):
    async def main():
        async with interloop.DaskPool(address) as pool:
            with pytest.raises(exc_type) as ei:
                await pool.run(pf.boom, kind)
            assert text in str(ei.value)
            cause = str(ei.value.__cause__)
            assert "Traceback" in cause and "in boom" in cause
            assert "_run_async" not in cause  # the pool's own frames are left out
            with pytest.raises(ValueError, match="plain failure"):
                await pool.run(pf.plain_boom)
            with pytest.raises(SystemExit):
                await pool.run(df.raise_system_exit)  # the worker survives it
            assert await pool.run(pf.add, 1, 1) == 2
            assert pool.stats()["failed"] == 3
    run(main())


@pytest.mark.parametrize("kind,type_name", [
    ("needs-two", "poolfuncs.NeedsTwoArgs"),
    ("lock", "poolfuncs.HoldsLock"),
])
def test_unpicklable_exception_becomes_remote_error(address, kind, type_name):
    async def main():
        async with interloop.DaskPool(address) as pool:
            with pytest.raises(interloop.RemoteError) as ei:
                await pool.run(pf.boom, kind)
            assert ei.value.type_name == type_name
            assert "boom" in ei.value.remote_traceback
            assert ei.value.__cause__ is not None
    run(main())


def test_what_cannot_travel_is_a_type_error_naming_it(address):
    async def main():
        async with interloop.DaskPool(address) as pool:
            with pytest.raises(TypeError, match=r"cannot send add\(\) to a Dask worker.*lock"):
                pool.run(pf.add, 1, threading.Lock())
            with pytest.raises(TypeError, match="not callable"):
                pool.submit(42)
            with pytest.raises(TypeError, match="cannot be pickled"):
                await pool.run(pf.returns_unpicklable)
            assert pool.stats()["submitted"] == 1
            # cloudpickle sends lambdas and closures by value, as Dask does
            assert await pool.run(lambda x: x + 1, 1) == 2
    run(main())


def test_bad_arguments_and_closed_pool(address):
    with pytest.raises(ValueError, match="max_pending"):
        interloop.DaskPool(address, max_pending=0)
    with pytest.raises(ValueError, match="retries"):
        interloop.DaskPool(address, retries=-1)
    with pytest.raises(TypeError, match="preload"):
        interloop.DaskPool(address, preload=[1])

    async def main():
        pool = interloop.DaskPool(address)
        async with pool:
            pass
        with pytest.raises(RuntimeError, match="closed"):
            pool.run(pf.add, 1, 2)
        with client_on_another_loop(address) as other:  # as a synchronous client is
            with pytest.raises(ValueError, match="asynchronous=True on the running"):
                async with interloop.DaskPool(other):
                    pass
    run(main())


@contextlib.contextmanager
def client_on_another_loop(address):
    """An asynchronous Client running on a loop in another thread, for as long as
    the ``with`` block lasts."""
    made, done = threading.Event(), threading.Event()
    box = {}

    async def hold():
        async with distributed.Client(address, asynchronous=True) as c:
            box["client"] = c
            made.set()
            while not done.is_set():
                await asyncio.sleep(0.01)

    def thread_main():
        try:
            asyncio.run(hold())
        finally:
            made.set()
    t = threading.Thread(target=thread_main)
    t.start()
    try:
        assert made.wait(60) and "client" in box
        yield box["client"]
    finally:
        done.set()
        t.join(60)


def test_jobs_before_start_wait_for_the_connection(address):
    async def main():
        pool = interloop.DaskPool(address)
        fut = pool.submit(pf.add, 1, 2)  # connects first
        assert isinstance(fut, asyncio.Future)
        assert await asyncio.gather(fut, pool.run(pf.aadd, 2, 2)) == [3, 4]
        await pool.close()
        assert pool.client.status == "closed"  # it made the client, so it closed it
    run(main())


def test_a_given_client_is_used_and_left_open(address):
    async def main():
        async with distributed.Client(address, asynchronous=True) as client:
            async with interloop.DaskPool(client) as pool:
                assert pool.client is client
                assert await pool.run(pf.add, 2, 3) == 5
            assert client.status == "running"
            assert await client.submit(pf.add, 1, 1) == 2
    run(main())


def test_closing_a_given_client_cancels_the_pools_waiting_jobs(address):
    async def main():
        async with distributed.Client(address, asynchronous=True) as client:
            pool = interloop.DaskPool(client)
            await pool.start()
            fut = pool.submit(pf.sleep_then, "never", 30)
            await asyncio.sleep(0.1)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(fut, 30)
        assert pool.stats()["cancelled"] == 1
        await pool.close()
    run(main())


def test_unreachable_scheduler_fails_within_the_timeout():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = s.getsockname()[1]

    async def main():
        t0 = time.monotonic()
        with pytest.raises(OSError, match=f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'"):
            async with interloop.DaskPool(f"tcp://127.0.0.1:{port}", timeout=1):
                pass
        assert time.monotonic() - t0 < 10
    try:
        run(main())
    finally:
        s.close()


# -- cancellation and backpressure ----------------------------------------------------------

def test_cancelling_the_awaitable_cancels_the_running_coroutine(address, tmp_path):
    async def until(path, word):
        for _ in range(1000):
            if word in df.lines(path):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{word!r} never written to {path}: {df.lines(path)}")

    async def main():
        async with interloop.DaskPool(address) as pool:
            a = str(tmp_path / "a")
            fut = pool.submit(df.wait_to_be_cancelled, a)
            await until(a, "started")
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            await until(a, "cancelled")
            # through a timeout, with pool.run
            b = str(tmp_path / "b")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.5):
                    await pool.run(df.wait_to_be_cancelled, b)
            await until(b, "cancelled")
            assert "finished" not in df.lines(a) + df.lines(b)
            assert pool.stats()["cancelled"] == 2
    run(main())


def test_backpressure_max_pending(address):
    async def main():
        async with interloop.DaskPool(address, max_pending=3) as pool:
            seen = []
            aws = [asyncio.ensure_future(pool.run(pf.sleep_then, i, 0.01)) for i in range(20)]
            probe = asyncio.ensure_future(asyncio.gather(*aws))
            while not probe.done():
                seen.append(pool.stats()["pending"])
                await asyncio.sleep(0.002)
            assert await probe == list(range(20))
            assert 1 <= max(seen) <= 3
            # submit() waits for room through a coroutine, as Pool.submit does
            futs = [pool.submit(pf.ident, i) for i in range(3)]
            waiting = pool.submit(pf.ident, 3)
            assert asyncio.iscoroutine(waiting)
            assert await asyncio.gather(*futs, waiting) == [0, 1, 2, 3]
    run(main())


def test_map_leaving_early_cancels_the_rest_and_errors_raise_out(address):
    async def main():
        async with interloop.DaskPool(address) as pool:
            for ordered in (True, False):
                got = []
                async for r in pool.map(pf.ident, range(10), ordered=ordered, window=4):
                    got.append(r)
                    break
                assert len(got) == 1
            async for r in pool.map(pf.sleep_for, [0.01] + [30] * 10, ordered=False, window=6):
                assert r == 0.01
                break  # the five 30 s jobs in flight are cancelled, not waited for
            for _ in range(500):
                if pool.stats()["pending"] == 0:
                    break
                await asyncio.sleep(0.01)
            assert pool.stats()["pending"] == 0 and pool.stats()["cancelled"] >= 5
            with pytest.raises(TypeError):
                async for r in pool.map(pf.fib, [1, 2, None], ordered=False):
                    pass
    run(main())


def test_close_cancel_and_timeout_resolve_every_future(address):
    async def main():
        pool = interloop.DaskPool(address)
        await pool.start()
        futs = [pool.submit(pf.sleep_then, i, 30) for i in range(5)]
        await asyncio.sleep(0.05)
        assert await pool.close(cancel=True) == []
        assert all(f.cancelled() for f in futs)
        pool = interloop.DaskPool(address)
        await pool.start()
        quick = pool.submit(pf.sleep_then, "q", 0.01)
        slow = pool.submit(pf.sleep_then, "s", 30)
        t0 = time.monotonic()
        await pool.close(timeout=1)
        assert time.monotonic() - t0 < 10
        assert quick.result() == "q" and slow.cancelled()
    run(main())


# -- preload, faults, retries ---------------------------------------------------------------

def test_preload_imports_on_every_worker_including_later_ones(address, cluster):
    async def main():
        async with interloop.DaskPool(address, preload=["daskpreload_probe"]) as pool:
            client = pool.client
            seen = await client.run(df.is_imported, "daskpreload_probe")
            assert len(seen) == 2 and all(seen.values())
            await asyncio.to_thread(cluster.scale, 3)
            seen = await client.run(df.is_imported, "daskpreload_probe")
            assert len(seen) == 3 and all(seen.values())
        with pytest.raises(ImportError, match="no_such_module_xyz"):
            async with interloop.DaskPool(address, preload="no_such_module_xyz"):
                pass
    try:
        run(main())
    finally:
        cluster.scale(2)


def test_worker_killed_mid_job_fails_the_job_and_is_retried_first(address, tmp_path):
    async def main():
        async with interloop.DaskPool(address) as pool:
            t0 = time.monotonic()
            with pytest.raises(distributed.KilledWorker):
                await pool.run(df.exit_worker)
            assert time.monotonic() - t0 < 60
            # the scheduler reruns a job whose worker died, on a fresh worker
            assert await pool.run(df.exit_worker_once, str(tmp_path / "once")) == "second run"
            assert await pool.run(pf.add, 1, 1) == 2
    run(main())


def test_retries_are_dasks(address, tmp_path):
    async def main():
        async with interloop.DaskPool(address) as pool:
            with pytest.raises(RuntimeError, match="first run fails"):
                await pool.run(df.fail_once, str(tmp_path / "a"))
        async with interloop.DaskPool(address, retries=1) as pool:
            assert await pool.run(df.fail_once, str(tmp_path / "b")) == "second run"
    run(main())


# -- optional dependency ------------------------------------------------------------------

def test_import_interloop_never_imports_distributed():
    code = (
        "import sys, interloop\n"
        "from interloop import *\n"
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules\n"
        "assert interloop.DaskPool.__name__ == 'DaskPool'\n"
        "assert 'distributed' in sys.modules\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
