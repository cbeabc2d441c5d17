"""What the transport tests (TCP, TLS, UDP, pipes) share: the address, a payload that
shows reordering, which loop a test runs on, a recording protocol, a Unix socket path.

``from transporttests import ...``; ``unix_path`` is a fixture (import it by name).
"""
import asyncio
import os
import tempfile

import pytest

HOST = "127.0.0.1"


def payload(n):
    # Not a repeated byte: a reordering or a lost chunk shows.
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


def is_interloop(loop):
    return type(loop).__module__.startswith("interloop")


class Recorder(asyncio.Protocol):
    """Records every protocol call; futures for the milestones."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.calls = []
        self.data = bytearray()
        self.chunk = asyncio.Event()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.keep_open_on_eof = False
        self.sizes_at_pause = []  # write buffer size when pause/resume_writing ran
        self.resumed = asyncio.Event()

    def _record(self, name):
        if not (name == "data_received" and self.calls and self.calls[-1] == name):
            self.calls.append(name)

    def connection_made(self, transport):
        self.transport = transport
        self._record("connection_made")
        self.made.set_result(transport)

    def data_received(self, data):
        assert type(data) is bytes
        assert "eof_received" not in self.calls
        self._record("data_received")
        self.data += data
        self.chunk.set()

    def eof_received(self):
        self._record("eof_received")
        self.eof.set_result(bytes(self.data))
        return self.keep_open_on_eof

    def pause_writing(self):
        self._record("pause_writing")
        self.sizes_at_pause.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self._record("resume_writing")
        self.sizes_at_pause.append(self.transport.get_write_buffer_size())
        self.resumed.set()

    def connection_lost(self, exc):
        self._record("connection_lost")
        self.lost.set_result(exc)

    async def wait_for_bytes(self, n):
        while len(self.data) < n:
            self.chunk.clear()
            await self.chunk.wait()


class PausedServer(Recorder):
    """A server side that does not read until told to."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()


async def close_server(server):
    server.close()
    await server.wait_closed()


@pytest.fixture
def unix_path():
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "sock")
    yield path
    if os.path.lexists(path):
        os.unlink(path)
    os.rmdir(tmp)
