"""UDP datagram transports (create_datagram_endpoint), on asyncio's loop and interloop's.

uvloop-style: each test runs on both loops (the ``loop`` fixture); what asyncio does
is the specification. Waiting is by events (futures, queues), never by timing.
"""
import asyncio
import errno
import os
import select
import socket
import sys
import tempfile

import pytest

from transporttests import is_interloop as _is_interloop


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Recorder(asyncio.DatagramProtocol):
    """Records every protocol call; `queue` gets datagrams and errors as they come."""

    def __init__(self):
        self.calls = []
        self.queue = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("connection_made")

    def datagram_received(self, data, addr):
        self.calls.append("datagram_received")
        self.queue.put_nowait((data, addr))

    def error_received(self, exc):
        self.calls.append("error_received")
        self.queue.put_nowait(exc)

    def connection_lost(self, exc):
        self.calls.append("connection_lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.calls.append("pause_writing")

    def resume_writing(self):
        self.calls.append("resume_writing")


async def _echo_server(loop, host="127.0.0.1"):
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(host, 0))
    return transport, transport.get_extra_info("sockname")


def test_echo_connected(loop):
    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        if _is_interloop(loop):
            assert type(client._read_ready).__name__ == "DatagramReader"
            assert type(client.sendto).__name__ == "DatagramSender"
        payloads = [b"x" * n for n in (1, 10, 1000, 60000)]
        for p in payloads:
            client.sendto(p)
        got = [await proto.queue.get() for _ in payloads]
        assert sorted(got) == sorted((p, addr) for p in payloads)
        # Same address through `addr`, as a tuple equal to the remote address.
        client.sendto(b"again", tuple(addr))
        assert await proto.queue.get() == (b"again", addr)
        assert client.get_extra_info("peername") == addr
        sock = client.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_DGRAM
        assert client.get_extra_info("sockname") == sock.getsockname()
        assert server.get_extra_info("peername") is None
        assert client.get_write_buffer_size() == 0
        client.close()
        server.close()
        assert await proto.lost is None
        assert proto.calls[0] == "connection_made" and proto.calls[-1] == "connection_lost"

    loop.run_until_complete(main())


def test_echo_unconnected_sendto(loop):
    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        assert client.get_extra_info("peername") is None
        for i in range(20):
            client.sendto(b"%d" % i, addr)
        got = sorted([await proto.queue.get() for _ in range(20)])
        assert got == sorted((b"%d" % i, addr) for i in range(20))
        # bytearray and memoryview data, a list address equal to the tuple.
        client.sendto(bytearray(b"ba"), addr)
        client.sendto(memoryview(b"..mv..")[2:4], addr)
        assert sorted([await proto.queue.get(), await proto.queue.get()]) == [
            (b"ba", addr), (b"mv", addr)]
        # A host name goes through the socket's own address resolution.
        client.sendto(b"named", ("localhost", addr[1]))
        data, _ = await proto.queue.get()
        assert data == b"named"
        client.close()
        server.close()
        await proto.lost

    loop.run_until_complete(main())


def test_echo_ipv6(loop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main():
        server, addr = await _echo_server(loop, "::1")
        assert len(addr) == 4
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("::1", 0))
        client.sendto(b"six", addr)
        client.sendto(b"two-tuple", addr[:2])
        got = sorted([await proto.queue.get(), await proto.queue.get()])
        assert got == [(b"six", addr), (b"two-tuple", addr)]
        client.close()
        server.close()
        await proto.lost

    loop.run_until_complete(main())


def test_empty_datagram(loop):
    # 3.12 drops an empty datagram in sendto(); 3.13 sends it. Either way the two
    # loops agree: the reference is this Python's asyncio source.
    import inspect
    from asyncio import selector_events

    drops_empty = "if not data:" in inspect.getsource(
        selector_events._SelectorDatagramTransport.sendto)

    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        client.sendto(b"")
        client.sendto(b"end")
        got = []
        while not got or got[-1] != b"end":
            got.append((await proto.queue.get())[0])
        assert got == ([b"end"] if drops_empty else [b"", b"end"])
        client.close()
        server.close()

    loop.run_until_complete(main())


