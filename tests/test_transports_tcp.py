"""TCP and Unix stream transports (create_server, create_connection, streams), on
asyncio's loop and interloop's.

uvloop-style: each test runs on both loops (the ``loop`` fixture); what asyncio does
is the specification. Waiting is by events (futures, queues), never by timing.
"""
import asyncio
import errno
import logging
import os
import select
import socket
import struct
import sys

import pytest

# asyncio's loop logs a warning for every write past this many on a lost connection.
from asyncio.constants import LOG_THRESHOLD_FOR_CONNLOST_WRITES

from transporttests import HOST, PausedServer, Recorder, unix_path  # noqa: F401 - a fixture
from transporttests import close_server as _close_server
from transporttests import is_interloop as _is_interloop
from transporttests import payload as _payload

PY313 = sys.version_info >= (3, 13)


def _squash(calls):
    """Protocol calls without the flow control ones, runs of data_received as one."""
    out = []
    for c in calls:
        if "writing" not in c and not (out and c == out[-1] == "data_received"):
            out.append(c)
    return out


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.close()


async def _serve(loop, factory, **kwargs):
    """A server on 127.0.0.1 and a future for the first accepted protocol."""
    accepted = loop.create_future()

    def make():
        proto = factory()
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(make, HOST, 0, **kwargs)
    return server, server.sockets[0].getsockname(), accepted


async def _pair(loop, server_factory=Recorder, client_factory=Recorder):
    """A connected (server, client transport, client protocol, server protocol)."""
    server, addr, accepted = await _serve(loop, server_factory)
    ct, cp = await loop.create_connection(client_factory, *addr)
    sp = await accepted
    await sp.made
    return server, ct, cp, sp


async def _fill_until_buffered(transport, chunk=b"f" * (1 << 20), limit=256, past_high=False):
    """Writes `chunk`s until the transport buffers (the peer does not read); with
    `past_high`, until its buffer is over the high-water mark, so that it has paused
    writing (how much the kernel takes of the last chunk varies: what is left over can
    be less than the mark)."""

    def filled():
        size = transport.get_write_buffer_size()
        return size > transport.get_write_buffer_limits()[1] if past_high else size > 0

    written = 0
    while not filled():
        transport.write(chunk)
        written += len(chunk)
        assert written < limit * len(chunk), "the peer's socket never filled"
    return written


async def _until_readable(sock, spins=10):
    """Waits until `sock` (its fd) is readable, then lets the loop turn `spins` times."""
    fd = sock.fileno()
    while not select.select([fd], [], [], 0)[0]:
        await asyncio.sleep(0.001)
    for _ in range(spins):
        await asyncio.sleep(0)


# -- echo ----------------------------------------------------------------------------


def test_echo_protocols_large_payload(loop):
    data = _payload(8 * 1024 * 1024 + 3)

    async def main():
        server, addr, accepted = await _serve(loop, Echo)
        ct, cp = await loop.create_connection(Recorder, *addr)
        st = (await accepted).transport
        if _is_interloop(loop):
            for t in (ct, st):
                assert type(t._read_ready).__name__ == "SocketReader"
                assert type(t.write).__name__ == "builtin_function_or_method"
        assert cp.calls == ["connection_made"]
        assert ct.get_write_buffer_size() == 0
        for i in range(0, len(data), 1 << 20):
            ct.write(data[i:i + (1 << 20)])
        await cp.wait_for_bytes(len(data))
        assert bytes(cp.data) == data
        ct.write_eof()  # the echo server closes on EOF
        assert await cp.eof == data
        assert await cp.lost is None
        # (8 MB written at once: pause/resume_writing came in between.)
        assert _squash(cp.calls) == [
            "connection_made", "data_received", "eof_received", "connection_lost"]
        assert cp.calls.count("pause_writing") == cp.calls.count("resume_writing") == 1
        await _close_server(server)

    loop.run_until_complete(main())


def test_echo_full_duplex_large_payload(loop):
    # Both sides write several MB before reading anything: each side's writes buffer
    # while the other's reads drain them.
    up, down = _payload(5 * 1024 * 1024), _payload(6 * 1024 * 1024)[::-1]

    async def main():
        server, ct, cp, sp = await _pair(loop)
        ct.write(up)
        sp.transport.write(down)
        await asyncio.gather(cp.wait_for_bytes(len(down)), sp.wait_for_bytes(len(up)))
        assert bytes(cp.data) == down and bytes(sp.data) == up
        assert ct.get_write_buffer_size() == sp.transport.get_write_buffer_size() == 0
        ct.close()
        assert await sp.lost is None and await cp.lost is None
        await _close_server(server)

    loop.run_until_complete(main())


def test_echo_streams_large_payload_and_drain(loop):
    data = _payload(6 * 1024 * 1024 + 11)

    async def handle(reader, writer):
        got = await reader.readexactly(len(data))
        assert await reader.read() == b""  # the client's write_eof
        writer.write(got[::-1])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(data)
        # 6 MB do not fit into the sockets: the rest is buffered, drain waits.
        assert writer.transport.get_write_buffer_size() > 0
        await writer.drain()
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.read() == data[::-1]
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    loop.run_until_complete(main())


