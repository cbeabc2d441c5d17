"""Behaviour of interloop.Channel: in one loop, and across pool workers."""
import asyncio
import gc
import pickle
import sys
import threading

import pytest

import interloop
from interloop import Channel, ChannelClosed, ChannelEmpty, ChannelFull

import chanfuncs as cf
from conftest import make_loop, run

pytestmark = pytest.mark.usefixtures("loop_kind")  # every test on asyncio's loop and on interloop's

needs_workers = pytest.mark.skipif(
    sys.version_info < (3, 12, 4),
    reason="pool workers need CPython >= 3.12.4 (gh-112140)")



# -- one interpreter ---------------------------------------------------------------

def test_exports():
    for name in ("Channel", "ChannelClosed", "ChannelEmpty", "ChannelFull"):
        assert name in interloop.__all__
        assert getattr(interloop, name) is not None


def test_nowait_fifo_full_empty_close():
    ch = Channel(maxsize=2)
    assert ch.maxsize == 2 and ch.empty() and not ch.full() and not ch.closed
    with pytest.raises(ChannelEmpty):
        ch.recv_nowait()
    ch.send_nowait({"a": 1})
    ch.send_nowait([2, b"x"])
    assert ch.full() and ch.qsize() == 2
    with pytest.raises(ChannelFull):
        ch.send_nowait(3)
    assert ch.recv_nowait() == {"a": 1}
    ch.send_nowait("three")
    assert ch.close() is True
    assert ch.close() is False
    assert ch.closed
    with pytest.raises(ChannelClosed):
        ch.send_nowait(4)
    # nothing sent before close() is lost
    assert ch.recv_nowait() == [2, b"x"]
    assert ch.recv_nowait() == "three"
    with pytest.raises(ChannelClosed):
        ch.recv_nowait()
    assert "closed" in repr(ch)


def test_values_keep_their_type():
    ch = Channel()
    values = [b"raw bytes", b"", bytearray(b"ba"), 0, 1, 2, None, "s", (1, 2), {"k": [b"v"]},
              1.5, memoryview(b"mv").tobytes()]
    for v in values:
        ch.send_nowait(v)
    got = [ch.recv_nowait() for _ in values]
    assert got == values
    assert [type(x) for x in got] == [type(x) for x in values]


def test_negative_maxsize_is_refused():
    with pytest.raises(ValueError):
        Channel(-1)


def test_unbounded():
    ch = Channel(0)
    for i in range(10_000):
        ch.send_nowait(i)
    assert ch.qsize() == 10_000 and not ch.full()
    assert [ch.recv_nowait() for _ in range(10_000)] == list(range(10_000))


def test_unpicklable_raises_typeerror_before_queueing():
    ch = Channel(4)
    with pytest.raises(TypeError, match="cannot be pickled"):
        ch.send_nowait(lambda: 0)
    with pytest.raises(TypeError):
        ch.send_nowait([1, threading.Lock()])

    async def main():
        with pytest.raises(TypeError):
            await ch.send(lambda: 0)
    run(main())
    assert ch.qsize() == 0


def test_await_send_recv_and_async_for():
    async def main():
        ch = Channel(maxsize=4)

        async def producer():
            for i in range(1000):
                await ch.send(i)
            ch.close()

        t = asyncio.ensure_future(producer())
        got = [x async for x in ch]
        await t
        assert got == list(range(1000))
        with pytest.raises(ChannelClosed):
            await ch.recv()
        with pytest.raises(ChannelClosed):
            await ch.send(1)
    run(main())


def test_recv_waits_until_a_send():
    async def main():
        ch = Channel()
        t = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        assert not t.done()
        ch.send_nowait("hello")
        assert await asyncio.wait_for(t, 5) == "hello"
    run(main())


def test_send_waits_for_room():
    async def main():
        ch = Channel(maxsize=1)
        await ch.send(1)
        t = asyncio.ensure_future(ch.send(2))
        await asyncio.sleep(0.01)
        assert not t.done()  # backpressure
        assert ch.recv_nowait() == 1
        await asyncio.wait_for(t, 5)
        assert ch.recv_nowait() == 2
    run(main())


