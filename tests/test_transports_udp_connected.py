"""`transport.sendto(data)` without an address on a datagram transport made from an
already connected socket (``create_datagram_endpoint(sock=...)``).

uvloop sends to the peer; so does interloop. asyncio's loop does too when the peer
has a name (AF_INET), but a socketpair's AF_UNIX peer has none (``getpeername()``
is ``''``) and asyncio then calls ``sock.sendto(data, None)``, a fatal TypeError:
each loop's own behaviour is what these tests expect.
"""
import asyncio
import socket

import pytest

from transporttests import is_interloop


class Collect(asyncio.DatagramProtocol):
    def __init__(self, want):
        self.got = []
        self.want = want
        self.done = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.got.append(data)
        if len(self.got) == self.want and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def _pair(family):
    if family == "unix":
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    return a, b


@pytest.mark.parametrize("family", ["unix", "inet"])
def test_sendto_without_address_on_a_connected_socket(loop, family):
    a, b = _pair(family)

    async def main():
        tr_b, pr_b = await loop.create_datagram_endpoint(lambda: Collect(3), sock=b)
        tr_a, pr_a = await loop.create_datagram_endpoint(lambda: Collect(0), sock=a)
        if family == "unix" and not is_interloop(loop):
            # asyncio: sock.sendto(data, None) fails; the transport is closed.
            tr_a.sendto(b"one")
            exc = await asyncio.wait_for(pr_a.lost, 5)
            assert isinstance(exc, TypeError)
            tr_b.close()
            return
        for d in (b"one", b"two", bytearray(b"three")):
            tr_a.sendto(d)
        await asyncio.wait_for(pr_b.done, 5)
        assert pr_b.got == [b"one", b"two", b"three"]
        assert not tr_a.is_closing()
        # The peer's name is what getpeername() says (also when it has none).
        assert tr_a.get_extra_info("peername") == a.getpeername()
        tr_a.close()
        tr_b.close()
        assert await pr_a.lost is None

    loop.set_exception_handler(lambda *_: None)
    loop.run_until_complete(main())


def test_sendto_without_address_through_the_buffer_on_a_socketpair(loop):
    """More datagrams than the socket buffer holds: the rest wait in the transport's
    buffer and go out by `send` as the peer reads (interloop), or the first one
    fails (asyncio)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    n = 400
    payload = b"x" * 1000

    async def main():
        tr_b, pr_b = await loop.create_datagram_endpoint(lambda: Collect(n), sock=b)
        tr_a, pr_a = await loop.create_datagram_endpoint(lambda: Collect(0), sock=a)
        if not is_interloop(loop):
            tr_a.sendto(payload)
            assert isinstance(await asyncio.wait_for(pr_a.lost, 5), TypeError)
            tr_b.close()
            return
        tr_b.pause_reading()
        for _ in range(n):
            tr_a.sendto(payload)
        assert tr_a.get_write_buffer_size() > 0  # some had to wait
        tr_b.resume_reading()
        await asyncio.wait_for(pr_b.done, 10)
        assert len(pr_b.got) == n and set(pr_b.got) == {payload}
        assert not tr_a.is_closing()
        tr_a.close()
        tr_b.close()

    loop.set_exception_handler(lambda *_: None)
    loop.run_until_complete(main())