def test_many_concurrent_clients(loop):
    async def one(addr, i):
        reader, writer = await asyncio.open_connection(*addr)
        msg = b"client %d " % i * (1000 + i)
        writer.write(msg)
        writer.write_eof()
        got = await reader.read()
        writer.close()
        await writer.wait_closed()
        return got == msg

    async def main():
        server, addr, _ = await _serve(loop, Echo)
        assert all(await asyncio.gather(*(one(addr, i) for i in range(30))))
        await _close_server(server)

    loop.run_until_complete(main())


# -- flow control --------------------------------------------------------------------


def test_write_buffer_limits(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        # asyncio's defaults: 64 KiB high, a quarter of it low.
        assert ct.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        ct.set_write_buffer_limits(high=1000)
        assert ct.get_write_buffer_limits() == (250, 1000)
        ct.set_write_buffer_limits(low=10)
        assert ct.get_write_buffer_limits() == (10, 40)
        ct.set_write_buffer_limits(high=100, low=0)
        assert ct.get_write_buffer_limits() == (0, 100)
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            ct.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError):
            ct.set_write_buffer_limits(high=-1)
        assert ct.get_write_buffer_limits() == (0, 100)
        ct.close()
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_pause_and_resume_writing_at_the_water_marks(loop):
    high, low = 256 * 1024, 64 * 1024

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        ct.set_write_buffer_limits(high=high, low=low)
        chunk = b"w" * (64 * 1024)
        written = 0
        # Until the sockets are full, nothing is buffered and nothing pauses.
        while ct.get_write_buffer_size() == 0:
            ct.write(chunk)
            written += len(chunk)
            assert written < 256 * 1024 * 1024, "the peer's socket never filled"
        assert cp.calls == ["connection_made"]
        # pause_writing runs inside the write that takes the buffer above `high`,
        # not before.
        while "pause_writing" not in cp.calls:
            before = ct.get_write_buffer_size()
            assert before <= high
            ct.write(chunk)
            written += len(chunk)
        assert ct.get_write_buffer_size() == before + len(chunk) > high
        assert cp.sizes_at_pause == [before + len(chunk)]
        # More writes while paused: no second pause_writing.
        ct.write(chunk)
        written += len(chunk)
        assert cp.calls == ["connection_made", "pause_writing"]
        # The peer reads: resume_writing once the buffer is at `low` or below.
        sp.transport.resume_reading()
        await cp.resumed.wait()
        assert cp.calls == ["connection_made", "pause_writing", "resume_writing"]
        assert cp.sizes_at_pause[1] <= low
        await sp.wait_for_bytes(written)
        assert len(sp.data) == written
        assert ct.get_write_buffer_size() == 0
        assert cp.calls == ["connection_made", "pause_writing", "resume_writing"]
        ct.close()
        assert await cp.lost is None
        await _close_server(server)

    loop.run_until_complete(main())


def test_lowering_the_limits_pauses_at_once(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        ct.set_write_buffer_limits(high=1 << 30)
        await _fill_until_buffered(ct)
        assert cp.calls == ["connection_made"]
        size = ct.get_write_buffer_size()
        ct.set_write_buffer_limits(high=size + 1)
        assert cp.calls == ["connection_made"]
        ct.set_write_buffer_limits(high=size - 1)  # asyncio checks at once
        assert cp.calls == ["connection_made", "pause_writing"]
        assert cp.sizes_at_pause == [size]
        # Raising them again does not resume: only a drained buffer does.
        ct.set_write_buffer_limits(high=size * 10)
        for _ in range(5):
            await asyncio.sleep(0)
        assert cp.calls == ["connection_made", "pause_writing"]
        sp.transport.resume_reading()
        await cp.resumed.wait()
        assert cp.calls == ["connection_made", "pause_writing", "resume_writing"]
        ct.close()
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_pause_and_resume_reading(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        st = sp.transport
        assert st.is_reading()
        st.pause_reading()
        st.pause_reading()  # idempotent
        assert not st.is_reading()
        ct.write(b"while paused")
        await _until_readable(st.get_extra_info("socket"))
        assert sp.data == b"" and sp.calls == ["connection_made"]
        st.resume_reading()
        st.resume_reading()
        assert st.is_reading()
        await sp.wait_for_bytes(12)
        assert sp.data == b"while paused"
        # EOF while paused is not seen until reading resumes either.
        st.pause_reading()
        ct.write_eof()
        await _until_readable(st.get_extra_info("socket"))
        assert "eof_received" not in sp.calls
        st.resume_reading()
        assert await sp.eof == b"while paused"
        assert await sp.lost is None
        # A closing transport is not reading, and resume_reading does not change it.
        assert not st.is_reading()
        st.resume_reading()
        assert not st.is_reading()
        ct.close()
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_pause_reading_inside_data_received(loop):
    # A protocol that pauses in data_received gets no further data_received until it
    # resumes, even when a full-sized read left more data in the socket.
    data = _payload(4 * 1024 * 1024)

    class Pauser(Recorder):
        paused = False
        reads = 0

        def data_received(self, d):
            assert not self.paused, "data_received while paused"
            super().data_received(d)
            self.reads += 1
            self.transport.pause_reading()
            self.paused = True
            asyncio.get_running_loop().call_soon(self.resume_later)

        def resume_later(self):
            asyncio.get_running_loop().call_soon(self.resume)

        def resume(self):
            self.paused = False
            self.transport.resume_reading()

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=Pauser)
        ct.write(data)
        ct.write_eof()
        assert await sp.eof == data
        assert sp.reads > 1
        assert await sp.lost is None
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_stream_reader_limit_pauses_the_transport(loop):
    # StreamReader pauses its transport above 2 * limit and resumes it when read
    # below: the data arrives complete and in order.
    data = _payload(3 * 1024 * 1024)
    seen_paused = []

    async def handle(reader, writer):
        got = bytearray()
        while True:
            seen_paused.append(not writer.transport.is_reading())
            chunk = await reader.read(1000)
            if not chunk:
                break
            got += chunk
        writer.write(b"%d" % len(got) if bytes(got) == data else b"corrupt")
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0, limit=4096)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(data)
        writer.write_eof()
        assert await reader.read() == b"%d" % len(data)
        assert any(seen_paused)
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    loop.run_until_complete(main())


