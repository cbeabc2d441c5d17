"""Pipe transports (connect_read_pipe, connect_write_pipe, subprocess pipes) and Unix
stream sockets, on asyncio's loop and interloop's.

uvloop-style: each test runs on both loops (the ``loop`` fixture); what asyncio does
is the specification. Waiting is by events (futures, queues), never by timing.
"""
import asyncio
import os
import select
import socket
import sys
import tempfile

import pytest

from transporttests import is_interloop as _is_interloop


class ReadRecorder(asyncio.Protocol):
    def __init__(self):
        self.calls = []
        self.data = bytearray()
        self.chunk = asyncio.Event()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("connection_made")

    def data_received(self, data):
        assert type(data) is bytes
        if self.calls[-1] != "data_received":
            self.calls.append("data_received")
        self.data += data
        self.chunk.set()

    def eof_received(self):
        self.calls.append("eof_received")

    def connection_lost(self, exc):
        self.calls.append("connection_lost")
        self.lost.set_result(exc)


class WriteRecorder(asyncio.Protocol):
    def __init__(self):
        self.calls = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("connection_made")

    def pause_writing(self):
        self.calls.append("pause_writing")

    def resume_writing(self):
        self.calls.append("resume_writing")

    def connection_lost(self, exc):
        self.calls.append("connection_lost")
        self.lost.set_result(exc)


@pytest.fixture
def pipe():
    r, w = os.pipe()
    rf, wf = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    yield rf, wf
    for f in (rf, wf):
        try:
            f.close()
        except OSError:
            pass


def _payload(n):
    # Not a repeated byte: a reordering or a lost chunk shows.
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


def test_large_transfer_through_a_pipe_then_eof(loop, pipe):
    rf, wf = pipe
    data = _payload(4 * 1024 * 1024 + 17)

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, rf)
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        if _is_interloop(loop):
            assert type(rt._read_ready).__name__ == "PipeReader"
            assert type(wt.write).__name__ == "PipeWriter"
        assert rt.get_extra_info("pipe") is rf
        assert wt.get_extra_info("pipe") is wf
        for i in range(0, len(data), 100_000):
            wt.write(data[i:i + 100_000])
        assert wt.get_write_buffer_size() > 0  # more than a pipe holds
        wt.close()
        assert wt.is_closing()
        assert await wp.lost is None
        assert await rp.lost is None
        assert bytes(rp.data) == data
        assert rp.calls == ["connection_made", "data_received", "eof_received",
                            "connection_lost"]
        assert wp.calls[0] == "connection_made" and wp.calls[-1] == "connection_lost"

    loop.run_until_complete(main())


def test_write_accepts_bytearray_and_memoryview(loop, pipe):
    rf, wf = pipe

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, rf)
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        buf = bytearray(b"bytearray ")
        wt.write(buf)
        buf[:] = b"changed!!!"  # the transport copied or sent it already
        wt.write(memoryview(b"..memoryview..")[2:-2])
        wt.write(b"")
        wt.writelines([b" and", b" lines"])
        wt.write_eof()
        await rp.lost
        assert bytes(rp.data) == b"bytearray memoryview and lines"
        await wp.lost

    loop.run_until_complete(main())


def test_write_rejects_non_bytes(loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        # asyncio asserts the type (AssertionError), with -O it fails later: both
        # loops behave the same either way.
        for bad in ("text", 42):
            with pytest.raises((AssertionError, TypeError)):
                wt.write(bad)
        wt.close()
        await wp.lost

    loop.run_until_complete(main())


def test_read_pipe_pause_and_resume(loop, pipe):
    rf, wf = pipe

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, rf)
        assert rt.is_reading()
        rt.pause_reading()
        assert not rt.is_reading()
        wf.write(b"while paused")
        assert select.select([rf], [], [], 5)[0]
        for _ in range(10):
            await asyncio.sleep(0)
        assert rp.data == b""
        rt.resume_reading()
        assert rt.is_reading()
        await rp.chunk.wait()
        assert rp.data == b"while paused"
        rt.close()
        assert rt.is_closing()
        assert await rp.lost is None
        assert "eof_received" not in rp.calls

    loop.run_until_complete(main())


