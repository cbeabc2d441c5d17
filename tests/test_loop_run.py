"""run_forever / run_until_complete / stop / close, and the ways to start a loop
(asyncio.run with loop_factory, asyncio.Runner, interloop.run, the policy)."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from conftest import make_loop


def test_stop_before_run_forever_runs_one_iteration(loop):
    calls = []
    loop.stop()
    loop.call_soon(calls.append, 1)
    loop.run_forever()
    assert calls == [1]
    # The stop request was consumed: the next run_forever needs its own stop.
    loop.call_soon(calls.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1, 2]


def test_stop_inside_callback_runs_the_rest_of_the_batch_once(loop):
    calls = []
    loop.call_soon(calls.append, "a")
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, "b")
    loop.call_soon(lambda: loop.call_soon(calls.append, "next-iteration"))
    loop.run_forever()
    assert calls == ["a", "b"]
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["a", "b", "next-iteration"]


def test_stop_twice_stops_once(loop):
    calls = []
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_soon(calls.append, "ran")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["ran"]


def test_is_running_inside_and_outside(loop):
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_run_until_complete_returns_result(loop):
    async def coro():
        await asyncio.sleep(0)
        return 42

    assert loop.run_until_complete(coro()) == 42


def test_run_until_complete_accepts_future_and_raises_its_exception(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(fut)


def test_run_until_complete_rejects_non_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete("not a future")


def test_run_until_complete_with_future_of_another_loop_raises(loop, new_loop):
    other = new_loop()
    fut = other.create_future()
    with pytest.raises(ValueError):
        loop.run_until_complete(fut)


def test_run_until_complete_on_running_loop_raises(loop):
    async def inner():
        pass

    async def outer():
        coro = inner()
        try:
            loop.run_until_complete(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError, match="already running"):
        loop.run_until_complete(outer())


def test_run_forever_on_running_loop_raises(loop):
    async def outer():
        loop.run_forever()

    with pytest.raises(RuntimeError, match="already running"):
        loop.run_until_complete(outer())


def test_running_two_loops_in_one_thread_raises(loop, new_loop):
    other = new_loop()

    async def outer():
        other.run_forever()

    with pytest.raises(RuntimeError, match="another loop is running"):
        loop.run_until_complete(outer())


def test_run_until_complete_stops_when_loop_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)


def test_close_while_running_raises(loop):
    async def main():
        loop.close()

    with pytest.raises(RuntimeError):
        loop.run_until_complete(main())
    assert not loop.is_closed()


def test_close_is_idempotent_and_clears_pending_callbacks(new_loop):
    loop = new_loop()
    calls = []
    loop.call_soon(calls.append, 1)
    loop.close()
    loop.close()
    assert loop.is_closed()
    assert calls == []


def test_running_loop_is_visible_to_asyncio(loop):
    async def main():
        assert asyncio.get_running_loop() is loop
        assert asyncio.get_event_loop() is loop
        return True

    assert loop.run_until_complete(main())
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_run_forever_from_another_thread_with_threadsafe_stop(loop_kind):
    # A loop may run in a thread other than the one that created it.
    loop = make_loop(loop_kind)
    started = threading.Event()
    loop.call_soon(started.set)
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        assert started.wait(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert not thread.is_alive()
    finally:
        loop.close()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_propagates_out_of_run_forever(loop, exc_type):
    calls = []

    def raiser():
        raise exc_type()

    loop.call_soon(raiser)
    loop.call_soon(calls.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    # The loop stays usable; the callback after the raiser was not lost.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["after"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_timer_callback_propagates(loop, exc_type):
    def raiser():
        raise exc_type()

    loop.call_later(0.001, raiser)
    with pytest.raises(exc_type):
        loop.run_forever()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_coroutine_propagates_out_of_run_until_complete(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())


def test_ordinary_exception_in_callback_goes_to_handler_not_out(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def raiser():
        raise ZeroDivisionError

    loop.call_soon(raiser)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ZeroDivisionError)


# --- starting a loop: asyncio.run(loop_factory=), Runner, interloop.run, policy ---


def _loop_type(kind):
    loop = make_loop(kind)
    try:
        return type(loop)
    finally:
        loop.close()


def _factory(kind):
    return lambda: make_loop(kind)


def test_asyncio_run_with_loop_factory(loop_kind):
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=_factory(loop_kind)) is _loop_type(loop_kind)


def test_asyncio_run_debug_flag(loop_kind):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert asyncio.run(main(), debug=True, loop_factory=_factory(loop_kind)) is True
    assert asyncio.run(main(), debug=False, loop_factory=_factory(loop_kind)) is False


def test_asyncio_run_cancels_leftover_tasks_and_closes_loop(loop_kind):
    state = {}

    async def sleeper():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    async def main():
        state["loop"] = asyncio.get_running_loop()
        asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)

    asyncio.run(main(), loop_factory=_factory(loop_kind))
    assert state["cancelled"] is True
    assert state["loop"].is_closed()


def test_asyncio_runner_reuses_one_loop(loop_kind):
    async def current():
        return asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=_factory(loop_kind)) as runner:
        first = runner.run(current())
        second = runner.run(current())
        assert first is second is runner.get_loop()
        assert type(first) is _loop_type(loop_kind)
    assert first.is_closed()


def test_asyncio_runner_propagates_contextvars_across_runs(loop_kind):
    import contextvars

    var = contextvars.ContextVar("var")

    async def setter():
        var.set("set")

    async def getter():
        return var.get("missing")

    with asyncio.Runner(loop_factory=_factory(loop_kind)) as runner:
        runner.run(setter())
        assert runner.run(getter()) == "set"


def _run(kind, coro, **kwargs):
    """`asyncio.run` for asyncio, `interloop.run` for interloop."""
    if kind == "asyncio":
        return asyncio.run(coro, **kwargs)
    import interloop

    return interloop.run(coro, **kwargs)


def test_run_function(loop_kind):
    async def main():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert _run(loop_kind, main()) is _loop_type(loop_kind)


def test_run_function_debug(loop_kind):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert _run(loop_kind, main(), debug=True) is True


def test_run_function_inside_running_loop_fails_fast(loop_kind):
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            _run(loop_kind, coro)
        finally:
            coro.close()

    # asyncio.run checks before it makes a loop of its own.
    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        _run(loop_kind, main())


def test_run_function_rejects_non_coroutine(loop_kind):
    with pytest.raises((TypeError, ValueError)):
        _run(loop_kind, "not a coroutine")


def test_interloop_loop_is_an_abstract_event_loop():
    import interloop

    loop = interloop.new_event_loop()
    try:
        assert isinstance(loop, interloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_interloop_policy_makes_interloop_loops():
    import interloop

    policy = interloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, interloop.Loop)
    finally:
        loop.close()


def test_interloop_install_sets_the_policy():
    import interloop

    old = asyncio.get_event_loop_policy()
    try:
        with warnings.catch_warnings():
            # 3.14+ deprecates policies; interloop.install() warns there.
            warnings.simplefilter("ignore", DeprecationWarning)
            interloop.install()
        assert isinstance(asyncio.get_event_loop_policy(), interloop.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, interloop.Loop)
        finally:
            loop.close()

        async def main():
            return asyncio.get_running_loop()

        # asyncio.run without loop_factory goes through the policy.
        ran_on = asyncio.run(main())
        assert isinstance(ran_on, interloop.Loop)
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="install() warns on 3.14+")
def test_interloop_install_does_not_warn_before_314():
    import interloop

    old = asyncio.get_event_loop_policy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            interloop.install()
    finally:
        asyncio.set_event_loop_policy(old)


# --- Ctrl-C: a program under run() that gets SIGINT ---

_CTRL_C_PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    kind = sys.argv[1]
    if kind == "asyncio":
        run = asyncio.run
    else:
        import interloop
        run = interloop.run

    async def main():
        print("ready", flush=True)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("main cancelled", flush=True)
            raise

    try:
        run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(3)
    print("returned normally", flush=True)
    """
)


