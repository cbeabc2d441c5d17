"""Functions the channel tests run in pool workers (imported there by name)."""
import asyncio

import interloop


async def consume(ch):
    """Everything received until the channel is closed and drained."""
    return [x async for x in ch]


async def echo(inp, out):
    """Sends back everything received on ``inp``; closes ``out`` at the end."""
    n = 0
    async for x in inp:
        await out.send(x)
        n += 1
    out.close()
    return n


async def produce(ch, sender, n):
    """Sends ``(sender, i)`` for i < n; stops early if the channel closes.
    Returns how many sends succeeded."""
    for i in range(n):
        try:
            await ch.send((sender, i))
        except interloop.ChannelClosed:
            return i
    return n


def send_nowait_plain(ch, obj):
    ch.send_nowait(obj)
    return ch.qsize()


async def recv_one(ch):
    return await ch.recv()


async def recv_channel_and_reply(chch, msg):
    """Receives a channel through a channel and sends ``msg`` on it."""
    ch = await chch.recv()
    await ch.send(msg)
    return type(ch).__name__


async def send_unpicklable(ch):
    try:
        await ch.send(lambda: 0)
    except TypeError as e:
        return "TypeError", ch.qsize(), str(e)
    return "no error", ch.qsize(), ""


async def recv_after_close(ch):
    got = []
    async for x in ch:
        got.append(x)
    try:
        await ch.send(1)
    except interloop.ChannelClosed:
        return got, "ChannelClosed"
    return got, "sent"


async def make_channel(msg):
    """A channel made in a worker, returned to the caller with a message in it."""
    ch = interloop.Channel(4)
    await ch.send(msg)
    return ch
