"""Faults inside pool workers: the caller gets a clear exception, the pool stays
usable (or closes cleanly), the process survives."""
import asyncio
import time

import pytest

import interloop

import poolfuncs as pf
import test_pool
from conftest import run

pytestmark = test_pool.pytestmark  # CPython >= 3.12.4; each test on both loops


@pytest.mark.parametrize("fn, exc, text", [
    (pf.exhaust_memory, MemoryError, None),
    (pf.recurse_python, RecursionError, "maximum recursion depth"),
    (pf.recurse_async, RecursionError, "maximum recursion depth"),
    (pf.recurse_in_c, RecursionError, "while getting the repr"),
])
def test_job_exhausting_a_resource_fails_alone(fn, exc, text):
    async def main():
        async with interloop.Pool(2) as pool:
            for _ in range(2):  # each worker, probably; the pool stays usable
                with pytest.raises(exc, match=text):
                    await pool.run(fn)
                assert await pool.run(pf.add, 2, 3) == 5
            s = pool.stats()
            assert s["failed"] == 2 and s["completed"] == 2
    run(main())


def test_job_stuck_in_c_code_cancelled_with_interrupt():
    """An interrupt cannot stop a C call (time.sleep here): the caller's future is
    cancelled at once, the worker takes new work when the call returns, and the
    interrupt does not land in that next job."""
    async def main():
        async with interloop.Pool(1) as pool:
            fut = pool.submit(pf.sleep_in_c, 1.5, interrupt=True)
            for _ in range(1000):
                if pool.stats()["running"][0] == 1:
                    break
                await asyncio.sleep(0.005)
            t = time.monotonic()
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            assert time.monotonic() - t < 1.0
            assert await asyncio.wait_for(pool.run(pf.add, 1, 2), 30) == 3
            assert await pool.run(pf.aadd, 2, 2) == 4
            assert pool.stats()["cancelled"] == 1
    run(main())


@pytest.mark.parametrize("body, exc, text", [
    ("raise ValueError('broken preload')", ImportError, "(?s)'badpreload'.*ValueError: broken preload"),
    ("import _testsinglephase", ImportError, "does not support loading in subinterpreters"),
])
def test_failing_preload(tmp_path, monkeypatch, body, exc, text):
    if "_testsinglephase" in body:
        pytest.importorskip("_testsinglephase")
    (tmp_path / "badpreload.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    async def main():
        with pytest.raises(exc, match=text):
            async with interloop.Pool(2, preload=["badpreload"]) as pool:
                await pool.run(pf.add, 1, 1)
        async with interloop.Pool(1) as pool:
            assert await pool.run(pf.add, 1, 1) == 2
    run(main())


def test_worker_interpreter_that_cannot_be_created(tmp_path):
    # The failure is injected (INTERLOOP_TEST_REFUSE_INTERPRETER, src/interp/worker.rs)
    # where Py_NewInterpreterFromConfig would report it.
    r = test_pool.run_script(tmp_path, """
        import asyncio, os, interloop, poolfuncs
        os.environ["INTERLOOP_TEST_REFUSE_INTERPRETER"] = "1"   # the second worker
        async def main():
            try:
                async with interloop.Pool(2) as pool:
                    await pool.run(poolfuncs.add, 1, 2)
            except RuntimeError as e:
                print("caller got:", e)
            os.environ["INTERLOOP_TEST_REFUSE_INTERPRETER"] = "0,1"   # no worker at all
            pool = interloop.Pool(2)
            fut = pool.submit(poolfuncs.add, 1, 2)   # submitted before the failure is known
            try:
                await asyncio.wait_for(fut, 30)
            except RuntimeError as e:
                print("submitted job got:", e)
            try:
                await pool.run(poolfuncs.add, 1, 2)
            except RuntimeError as e:
                print("next job got:", e)
            await pool.close()
            del os.environ["INTERLOOP_TEST_REFUSE_INTERPRETER"]
            async with interloop.Pool(2) as pool:
                print("then:", await pool.run(poolfuncs.add, 1, 2))
        interloop.run(main())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "caller got: could not create an own-GIL sub-interpreter",
        "submitted job got: could not create an own-GIL sub-interpreter",
        "next job got: could not create an own-GIL sub-interpreter",
        "then: 3",
    ], (r.stdout, r.stderr)
