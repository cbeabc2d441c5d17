"""asyncio's debug mode: flag sources, slow-callback warnings, source tracebacks."""
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest


def test_set_debug_get_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


@pytest.mark.parametrize(
    "env, args, expected",
    [
        ({"PYTHONASYNCIODEBUG": "1"}, [], True),
        ({"PYTHONASYNCIODEBUG": ""}, [], False),
        ({"PYTHONASYNCIODEBUG": ""}, ["-X", "dev"], True),
    ],
    ids=["PYTHONASYNCIODEBUG=1", "default", "-X dev"],
)
def test_debug_default_comes_from_environment(loop_kind, env, args, expected):
    program = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from conftest import make_loop
        loop = make_loop({loop_kind!r})
        print(loop.get_debug())
        loop.close()
        """
    )
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONDEVMODE", None)
    out = subprocess.run(
        [sys.executable, *args, "-c", program],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


def _slow():
    time.sleep(0.05)


def test_slow_callback_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(_slow)
        loop.call_soon(loop.stop)
        loop.run_forever()
    slow = [r for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert len(slow) == 1
    assert slow[0].levelno == logging.WARNING
    assert "Executing <Handle _slow()" in slow[0].getMessage()


def test_slow_timer_callback_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_later(0.001, _slow)
        loop.call_later(0.1, loop.stop)
        loop.run_forever()
    slow = [r for r in caplog.records if "took" in r.getMessage()]
    assert len(slow) == 1
    assert "Executing <TimerHandle" in slow[0].getMessage()


def test_slow_task_step_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_coro():
        _slow()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coro())
    slow = [r for r in caplog.records if "took" in r.getMessage()]
    assert len(slow) == 1
    assert "slow_coro" in slow[0].getMessage()


def test_slow_callback_is_not_logged_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(_slow)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert not [r for r in caplog.records if "took" in r.getMessage()]


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1


def test_handles_have_source_traceback_in_debug_mode(loop):
    loop.set_debug(True)
    h = loop.call_soon(print)
    th = loop.call_later(10, print)
    for handle in (h, th):
        tb = handle._source_traceback
        assert tb, handle
        # The last frame is the caller of call_soon/call_later (this test),
        # not the loop's internals.
        assert tb[-1].name == "test_handles_have_source_traceback_in_debug_mode"
        handle.cancel()


def test_handles_have_no_source_traceback_without_debug(loop):
    loop.set_debug(False)
    h = loop.call_soon(print)
    assert h._source_traceback is None
    h.cancel()


def test_callback_exception_context_has_source_traceback_in_debug(loop):
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def raiser():
        raise ValueError

    loop.call_soon(raiser)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert contexts[0].get("source_traceback")


def test_future_created_in_debug_mode_records_traceback(loop):
    loop.set_debug(True)
    fut = loop.create_future()
    assert fut._source_traceback
    fut.cancel()


def test_slow_reader_callback_is_logged_in_debug_mode(loop, caplog):
    import socket

    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    a, b = socket.socketpair()
    a.setblocking(False)

    def slow_reader():
        a.recv(100)
        loop.remove_reader(a)
        _slow()
        loop.stop()

    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.add_reader(a, slow_reader)
            b.send(b"x")
            loop.run_forever()
    finally:
        a.close()
        b.close()
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert len(slow) == 1
    assert "slow_reader" in slow[0]


def test_slow_signal_handler_is_logged_in_debug_mode(loop, caplog):
    import signal

    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_handler():
        _slow()
        loop.stop()

    old = signal.getsignal(signal.SIGUSR1)
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.add_signal_handler(signal.SIGUSR1, slow_handler)
            loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
            loop.run_forever()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, old)
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert len(slow) == 1
    assert "slow_handler" in slow[0]