def test_close_wakes_waiting_receivers_and_senders():
    async def main():
        ch = Channel(maxsize=1)
        rs = [asyncio.ensure_future(ch.recv()) for _ in range(3)]
        await asyncio.sleep(0.01)
        ch.close()
        for r in rs:
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(r, 5)
        ch2 = Channel(maxsize=1)
        ch2.send_nowait(0)
        s = asyncio.ensure_future(ch2.send(1))
        await asyncio.sleep(0.01)
        ch2.close()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(s, 5)
        assert ch2.recv_nowait() == 0
    run(main())


def test_cancelled_waiter_does_not_lose_a_message():
    async def main():
        ch = Channel()
        r1 = asyncio.ensure_future(ch.recv())
        r2 = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        ch.send_nowait("m")   # wakes r1 (first waiter)...
        r1.cancel()           # ...which gives up before it runs: r2 must get it
        assert await asyncio.wait_for(r2, 5) == "m"
        assert r1.cancelled()
        # a cancelled waiter that was never woken is simply removed
        r3 = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        r3.cancel()
        await asyncio.sleep(0)
        ch.send_nowait("n")
        assert ch.recv_nowait() == "n"
    run(main())


def test_timeout_on_recv():
    async def main():
        ch = Channel()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ch.recv(), 0.02)
        ch.send_nowait(1)
        assert await ch.recv() == 1
    run(main())


def test_many_tasks_send_and_recv_nothing_lost_or_duplicated():
    async def main():
        ch = Channel(maxsize=8)

        async def prod(s):
            for i in range(500):
                await ch.send((s, i))

        async def cons():
            return [x async for x in ch]

        cs = [asyncio.ensure_future(cons()) for _ in range(4)]
        await asyncio.gather(*(prod(s) for s in range(4)))
        ch.close()
        parts = await asyncio.gather(*cs)
        allx = [x for p in parts for x in p]
        assert sorted(allx) == sorted((s, i) for s in range(4) for i in range(500))
        for p in parts:  # per-sender order is kept within each receiver
            for s in range(4):
                seq = [i for (t, i) in p if t == s]
                assert seq == sorted(seq)
    run(main())


def test_pickle_shares_state_and_channels_travel_through_channels():
    ch = Channel(3)
    ch2 = pickle.loads(pickle.dumps(ch))
    assert ch2 is not ch and ch2 == ch and hash(ch2) == hash(ch) and ch2 != Channel(3)
    ch.send_nowait(1)
    assert ch2.recv_nowait() == 1
    outer = Channel()
    outer.send_nowait(ch)
    inner = outer.recv_nowait()
    inner.send_nowait("via outer")
    assert ch.recv_nowait() == "via outer"


def test_pickled_channel_survives_its_last_handle():
    ch = Channel()
    ch.send_nowait("kept")
    data = pickle.dumps(ch)
    del ch
    gc.collect()
    assert pickle.loads(data).recv_nowait() == "kept"


def test_threads_without_a_loop_can_use_nowait():
    ch = Channel()

    def worker():
        for i in range(1000):
            ch.send_nowait(i)

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert ch.qsize() == 4000


def test_wakeup_from_another_thread():
    async def main():
        ch = Channel()
        loop = asyncio.get_running_loop()
        t = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        await loop.run_in_executor(None, ch.send_nowait, "from a thread")
        assert await asyncio.wait_for(t, 5) == "from a thread"
    run(main())


# -- across interpreters -------------------------------------------------------------

@needs_workers
def test_main_to_worker_and_back():
    async def main():
        async with interloop.Pool(2) as pool:
            inp, out = Channel(maxsize=16), Channel(maxsize=16)
            job = asyncio.ensure_future(pool.run(cf.echo, inp, out))

            async def feed():
                for i in range(2000):
                    await inp.send({"i": i, "pad": b"x" * 50})
                inp.close()

            f = asyncio.ensure_future(feed())
            got = [x async for x in out]
            await f
            assert await job == 2000
            assert [x["i"] for x in got] == list(range(2000))
    run(main())


@needs_workers
def test_worker_consumer_and_plain_function_sender():
    async def main():
        async with interloop.Pool(2) as pool:
            ch = Channel()
            consumer = asyncio.ensure_future(pool.run(cf.consume, ch))
            for i in range(100):
                await ch.send(i)
            assert await pool.run(cf.send_nowait_plain, ch, "from worker") >= 0
            ch.close()
            got = await consumer
            assert got[:100] == list(range(100)) and got[100:] == ["from worker"]
            # a worker waiting on recv is woken by the caller (no polling)
            ch2 = Channel()
            r = asyncio.ensure_future(pool.run(cf.recv_one, ch2))
            await asyncio.sleep(0.05)
            assert not r.done()
            ch2.send_nowait(("late", 1))
            assert await asyncio.wait_for(r, 10) == ("late", 1)
    run(main())


