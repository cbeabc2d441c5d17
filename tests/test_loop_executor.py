"""run_in_executor, the default executor and its shutdown."""
import asyncio
import concurrent.futures
import threading

import pytest


def test_run_in_executor_runs_in_another_thread(loop):
    main_thread = threading.get_ident()

    async def main():
        return await loop.run_in_executor(None, threading.get_ident)

    assert loop.run_until_complete(main()) != main_thread


def test_run_in_executor_passes_args_and_exceptions(loop):
    def div(a, b):
        return a / b

    async def main():
        ok = await loop.run_in_executor(None, div, 6, 3)
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, div, 1, 0)
        return ok

    assert loop.run_until_complete(main()) == 2


def test_run_in_executor_returns_an_asyncio_future(loop):
    fut = loop.run_in_executor(None, int, "7")
    assert isinstance(fut, asyncio.Future)
    assert loop.run_until_complete(fut) == 7


def test_run_in_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as pool:
        name = loop.run_until_complete(
            loop.run_in_executor(pool, lambda: threading.current_thread().name)
        )
    assert name.startswith("mine")


def test_set_default_executor(loop):
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="default-x")
    loop.set_default_executor(pool)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name)
    )
    assert name.startswith("default-x")
    loop.run_until_complete(loop.shutdown_default_executor())


def test_set_default_executor_rejects_non_thread_pool(loop):
    with pytest.raises(TypeError):
        loop.set_default_executor(object())


def test_shutdown_default_executor_waits_for_running_jobs(loop):
    finished = threading.Event()
    release = threading.Event()

    def job():
        release.wait(10)
        finished.set()

    async def main():
        fut = loop.run_in_executor(None, job)
        loop.call_soon(release.set)
        await loop.shutdown_default_executor()
        assert finished.is_set()
        await fut

    loop.run_until_complete(main())


def test_run_in_executor_after_shutdown_default_executor_raises(loop):
    async def main():
        await loop.run_in_executor(None, int)
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError):
            loop.run_in_executor(None, int)

    loop.run_until_complete(main())


def test_run_in_executor_on_closed_loop_raises(new_loop):
    loop = new_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        loop.run_in_executor(None, int)


def test_run_in_executor_rejects_coroutine_function_in_debug(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.run_in_executor(None, coro_fn)


def test_many_executor_jobs_complete(loop):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(200)))

    assert loop.run_until_complete(main()) == [i * i for i in range(200)]