def _interrupt_when_ready(program, loop_kind):
    """Runs `program` for `loop_kind`, sends SIGINT once it prints "ready";
    returns (stdout after "ready", stderr, exit code)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", program, loop_kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        # Let the child's loop reach its poll (a signal landing just before
        # is test_signal_pending_when_loop_goes_to_sleep_is_handled's case).
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out, err, proc.returncode


def test_sigint_during_run_raises_keyboard_interrupt(loop_kind):
    out, err, code = _interrupt_when_ready(_CTRL_C_PROGRAM, loop_kind)
    # asyncio.run cancels main (which sees CancelledError), then re-raises
    # KeyboardInterrupt out of run().
    assert out.splitlines() == ["main cancelled", "KeyboardInterrupt"], err
    assert code == 3, err


_CTRL_C_BLOCKED_PROGRAM = textwrap.dedent(
    """
    import asyncio, sys, time
    kind = sys.argv[1]
    if kind == "asyncio":
        run = asyncio.run
    else:
        import interloop
        run = interloop.run

    async def main():
        print("ready", flush=True)
        # A loop blocked in its poll with no timers and nothing ready.
        await asyncio.get_running_loop().create_future()

    try:
        run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(3)
    """
)


def test_sigint_wakes_a_loop_waiting_with_no_timers(loop_kind):
    out, err, code = _interrupt_when_ready(_CTRL_C_BLOCKED_PROGRAM, loop_kind)
    assert out.splitlines() == ["KeyboardInterrupt"], err
    assert code == 3, err


@pytest.fixture
def default_sigint():
    """SIGINT raises KeyboardInterrupt (Python's default), restored afterwards."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_sigint_interrupts_run_forever_blocked_in_poll(loop, default_sigint):
    # No timers, nothing ready: the loop sleeps in its poll until a thread
    # sends SIGINT; Python's handler must get to raise KeyboardInterrupt.
    started = threading.Event()

    def killer():
        started.wait(10)
        # Give the loop time to enter its poll: a signal that lands just
        # before is another case, tested deterministically below
        # (test_signal_pending_when_loop_goes_to_sleep_is_handled).
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=killer)
    thread.start()
    loop.call_soon(started.set)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
    finally:
        thread.join()
    assert not loop.is_running()


