"""The loop's low-level socket methods (sock_*) and name resolution, on 127.0.0.1."""
import asyncio
import socket

import pytest


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _client():
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    return c


def test_sock_connect_accept_sendall_recv(loop, listener):
    async def main():
        client = _client()
        accept = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        conn, addr = await accept
        with client, conn:
            assert addr == client.getsockname()
            assert conn.gettimeout() == 0  # accepted sockets are non-blocking
            await loop.sock_sendall(client, b"hello")
            assert await loop.sock_recv(conn, 5) == b"hello"
            await loop.sock_sendall(conn, b"back")
            buf = bytearray(10)
            n = await loop.sock_recv_into(client, buf)
            assert bytes(buf[:n]) == b"back"
            client.shutdown(socket.SHUT_WR)
            assert await loop.sock_recv(conn, 5) == b""

    loop.run_until_complete(main())


def test_sock_recv_waits_for_data(loop, listener):
    async def main():
        client = _client()
        accept = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = await accept
        with client, conn:
            recv = loop.create_task(loop.sock_recv(conn, 100))
            await asyncio.sleep(0.01)
            assert not recv.done()
            await loop.sock_sendall(client, b"late")
            return await recv

    assert loop.run_until_complete(main()) == b"late"


def test_sock_sendall_large_payload(loop, listener):
    payload = bytes(range(256)) * 16384  # 4 MiB: many partial sends

    async def main():
        client = _client()
        accept = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = await accept
        with client, conn:

            async def reader():
                chunks = []
                while True:
                    data = await loop.sock_recv(conn, 65536)
                    if not data:
                        return b"".join(chunks)
                    chunks.append(data)

            read = loop.create_task(reader())
            await loop.sock_sendall(client, payload)
            client.shutdown(socket.SHUT_WR)
            return await read

    assert loop.run_until_complete(main()) == payload


def test_sock_recv_cancelled_then_reusable(loop, listener):
    async def main():
        client = _client()
        accept = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = await accept
        with client, conn:
            recv = loop.create_task(loop.sock_recv(conn, 100))
            await asyncio.sleep(0)
            recv.cancel()
            with pytest.raises(asyncio.CancelledError):
                await recv
            await loop.sock_sendall(client, b"after cancel")
            return await loop.sock_recv(conn, 100)

    assert loop.run_until_complete(main()) == b"after cancel"


def test_sock_connect_refused(loop):
    # A port that was just bound and closed is very likely unused.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()

    async def main():
        with _client() as client:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(client, addr)

    loop.run_until_complete(main())


def test_sock_methods_reject_blocking_sockets_in_debug(loop):
    loop.set_debug(True)  # asyncio checks this only in debug mode

    async def main():
        with socket.socket() as s:
            s.setblocking(True)
            with pytest.raises(ValueError):
                await loop.sock_recv(s, 10)
            with pytest.raises(ValueError):
                await loop.sock_sendall(s, b"x")
            with pytest.raises(ValueError):
                await loop.sock_connect(s, ("127.0.0.1", 1))
            with pytest.raises(ValueError):
                await loop.sock_accept(s)

    loop.run_until_complete(main())


def test_sock_connect_resolves_hostname(loop, listener):
    async def main():
        client = _client()
        accept = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, ("localhost", listener.getsockname()[1]))
        conn, _ = await accept
        client.close()
        conn.close()

    loop.run_until_complete(main())


def test_sock_sendto_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        await loop.sock_sendto(a, b"dgram", b.getsockname())
        data, addr = await loop.sock_recvfrom(b, 100)
        assert (data, addr) == (b"dgram", a.getsockname())
        await loop.sock_sendto(b, b"reply", addr)
        buf = bytearray(100)
        n, addr2 = await loop.sock_recvfrom_into(a, buf)
        assert (bytes(buf[:n]), addr2) == (b"reply", b.getsockname())

    loop.run_until_complete(main())


def test_sock_recvfrom_waits_for_datagram(loop, udp_pair):
    a, b = udp_pair

    async def main():
        recv = loop.create_task(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        assert not recv.done()
        await loop.sock_sendto(a, b"late", b.getsockname())
        return await recv

    data, addr = loop.run_until_complete(main())
    assert data == b"late"
    assert addr == a.getsockname()


def test_sock_accept_many_clients(loop, listener):
    async def main():
        clients = [_client() for _ in range(5)]
        accepted = []
        for c in clients:
            accept = loop.create_task(loop.sock_accept(listener))
            await loop.sock_connect(c, listener.getsockname())
            conn, addr = await accept
            accepted.append((conn, addr))
        try:
            return sorted(a for _, a in accepted) == sorted(c.getsockname() for c in clients)
        finally:
            for c in clients:
                c.close()
            for conn, _ in accepted:
                conn.close()

    assert loop.run_until_complete(main())


def test_getaddrinfo_localhost(loop):
    async def main():
        return await loop.getaddrinfo(
            "127.0.0.1", 80, family=socket.AF_INET, type=socket.SOCK_STREAM
        )

    infos = loop.run_until_complete(main())
    expected = socket.getaddrinfo("127.0.0.1", 80, family=socket.AF_INET, type=socket.SOCK_STREAM)
    assert infos == expected


def test_getaddrinfo_by_name_matches_socket_module(loop):
    infos = loop.run_until_complete(
        loop.getaddrinfo("localhost", 8080, type=socket.SOCK_STREAM)
    )
    assert infos == socket.getaddrinfo("localhost", 8080, type=socket.SOCK_STREAM)


def test_getaddrinfo_error(loop):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("no-such-host.invalid", 80)

    loop.run_until_complete(main())


def test_getnameinfo_localhost(loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    got = loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80), flags))
    assert got == socket.getnameinfo(("127.0.0.1", 80), flags) == ("127.0.0.1", "80")
