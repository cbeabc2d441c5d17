"""Behaviour of interloop.Pool / spawn / InterpreterExecutor."""
import asyncio
import os
import random
import subprocess
import sys
import textwrap
import threading

import pytest

import interloop
from interloop import _futures, _pool

import poolfuncs as pf
from conftest import run

pytestmark = [
    pytest.mark.skipif(
        sys.version_info < (3, 12, 4),
        reason="pool workers need CPython >= 3.12.4 (gh-112140); tests/test_pool_version.py checks the error"),
    pytest.mark.usefixtures("loop_kind"),  # every test on asyncio's loop and on interloop's
]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)



def run_script(tmp_path, source, timeout=60):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(tmp_path), env=env)


# -- results ------------------------------------------------------------------------

def test_run_plain_and_async_functions():
    async def main():
        async with interloop.Pool(2) as pool:
            assert await pool.run(pf.add, 1, 2) == 3
            assert await pool.run(pf.aadd, 3, 4) == 7
            assert await pool.run(pf.kw, 1, c=9) == (1, 2, 9)
            big = {"x": list(range(1000)), "b": b"\x00" * 100_000}
            assert await pool.run(pf.ident, big) == big
            assert await pool.run(pf.noop) is None
            rs = await asyncio.gather(*(pool.run(pf.aadd, i, i) for i in range(200)))
            assert rs == [2 * i for i in range(200)]
    run(main())


def test_builtin_and_stdlib_functions():
    import operator
    async def main():
        async with interloop.Pool(1) as pool:
            assert await pool.run(operator.mul, 6, 7) == 42
            assert await pool.run(asyncio.sleep, 0.001, "slept") == "slept"
    run(main())


def test_workers_are_subinterpreters_in_this_process_with_callers_path():
    async def main():
        async with interloop.Pool(2) as pool:
            envs = await asyncio.gather(*(pool.run(pf.worker_env) for _ in range(4)))
        for env in envs:
            assert env["pid"] == os.getpid()
            assert env["tid"] != threading.get_ident()
            assert HERE in env["path"]
            assert env["path"][: len(sys.path)] == sys.path or set(sys.path) <= set(env["path"])
            assert env["argv"] == sys.argv
    run(main())


def test_loop_native_completion_hook_is_used():
    """A loop that offers ``_interloop_attach_completions`` drains completions itself
    (interloop's own loop does it natively); the pool then does not add a reader."""
    calls = []

    class HookLoop(asyncio.SelectorEventLoop):
        def _interloop_attach_completions(self, core, callback):
            calls.append("attach")
            # a native loop calls `callback(None)` when `core` has completions (the
            # pool takes them itself); emulate with the fd
            self.add_reader(core.fd(), lambda: callback(None))

        def _interloop_detach_completions(self, core):
            calls.append("detach")
            self.remove_reader(core.fd())

    async def main():
        async with interloop.Pool(1) as pool:
            assert await pool.run(pf.add, 2, 3) == 5
            assert pool._attached == "native"

    with asyncio.Runner(loop_factory=HookLoop) as r:
        r.run(main())
    assert calls == ["attach", "detach"]


# -- exceptions -----------------------------------------------------------------------

@pytest.mark.parametrize("kind,exc_type,text", [
    ("value", ValueError, "bad value 42"),
    ("key", KeyError, "missing"),
    ("custom", pf.CustomError, "custom trouble"),
    ("zero", ZeroDivisionError, "division by zero"),
    ("exit", SystemExit, "3"),
])
def test_exception_keeps_type_and_worker_traceback(kind, exc_type, text):
    async def main():
        async with interloop.Pool(1) as pool:
            with pytest.raises(exc_type) as ei:
                await pool.run(pf.boom, kind)
            assert text in str(ei.value)
            cause = ei.value.__cause__
            assert cause is not None and "Traceback" in str(cause)
            assert "in boom" in str(cause)  # the worker's frames
            # the pool is still usable afterwards
            assert await pool.run(pf.add, 1, 1) == 2
            assert pool.stats()["failed"] == 1
    run(main())