def test_sigint_raised_in_callback_propagates(loop, default_sigint):
    loop.call_soon(signal.raise_signal, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()


_PENDING_SIGNAL_PROGRAM = textwrap.dedent(
    """
    import ctypes, os, signal, sys, threading
    sys.path.insert(0, sys.argv[2])
    from conftest import make_loop

    loop = make_loop(sys.argv[1])
    libc = ctypes.CDLL(None)
    # The last callback before the loop would block sends SIGINT through a C
    # function that, unlike os.kill, does not run Python's signal handlers:
    # the signal is pending when the callback returns. asyncio's Python code
    # runs the handler at once; a native loop must check before it blocks.
    loop.call_soon(libc.kill, os.getpid(), int(signal.SIGINT))
    safety_net = []
    def wake():
        safety_net.append(True)
        loop.call_soon_threadsafe(loop.stop)
    timer = threading.Timer(3, wake)
    timer.start()
    try:
        loop.run_forever()
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    timer.cancel()
    print(outcome, "after safety net" if safety_net else "at once", flush=True)
    """
)


def test_signal_pending_when_loop_goes_to_sleep_is_handled(loop_kind):
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PENDING_SIGNAL_PROGRAM, loop_kind, os.path.dirname(__file__)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the bug we look for
        raise AssertionError(f"the loop never woke up: {exc}")
    assert out.stdout.strip() == "KeyboardInterrupt at once", out.stderr


def test_interloop_instance_dict_is_never_made():
    # interloop.Loop keeps asyncio's instance attributes in slots, so that its
    # __dict__ is never made and CPython specializes method lookups on the loop.
    # Whatever asyncio's own code sets on the loop during ordinary use must be in
    # those slots: this workload goes through tasks, timers, the executor, sockets,
    # signal handlers, servers and streams, a subprocess, async generators, debug mode
    # and close, then checks that no instance dict exists.
    import gc
    import signal
    import socket
    import sys

    import interloop

    loop = interloop.new_event_loop()

    async def agen():
        yield 1

    async def main():
        lp = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        await asyncio.gather(*(asyncio.sleep(0) for _ in range(3)))
        assert await lp.run_in_executor(None, sum, [1, 2]) == 3
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            await lp.sock_sendall(a, b"x")
            assert await lp.sock_recv(b, 1) == b"x"
        lp.add_signal_handler(signal.SIGUSR1, print)
        lp.remove_signal_handler(signal.SIGUSR1)

        async def echo(reader, writer):
            writer.write(await reader.read(10))
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"hi")
        assert await reader.read(10) == b"hi"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        assert await proc.wait() == 0
        lp.set_task_factory(None)
        lp.set_exception_handler(None)
        async for _ in agen():
            pass

    loop.set_debug(True)
    loop.set_debug(False)
    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
    # The GC visits the instance dict if there is one; reading `__dict__` afterwards
    # makes a new one if there was none (which then cannot be among the referents).
    referents = gc.get_referents(loop)
    assert not any(r is loop.__dict__ for r in referents), sorted(loop.__dict__)
