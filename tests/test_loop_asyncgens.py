"""Async generator hooks: finalization on the loop and shutdown_asyncgens."""
import asyncio
import gc
import sys

import pytest


def test_shutdown_asyncgens_finalizes_suspended_generators(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)  # finalizer may await: it runs on the loop
            finalized.append(True)

    async def main():
        gen = agen()
        assert await gen.__anext__() == 1
        return gen

    gen = loop.run_until_complete(main())
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == [True]
    del gen


def test_asyncgen_garbage_collected_is_closed_on_the_loop(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(asyncio.get_running_loop())

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen
        gc.collect()
        # aclose() was scheduled as a task by the firstiter/finalizer hooks.
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert finalized == [loop]


def test_asyncgen_hooks_are_installed_while_running_and_restored(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        return sys.get_asyncgen_hooks()

    during = loop.run_until_complete(main())
    assert during.firstiter is not None and during.finalizer is not None
    assert sys.get_asyncgen_hooks() == before


def test_new_asyncgen_after_shutdown_asyncgens_is_not_tracked(loop):
    async def agen():
        yield 1

    loop.run_until_complete(loop.shutdown_asyncgens())

    async def main():
        gen = agen()
        # asyncio warns that the generator is iterated after shutdown.
        with pytest.warns(ResourceWarning, match="after loop.shutdown_asyncgens"):
            await gen.__anext__()
        await gen.aclose()

    loop.run_until_complete(main())


def test_shutdown_asyncgens_reports_errors_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in finalizer")

    async def main():
        gen = agen()
        await gen.__anext__()
        return gen

    gen = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["asyncgen"] is gen


def test_asyncio_run_finalizes_asyncgens(loop_kind):
    from conftest import make_loop

    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    holder = []

    async def main():
        gen = agen()
        await gen.__anext__()
        holder.append(gen)  # keep it alive past main()

    asyncio.run(main(), loop_factory=lambda: make_loop(loop_kind))
    assert finalized == [True]