def test_plain_function_exception():
    async def main():
        async with interloop.Pool(1) as pool:
            with pytest.raises(ValueError, match="plain failure") as ei:
                await pool.run(pf.plain_boom)
            assert "plain_boom" in str(ei.value.__cause__)
    run(main())


@pytest.mark.parametrize("kind,type_name", [
    ("needs-two", "poolfuncs.NeedsTwoArgs"),
    ("lock", "poolfuncs.HoldsLock"),
])
def test_unpicklable_exception_becomes_remote_error(kind, type_name):
    async def main():
        async with interloop.Pool(1) as pool:
            with pytest.raises(interloop.RemoteError) as ei:
                await pool.run(pf.boom, kind)
            assert ei.value.type_name == type_name
            assert "boom" in ei.value.remote_traceback
            assert ei.value.__cause__ is not None
    run(main())


def test_result_that_fails_to_load_in_the_caller_is_its_exception(monkeypatch):
    monkeypatch.setattr(pf, "IN_CALLER", True)

    async def main():
        async with interloop.Pool(2) as pool:
            futs = [pool.submit(pf.returns_unloadable if i % 3 == 0 else pf.ident, i) for i in range(30)]
            rs = await asyncio.gather(*futs, return_exceptions=True)
            for i, r in enumerate(rs):
                if i % 3 == 0:
                    assert isinstance(r, ValueError) and "cannot rebuild" in str(r)
                else:
                    assert r == i
    run(main())


def test_unpicklable_result_is_a_type_error():
    async def main():
        async with interloop.Pool(1) as pool:
            with pytest.raises(TypeError, match="cannot be pickled"):
                await pool.run(pf.returns_unpicklable)
    run(main())


def test_submit_time_type_errors_name_the_problem():
    def local_fn():
        return 1

    async def main():
        async with interloop.Pool(1) as pool:
            with pytest.raises(TypeError, match="lambda"):
                pool.run(lambda: 1)
            with pytest.raises(TypeError, match="inside another function"):
                pool.run(local_fn)
            with pytest.raises(TypeError, match=r"argument 1 of add\(\) \(lock\)"):
                pool.run(pf.add, 1, threading.Lock())
            with pytest.raises(TypeError, match="keyword argument 'b'"):
                pool.run(pf.kw, 1, b=threading.Lock())
            with pytest.raises(TypeError, match="not callable"):
                pool.run(42)
            assert pool.stats()["submitted"] == 0
            # a lambda spawned from inside a worker fails in that worker, as TypeError
            with pytest.raises(TypeError, match="lambda"):
                await pool.run(pf.spawn_lambda)
    run(main())


def test_run_needs_a_running_loop():
    async def make():
        return interloop.Pool(1)
    pool = run(make())
    with pytest.raises(RuntimeError):
        pool.submit(pf.add, 1, 2)
    run(pool.close())


# -- cancellation ---------------------------------------------------------------------

def test_cancel_running_job_cancels_worker_task():
    async def main():
        async with interloop.Pool(1) as pool:
            fut = pool.submit(pf.log_cancel, "a")
            await pool.run(pf.get_log, ("start", "a"))
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            log = await pool.run(pf.get_log, ("cancelled", "a"))
            assert ("cancelled", "a") in log
    run(main())


def test_cancel_queued_job_never_runs():
    async def main():
        async with interloop.Pool(1, concurrency=1) as pool:
            blocker = pool.submit(pf.sleep_then, "b", 0.2)
            queued = pool.submit(pf.mark, "never")
            queued.cancel()
            assert await blocker == "b"
            log = await pool.run(pf.get_log)
            assert ("ran", "never") not in log
            assert pool.stats()["cancelled"] >= 1
    run(main())