def test_sendto_bad_input(loop):
    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        with pytest.raises(ValueError, match="Invalid address"):
            client.sendto(b"x", ("127.0.0.1", addr[1] + 1 if addr[1] < 65535 else 1))
        with pytest.raises(ValueError, match="Invalid address"):
            client.sendto(b"x", [addr[0], addr[1]])
        for bad in ("text", 42, None, [b"x"]):
            with pytest.raises(TypeError, match="bytes-like object"):
                client.sendto(bad)
        # Nothing was sent, nothing was buffered.
        assert client.get_write_buffer_size() == 0
        client.sendto(b"ok")
        assert await proto.queue.get() == (b"ok", addr)
        assert proto.calls == ["connection_made", "datagram_received"]
        client.close()
        server.close()

    loop.run_until_complete(main())


def test_sendto_without_address_on_unconnected_endpoint_is_fatal(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        client.sendto(b"nowhere")
        assert await proto.lost is not None
        assert client.is_closing()

    loop.run_until_complete(main())
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Fatal write error on datagram transport"
    assert isinstance(contexts[0]["exception"], TypeError)


def test_sendto_too_large_goes_to_error_received(loop):
    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        client.sendto(b"x" * 70000)
        exc = await proto.queue.get()
        assert isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE
        assert exc.strerror == os.strerror(errno.EMSGSIZE)
        assert not client.is_closing()
        client.sendto(b"still open")
        assert await proto.queue.get() == (b"still open", addr)
        client.close()
        server.close()

    loop.run_until_complete(main())


def test_connection_refused_goes_to_error_received(loop):
    # A port nobody listens on: the ICMP "port unreachable" reaches a connected
    # UDP socket as ECONNREFUSED, which asyncio reports through error_received.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()

    async def main():
        client, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=dead)
        client.sendto(b"anyone?")
        exc = await proto.queue.get()
        if not isinstance(exc, ConnectionRefusedError):
            pytest.fail(f"expected ConnectionRefusedError, got {exc!r}")
        assert exc.errno == errno.ECONNREFUSED
        assert str(exc) == f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
        # The transport stays open: UDP errors are not fatal.
        assert not client.is_closing()
        client.close()
        assert await proto.lost is None
        assert "error_received" in proto.calls

    loop.run_until_complete(main())


def test_protocol_exception_goes_to_the_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class Boom(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"boom":
                raise RuntimeError("boom")

    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Boom, remote_addr=addr)
        client.sendto(b"boom")
        await proto.queue.get()
        client.sendto(b"after")
        assert await proto.queue.get() == (b"after", addr)
        client.close()
        server.close()

    loop.run_until_complete(main())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], RuntimeError)
    assert contexts[0]["message"].startswith("Exception in callback")


def test_pause_and_resume_reading(loop):
    async def main():
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        addr = client.get_extra_info("sockname")
        sock = client.get_extra_info("socket")
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind(("127.0.0.1", 0))
        try:
            assert client.is_reading()
            client.pause_reading()
            assert not client.is_reading()
            raw.sendto(b"while paused", addr)
            # The datagram is queued on the socket (loopback delivers synchronously)...
            assert select.select([sock.fileno()], [], [], 5)[0]
            for _ in range(10):
                await asyncio.sleep(0)
            # ...and not delivered while paused.
            assert proto.queue.empty()
            client.resume_reading()
            assert client.is_reading()
            assert await proto.queue.get() == (b"while paused", raw.getsockname())
        finally:
            raw.close()
        client.close()
        await proto.lost

    loop.run_until_complete(main())


def test_close_and_abort(loop):
    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        assert not client.is_closing()
        client.close()
        assert client.is_closing()
        # Sending on a closed connected endpoint is dropped silently, as in asyncio.
        client.sendto(b"dropped")
        assert await proto.lost is None
        client.sendto(b"dropped too")
        client.close()  # idempotent

        other, proto2 = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        other.abort()
        assert other.is_closing()
        assert await proto2.lost is None
        assert proto2.calls == ["connection_made", "connection_lost"]
        server.close()

    loop.run_until_complete(main())


def test_write_buffer_limits(loop):
    async def main():
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        client.set_write_buffer_limits(high=1000, low=100)
        assert client.get_write_buffer_limits() == (100, 1000)
        client.set_write_buffer_limits(high=400)
        assert client.get_write_buffer_limits() == (100, 400)
        with pytest.raises(ValueError):
            client.set_write_buffer_limits(high=1, low=2)
        client.close()
        await proto.lost

    loop.run_until_complete(main())


