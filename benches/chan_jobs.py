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
