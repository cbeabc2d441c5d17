"""Exception handler: get/set/default/call, and what callbacks' errors report."""
import asyncio
import logging

import pytest


def test_exception_handler_get_set(loop):
    def handler(loop, context):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_exception_handler_rejects_non_callable(loop):
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")


def _raiser():
    raise ZeroDivisionError("from callback")


def test_callback_exception_context_keys(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    handle = loop.call_soon(_raiser)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    got_loop, ctx = contexts[0]
    assert got_loop is loop
    assert {"message", "exception", "handle"} <= set(ctx)
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is handle
    assert "_raiser" in ctx["message"]


def test_timer_callback_exception_reports_timer_handle(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    handle = loop.call_later(0.001, _raiser)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert contexts[0]["handle"] is handle
    assert isinstance(contexts[0]["exception"], ZeroDivisionError)


def test_loop_continues_after_callback_exception(loop):
    loop.set_exception_handler(lambda lp, ctx: None)
    calls = []
    loop.call_soon(_raiser)
    loop.call_soon(calls.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["after"]


def test_default_exception_handler_logs_to_asyncio_logger(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(_raiser)
        loop.call_soon(loop.stop)
        loop.run_forever()
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert "Exception in callback" in records[0].getMessage()
    assert records[0].exc_info[0] is ZeroDivisionError


def test_call_exception_handler_with_custom_context(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.call_exception_handler({"message": "custom", "extra": 1})
    assert contexts == [{"message": "custom", "extra": 1}]


def test_default_exception_handler_can_be_called_directly(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct message"})
    assert any("direct message" in r.getMessage() for r in caplog.records)


def test_custom_handler_can_delegate_to_default(loop, caplog):
    def handler(lp, ctx):
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(_raiser)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert any("Exception in callback" in r.getMessage() for r in caplog.records)


def test_broken_exception_handler_is_reported_by_default_handler(loop, caplog):
    def broken(lp, ctx):
        raise RuntimeError("handler is broken")

    loop.set_exception_handler(broken)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(_raiser)
        loop.call_soon(loop.stop)
        loop.run_forever()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Unhandled error in exception handler" in m for m in messages)


def test_never_retrieved_task_exception_is_reported(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def fails():
        raise ValueError("never retrieved")

    task = loop.create_task(fails())
    loop.run_until_complete(asyncio.sleep(0.001))
    assert task.done()
    del task
    import gc

    gc.collect()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert "future" in contexts[0] or "task" in contexts[0]