def test_timeout_and_taskgroup_cancel_worker_tasks():
    async def main():
        async with interloop.Pool(1) as pool:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await pool.run(pf.log_cancel, "t")
            assert ("cancelled", "t") in await pool.run(pf.get_log, ("cancelled", "t"))
            with pytest.raises(ExceptionGroup):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(pool.run(pf.log_cancel, "g"))
                    tg.create_task(pool.run(pf.boom, "value"))
            assert ("cancelled", "g") in await pool.run(pf.get_log, ("cancelled", "g"))
    run(main())


@pytest.mark.parametrize("fn", [pf.spin_forever, pf.async_spin_forever])
def test_interrupt_cpu_bound_code(fn):
    async def main():
        async with interloop.Pool(1) as pool:
            fut = pool.submit(fn, interrupt=True)
            for _ in range(500):  # wait until the worker runs it
                if pool.stats()["running"][0] == 1:
                    break
                await asyncio.sleep(0.01)
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            # the worker is free again (it would be stuck forever otherwise)
            assert await asyncio.wait_for(pool.run(pf.add, 2, 2), 10) == 4
            assert pool.stats()["cancelled"] == 1
    run(main())


def test_interrupt_lands_only_in_the_running_coroutine():
    # Regression: an interrupt raised while the task was current but its coroutine
    # had returned (asyncio scheduling done callbacks; Python frames in debug mode)
    # aborted that scheduling, so the job never completed and close() hung.
    async def main():
        async with interloop.Pool(1) as pool:
            assert await pool.run(pf.interrupt_targets) == ("CancelledError", "NoneType")
    run(main())


def test_fresh_pool_serves_and_interrupts_before_workers_finish_starting():
    # Plain-function jobs run before a worker has imported asyncio; they can be
    # interrupted there too.
    async def main():
        pool = interloop.Pool(1)
        fut = pool.submit(pf.spin_forever, interrupt=True)
        for _ in range(1000):
            if pool.stats()["running"][0] == 1:
                break
            await asyncio.sleep(0.005)
        fut.cancel()
        assert await asyncio.wait_for(pool.run(pf.add, 1, 2), 30) == 3
        assert await pool.run(pf.aadd, 1, 2) == 3
        assert pool.stats()["cancelled"] == 1
        assert await pool.close() == []
    run(main())