def test_read_pipe_eof_without_data(loop, pipe):
    rf, wf = pipe

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, rf)
        wf.close()
        assert await rp.lost is None
        assert rp.calls == ["connection_made", "eof_received", "connection_lost"]
        assert rt.is_closing()

    loop.run_until_complete(main())


def test_read_pipe_protocol_exception_goes_to_the_exception_handler(loop, pipe):
    rf, wf = pipe
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class Boom(ReadRecorder):
        def data_received(self, data):
            super().data_received(data)
            if b"boom" in data:
                raise RuntimeError("boom")

    async def main():
        rt, rp = await loop.connect_read_pipe(Boom, rf)
        wf.write(b"boom")
        await rp.chunk.wait()
        rp.chunk.clear()
        wf.write(b" after")
        await rp.chunk.wait()
        assert rp.data == b"boom after"
        rt.close()
        await rp.lost

    loop.run_until_complete(main())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], RuntimeError)


def test_write_pipe_flow_control(loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        wt.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert wt.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"w" * 32 * 1024
        written = 0
        while "pause_writing" not in wp.calls:
            wt.write(chunk)
            written += len(chunk)
            assert written < 64 * 1024 * 1024, "the pipe never filled"
        assert wt.get_write_buffer_size() > 64 * 1024
        os.set_blocking(rf.fileno(), False)
        read = 0
        while read < written:
            try:
                while True:
                    got = os.read(rf.fileno(), 1 << 20)
                    assert got == b"w" * len(got)
                    read += len(got)
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
        assert read == written
        assert wt.get_write_buffer_size() == 0
        assert wp.calls == ["connection_made", "pause_writing", "resume_writing"]
        wt.close()
        assert await wp.lost is None

    loop.run_until_complete(main())


def test_write_pipe_reader_closed_while_idle(loop, pipe):
    # The read end goes away while nothing is buffered: asyncio notices through its
    # reader on the write end and reports connection_lost(None).
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        rf.close()
        assert await wp.lost is None
        assert wt.is_closing()

    loop.run_until_complete(main())


def test_write_pipe_write_after_reader_closed_is_broken_pipe(loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        rf.close()
        wt.write(b"nobody reads this")  # EPIPE on the direct write
        exc = await wp.lost
        assert isinstance(exc, BrokenPipeError)
        assert wt.is_closing()
        # Further writes are counted and dropped, as in asyncio.
        wt.write(b"dropped")
        assert wt.get_write_buffer_size() == 0

    loop.run_until_complete(main())


def test_write_pipe_reader_closed_with_data_buffered(loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        while wt.get_write_buffer_size() == 0:
            wt.write(b"x" * 65536)
        rf.close()
        exc = await wp.lost
        assert isinstance(exc, BrokenPipeError)

    loop.run_until_complete(main())


def test_write_pipe_abort_drops_the_buffer(loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        while wt.get_write_buffer_size() == 0:
            wt.write(b"x" * 65536)
        wt.abort()
        assert wt.is_closing()
        assert await wp.lost is None
        assert wt.get_write_buffer_size() == 0

    loop.run_until_complete(main())


def test_write_after_close_is_dropped(loop, pipe):
    rf, wf = pipe

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        wt.close()
        wt.write(b"late")
        assert await wp.lost is None
        wt.write(b"later")
        os.set_blocking(rf.fileno(), False)
        assert os.read(rf.fileno(), 100) == b""  # EOF: nothing was written

    loop.run_until_complete(main())


def test_pipe_transport_on_a_socket(loop):
    # connect_read_pipe/connect_write_pipe accept sockets too.
    a, b = socket.socketpair()

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, a)
        wt, wp = await loop.connect_write_pipe(WriteRecorder, b)
        data = _payload(1024 * 1024)
        wt.write(data)
        wt.close()
        await wp.lost
        await rp.lost
        assert bytes(rp.data) == data
        assert rp.calls[-2:] == ["eof_received", "connection_lost"]

    try:
        loop.run_until_complete(main())
    finally:
        a.close()
        b.close()


def test_pipe_transport_refuses_a_regular_file(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError):
                await loop.connect_read_pipe(asyncio.Protocol, f)
        with open(path, "wb") as f:
            with pytest.raises(ValueError):
                await loop.connect_write_pipe(asyncio.Protocol, f)

    loop.run_until_complete(main())


def test_subprocess_large_transfer_both_ways(loop):
    data = _payload(3 * 1024 * 1024 + 5)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(data)
        assert err is None
        assert out == data[::-1]
        assert proc.returncode == 0

    loop.run_until_complete(main())


def test_subprocess_stdout_eof_and_stdin_broken(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('bye')",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert await proc.stdout.read() == b"bye\n"
        await proc.wait()
        proc.stdin.write(b"x" * 1000)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await proc.stdin.drain()
            proc.stdin.write(b"x" * 1000)
            await proc.stdin.drain()

    loop.run_until_complete(main())


def test_unix_stream_sockets_use_the_native_socket_transport(loop):
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "sock")
    seen = []

    async def main():
        async def handle(reader, writer):
            seen.append(writer.transport)
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(handle, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"over unix")
        assert await reader.read() == b"over unix"
        transports = [writer.transport, seen[0]]
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return transports

    try:
        transports = loop.run_until_complete(main())
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(tmp)
    if _is_interloop(loop):
        from interloop._transports import SocketTransport

        assert all(isinstance(t, SocketTransport) for t in transports)


def test_read_pipe_on_a_terminal_gets_every_line(loop):
    # A terminal in canonical mode returns one line per read even when more are
    # waiting: a short read does not mean the descriptor is drained.
    import pty

    master, slave = pty.openpty()
    slave_file = os.fdopen(slave, "rb", 0)

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, slave_file)
        os.write(master, b"first\nsecond\nthird\n")
        while rp.data.count(b"\n") < 3:
            rp.chunk.clear()
            await asyncio.wait_for(rp.chunk.wait(), 10)
        assert bytes(rp.data).replace(b"\r", b"") == b"first\nsecond\nthird\n"
        rt.close()
        await rp.lost

    try:
        loop.run_until_complete(main())
    finally:
        os.close(master)
        slave_file.close()


def test_read_pipe_transport_is_collected_after_close(loop, pipe):
    import gc
    import weakref

    rf, wf = pipe

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, rf)
        wt, wp = await loop.connect_write_pipe(WriteRecorder, wf)
        refs = weakref.ref(rt), weakref.ref(wt)
        wt.write(b"x")
        wt.close()
        await wp.lost
        await rp.lost
        return refs

    refs = loop.run_until_complete(main())
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_read_pipe_on_a_datagram_socket_gets_every_message(loop):
    # A datagram socket returns one message per read even when more are queued.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    async def main():
        rt, rp = await loop.connect_read_pipe(ReadRecorder, a)
        for part in (b"one ", b"two ", b"three"):
            b.send(part)
        while rp.data != b"one two three":
            rp.chunk.clear()
            await asyncio.wait_for(rp.chunk.wait(), 10)
        rt.close()
        await rp.lost

    try:
        loop.run_until_complete(main())
    finally:
        a.close()
        b.close()


def test_write_pipe_on_a_terminal_whose_master_closes(loop):
    # A character device gets no reader from the write pipe transport, so a hang-up
    # shows up as a failed write of the buffered data (EIO): the transport reports
    # it and loses the connection with that error.
    import pty

    master, slave = pty.openpty()
    slave_file = os.fdopen(slave, "wb", 0)

    async def main():
        wt, wp = await loop.connect_write_pipe(WriteRecorder, slave_file)
        while wt.get_write_buffer_size() == 0:
            wt.write(b"t" * 4096)
        os.close(master)
        exc = await wp.lost
        assert isinstance(exc, OSError)
        assert wt.is_closing()
        assert wt.get_write_buffer_size() == 0

    try:
        loop.run_until_complete(main())
    finally:
        slave_file.close()