@needs_workers
def test_several_workers_produce_to_one_channel():
    n_senders, per_sender = 4, 25_000   # 100k messages
    async def main():
        async with interloop.Pool(2, concurrency=n_senders) as pool:
            ch = Channel(maxsize=256)
            jobs = [asyncio.ensure_future(pool.run(cf.produce, ch, s, per_sender))
                    for s in range(n_senders)]
            nexts = [0] * n_senders
            total = 0
            while total < n_senders * per_sender:
                s, i = await ch.recv()
                assert i == nexts[s], f"sender {s}: got {i}, expected {nexts[s]}"
                nexts[s] += 1
                total += 1
            assert await asyncio.gather(*jobs) == [per_sender] * n_senders
            assert ch.qsize() == 0
    run(main())


@needs_workers
def test_a_million_messages_many_senders_and_receivers_close_mid_stream():
    # Senders: 3 worker jobs and the caller; receivers: 2 worker jobs and the
    # caller, all on one bounded channel; closed once about 1M messages went
    # through. Every message sent is received exactly once, in order per sender
    # as seen by each receiver.
    async def main():
        async with interloop.Pool(2, concurrency=5) as pool:
            ch = Channel(maxsize=1024)
            producers = [asyncio.ensure_future(pool.run(cf.produce, ch, s, 10**9)) for s in range(3)]
            consumers = [asyncio.ensure_future(pool.run(cf.consume, ch)) for _ in range(2)]

            async def caller_producer():
                i = 0
                try:
                    while True:
                        await ch.send((3, i))
                        i += 1
                except interloop.ChannelClosed:
                    return i

            mine = asyncio.ensure_future(caller_producer())
            got = []
            while len(got) < 400_000:  # about 1M in all, with the workers' share
                got.append(await ch.recv())
            ch.close()
            async for x in ch:
                got.append(x)
            sent = await asyncio.wait_for(asyncio.gather(*producers, mine), 120)
            received = [got] + await asyncio.wait_for(asyncio.gather(*consumers), 120)
        # The caller alone takes 400k; how many more the workers take depends on load.
        assert sum(sent) >= 400_000 and sum(len(r) for r in received) == sum(sent)
        for part in received:  # each receiver sees each sender's messages in order
            last = {}
            for s, i in part:
                assert i > last.get(s, -1)
                last[s] = i
        for s in range(4):
            seq = sorted(i for part in received for (t, i) in part if t == s)
            assert seq == list(range(sent[s])), f"sender {s}: lost or duplicated messages"
    run(main())


@needs_workers
def test_close_mid_stream_nothing_lost():
    async def main():
        async with interloop.Pool(2, concurrency=3) as pool:
            ch = Channel(maxsize=32)
            jobs = [asyncio.ensure_future(pool.run(cf.produce, ch, s, 10**9)) for s in range(3)]
            got = []
            while len(got) < 3000:
                got.append(await ch.recv())
            ch.close()
            sent = await asyncio.wait_for(asyncio.gather(*jobs), 30)
            async for x in ch:  # drain what was sent before close()
                got.append(x)
            # every successful send was received exactly once, in order per sender
            for s in range(3):
                seq = [i for (t, i) in got if t == s]
                assert seq == list(range(sent[s]))
            assert len(got) == sum(sent)
    run(main())


@needs_workers
def test_channel_through_a_channel_to_a_worker():
    async def main():
        async with interloop.Pool(1) as pool:
            chch, ch = Channel(), Channel()
            job = asyncio.ensure_future(pool.run(cf.recv_channel_and_reply, chch, "pong"))
            await chch.send(ch)
            assert await asyncio.wait_for(ch.recv(), 10) == "pong"
            assert await job == "Channel"
    run(main())


@needs_workers
def test_errors_in_worker():
    async def main():
        async with interloop.Pool(1) as pool:
            ch = Channel()
            kind, n, msg = await pool.run(cf.send_unpicklable, ch)
            assert kind == "TypeError" and n == 0 and "pickled" in msg
            ch.send_nowait(1)
            ch.send_nowait(2)
            ch.close()
            got, err = await pool.run(cf.recv_after_close, ch)
            assert got == [1, 2] and err == "ChannelClosed"
    run(main())