# -- EOF, close, abort ---------------------------------------------------------------


@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_write_eof_half_close(loop, direction):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        a, ap, b, bp = (ct, cp, sp.transport, sp)
        if direction == "server_to_client":
            a, ap, b, bp = b, bp, a, ap
        bp.keep_open_on_eof = True
        assert a.can_write_eof() and b.can_write_eof()
        a.write(b"request")
        a.write_eof()
        a.write_eof()  # idempotent
        assert not a.is_closing()
        with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
            a.write(b"more")
        with pytest.raises(RuntimeError, match=r"Cannot call writelines\(\) after write_eof"):
            a.writelines([b"more"])
        # Even an empty write is refused; a non-bytes one is a TypeError first.
        with pytest.raises(RuntimeError):
            a.write(b"")
        with pytest.raises(TypeError):
            a.write("text")
        assert await bp.eof == b"request"
        assert not b.is_closing()  # eof_received returned True: stays open
        # The other direction still works.
        b.write(b"response")
        await ap.wait_for_bytes(8)
        assert ap.data == b"response"
        b.close()
        assert await ap.eof == b"response"
        assert await bp.lost is None and await ap.lost is None
        assert ap.calls == ["connection_made", "data_received", "eof_received",
                            "connection_lost"]
        assert bp.calls == ap.calls
        await _close_server(server)

    loop.run_until_complete(main())


def test_write_eof_waits_for_the_buffer(loop):
    data = _payload(8 * 1024 * 1024)

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        ct.write(data)
        assert ct.get_write_buffer_size() > 0
        ct.write_eof()  # shutdown(SHUT_WR) only after the buffer is sent
        sp.transport.resume_reading()
        assert await sp.eof == data
        assert await sp.lost is None
        assert ct.get_write_buffer_size() == 0
        assert not ct.is_closing()
        await cp.eof  # the server closed after our EOF
        assert await cp.lost is None
        await _close_server(server)

    loop.run_until_complete(main())


