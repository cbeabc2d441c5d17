"""Worker-side halves of benches/bench_channel.py (imported by name in workers)."""


async def count(ch):
    """Receives until the channel closes; returns how many messages came."""
    n = 0
    async for _ in ch:
        n += 1
    return n


async def count_fast(ch):
    """Like ``count``, taking what is queued without awaiting (``recv_nowait``)
    and awaiting only when the channel is empty."""
    import interloop
    n = 0
    recv_nowait = ch.recv_nowait
    while True:
        try:
            recv_nowait()
            n += 1
        except interloop.ChannelEmpty:
            try:
                await ch.recv()
                n += 1
            except interloop.ChannelClosed:
                return n
        except interloop.ChannelClosed:
            return n


async def echo(inp, out):
    async for x in inp:
        await out.send(x)
    out.close()


async def produce(ch, n, size):
    msg = b"x" * size
    for _ in range(n):
        await ch.send(msg)
    ch.close()
    return n


async def produce_seq(ch, sender, n):
    """Sends ``(sender, i)`` (pickled messages) for i < n."""
    send_nowait, send = ch.send_nowait, ch.send
    import interloop
    for i in range(n):
        m = (sender, i)
        try:
            send_nowait(m)
        except interloop.ChannelFull:
            await send(m)
    return n


async def count_bytes(ch):
    """Receives buffers until the channel closes; touches the last byte of each
    (so the data is reachable) and returns the total size."""
    total = 0
    async for mv in ch:
        total += len(mv)
        mv[-1]
    return total


async def produce_big(ch, n, size):
    data = b"\x01" * size
    for _ in range(n):
        await ch.send(data)
    ch.close()
    return n


def make_mb(i):
    """A job returning 1 MB (the large-results benchmark)."""
    return bytes([i & 0xFF]) * 1_000_000


def make_mb_view(i):
    """Like ``make_mb``, returned as a memoryview: it arrives without a copy."""
    return memoryview(bytes([i & 0xFF]) * 1_000_000)