def test_interloop_loop_drains_the_notifier_natively(loop_kind):
    from interloop import _channel

    async def main():
        ch = Channel()
        t = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        ch.send_nowait("x")
        assert await asyncio.wait_for(t, 5) == "x"
        loop = asyncio.get_running_loop()
        nt = _channel._notifier(loop)
        # asyncio's loop watches the notifier's eventfd; interloop's drains it natively
        assert loop.remove_reader(nt.fd) is (loop_kind == "asyncio")
    run(main())


@needs_workers
def test_channel_made_in_a_worker_outlives_the_pool():
    async def main():
        async with interloop.Pool(1) as pool:
            ch = await pool.run(cf.make_channel, {"made": "in a worker"})
        # the worker, its interpreter and its handle are gone: the state is not
        assert ch.maxsize == 4
        assert await ch.recv() == {"made": "in a worker"}
        await ch.send(2)
        assert ch.recv_nowait() == 2
    run(main())


def test_unknown_channel_id_is_a_clear_error():
    from interloop import _channel
    with pytest.raises(ValueError, match="no longer exists"):
        _channel._open(10**12)


@needs_workers
def test_cancelled_job_stops_waiting_in_the_worker():
    from interloop import _channel

    def waiting_receivers(ch):
        return _channel._n.info(ch._h)[3]

    async def main():
        async with interloop.Pool(1) as pool:
            ch = Channel()
            job = asyncio.ensure_future(pool.run(cf.recv_one, ch))
            for _ in range(500):
                if waiting_receivers(ch) == 1:
                    break
                await asyncio.sleep(0.01)
            assert waiting_receivers(ch) == 1
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            for _ in range(500):  # the worker's task is cancelled: it unregisters
                if waiting_receivers(ch) == 0:
                    break
                await asyncio.sleep(0.01)
            assert waiting_receivers(ch) == 0
            ch.send_nowait("not eaten")
            assert ch.recv_nowait() == "not eaten"
    run(main())


def test_a_message_refused_releases_the_channels_it_holds():
    from interloop import _channel
    full = Channel(1)
    full.send_nowait(0)
    inner = Channel()
    inner_id = inner._id
    with pytest.raises(ChannelFull):
        full.send_nowait([inner])   # pickling pinned `inner`; the refusal unpins it
    full.close()

    async def main():
        with pytest.raises(ChannelClosed):
            await full.send([inner])
    run(main())
    del inner
    gc.collect()
    with pytest.raises(ValueError, match="no longer exists"):
        _channel._open(inner_id)


def test_waiter_of_a_dropped_loop_does_not_swallow_a_wakeup(loop_kind):
    ch = Channel()
    dead = make_loop(loop_kind)
    dead.run_until_complete(asyncio.sleep(0))
    stuck = dead.create_task(ch.recv())          # waits, and is never cancelled
    dead.run_until_complete(asyncio.sleep(0.01))
    dead.close()
    del dead, stuck
    gc.collect()

    async def main():
        t = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        ch.send_nowait("for the live loop")
        assert await asyncio.wait_for(t, 5) == "for the live loop"
    run(main())


def test_an_idle_receiver_spins_briefly_and_stops_after_fruitless_spins(monkeypatch):
    from interloop import _channel
    if _channel._SPIN_US <= 0:
        pytest.skip("spinning turned off (INTERLOOP_CHANNEL_SPIN_US=0)")
    monkeypatch.setattr(_channel, "_spin_credit", 8)

    async def main():
        ch = Channel()
        ch.send_nowait(b"x")
        assert _channel._spun(ch._h)  # a message is there: the spin ends at once
        assert ch.recv_nowait() == b"x"
        for _ in range(8):
            assert not _channel._spun(ch._h)  # nothing comes within the budget
        assert _channel._spin_credit < 0  # no more spinning for a while...
        ch.send_nowait(b"y")
        assert not _channel._spun(ch._h)  # ...even with a message there
        asyncio.get_running_loop().call_soon(lambda: None)
        monkeypatch.setattr(_channel, "_spin_credit", 8)
        assert not _channel._spun(ch._h)  # a loop with work ready never spins
        assert await ch.recv() == b"y"
    run(main())