def test_eof_received_false_closes(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        ct.write_eof()
        assert await sp.eof == b""
        assert sp.transport.is_closing()
        assert await sp.lost is None
        assert sp.calls == ["connection_made", "eof_received", "connection_lost"]
        assert await cp.eof == b""
        assert await cp.lost is None
        await _close_server(server)

    loop.run_until_complete(main())


def test_close_flushes_the_buffer(loop):
    data = _payload(8 * 1024 * 1024)

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        assert not ct.is_closing()
        ct.write(data)
        assert ct.get_write_buffer_size() > 0
        ct.close()
        assert ct.is_closing()
        ct.close()  # idempotent
        for _ in range(5):
            await asyncio.sleep(0)
        # Not lost while the buffer still holds data.
        assert not cp.lost.done()
        sp.transport.resume_reading()
        assert await sp.eof == data
        assert await cp.lost is None
        assert await sp.lost is None
        assert ct.get_write_buffer_size() == 0
        assert cp.calls == ["connection_made", "pause_writing", "resume_writing",
                            "connection_lost"]
        await _close_server(server)

    loop.run_until_complete(main())


def test_abort_drops_the_buffer(loop):
    data = _payload(16 * 1024 * 1024)

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        ct.write(data)
        assert ct.get_write_buffer_size() > 0
        ct.abort()
        assert ct.is_closing()
        assert await cp.lost is None
        assert ct.get_write_buffer_size() == 0
        # Paused by the write; an aborted transport does not resume the protocol.
        assert cp.calls == ["connection_made", "pause_writing", "connection_lost"]
        sp.transport.resume_reading()
        got = await sp.eof
        assert 0 < len(got) < len(data)
        assert got == data[:len(got)]
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_abort_after_close_and_close_after_abort(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        await _fill_until_buffered(ct, past_high=True)
        ct.close()
        assert not cp.lost.done()
        ct.abort()  # drops what close would have flushed
        assert await cp.lost is None
        ct.close()
        ct.abort()
        assert cp.calls == ["connection_made", "pause_writing", "connection_lost"]
        sp.transport.resume_reading()
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_write_after_close_is_counted_and_logged(loop, caplog):
    # asyncio drops writes on a closed transport and logs "socket.send() raised
    # exception." once LOG_THRESHOLD_FOR_CONNLOST_WRITES of them were dropped;
    # before and after connection_lost alike.
    def warnings():
        return [r for r in caplog.records
                if r.name == "asyncio" and r.getMessage() == "socket.send() raised exception."]

    async def main():
        server, ct, cp, sp = await _pair(loop)
        early_write = ct.write  # a write function taken before the close
        ct.close()
        for _ in range(LOG_THRESHOLD_FOR_CONNLOST_WRITES - 1):
            ct.write(b"dropped")
        assert warnings() == []
        ct.write(b"")  # empty writes are not counted
        assert warnings() == []
        ct.write(b"dropped")
        assert len(warnings()) == 1
        assert await cp.lost is None
        ct.write(bytearray(b"dropped"))
        early_write(memoryview(b"dropped"))
        assert len(warnings()) == 3
        with pytest.raises(TypeError):
            ct.write("still a type error")
        assert ct.get_write_buffer_size() == 0
        assert await sp.eof == b""
        await sp.lost
        await _close_server(server)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(main())


def test_is_closing_and_connection_lost_once(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        assert not ct.is_closing() and not sp.transport.is_closing()
        sp.transport.close()
        assert sp.transport.is_closing()
        assert await cp.eof == b""
        assert ct.is_closing()  # eof_received returned None: the transport closed
        assert await cp.lost is None
        for _ in range(5):
            await asyncio.sleep(0)
        assert cp.calls.count("connection_lost") == 1
        assert sp.calls.count("connection_lost") == 1
        await _close_server(server)

    loop.run_until_complete(main())


# -- errors --------------------------------------------------------------------------


def test_peer_reset_while_reading(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        try:
            ct, cp = await loop.create_connection(Recorder, *listener.getsockname())
            conn, _ = await loop.sock_accept(listener)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            exc = await cp.lost
            assert type(exc) is ConnectionResetError
            assert exc.errno == errno.ECONNRESET
            assert str(exc) == f"[Errno {errno.ECONNRESET}] {os.strerror(errno.ECONNRESET)}"
            assert ct.is_closing()
            assert cp.calls == ["connection_made", "connection_lost"]
            ct.write(b"after the reset")  # dropped, no error
        finally:
            listener.close()

    loop.run_until_complete(main())
    assert contexts == []  # an OSError is only logged in debug mode


def test_peer_reset_while_writing(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        try:
            ct, cp = await loop.create_connection(Recorder, *listener.getsockname())
            ct.pause_reading()  # the reset is seen by a write, not by the reader
            conn, _ = await loop.sock_accept(listener)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            await _until_readable(ct.get_extra_info("socket"))
            ct.write(b"into a reset connection")
            exc = await cp.lost
            assert type(exc) is ConnectionResetError
            assert exc.errno == errno.ECONNRESET
            assert ct.is_closing()
        finally:
            listener.close()

    loop.run_until_complete(main())
    assert contexts == []


@pytest.mark.parametrize("where", ["data_received", "eof_received"])
def test_protocol_callback_raising_is_fatal(loop, where):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    boom = RuntimeError("boom")

    class Boom(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if where == "data_received":
                raise boom

        def eof_received(self):
            super().eof_received()
            raise boom

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=Boom)
        if where == "data_received":
            ct.write(b"trigger")
        else:
            ct.write_eof()
        assert await sp.lost is boom
        assert sp.transport.is_closing()
        assert await cp.eof == b""  # the server side closed
        await cp.lost
        await _close_server(server)
        return sp

    sp = loop.run_until_complete(main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"] == f"Fatal error: protocol.{where}() call failed."
    assert ctx["exception"] is boom
    assert ctx["transport"] is sp.transport
    assert ctx["protocol"] is sp


def test_write_non_bytes_is_a_type_error(loop):
    import array

    async def main():
        server, ct, cp, sp = await _pair(loop)
        for bad, name in [("text", "str"), (42, "int"), (None, "NoneType"),
                          (array.array("b", b"xy"), "array"), ([b"x"], "list")]:
            with pytest.raises(TypeError) as info:
                ct.write(bad)
            assert str(info.value) == (
                f"data argument must be a bytes-like object, not {name!r}")
        assert ct.get_write_buffer_size() == 0
        ct.write(b"fine")
        await sp.wait_for_bytes(4)
        assert sp.data == b"fine"
        assert not ct.is_closing()
        ct.close()
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_write_bytes_like(loop):
    class Sub(bytes):
        pass

    async def main():
        server, ct, cp, sp = await _pair(loop)
        buf = bytearray(b"bytearray|")
        ct.write(buf)
        buf[:] = b"changed!!!"  # it was sent already
        ct.write(memoryview(b"..memoryview|..")[2:-2])
        ct.write(Sub(b"subclass|"))
        ct.write(memoryview(bytearray(b"mv-of-bytearray|")))
        ct.write(memoryview(b"2d-c-contig|").cast("B", (3, 4)))  # 2-D, contiguous
        ct.write(memoryview(b"2byte-items|").cast("H"))  # format "H", not "B"
        ct.writelines([b"lines", bytearray(b"|"), memoryview(b"end")])
        ct.write(b"")
        ct.write(bytearray())
        ct.write_eof()
        got = await sp.eof
        assert got == (b"bytearray|memoryview|subclass|mv-of-bytearray|2d-c-contig|"
                       b"2byte-items|lines|end")
        await sp.lost
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_write_non_contiguous_memoryview_is_fatal(loop):
    # asyncio's write accepts any memoryview; socket.send refuses a non-contiguous
    # one, which asyncio reports as a fatal write error.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        server, ct, cp, sp = await _pair(loop)
        with pytest.raises(Exception) as expected:
            socket.socket().send(memoryview(b"abcdef")[::2])
        ct.write(memoryview(b"abcdef")[::2])
        exc = await cp.lost
        assert type(exc) is type(expected.value) and str(exc) == str(expected.value)
        assert ct.is_closing()
        await sp.lost
        await _close_server(server)
        return ct, cp

    ct, cp = loop.run_until_complete(main())
    assert [c["message"] for c in contexts] == ["Fatal write error on socket transport"]
    assert contexts[0]["transport"] is ct and contexts[0]["protocol"] is cp


def test_connection_refused(loop):
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(Recorder, HOST, port)
        assert info.value.errno == errno.ECONNREFUSED
        assert str(info.value) == (
            f"[Errno {errno.ECONNREFUSED}] Connect call failed ('{HOST}', {port})")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)

    loop.run_until_complete(main())


# -- extra info, sockets ------------------------------------------------------------


def test_get_extra_info(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        st = sp.transport
        for t in (ct, st):
            sock = t.get_extra_info("socket")
            assert isinstance(sock, asyncio.trsock.TransportSocket)
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            assert t.get_extra_info("sockname") == sock.getsockname()
            assert t.get_extra_info("peername") == sock.getpeername()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert t.get_extra_info("sslcontext") is None
            assert t.get_extra_info("peercert", "default") == "default"
            assert t.get_extra_info("no such thing") is None
            assert t.get_protocol() is (cp if t is ct else sp)
        assert ct.get_extra_info("peername") == st.get_extra_info("sockname")
        assert st.get_extra_info("peername") == ct.get_extra_info("sockname")
        assert ct.get_extra_info("peername") == server.sockets[0].getsockname()
        ct.close()
        await sp.lost
        # Extra info outlives the connection.
        assert ct.get_extra_info("peername")[0] == HOST
        await _close_server(server)

    loop.run_until_complete(main())


def test_connect_accepted_socket(loop):
    async def main():
        listener = socket.create_server((HOST, 0))
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        try:
            st, sp = await loop.connect_accepted_socket(Recorder, conn)
            assert st.get_extra_info("peername") == client.getsockname()
            client.sendall(b"hello accepted")
            await sp.wait_for_bytes(14)
            assert sp.data == b"hello accepted"
            st.write(b"back")
            st.close()
            await sp.lost
            client.settimeout(5)
            assert client.recv(100) == b"back"
            assert client.recv(100) == b""
            # Not a stream socket.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                with pytest.raises(ValueError, match="A Stream Socket was expected"):
                    await loop.connect_accepted_socket(Recorder, udp)
        finally:
            client.close()
            listener.close()

    loop.run_until_complete(main())


def test_create_connection_with_sock_and_unix_socketpair(loop):
    a, b = socket.socketpair()

    async def main():
        ta, pa = await loop.create_connection(Recorder, sock=a)
        tb, pb = await loop.create_connection(Recorder, sock=b)
        assert ta.get_extra_info("socket").family == socket.AF_UNIX
        ta.write(b"ping")
        await pb.wait_for_bytes(4)
        tb.write(b"pong")
        await pa.wait_for_bytes(4)
        assert (pa.data, pb.data) == (b"pong", b"ping")
        ta.close()
        await pb.lost
        await pa.lost
        with pytest.raises(ValueError):
            await loop.create_connection(Recorder, HOST, 1, sock=socket.socket())

    loop.run_until_complete(main())


def test_unix_server_and_connection(loop, unix_path):
    async def main():
        server = await loop.create_unix_server(Echo, unix_path)
        assert os.path.exists(unix_path)
        assert server.sockets[0].getsockname() == unix_path
        ct, cp = await loop.create_unix_connection(Recorder, unix_path)
        assert ct.get_extra_info("peername") == unix_path
        assert ct.get_extra_info("socket").family == socket.AF_UNIX
        data = _payload(2 * 1024 * 1024)
        ct.write(data)
        ct.write_eof()
        assert await cp.eof == data
        await cp.lost
        server.close()
        await server.wait_closed()
        # 3.13 removes the socket file when the server closes (cleanup_socket);
        # 3.12 leaves it.
        assert os.path.exists(unix_path) == (not PY313)

    loop.run_until_complete(main())


def test_unix_server_streams_and_stale_socket(loop, unix_path):
    # A socket file left behind by a dead server is replaced; a path that is not a
    # socket is refused.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(unix_path)
    stale.close()

    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_unix_server(handle, unix_path)
        reader, writer = await asyncio.open_unix_connection(unix_path)
        writer.write(b"over unix\n")
        assert await reader.read() == b"OVER UNIX\n"
        writer.close()
        await writer.wait_closed()
        await _close_server(server)
        if os.path.exists(unix_path):
            os.unlink(unix_path)
        with open(unix_path, "w"):
            pass
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(Echo, unix_path)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == (
            f"[Errno {errno.EADDRINUSE}] Address {unix_path!r} is already in use")

    loop.run_until_complete(main())


@pytest.mark.skipif(not PY313, reason="cleanup_socket is new in 3.13")
def test_unix_server_cleanup_socket_false_keeps_the_file(loop, unix_path):
    async def main():
        server = await loop.create_unix_server(Echo, unix_path, cleanup_socket=False)
        await _close_server(server)
        assert os.path.exists(unix_path)

    loop.run_until_complete(main())


# -- the Server object ---------------------------------------------------------------


def test_server_object(loop):
    async def main():
        server = await loop.create_server(Echo, HOST, 0)
        assert server.get_loop() is loop
        assert server.is_serving()
        (sock,) = server.sockets
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        addr = sock.getsockname()
        assert addr[0] == HOST
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        await server.wait_closed()  # again: returns at once
        server.close()  # idempotent
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()
        # The port is free again: a new connection is refused.
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(Recorder, *addr)

    loop.run_until_complete(main())


def test_server_start_serving_false(loop):
    async def main():
        server = await loop.create_server(Echo, HOST, 0, start_serving=False)
        assert not server.is_serving()
        addr = server.sockets[0].getsockname()
        await server.start_serving()
        assert server.is_serving()
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"x")
        writer.write_eof()
        assert await reader.read() == b"x"
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    loop.run_until_complete(main())


def test_server_serve_forever_cancelled_and_async_with(loop):
    async def main():
        server = await loop.create_server(Echo, HOST, 0, start_serving=False)
        async with server:
            task = asyncio.create_task(server.serve_forever())
            for _ in range(3):
                await asyncio.sleep(0)
            assert server.is_serving()
            with pytest.raises(RuntimeError, match="already being awaited"):
                await server.serve_forever()
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"served")
            writer.write_eof()
            assert await reader.read() == b"served"
            writer.close()
            await writer.wait_closed()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
            assert server.sockets == ()
        # async with closed it (and waited): a second server can reuse nothing.
        server2 = await loop.create_server(Echo, HOST, 0)
        async with server2:
            assert server2.is_serving()
        assert not server2.is_serving()

    loop.run_until_complete(main())


def test_server_wait_closed_waits_for_connections(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        server.close()
        waiter = asyncio.create_task(server.wait_closed())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiter.done()  # a connection is still up
        # The accepted connection keeps working after the server closed.
        ct.write(b"still up")
        await sp.wait_for_bytes(8)
        ct.close()
        await sp.lost
        await asyncio.wait_for(waiter, 10)

    loop.run_until_complete(main())


@pytest.mark.skipif(not PY313, reason="Server.close_clients/abort_clients are new in 3.13")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_server_close_and_abort_clients(loop, how):
    data = _payload(8 * 1024 * 1024)

    async def main():
        accepted = []

        def factory():
            p = Recorder()
            accepted.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0)
        addr = server.sockets[0].getsockname()
        clients = [await loop.create_connection(PausedServer, *addr) for _ in range(3)]
        while len(accepted) < 3:
            await asyncio.sleep(0)
        for p in accepted:
            await p.made
            p.transport.write(data)  # the clients do not read: this buffers
            assert p.transport.get_write_buffer_size() > 0
        server.close()
        getattr(server, how)()
        for p in accepted:
            assert p.transport.is_closing()
        if how == "abort_clients":
            for p in accepted:
                assert await p.lost is None
                assert p.transport.get_write_buffer_size() == 0
        for t, p in clients:
            t.resume_reading()
        for t, p in clients:
            got = await p.eof
            if how == "close_clients":
                assert got == data  # flushed
            else:
                assert len(got) < len(data) and got == data[:len(got)]
            await p.lost
        await asyncio.wait_for(server.wait_closed(), 10)

    loop.run_until_complete(main())


# -- buffered protocols and set_protocol ---------------------------------------------


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, size=7):
        loop = asyncio.get_running_loop()
        self.buf = bytearray(size)
        self.data = bytearray()
        self.sizes = []
        self.calls = []
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.chunk = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("connection_made")
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        assert sizehint == -1
        if self.calls[-1] != "get_buffer":
            self.calls.append("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.sizes.append(nbytes)
        self.data += self.buf[:nbytes]
        self.chunk.set()

    def eof_received(self):
        self.calls.append("eof_received")
        self.eof.set_result(bytes(self.data))

    def connection_lost(self, exc):
        self.calls.append("connection_lost")
        self.lost.set_result(exc)

    async def wait_for_bytes(self, n):
        while len(self.data) < n:
            self.chunk.clear()
            await self.chunk.wait()


def test_buffered_protocol_small_buffer(loop):
    data = _payload(300 * 1024 + 5)

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=BufferedRecorder)
        if _is_interloop(loop):
            assert type(sp.transport._read_ready).__name__ == "SocketReader"
        ct.write(data)
        ct.write_eof()
        assert await sp.eof == data
        assert max(sp.sizes) == 7 and len(sp.sizes) >= len(data) // 7
        assert await sp.lost is None
        assert sp.calls == ["connection_made", "get_buffer", "eof_received",
                            "connection_lost"]
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_buffered_protocol_large_buffer_streams_everything(loop):
    data = _payload(8 * 1024 * 1024)

    async def main():
        server, ct, cp, sp = await _pair(
            loop, server_factory=lambda: BufferedRecorder(1 << 20))
        ct.write(data)
        ct.close()
        assert await sp.eof == data
        await sp.lost
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


@pytest.mark.parametrize("fault", ["get_buffer_raises", "get_buffer_empty",
                                   "get_buffer_not_a_buffer", "get_buffer_readonly",
                                   "buffer_updated_raises"])
def test_buffered_protocol_faults_are_fatal(loop, fault):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    boom = RuntimeError("boom")

    class Faulty(BufferedRecorder):
        def get_buffer(self, sizehint):
            if fault == "get_buffer_raises":
                raise boom
            if fault == "get_buffer_empty":
                return bytearray()
            if fault == "get_buffer_not_a_buffer":
                return 42
            if fault == "get_buffer_readonly":
                return b"read only buffer"
            return super().get_buffer(sizehint)

        def buffer_updated(self, nbytes):
            super().buffer_updated(nbytes)
            raise boom

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=Faulty)
        ct.write(b"trigger")
        exc = await sp.lost
        assert sp.transport.is_closing()
        if fault == "buffer_updated_raises":
            assert await cp.eof == b""  # the server had read everything: FIN
            assert await cp.lost is None
        else:
            # The server closed with "trigger" unread: the kernel resets.
            assert type(await cp.lost) is ConnectionResetError
            assert cp.calls == ["connection_made", "connection_lost"]
        await _close_server(server)
        return sp, exc

    sp, exc = loop.run_until_complete(main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["exception"] is exc
    assert ctx["transport"] is sp.transport and ctx["protocol"] is sp
    if fault == "get_buffer_raises":
        assert exc is boom
        assert ctx["message"] == "Fatal error: protocol.get_buffer() call failed."
    elif fault == "get_buffer_empty":
        assert type(exc) is RuntimeError
        assert str(exc) == "get_buffer() returned an empty buffer"
        assert ctx["message"] == "Fatal error: protocol.get_buffer() call failed."
    elif fault == "get_buffer_not_a_buffer":
        assert type(exc) is TypeError and "has no len()" in str(exc)
        assert ctx["message"] == "Fatal error: protocol.get_buffer() call failed."
    elif fault == "get_buffer_readonly":
        # The buffer is refused by recv_into: asyncio calls that a read error.
        assert type(exc) is TypeError
        assert ctx["message"] == "Fatal read error on socket transport"
    else:
        assert exc is boom
        assert ctx["message"] == "Fatal error: protocol.buffer_updated() call failed."
        assert sp.data == b"trigger"


def test_set_protocol_plain_to_buffered_and_back(loop):
    # The server starts with a plain protocol; on b"switch" it hands the transport to
    # a buffered one, which on b"back" hands it to a second plain one. Every message
    # is acknowledged, so no read can hold data for two protocols.
    log = []

    class Plain(asyncio.Protocol):
        def __init__(self, name, nxt=None):
            self.name, self.nxt = name, nxt

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            log.append((self.name, bytes(data)))
            self.transport.write(b"ack:" + data)
            if data == b"switch" and self.nxt is not None:
                self.transport.set_protocol(self.nxt)

        def connection_lost(self, exc):
            log.append((self.name, "lost"))

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self, nxt):
            self.nxt = nxt
            self.buf = bytearray(64)

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            data = bytes(self.buf[:nbytes])
            log.append(("buffered", data))
            transport.write(b"ack:" + data)
            if data == b"back":
                transport.set_protocol(self.nxt)
                self.nxt.transport = transport

    transport = None
    second = Plain("second")
    first = Plain("first", Buffered(second))

    def factory():
        return first

    async def main():
        nonlocal transport
        server = await loop.create_server(factory, HOST, 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        for msg in (b"one", b"switch", b"two", b"three", b"back", b"four"):
            if msg == b"switch":
                transport = first.transport
            writer.write(msg)
            assert await reader.readexactly(4 + len(msg)) == b"ack:" + msg
        assert first.transport.get_protocol() is second
        writer.close()
        await writer.wait_closed()
        while ("second", "lost") not in log:
            await asyncio.sleep(0.001)
        await _close_server(server)

    loop.run_until_complete(main())
    assert log == [("first", b"one"), ("first", b"switch"), ("buffered", b"two"),
                   ("buffered", b"three"), ("buffered", b"back"), ("second", b"four"),
                   ("second", "lost")]


def test_sendfile_over_tcp(loop, tmp_path):
    data = _payload(3 * 1024 * 1024 + 1)
    path = tmp_path / "blob"
    path.write_bytes(data)

    async def main():
        server, ct, cp, sp = await _pair(loop)
        with open(path, "rb") as f:
            sent = await loop.sendfile(ct, f, offset=10, count=len(data) - 20)
        assert sent == len(data) - 20
        ct.write(b"|after")
        await sp.wait_for_bytes(sent + 6)
        assert bytes(sp.data) == data[10:-10] + b"|after"
        ct.close()
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_data_received_propagates(loop, exc_type):
    # asyncio's transport lets KeyboardInterrupt and SystemExit out of the reader
    # callback (and so out of run_until_complete) without closing the transport;
    # the connection keeps working when the loop runs again.
    class Raiser(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if data.endswith(b"raise"):
                raise exc_type()

    state = {}

    async def setup():
        server, ct, cp, sp = await _pair(loop, server_factory=Raiser)
        state.update(server=server, ct=ct, cp=cp, sp=sp)
        ct.write(b"please raise")
        await asyncio.Event().wait()  # until cancelled

    task = loop.create_task(setup())
    with pytest.raises(exc_type):
        loop.run_until_complete(task)
    sp, ct = state["sp"], state["ct"]
    assert sp.data == b"please raise"
    assert not sp.transport.is_closing()
    assert not task.done()
    task.cancel()

    async def after():
        ct.write(b" and go on")
        await sp.wait_for_bytes(22)
        assert sp.data == b"please raise and go on"
        ct.close()
        await sp.lost
        await _close_server(state["server"])

    loop.run_until_complete(after())
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


def test_streams_drain_after_the_peer_went_away(loop):
    async def main():
        server, ct, cp, sp = await _pair(loop)
        sp.transport.abort()
        await sp.lost
        # A stream writer on a fresh connection whose peer resets it.
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        try:
            r, w = await asyncio.open_connection(*listener.getsockname())
            conn, _ = await loop.sock_accept(listener)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            with pytest.raises(ConnectionResetError):
                await r.read()
            assert w.is_closing()
            w.write(b"x")  # dropped
            with pytest.raises(ConnectionResetError):
                await w.drain()
            w.close()
            with pytest.raises(ConnectionResetError):
                await w.wait_closed()
        finally:
            listener.close()
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


@pytest.mark.parametrize("size", [5, 256 * 1024, 256 * 1024 + 1, 3 * 256 * 1024])
def test_data_and_eof_queued_before_the_transport_exists(loop, size):
    # The peer's data and FIN are both in the socket before the transport starts
    # reading: all of it arrives, then eof_received. The sizes straddle asyncio's
    # read size (256 KiB).
    data = _payload(size)

    async def main():
        listener = socket.create_server((HOST, 0))
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        try:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            await _until_readable(conn)
            st, sp = await loop.connect_accepted_socket(Recorder, conn)
            assert await sp.eof == data
            assert await sp.lost is None
            assert sp.calls == ["connection_made", "data_received", "eof_received",
                                "connection_lost"]
        finally:
            client.close()
            listener.close()

    loop.run_until_complete(main())


@pytest.mark.parametrize("size", [5, 256 * 1024, 700 * 1024])
def test_data_and_eof_arrive_while_paused(loop, size):
    data = _payload(size)

    async def main():
        server, ct, cp, sp = await _pair(loop, server_factory=PausedServer)
        ct.write(data)
        ct.write_eof()
        while ct.get_write_buffer_size():
            await asyncio.sleep(0.001)
        await _until_readable(sp.transport.get_extra_info("socket"))
        assert sp.calls == ["connection_made"]
        sp.transport.resume_reading()
        assert await sp.eof == data
        assert await sp.lost is None
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_transport_is_freed_after_connection_lost(loop):
    # After connection_lost, asyncio's transport is not part of a reference cycle:
    # dropping the last references frees it at once, without the garbage collector.
    import gc
    import weakref

    async def main():
        server, ct, cp, sp = await _pair(loop)
        ct.write(b"x" * 1000)
        await sp.wait_for_bytes(1000)
        refs = [weakref.ref(ct), weakref.ref(sp.transport)]
        ct.close()
        await cp.lost
        await sp.lost
        await _close_server(server)
        cp.transport = sp.transport = None
        return refs

    gc.disable()
    try:
        refs = loop.run_until_complete(main())
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))
        assert [r() is None for r in refs] == [True, True]
    finally:
        gc.enable()
