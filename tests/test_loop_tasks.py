"""create_future / create_task, task factories, TaskGroup, timeouts, contextvars."""
import asyncio
import contextvars

import pytest


def test_create_future_belongs_to_the_loop(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, "r")
    assert loop.run_until_complete(fut) == "r"


def test_create_task_returns_a_real_task(loop):
    async def coro():
        return "done"

    task = loop.create_task(coro())
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == "done"


def test_create_task_name(loop):
    async def coro():
        return asyncio.current_task().get_name()

    task = loop.create_task(coro(), name="my-task")
    assert task.get_name() == "my-task"
    assert loop.run_until_complete(task) == "my-task"
    unnamed = loop.create_task(coro())
    assert loop.run_until_complete(unnamed).startswith("Task-")


def test_create_task_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")

    async def coro():
        seen = var.get()
        var.set("set-in-task")
        return seen

    task = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(task) == "in-ctx"
    assert ctx[var] == "set-in-task"
    assert var.get() == "default"


def test_create_task_copies_current_context(loop):
    var = contextvars.ContextVar("var", default="default")
    var.set("outer")

    async def child():
        seen = var.get()
        var.set("child")
        return seen

    async def main():
        var.set("main")
        seen = await loop.create_task(child())
        return seen, var.get()

    assert loop.run_until_complete(main()) == ("main", "main")
    assert var.get() == "outer"


def test_create_task_rejects_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(lambda: None)


def test_task_factory_is_used_and_gets_name_and_context(loop):
    made = []

    def factory(loop_, coro, **kwargs):
        made.append(kwargs)
        return asyncio.Task(coro, loop=loop_, **kwargs)

    assert loop.get_task_factory() is None
    # Plain tasks first, so that a kept fast path is in place before the factory.
    assert loop.run_until_complete(loop.create_task(asyncio.sleep(0, 1))) == 1
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return 1

    ctx = contextvars.copy_context()
    task = loop.create_task(coro(), name="n", context=ctx)
    assert loop.run_until_complete(task) == 1
    assert task.get_name() == "n"
    assert made and made[0].get("context") is ctx
    # A plain create_task (no name, no context) goes through the factory too.
    plain = loop.create_task(coro())
    assert loop.run_until_complete(plain) == 1
    assert len(made) == 2 and made[1] == {}
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    again = loop.create_task(coro())
    assert loop.run_until_complete(again) == 1
    assert len(made) == 2


def test_task_factory_must_be_callable(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(1)


def test_eager_task_factory_runs_the_first_step_synchronously(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    steps = []

    async def coro():
        steps.append("started")
        await asyncio.sleep(0)
        steps.append("resumed")
        return "done"

    async def main():
        task = asyncio.get_running_loop().create_task(coro())
        assert steps == ["started"]
        return await task

    assert loop.run_until_complete(main()) == "done"
    assert steps == ["started", "resumed"]


def test_eager_task_that_finishes_immediately_is_done_at_creation(loop):
    loop.set_task_factory(asyncio.eager_task_factory)

    async def coro():
        return 5

    async def main():
        task = asyncio.get_running_loop().create_task(coro())
        assert task.done()
        return task.result()

    assert loop.run_until_complete(main()) == 5


def test_task_group_collects_results_and_errors(loop):
    async def ok(x):
        await asyncio.sleep(0)
        return x

    async def bad():
        await asyncio.sleep(0)
        raise ValueError("bad")

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(ok(i)) for i in range(5)]
        results = [t.result() for t in tasks]
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(bad())
                tg.create_task(asyncio.sleep(3600))
        return results, info.value

    results, group = loop.run_until_complete(main())
    assert results == [0, 1, 2, 3, 4]
    assert [type(e) for e in group.exceptions] == [ValueError]


def test_timeout_cancels_and_raises_timeout_error(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(3600)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.01)
        async with asyncio.timeout(3600) as cm:
            await asyncio.sleep(0)
        return cm.expired()

    assert loop.run_until_complete(main()) is False


def test_timeout_at_uses_loop_time(loop):
    async def main():
        when = asyncio.get_running_loop().time() + 0.01
        with pytest.raises(TimeoutError):
            async with asyncio.timeout_at(when):
                await asyncio.sleep(3600)
        return asyncio.get_running_loop().time() >= when

    assert loop.run_until_complete(main())


def test_cancel_task_with_message(loop):
    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        task = asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)
        task.cancel("because")
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        return info.value.args

    assert loop.run_until_complete(main()) == ("because",)


def test_contextvars_flow_through_tasks_callbacks_and_gather(loop):
    var = contextvars.ContextVar("var")

    async def child(n):
        await asyncio.sleep(0)
        return (n, var.get())

    async def main():
        var.set("main")
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(lambda: fut.set_result(var.get()))
        from_callback = await fut
        from_gather = await asyncio.gather(*(child(i) for i in range(3)))
        return from_callback, from_gather

    assert loop.run_until_complete(main()) == ("main", [(0, "main"), (1, "main"), (2, "main")])


def test_to_thread_copies_context(loop):
    var = contextvars.ContextVar("var")

    async def main():
        var.set("main")
        return await asyncio.to_thread(var.get)

    assert loop.run_until_complete(main()) == "main"


def test_all_tasks_and_current_task(loop):
    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        me = asyncio.current_task()
        other = asyncio.get_running_loop().create_task(sleeper())
        tasks = asyncio.all_tasks()
        other.cancel()
        try:
            await other
        except asyncio.CancelledError:
            pass
        return me, other, tasks

    me, other, tasks = loop.run_until_complete(main())
    assert me in tasks and other in tasks
    assert asyncio.all_tasks(loop) == set()


def test_many_tasks_sleeping_zero(loop):
    counter = 0

    async def worker():
        nonlocal counter
        for _ in range(100):
            await asyncio.sleep(0)
            counter += 1

    async def main():
        await asyncio.gather(*(worker() for _ in range(100)))

    loop.run_until_complete(main())
    assert counter == 100 * 100


def test_sleep_with_result(loop):
    assert loop.run_until_complete(asyncio.sleep(0.001, result="r")) == "r"


def test_future_callbacks_run_in_their_context_and_errors_reach_the_handler(loop):
    # asyncio's C futures schedule their callbacks through one internal helper,
    # which interloop queues without a handle: the callback must still run in its
    # context, with the future as argument, and an error must still reach the
    # exception handler with a handle that names the callback.
    var = contextvars.ContextVar("var", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    seen = []
    reported = []
    loop.set_exception_handler(lambda lp, context: reported.append(context))

    def good(fut):
        seen.append((fut.result(), var.get()))

    def bad(fut):
        raise ZeroDivisionError("from a done callback")

    fut = loop.create_future()
    fut.add_done_callback(good, context=ctx)
    fut.add_done_callback(bad)
    fut.add_done_callback(good)
    fut.set_result(7)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == [(7, "inner"), (7, "outer")]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], ZeroDivisionError)
    assert reported[0]["handle"] is not None
    if not loop.get_debug():
        # (In debug mode interloop's handle has dropped its callback by the time
        # the handler sees it: a known difference, README "Compatibility".)
        assert "bad" in repr(reported[0]["handle"])


def test_future_callbacks_on_a_closed_loop_raise(loop):
    fut = loop.create_future()
    fut.add_done_callback(lambda f: None)
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        fut.set_result(1)
