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


# -- zero-copy buffers ---------------------------------------------------------------

def address(buf):
    from interloop import _channel
    return _channel._n.buffer_address(buf)


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class Blob:
    """Pickles its data out of band (as NumPy arrays do with protocol 5)."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        import pickle
        return Blob, (pickle.PickleBuffer(self.data),)


async def describe_buffer(ch):
    """Receives one buffer; reports what arrived, without copying it."""
    mv = await ch.recv()
    obj = mv.data if isinstance(mv, Blob) else mv
    return type(mv).__name__, address(obj), obj.readonly, obj.nbytes, bytes(obj[:16]), bytes(obj[-16:])


async def send_big(ch, nbytes, seed):
    """Sends a fresh ``nbytes`` bytes object and keeps no reference to it;
    returns its address and its first and last 16 bytes."""
    data = bytes([seed]) * nbytes
    info = address(data), data[:16], data[-16:]
    await ch.send(data)
    del data
    return info


async def recv_and_drop(ch):
    mv = await ch.recv()
    n = mv.nbytes
    del mv
    return n


async def forward_buffers(inp, out, n):
    """Receives ``n`` buffers and sends each on as it is (a view of a view)."""
    for _ in range(n):
        await out.send(await inp.recv())
    return n