def test_flow_control_on_a_full_socket(loop):
    # A connected AF_UNIX datagram socket whose peer does not read refuses more
    # datagrams (EAGAIN) once the peer's queue is full: the transport buffers, pauses
    # the protocol at the high-water mark, and resumes it once the peer drains.
    tmp = tempfile.mkdtemp()
    a_path, b_path = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(a_path)
    b.bind(b_path)
    a.connect(b_path)
    b.setblocking(False)

    async def main():
        transport, proto = await loop.create_datagram_endpoint(Recorder, sock=a)
        # low > 0: asyncio 3.13 counts 8 header bytes per buffered datagram when
        # buffering but not when sending it, so the size never returns to 0.
        transport.set_write_buffer_limits(high=4096, low=1024)
        sent = 0
        while transport.get_write_buffer_size() == 0:
            transport.sendto(b"d" * 512)
            sent += 1
            assert sent < 100_000, "the peer's queue never filled"
        while "pause_writing" not in proto.calls:
            transport.sendto(b"d" * 512)
            sent += 1
        assert transport.get_write_buffer_size() > 4096
        received = 0
        while received < sent:
            try:
                while True:
                    assert b.recv(1024) == b"d" * 512
                    received += 1
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
        assert received == sent
        assert proto.calls.count("pause_writing") == 1
        assert proto.calls.count("resume_writing") == 1
        transport.close()
        await proto.lost

    try:
        loop.run_until_complete(main())
    finally:
        b.close()
        for p in (a_path, b_path):
            os.unlink(p)
        os.rmdir(tmp)


def test_unix_datagram_echo(loop):
    # AF_UNIX datagrams: asyncio's reader (CPython converts the addresses), the
    # native sender.
    tmp = tempfile.mkdtemp()
    srv_path, cli_path = os.path.join(tmp, "srv"), os.path.join(tmp, "cli")

    async def main():
        server, _ = await loop.create_datagram_endpoint(
            Echo, local_addr=srv_path, family=socket.AF_UNIX)
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=cli_path, remote_addr=srv_path, family=socket.AF_UNIX)
        client.sendto(b"unix")
        assert await proto.queue.get() == (b"unix", srv_path)
        client.close()
        server.close()
        await proto.lost

    try:
        loop.run_until_complete(main())
    finally:
        for p in (srv_path, cli_path):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(tmp)


def test_transport_is_collected_after_close(loop):
    import gc
    import weakref

    async def main():
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        ref = weakref.ref(client)
        client.close()
        await proto.lost
        return ref

    ref = loop.run_until_complete(main())
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    assert ref() is None


def test_sendto_address_errors_of_the_socket(loop):
    # Addresses the socket itself refuses: an OSError goes to error_received and the
    # endpoint stays open; anything else is a fatal error that closes it.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        # No SO_BROADCAST: the kernel refuses (EACCES).
        client.sendto(b"x", ("<broadcast>", 9))
        exc = await proto.queue.get()
        assert isinstance(exc, PermissionError)
        assert not client.is_closing()
        # A port out of range: CPython's OverflowError, fatal for the transport.
        client.sendto(b"x", ("127.0.0.1", 70000))
        assert isinstance(await proto.lost, OverflowError)
        assert client.is_closing()

    loop.run_until_complete(main())
    assert [c["message"] for c in contexts] == ["Fatal write error on datagram transport"]
    assert isinstance(contexts[0]["exception"], OverflowError)


def test_sendto_address_forms(loop):
    # Forms of the same destination that CPython's socket accepts: all arrive.
    async def main():
        server, addr = await _echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        forms = [addr, ("127.0.0.1", addr[1]), ("localhost", addr[1]),
                 (b"127.0.0.1", addr[1])]
        for i, form in enumerate(forms):
            client.sendto(b"%d" % i, form)
        got = sorted([await proto.queue.get() for _ in forms])
        assert got == sorted((b"%d" % i, addr) for i in range(len(forms)))
        client.close()
        server.close()
        await proto.lost

    loop.run_until_complete(main())
