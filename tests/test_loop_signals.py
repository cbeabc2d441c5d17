"""add_signal_handler / remove_signal_handler."""
import asyncio
import os
import signal

import pytest


def _wait(loop, predicate):
    async def waiter():
        deadline = loop.time() + 5
        while not predicate() and loop.time() < deadline:
            await asyncio.sleep(0.001)

    loop.run_until_complete(waiter())


@pytest.fixture(autouse=True)
def _restore_sigusr_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_signal_handler_runs_on_the_loop_with_args(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, lambda *a: calls.append(a), "x", 1)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    _wait(loop, lambda: calls)
    assert calls == [("x", 1)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_wakes_a_loop_with_nothing_to_do(loop):
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, fut.set_result, "signalled")

    async def main():
        # Delivered from a thread: the loop is blocked in its poll meanwhile.
        await asyncio.to_thread(os.kill, os.getpid(), signal.SIGUSR1)
        return await fut

    assert loop.run_until_complete(main()) == "signalled"
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_runs_once_per_delivery_and_can_be_replaced(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "new")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    _wait(loop, lambda: calls)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == ["new"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_remove_signal_handler_restores_default(loop):
    loop.add_signal_handler(signal.SIGUSR2, print)
    assert loop.remove_signal_handler(signal.SIGUSR2) is True
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR2) is False


def test_remove_sigint_handler_restores_python_default(loop):
    loop.add_signal_handler(signal.SIGINT, print)
    try:
        assert signal.getsignal(signal.SIGINT) != signal.default_int_handler
    finally:
        assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_add_signal_handler_invalid_signals(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(0, print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(signal.NSIG + 1, print)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, print)


def test_add_signal_handler_rejects_coroutine_function(loop):
    async def handler():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, handler)


def test_signal_handler_exception_goes_to_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def handler():
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    _wait(loop, lambda: contexts)
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    loop.remove_signal_handler(signal.SIGUSR1)


def test_close_removes_signal_handlers(new_loop):
    loop = new_loop()
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_add_signal_handler_on_closed_loop_raises(new_loop):
    loop = new_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, print)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_signal_handler_propagates(loop, exc_type):
    def handler():
        raise exc_type()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    try:
        with pytest.raises(exc_type):
            loop.run_forever()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_context_is_a_copy_at_registration(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="default")
    seen = []
    var.set("at-registration")
    loop.add_signal_handler(signal.SIGUSR1, lambda: (seen.append(var.get()), loop.stop()))
    var.set("later")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    loop.remove_signal_handler(signal.SIGUSR1)
    # asyncio makes the handler's Handle with context=None: it copies the
    # context current when the Handle is made, at add_signal_handler time.
    assert seen == ["at-registration"]
