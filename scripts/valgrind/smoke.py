"""The loop, transport, pool and channel smoke run that scripts/valgrind-check runs
under valgrind's memcheck. Small on purpose (valgrind runs it ~50x slower); each
part asserts its results, so a run that goes wrong fails here, not only in the log.
Run it from the repository's tests/ directory (it imports poolfuncs, chanfuncs)."""
import asyncio
import os
import socket
import sys

import interloop

import chanfuncs as cf
import poolfuncs as pf


async def loop_part():
    loop = asyncio.get_running_loop()
    order = []
    for i in range(20):
        loop.call_soon(order.append, i)
    h = loop.call_later(10, order.append, "never")
    h.cancel()
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_result, "timer")
    results = await asyncio.gather(*(asyncio.sleep(0, i) for i in range(20)))
    assert results == list(range(20))
    assert await fut == "timer"
    async with asyncio.timeout(5):
        await asyncio.sleep(0.001)
    assert order == list(range(20))
    r, w = socket.socketpair()
    r.setblocking(False)
    got = loop.create_future()
    loop.add_reader(r, lambda: got.done() or got.set_result(r.recv(10)))
    w.send(b"ping")
    assert await got == b"ping"
    loop.remove_reader(r)
    r.close()  # remove after close, by the object (as AnyIO does)
    w.close()


async def transport_part(tmp):
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    for family in ("tcp", "unix"):
        if family == "tcp":
            server = await asyncio.start_server(echo, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        else:
            path = os.path.join(tmp, "s")
            server = await asyncio.start_unix_server(echo, path)
            reader, writer = await asyncio.open_unix_connection(path)
        payload = os.urandom(200_000)
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t = t

        def datagram_received(self, data, addr):
            self.t.sendto(data, addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            self.got.set_result(data)

    st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    ct, cp = await loop.create_datagram_endpoint(Client, remote_addr=st.get_extra_info("sockname"))
    ct.sendto(b"datagram")
    assert await cp.got == b"datagram"
    ct.close()
    st.close()

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(b"piped")
    assert out == b"PIPED" and proc.returncode == 0


async def pool_and_channel_part():
    async with interloop.Pool(2) as pool:
        assert await pool.run(pf.add, 1, 2) == 3
        assert await asyncio.gather(*(pool.run(pf.aadd, i, 1) for i in range(50))) == [
            i + 1 for i in range(50)]
        fut = pool.submit(pf.spin_forever, interrupt=True)
        while pool.stats()["running"] == [0, 0]:
            await asyncio.sleep(0.01)
        fut.cancel()
        try:
            await fut
        except asyncio.CancelledError:
            pass
        try:
            await pool.run(pf.boom, "value")
        except ValueError:
            pass
        view = memoryview(bytearray(b"z" * (1 << 17)))
        assert (await pool.run(pf.buffer_arg_info, view))[2] == len(view)
        ch = interloop.Channel(maxsize=8)
        consumer = pool.submit(cf.consume, ch)
        for i in range(100):
            await ch.send(i)
        ch.close()
        assert await consumer == list(range(100))


def main():
    import tempfile

    async def all_parts():
        await loop_part()
        with tempfile.TemporaryDirectory() as tmp:
            await transport_part(tmp)
        if sys.version_info >= (3, 12, 4):
            await pool_and_channel_part()

    interloop.run(all_parts())
    print("smoke run: OK")


if __name__ == "__main__":
    main()