def test_100k_tiny_jobs_with_random_cancellations_resolve_exactly_once():
    n = 100_000
    rnd = random.Random(4)

    async def main():
        async with interloop.Pool(2) as pool:
            resolved = [0] * n
            futs = []
            for i in range(n):
                f = pool.submit(pf.ident, i)
                f.add_done_callback(lambda _f, i=i: resolved.__setitem__(i, resolved[i] + 1))
                futs.append(f)
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # let completions flow while submitting
            cancelled = set(rnd.sample(range(n), n // 10))
            for i in cancelled:
                futs[i].cancel()
            done, not_done = await asyncio.wait(futs)
            assert not not_done
            for i, f in enumerate(futs):
                if f.cancelled():
                    continue
                assert f.result() == i
            lost = [i for i in range(n) if not futs[i].cancelled() and i in cancelled]
            # a cancel that lost the race to the result is fine; nothing else
            assert len(lost) == 0 or all(futs[i].result() == i for i in lost)
            assert all(c == 1 for c in resolved), "every future resolves exactly once"
            assert sum(f.cancelled() for f in futs) == len(cancelled - {i for i in cancelled if not futs[i].cancelled()})
            await asyncio.sleep(0.05)
            s = pool.stats()
            assert s["pending"] == 0
            assert s["submitted"] == n
        s = pool.stats()
        assert s["completed"] + s["cancelled"] + s["failed"] == n
    run(main())


# -- scheduling -------------------------------------------------------------------------

def test_nested_spawn_divide_and_conquer():
    async def main():
        async with interloop.Pool(2) as pool:
            assert await pool.run(pf.pfib, 20, 12) == pf.fib(20)
            s = pool.stats()
            assert s["submitted"] > 50  # the nested jobs went through the scheduler
            assert s["completed"] == s["submitted"]
    run(main())


def test_spawn_uses_the_loops_default_pool():
    async def main():
        assert await interloop.spawn(pf.add, 2, 3) == 5
        assert await interloop.spawn(pf.aadd, 2, 3) == 5
        pool = _pool.default_pool()
        assert pool is not None and pool.stats()["completed"] == 2
        await pool.close()
    run(main())


def test_map_ordered_and_unordered():
    async def main():
        async with interloop.Pool(2) as pool:
            got = [r async for r in pool.map(pf.ident, range(500))]
            assert got == list(range(500))
            got = [r async for r in pool.map(pf.ident, range(500), ordered=False)]
            assert sorted(got) == list(range(500))
            # leaving early cancels the rest
            async for r in pool.map(pf.ident, range(10), ordered=True, window=2):
                break
    run(main())


def test_map_unordered_leaving_early_errors_and_close():
    async def main():
        async with interloop.Pool(2) as pool:
            got = []
            async for r in pool.map(pf.ident, range(1000), ordered=False, window=50):
                got.append(r)
                if len(got) == 20:
                    break  # the rest is cancelled
            assert len(set(got)) == 20
            while pool.stats()["pending"]:
                await asyncio.sleep(0.01)
            # a failing item raises out of the loop
            with pytest.raises(TypeError):
                async for r in pool.map(pf.fib, [1, 2, None], ordered=False):
                    pass
            # max_pending: items waiting for room travel the done-callback path
            async with interloop.Pool(2, max_pending=3) as small:
                got = [r async for r in small.map(pf.ident, range(40), ordered=False, window=10)]
                assert sorted(got) == list(range(40))
        # closing the pool with cancel=True ends a consumer waiting in map
        pool = interloop.Pool(1)
        await pool.start()

        async def consume():
            return [r async for r in pool.map(pf.sleep_for, [0.5] * 4, ordered=False)]
        t = asyncio.ensure_future(consume())
        await asyncio.sleep(0.1)
        await pool.close(cancel=True)
        with pytest.raises(asyncio.CancelledError):
            await t
    run(main())


def test_backpressure_max_pending():
    async def main():
        async with interloop.Pool(2, max_pending=3) as pool:
            seen = []
            aws = []
            for i in range(20):
                aws.append(asyncio.ensure_future(pool.run(pf.sleep_then, i, 0.005)))
                seen.append(pool.stats()["pending"])
                await asyncio.sleep(0)
            probe = asyncio.ensure_future(asyncio.gather(*aws))
            while not probe.done():
                seen.append(pool.stats()["pending"])
                await asyncio.sleep(0.001)
            assert await probe == list(range(20))
            assert max(seen) <= 3
    run(main())


def test_workers_using_datetime_close_cleanly(tmp_path):
    # CPython 3.13 freed _datetime's static types twice when a worker was the first
    # interpreter to import it (about half the runs aborted at close); the pool has
    # the main interpreter import it first.
    src = """
        import asyncio, sys
        assert "_datetime" not in sys.modules
        import interloop
        import poolfuncs as pf

        async def main():
            for _ in range(3):
                async with interloop.Pool(2) as pool:
                    got = await asyncio.gather(*(pool.run(pf.iso_date, 2020 + i) for i in range(8)))
                    assert got == [f"{2020 + i}-01-02T00:00:00" for i in range(8)], got
            assert "_datetime" in sys.modules
            print("closed")

        if __name__ == "__main__":
            interloop.run(main())
    """
    for _ in range(4):
        p = run_script(tmp_path, src)
        assert p.returncode == 0 and p.stdout.strip() == "closed", p.stdout + p.stderr


def test_a_caller_waiting_for_room_gets_the_pools_closed_error():
    # The waiter woken by close() raises what every other call on a closed pool raises.
    async def main():
        pool = interloop.Pool(1, max_pending=1)
        await pool.start()
        first = pool.submit(pf.sleep_for, 30)
        waiting = asyncio.ensure_future(pool.run(pf.ident, 1))
        await asyncio.sleep(0.05)
        assert not waiting.done() and pool.stats()["pending"] == 1
        await pool.close(cancel=True)
        with pytest.raises(RuntimeError) as waited:
            await waiting
        with pytest.raises(RuntimeError) as direct:
            pool.submit(pf.ident, 2)
        assert str(waited.value) == str(direct.value) == "the pool is closed"
        assert type(waited.value) is type(direct.value)
        assert first.cancelled()
    run(main())


def test_room_waiters_pass_a_slot_on_when_cancelled():
    async def main():
        loop = asyncio.get_running_loop()
        waiters = _futures.RoomWaiters()
        state = {"full": True, "closed": False}
        full = lambda: state["full"]  # noqa: E731
        closed = lambda: state["closed"]  # noqa: E731
        a = asyncio.ensure_future(waiters.wait(loop, full, closed, lambda: RuntimeError("closed")))
        b = asyncio.ensure_future(waiters.wait(loop, full, closed, lambda: RuntimeError("closed")))
        await asyncio.sleep(0)
        assert len(waiters) == 2
        state["full"] = False
        waiters.wake(1)  # a is woken...
        a.cancel()       # ...but cancelled before it runs: its slot goes to b
        await asyncio.gather(a, b, return_exceptions=True)
        assert a.cancelled() and b.result() is None
        state["full"] = True
        c = asyncio.ensure_future(waiters.wait(loop, full, closed, lambda: ValueError("gone")))
        await asyncio.sleep(0)
        state["closed"] = True
        waiters.wake_all()
        with pytest.raises(ValueError, match="gone"):
            await c
        assert not waiters
    run(main())


def test_idle_workers_park():
    # A pool with nothing to do uses no CPU (workers block in epoll on their fd).
    import time
    async def main():
        async with interloop.Pool(2) as pool:
            await pool.run(pf.noop)
            t0 = time.process_time()
            await asyncio.sleep(0.5)
            assert time.process_time() - t0 < 0.1
    run(main())


def test_spinning_is_bounded_to_just_after_activity():
    # Workers spin briefly for the next job after running one, then park: after a
    # burst of round trips and bursts, an idle pool stops spinning altogether.
    import time
    async def main():
        async with interloop.Pool(2) as pool:
            for i in range(50):
                assert await pool.run(pf.ident, i) == i
            assert await asyncio.gather(*(pool.submit(pf.ident, i) for i in range(200))) == list(range(200))
            await asyncio.sleep(0.05)
            spins = pool.stats()["spins"]
            t0 = time.process_time()
            await asyncio.sleep(0.3)
            assert pool.stats()["spins"] == spins
            assert time.process_time() - t0 < 0.1
            s = pool.stats()
            assert s["spin_hits"] <= s["spins"]
    run(main())


def test_falsy_none_and_argument_shapes_round_trip():
    async def main():
        async with interloop.Pool(2) as pool:
            for v in (None, 0, b"", "", (), [], {}, False, True, 2**100, -1.5, "é\udc80", b"\x80"):
                r = await pool.run(pf.ident, v)
                assert r == v and type(r) is type(v)
            # subclasses of the simple types keep their type (they travel by pickle)
            r = await pool.run(pf.ident, pf.Level.HIGH)
            assert r is pf.Level.HIGH
            assert await pool.run(pf.add, 1, pf.Level.LOW) == 2
            assert await pool.run(pf.kw, 1) == (1, 2, 3)
            assert await pool.run(pf.kw, a=1, c=5) == (1, 2, 5)
            assert await pool.run(pf.plain_noop) is None
            assert await pool.submit(pf.noop) is None
    run(main())


def test_stats_shape():
    async def main():
        async with interloop.Pool(2) as pool:
            await asyncio.gather(*(pool.run(pf.noop) for _ in range(10)))
            s = pool.stats()
        for k in ("workers", "queued", "running", "submitted", "completed", "failed",
                  "cancelled", "stolen", "latency"):
            assert k in s
        assert s["workers"] == 2 and len(s["running"]) == 2
        assert s["completed"] == 10 and s["latency"]["count"] == 10
        assert s["latency"]["p50_us"] > 0
    run(main())


def test_subprocess_inside_worker():
    async def main():
        async with interloop.Pool(1) as pool:
            assert await pool.run(pf.subprocess_echo) == "42"
    run(main())


# -- faults and shutdown ------------------------------------------------------------------

def test_failing_preload_raises_and_process_survives():
    async def main():
        with pytest.raises(ImportError, match="no_such_module_xyz"):
            async with interloop.Pool(1, preload=["no_such_module_xyz"]):
                pass
        async with interloop.Pool(1, preload=["poolfuncs"]) as pool:
            assert await pool.run(pf.add, 1, 1) == 2
    run(main())


def test_a_failing_worker_fails_its_job_not_the_process():
    async def main():
        async with interloop.Pool(2) as pool:
            with pytest.raises(RuntimeError, match="stopped while running this job"):
                await pool.run(pf.break_worker_loop)
            # the other worker still serves
            assert await asyncio.gather(*(pool.run(pf.add, i, 1) for i in range(10))) == list(range(1, 11))
    run(main())


def test_async_with_exit_waits_for_submitted_work():
    async def main():
        async with interloop.Pool(2) as pool:
            futs = [pool.submit(pf.sleep_then, i, 0.05) for i in range(6)]
        assert [f.result() for f in futs] == list(range(6))
    run(main())


def test_done_callbacks_of_job_futures_keep_asyncio_semantics():
    """Callbacks added to a pending job future are kept by the pool and run from one
    loop callback per drained batch (on asyncio's loop): each still runs once, after
    the future is done, in its own context, in the order added; an exception goes to
    the loop's exception handler and does not stop the others; remove_done_callback,
    cancel() and set_result() see the kept ones."""
    import contextvars
    var = contextvars.ContextVar("var", default="unset")

    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        async with interloop.Pool(2) as pool:
            seen = []

            def cb(tag):
                def f(fut):
                    assert fut.done()
                    seen.append((tag, var.get(), fut.result()))
                return f

            def bad(fut):
                raise ZeroDivisionError("in a callback")

            futs = []
            for i in range(20):
                var.set(f"ctx{i}")
                f = pool.submit(pf.ident, i)
                f.add_done_callback(cb(f"a{i}"))
                f.add_done_callback(bad)
                f.add_done_callback(cb(f"b{i}"), context=contextvars.copy_context())
                futs.append(f)
            var.set("main")
            removed = cb("removed")
            futs[0].add_done_callback(removed)
            assert futs[0].remove_done_callback(removed) == 1
            assert futs[1].remove_done_callback(bad) == 1
            await asyncio.gather(*futs)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            for i in range(20):
                a, b = seen.index((f"a{i}", f"ctx{i}", i)), seen.index((f"b{i}", f"ctx{i}", i))
                assert a < b
            assert len(seen) == 40
            assert len(errors) == 19
            assert all(isinstance(e["exception"], ZeroDivisionError) for e in errors)
            assert all(e["message"].startswith("Exception in callback") for e in errors)

            # a callback added after the result is asyncio's own
            late = []
            futs[2].add_done_callback(late.append)
            await asyncio.sleep(0)
            assert late == [futs[2]]

            # cancel() and set_result() run the kept callbacks too (once)
            slow = pool.submit(pf.sleep_then, 1, 5.0)
            got = []
            slow.add_done_callback(got.append)
            slow.add_done_callback(got.append)
            slow.cancel()
            await asyncio.sleep(0)
            assert got == [slow, slow]
            slow2 = pool.submit(pf.sleep_then, 2, 5.0)
            slow2.add_done_callback(got.append)
            slow2.set_result("by hand")
            await asyncio.sleep(0)
            assert got == [slow, slow, slow2]
            slow2.cancel()
        await asyncio.sleep(0)
        assert got == [slow, slow, slow2]
    run(main())


def test_kept_callbacks_after_a_keyboardinterrupt_still_run(loop_kind):
    """A BaseException that leaves the batch runner (as it would leave a Handle)
    reschedules the rest of the batch instead of dropping it."""
    import contextvars
    if loop_kind != "asyncio":
        pytest.skip("one loop is enough: a unit test of run_callbacks")
    ran = []

    def interrupt(fut):
        raise KeyboardInterrupt

    class FakeLoop:
        def __init__(self):
            self.soon = []

        def call_soon(self, fn, *args, context=None):
            self.soon.append((fn, args, context))

    class Fut:
        def __init__(self, cb, more=None):
            self._cb, self._cbctx, self._more = cb, contextvars.copy_context(), more

    ctx = contextvars.copy_context()
    futs = [Fut(ran.append), Fut(interrupt, [(ran.append, ctx), (ran.append, ctx)]), Fut(ran.append)]
    loop = FakeLoop()
    with pytest.raises(KeyboardInterrupt):
        _futures.run_callbacks(loop, futs)
    assert ran == [futs[0]]
    # the interrupted future's other callbacks, then the rest of the batch
    assert [(fn, args) for fn, args, _ in loop.soon] == [
        (ran.append, (futs[1],)), (ran.append, (futs[1],)), (_futures.run_callbacks, (loop, futs[2:]))]


def test_job_futures_are_out_of_the_gc_only_while_pending():
    """Pending job futures are untracked by the cyclic GC (the pool holds them);
    every way out of pending tracks them again, so cycles through them are freed."""
    import gc
    import weakref

    async def main():
        async with interloop.Pool(2) as pool:
            f = pool.submit(pf.sleep_then, 1, 0.05)
            assert not gc.is_tracked(f)
            assert await f == 1
            assert gc.is_tracked(f)
            g = pool.submit(pf.sleep_then, 2, 5.0)
            g.cancel()
            assert gc.is_tracked(g)
            e = pool.submit(pf.plain_boom)
            with pytest.raises(ValueError):
                await e
            assert gc.is_tracked(e)
            by_hand = pool.submit(pf.sleep_then, 3, 0.05)
            by_hand.set_result("mine")
            h = pool.submit(pf.ident, 4)
            assert await h == 4
            await asyncio.sleep(0)  # out of the callback that resumed us (it holds h)
            cycle = [h]
            h._label = cycle  # h -> cycle -> h
            ref = weakref.ref(h)
            del h, cycle
            gc.collect()
            assert ref() is None
        assert gc.is_tracked(by_hand)
    run(main())


def test_close_cancel_resolves_every_future_once():
    async def main():
        pool = interloop.Pool(2)
        await pool.start()
        counts = [0] * 50
        futs = []
        for i in range(50):
            f = pool.submit(pf.log_cancel if i % 2 else pf.sleep_then, *((i,) if i % 2 else (i, 0.01)))
            f.add_done_callback(lambda _f, i=i: counts.__setitem__(i, counts[i] + 1))
            futs.append(f)
        assert await pool.close(cancel=True) == []
        await asyncio.sleep(0)
        assert all(f.done() for f in futs)
        assert counts == [1] * 50
        assert all(f.cancelled() for i, f in enumerate(futs) if i % 2)
        with pytest.raises(RuntimeError, match="closed"):
            pool.run(pf.noop)
    run(main())


def test_executor_for_run_in_executor():
    ex = interloop.InterpreterExecutor(workers=2)
    try:
        async def main():
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(ex, pf.add, 1, 2) == 3
            with pytest.raises(ValueError):
                await loop.run_in_executor(ex, pf.plain_boom)
        run(main())
        assert list(ex.map(pf.ident, range(10))) == list(range(10))
        assert ex.submit(pf.aadd, 1, 1).result(timeout=30) == 2
    finally:
        ex.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        ex.submit(pf.add, 1, 1)


def test_main_module_functions_in_a_script(tmp_path):
    r = run_script(tmp_path, """
        import asyncio, interloop

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        async def double(p):
            await asyncio.sleep(0)
            return Point(p.x * 2, p.y * 2)

        def square(x):
            return x * x

        async def main():
            async with interloop.Pool(2) as pool:
                p = await pool.run(double, Point(1, 2))
                print("point", type(p).__name__, p.x, p.y)
                print("square", await pool.run(square, 7))
            print("spawn", await interloop.spawn(square, 5))

        if __name__ == "__main__":
            asyncio.run(main())
    """)
    assert r.returncode == 0, r.stderr
    assert "point Point 2 4" in r.stdout
    assert "square 49" in r.stdout
    assert "spawn 25" in r.stdout
    assert "Exception ignored" not in r.stderr


def test_pool_left_open_at_exit_does_not_hang_or_crash(tmp_path):
    r = run_script(tmp_path, """
        import asyncio, interloop, poolfuncs
        async def main():
            pool = interloop.Pool(2)
            print(await pool.run(poolfuncs.add, 1, 2))
            pool.submit(poolfuncs.log_cancel, "left running")
            await asyncio.sleep(0.05)
        asyncio.run(main())
        print("end of script")
    """, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "end", "of", "script"]
    assert "Fatal" not in r.stderr and "Exception ignored" not in r.stderr


def test_executor_left_open_at_exit(tmp_path):
    r = run_script(tmp_path, """
        import interloop, poolfuncs
        ex = interloop.InterpreterExecutor(2)
        print(ex.submit(poolfuncs.add, 1, 2).result())
        ex.submit(poolfuncs.sleep_then, 1, 0.5)
        print("exit")
    """, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "exit"]
    assert "Fatal" not in r.stderr and "Exception ignored" not in r.stderr


def test_hung_job_close_timeout_names_the_stuck_worker(tmp_path):
    r = run_script(tmp_path, """
        import asyncio, interloop, poolfuncs, time, warnings
        warnings.simplefilter("ignore")
        async def main():
            pool = interloop.Pool(2)
            await pool.start()
            hung = pool.submit(poolfuncs.hang)
            while pool.stats()["running"] == [0, 0]:
                await asyncio.sleep(0.01)
            t = time.monotonic()
            stuck = await pool.close(timeout=0.5)
            print("returned after", round(time.monotonic() - t, 1))
            print("stuck:", stuck)
            print("hung future cancelled:", hung.cancelled())
        asyncio.run(main())
    """, timeout=60)
    assert "stuck: ['worker" in r.stdout, (r.stdout, r.stderr)
    assert "poolfuncs.hang" in r.stdout
    assert "hung future cancelled: True" in r.stdout
    assert "stuck in code that cannot be interrupted" in r.stderr
    assert r.returncode == 0, r.stderr


def test_ctrl_c_in_caller_cancels_running_work(tmp_path):
    r = run_script(tmp_path, """
        import asyncio, interloop, poolfuncs, os, signal
        async def main():
            async with interloop.Pool(1) as pool:
                fut = pool.submit(poolfuncs.log_cancel, "c")
                await pool.run(poolfuncs.get_log, ("start", "c"))
                asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
                try:
                    await fut
                except asyncio.CancelledError:
                    print("log", await pool.run(poolfuncs.get_log, ("cancelled", "c")))
                    raise
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
    """, timeout=60)
    assert "('cancelled', 'c')" in r.stdout, (r.stdout, r.stderr)
    assert "KeyboardInterrupt" in r.stdout


def test_interloop_loop_drains_completions_natively(loop_kind):
    """On interloop's loop no eventfd reader is registered: the loop drains the
    pool's completion queue itself; on asyncio's loop the pool uses add_reader."""
    async def main():
        loop = asyncio.get_running_loop()
        async with interloop.Pool(1) as pool:
            assert await pool.run(pf.add, 20, 22) == 42
            fd = pool._core.fd()
            if loop_kind == "interloop":
                assert pool._attached == "native"
                assert loop._io_handles(fd) == (None, None)
            else:
                assert pool._attached == "reader"
            results = await asyncio.gather(*(pool.run(pf.add, i, 1) for i in range(200)))
            assert results == [i + 1 for i in range(200)]
    run(main())
