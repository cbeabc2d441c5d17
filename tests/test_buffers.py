"""Zero-copy buffers through channels: large buffers travel by reference.

The receiver gets a read-only memoryview over the sender's own memory (the same
address), memory is not duplicated (RSS), views outlive the sender's object, and
the object is released when the last view anywhere goes."""
import asyncio
import gc
import os
import pickle
import sys
import weakref
import array

import pytest

import interloop
from interloop import Channel, _channel

import chanfuncs as cf
from conftest import run

pytestmark = pytest.mark.usefixtures("loop_kind")  # every test on asyncio's loop and on interloop's

needs_workers = pytest.mark.skipif(
    sys.version_info < (3, 12, 4),
    reason="pool workers need CPython >= 3.12.4 (gh-112140)")

MIB = 1 << 20


addr = _channel._n.buffer_address


async def until(pred, timeout=10.0):
    """Waits (running the loop, so pending releases run) until ``pred()``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


# -- one interpreter ---------------------------------------------------------------

def test_large_buffers_arrive_as_read_only_views_of_the_same_memory():
    async def main():
        ch = Channel()
        for obj in (os.urandom(MIB), bytearray(os.urandom(MIB)), memoryview(os.urandom(MIB)),
                    pickle.PickleBuffer(os.urandom(MIB))):
            await ch.send(obj)
            mv = await ch.recv()
            assert type(mv) is memoryview and mv.readonly and mv.nbytes == MIB
            assert addr(mv) == addr(obj)
            assert mv == memoryview(obj).cast("B")
            with pytest.raises(TypeError):
                mv[0] = 1
            assert type(mv.obj).__name__ == "SharedBuffer"
    run(main())


def test_small_values_keep_their_types_and_small_views_are_copied():
    async def main():
        ch = Channel()
        for obj in (b"abc", bytearray(b"abc"), b"x" * (64 * 1024 - 1)):
            ch.send_nowait(obj)
            got = ch.recv_nowait()
            assert type(got) is type(obj) and got == obj
        small = bytearray(b"0123456789")
        ch.send_nowait(memoryview(small))
        got = ch.recv_nowait()
        assert type(got) is memoryview and got.readonly and bytes(got) == b"0123456789"
        small[0] = ord("X")  # a copy: the sender's later writes are not seen
        assert bytes(got) == b"0123456789"
    run(main())


def test_non_contiguous_and_shaped_views_arrive_as_flat_bytes():
    async def main():
        ch = Channel()
        src = bytes(range(256)) * 1024
        ch.send_nowait(memoryview(src)[::2])
        got = ch.recv_nowait()
        assert bytes(got) == src[::2] and got.format == "B" and got.ndim == 1
        ints = array.array("i", range(100_000))
        ch.send_nowait(memoryview(ints))
        got = ch.recv_nowait()
        assert addr(got) == addr(ints) and got.nbytes == len(ints) * ints.itemsize
        assert got.cast("i").tolist() == ints.tolist()
    run(main())


def test_out_of_band_pickle_buffers_travel_by_reference():
    async def main():
        ch = Channel()
        data = os.urandom(2 * MIB)
        await ch.send({"blob": cf.Blob(data), "small": cf.Blob(b"tiny"), "n": 7})
        got = await ch.recv()
        assert got["n"] == 7 and bytes(got["small"].data) == b"tiny"
        assert addr(got["blob"].data) == addr(data) and got["blob"].data == data
    run(main())


def test_a_received_view_sent_on_shares_the_memory_again():
    async def main():
        a, b = Channel(), Channel()
        data = os.urandom(MIB)
        await a.send(data)
        mv = await a.recv()
        await b.send(mv[100:])
        mv2 = await b.recv()
        assert addr(mv2) == addr(data) + 100 and mv2 == data[100:]
    run(main())


def test_views_outlive_the_senders_object_and_release_it_at_the_end():
    async def main():
        ch = Channel()
        arr = array.array("B", os.urandom(MIB))  # weak-referenceable exporter
        expected = arr.tobytes()
        gone = weakref.ref(arr)
        await ch.send(memoryview(arr))  # (an array itself would be pickled, in band)
        del arr
        gc.collect()
        mv = await ch.recv()
        view2 = mv[10:20]
        del mv
        assert gone() is not None  # still viewed
        assert bytes(view2) == expected[10:20]
        del view2
        gc.collect()
        assert gone() is None
    run(main())


def test_refused_sends_release_the_buffer():
    async def main():
        ch = Channel(maxsize=1)
        ch.send_nowait(b"first")
        arr = array.array("B", bytes(MIB))
        gone = weakref.ref(arr)
        with pytest.raises(interloop.ChannelFull):
            ch.send_nowait(memoryview(arr))
        ch.close()
        with pytest.raises(interloop.ChannelClosed):
            await ch.send(memoryview(arr))
        del arr
        assert gone() is None
    run(main())


def test_a_released_view_is_refused_before_queueing():
    async def main():
        ch = Channel()
        m = memoryview(b"abc")
        m.release()
        with pytest.raises(ValueError, match="released memoryview"):
            ch.send_nowait(m)
        with pytest.raises(ValueError, match="released memoryview"):
            await ch.send(m)
        assert ch.empty()
    run(main())


# -- across interpreters -------------------------------------------------------------

@needs_workers
def test_100_mb_from_the_caller_to_a_worker_is_not_copied():
    async def main():
        big = bytes([7]) * (100 * MIB)
        async with interloop.Pool(1) as pool:
            ch = Channel()
            await pool.run(cf.rss_mib)  # worker started before measuring
            before = cf.rss_mib()
            fut = pool.submit(cf.describe_buffer, ch)
            await ch.send(big)
            kind, address, readonly, nbytes, head, tail = await fut
            grew = cf.rss_mib() - before
        assert (kind, readonly, nbytes) == ("memoryview", True, 100 * MIB)
        assert address == addr(big)  # the worker's view points into our object
        assert head == big[:16] and tail == big[-16:]
        assert grew < 30, f"RSS grew by {grew:.0f} MiB"
    run(main())


@needs_workers
def test_100_mb_from_a_worker_to_the_caller_is_not_copied_and_released_after():
    async def main():
        async with interloop.Pool(1) as pool:
            ch = Channel()
            await pool.run(cf.rss_mib)
            before = cf.rss_mib()
            address, head, tail = await pool.run(cf.send_big, ch, 100 * MIB, 9)
            mv = await ch.recv()
            assert addr(mv) == address and mv.readonly and mv.nbytes == 100 * MIB
            assert bytes(mv[:16]) == head and bytes(mv[-16:]) == tail
            peak = cf.rss_mib() - before
            assert peak < 130, f"RSS grew by {peak:.0f} MiB for one 100 MiB buffer"
            del mv  # the last view: the worker releases its object (woken to do so)
            gc.collect()
            assert await until(lambda: cf.rss_mib() - before < peak - 80), \
                f"memory not released: {cf.rss_mib() - before:.0f} MiB above the start"
    run(main())


@needs_workers
def test_callers_object_is_released_when_the_workers_view_goes():
    async def main():
        async with interloop.Pool(1) as pool:
            ch = Channel()
            arr = array.array("B", bytes(4 * MIB))
            gone = weakref.ref(arr)
            fut = pool.submit(cf.recv_and_drop, ch)
            await ch.send(memoryview(arr))
            del arr
            assert await fut == 4 * MIB
            assert await until(lambda: gone() is None)
    run(main())


@needs_workers
def test_views_of_worker_memory_stay_valid_after_the_pool_is_closed():
    async def main():
        pool = interloop.Pool(1)
        ch = Channel()
        _, head, tail = await pool.run(cf.send_big, ch, 8 * MIB, 3)
        mv = await ch.recv()
        await pool.close()
        gc.collect()
        assert bytes(mv[:16]) == head and bytes(mv[-16:]) == tail
        assert mv.tobytes().count(3) == 8 * MIB
        del mv  # its worker is gone: the object is left alone, not touched
        gc.collect()
    run(main())


@needs_workers
def test_buffers_forwarded_through_a_worker_keep_pointing_at_the_callers_memory():
    async def main():
        async with interloop.Pool(1) as pool:
            inp, out = Channel(), Channel()
            datas = [os.urandom(MIB) for _ in range(5)]
            fut = pool.submit(cf.forward_buffers, inp, out, len(datas))
            for d in datas:
                await inp.send(d)
            for d in datas:
                mv = await out.recv()
                assert addr(mv) == addr(d) and mv == d
            assert await fut == 5
    run(main())


# -- pool arguments and results --------------------------------------------------------

import poolfuncs as pf  # noqa: E402


@needs_workers
def test_pool_buffer_arguments_travel_by_reference():
    async def main():
        async with interloop.Pool(1) as pool:
            big = os.urandom(MIB)
            view = memoryview(big)
            kind, address, n, head = await pool.run(pf.buffer_arg_info, view)
            assert (kind, n, head) == ("memoryview", MIB, big[:4]) and address == addr(big)
            # bytes and bytearray stay values: rebuilt (one copy) in the worker
            r = await pool.run(pf.buffer_arg_info, big, also=bytearray(big))
            assert r[0] == "bytes" and r[2] == MIB and r[3] == big[:4] and r[4:] == ("bytearray", MIB)
            small = await pool.run(pf.buffer_arg_info, memoryview(b"abcd"))
            assert small[0] == "memoryview" and small[3] == b"abcd"
    run(main())


@needs_workers
def test_pool_buffer_results_travel_by_reference():
    async def main():
        async with interloop.Pool(1) as pool:
            view, address = await pool.run(pf.big_view_result, 2 * MIB, 5)
            assert type(view) is memoryview and view.readonly and addr(view) == address
            assert view.nbytes == 2 * MIB and view.tobytes().count(5) == 2 * MIB
            b = await pool.run(pf.big_bytes_result, MIB, 6)
            assert type(b) is bytes and b == bytes([6]) * MIB
    run(main())


@needs_workers
def test_large_bytes_and_bytearray_results_keep_their_type_and_content():
    # Filled into the caller's own new object off the loop thread (bridge/fill.rs).
    async def main():
        async with interloop.Pool(2) as pool:
            sizes = [64 * 1024, 64 * 1024 + 1, MIB, 3 * MIB + 7]
            rs = await asyncio.gather(*(pool.run(pf.big_bytes_result, n, i) for i, n in enumerate(sizes)))
            for i, (n, r) in enumerate(zip(sizes, rs)):
                assert type(r) is bytes and len(r) == n and r.count(i) == n
            ba = await pool.run(pf.big_bytearray_result, MIB, 9)
            assert type(ba) is bytearray and ba == bytearray([9]) * MIB
            ba[0] = 1  # the caller's own, writable object
            small = await pool.run(pf.big_bytes_result, 64 * 1024 - 1, 3)
            assert type(small) is bytes and small == bytes([3]) * (64 * 1024 - 1)
    run(main())


@needs_workers
def test_large_bytes_results_cancelled_at_any_moment_resolve_once_and_release():
    # Cancels land while jobs are queued, running, between the worker's result and
    # the copy, and after: every future ends exactly once, the pool stays usable,
    # nothing stays stashed.
    async def main():
        async with interloop.Pool(2) as pool:
            for round_ in range(3):
                futs = [pool.submit(pf.big_bytes_result, MIB, i & 0xFF) for i in range(60)]
                for i, f in enumerate(futs):
                    if i % 3 == round_ % 3:
                        f.cancel()
                    if i % 7 == 0:
                        await asyncio.sleep(0)
                done = await asyncio.gather(*futs, return_exceptions=True)
                for i, r in enumerate(done):
                    if isinstance(r, asyncio.CancelledError):
                        continue
                    assert type(r) is bytes and len(r) == MIB and r[0] == i & 0xFF
                assert sum(isinstance(r, asyncio.CancelledError) for r in done) >= 1
            assert (await pool.run(pf.big_bytes_result, MIB, 1)) == bytes([1]) * MIB
        assert await until(lambda: _channel._n.stash_len() == 0)
    run(main())


@needs_workers
def test_large_bytes_results_through_the_executor_and_nested_spawn():
    async def main():
        loop = asyncio.get_running_loop()
        with interloop.InterpreterExecutor(workers=2) as ex:
            rs = await asyncio.gather(*(loop.run_in_executor(ex, pf.big_bytes_result, MIB, i) for i in range(6)))
            assert all(type(r) is bytes and r == bytes([i]) * MIB for i, r in enumerate(rs))
            ba = await loop.run_in_executor(ex, pf.big_bytearray_result, MIB, 4)
            assert type(ba) is bytearray and len(ba) == MIB
        async with interloop.Pool(2) as pool:
            # received by the spawning worker: copied there, in the worker
            assert await pool.run(pf.nested_big_bytes, MIB, 7) == ("bytes", MIB, MIB)
    run(main())


@needs_workers
def test_buffers_of_a_job_cancelled_while_queued_are_released(tmp_path):
    async def main():
        flag = str(tmp_path / "go")
        async with interloop.Pool(1, concurrency=1) as pool:
            busy = pool.submit(pf.wait_for_flag, flag)  # occupies the only worker
            try:
                arr = array.array("B", bytes(MIB))
                gone = weakref.ref(arr)
                fut = pool.submit(pf.buffer_arg_info, memoryview(arr))
                del arr
                await asyncio.sleep(0.05)
                assert pool.stats()["queued"] == 1
                assert gone() is not None  # held for the queued job
                fut.cancel()
                gc.collect()
                assert gone() is None
            finally:
                open(flag, "w").close()
            await busy
    run(main())
