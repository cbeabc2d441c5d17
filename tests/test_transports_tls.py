"""TLS (asyncio's sslproto over the stream transports): ssl= on create_server,
create_connection and streams, start_tls, timeouts, verification, on asyncio's loop
and interloop's.

uvloop-style: each test runs on both loops (the ``loop`` fixture); what asyncio does
is the specification. Waiting is by events (futures, queues), never by timing. The
certificates are made at test time by ``trustme``: a CA, and a leaf for
``localhost`` and ``127.0.0.1`` signed by it.
"""
import asyncio
import socket
import ssl
import sys
import threading

import pytest

trustme = pytest.importorskip("trustme")

from transporttests import HOST, PausedServer, Recorder, unix_path  # noqa: F401 - a fixture
from transporttests import close_server as _close_server
from transporttests import is_interloop as _is_interloop
from transporttests import payload as _payload


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca):
    return ca.issue_cert("localhost", HOST)


@pytest.fixture
def server_ctx(server_cert):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


class Echo(asyncio.Protocol):
    def __init__(self):
        self.made = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.transport.write(data)


async def _tls_pair(loop, server_ctx, client_ctx, server_factory=Recorder,
                    client_factory=Recorder, **client_kwargs):
    accepted = loop.create_future()

    def make():
        proto = server_factory()
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(make, HOST, 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_kwargs.setdefault("server_hostname", "localhost")
    ct, cp = await loop.create_connection(
        client_factory, HOST, port, ssl=client_ctx, **client_kwargs)
    sp = await accepted
    await sp.made
    return server, ct, cp, sp


async def _other_tasks_done():
    """Waits for every other task of the loop (the server's accept tasks)."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await asyncio.gather(*others, return_exceptions=True)


def _raw_transport(app_transport):
    return app_transport._ssl_protocol._transport


# -- echo ----------------------------------------------------------------------------


def test_tls_echo_protocols_large_payload(loop, server_ctx, client_ctx):
    data = _payload(4 * 1024 * 1024 + 7)

    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_factory=Echo, client_factory=Recorder)
        if _is_interloop(loop):
            # TLS runs over interloop's socket transport, through its buffered
            # (get_buffer/buffer_updated) read path.
            from interloop._transports import SocketTransport

            raw = _raw_transport(ct)
            assert isinstance(raw, SocketTransport)
            assert type(raw._read_ready).__name__ == "SocketReader"
        assert isinstance(ct, asyncio.sslproto._SSLProtocolTransport)
        for i in range(0, len(data), 500_000):
            ct.write(data[i:i + 500_000])
        await cp.wait_for_bytes(len(data))
        assert bytes(cp.data) == data
        ct.close()
        assert ct.is_closing()
        assert await cp.lost is None
        assert [c for c in cp.calls if "writing" not in c] == [
            "connection_made", "data_received", "eof_received", "connection_lost"]
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_streams_echo_and_eof(loop, server_ctx, client_ctx):
    data = _payload(3 * 1024 * 1024 + 1)

    async def handle(reader, writer):
        got = await reader.readexactly(len(data))
        writer.write(got[::-1])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client_ctx, server_hostname="localhost")
        assert not writer.can_write_eof()
        with pytest.raises(NotImplementedError):
            writer.write_eof()
        writer.write(data)
        await writer.drain()
        assert await reader.readexactly(len(data)) == data[::-1]
        assert await reader.read() == b""  # the server's close_notify
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_write_argument_checks(loop, server_ctx, client_ctx):
    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx)
        for bad, name in [("text", "str"), (42, "int")]:
            with pytest.raises(TypeError) as info:
                ct.write(bad)
            assert str(info.value) == f"data: expecting a bytes-like instance, got {name}"
        ct.write(b"")
        ct.write(bytearray(b"ba|"))
        ct.write(memoryview(b"..mv|..")[2:-2])
        ct.writelines([b"li", bytearray(b"nes")])
        await sp.wait_for_bytes(10)
        assert sp.data == b"ba|mv|lines"
        ct.close()
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_over_unix_sockets(loop, server_ctx, client_ctx, unix_path):
    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_unix_server(handle, unix_path, ssl=server_ctx)
        reader, writer = await asyncio.open_unix_connection(
            unix_path, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"tls over unix\n")
        assert await reader.read() == b"TLS OVER UNIX\n"
        assert writer.get_extra_info("peercert") is not None
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    loop.run_until_complete(main())


# -- extra info ----------------------------------------------------------------------


def test_tls_get_extra_info(loop, server_ctx, client_ctx):
    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx)
        st = sp.transport
        assert ct.get_extra_info("sslcontext") is client_ctx
        assert st.get_extra_info("sslcontext") is server_ctx
        for t, side in ((ct, False), (st, True)):
            obj = t.get_extra_info("ssl_object")
            assert isinstance(obj, ssl.SSLObject)
            assert obj.server_side is side
            assert t.get_extra_info("cipher") == obj.cipher()
            name, version, bits = t.get_extra_info("cipher")
            assert version.startswith("TLS") and bits >= 128
            assert t.get_extra_info("compression") == obj.compression()
            assert isinstance(t.get_extra_info("socket"), asyncio.trsock.TransportSocket)
            assert t.get_extra_info("no such thing", 42) == 42
        assert ct.get_extra_info("ssl_object").server_hostname == "localhost"
        cert = ct.get_extra_info("peercert")
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert ("IP Address", HOST) in cert["subjectAltName"]
        assert st.get_extra_info("peercert") is None  # no client certificate
        assert ct.get_extra_info("peername") == st.get_extra_info("sockname")
        assert st.get_extra_info("peername") == ct.get_extra_info("sockname")
        assert ct.get_protocol() is cp
        ct.close()
        await cp.lost
        await sp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_client_certificate(loop, ca, server_ctx, client_ctx):
    client_cert = ca.issue_cert("client@example.com")
    client_cert.configure_cert(client_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)

    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx)
        cert = sp.transport.get_extra_info("peercert")
        assert ("email", "client@example.com") in cert["subjectAltName"] or (
            ("rfc822Name", "client@example.com") in cert.get("subjectAltName", ()))
        ct.close()
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_server_hostname_defaults_to_host(loop, server_ctx, client_ctx):
    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_hostname=None)
        assert ct.get_extra_info("ssl_object").server_hostname == HOST
        ct.close()
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


# -- argument rules ------------------------------------------------------------------


def test_tls_argument_errors(loop, server_ctx, client_ctx):
    async def main():
        server = await loop.create_server(Echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        for kwargs, message in [
            (dict(server_hostname="localhost"), "server_hostname is only meaningful with ssl"),
            (dict(ssl_handshake_timeout=1), "ssl_handshake_timeout is only meaningful with ssl"),
            (dict(ssl_shutdown_timeout=1), "ssl_shutdown_timeout is only meaningful with ssl"),
        ]:
            with pytest.raises(ValueError) as info:
                await loop.create_connection(Recorder, HOST, port, **kwargs)
            assert str(info.value) == message
        with socket.socket() as s:
            with pytest.raises(ValueError) as info:
                await loop.create_connection(Recorder, sock=s, ssl=client_ctx)
            assert str(info.value) == (
                "You must set server_hostname when using ssl without a host")
        for kwargs, message in [
            (dict(ssl_handshake_timeout=1), "ssl_handshake_timeout is only meaningful with ssl"),
            (dict(ssl_shutdown_timeout=1), "ssl_shutdown_timeout is only meaningful with ssl"),
        ]:
            with pytest.raises(ValueError) as info:
                await loop.create_server(Echo, HOST, 0, **kwargs)
            assert str(info.value) == message
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext or None"):
            await loop.create_server(Echo, HOST, 0, ssl=True)
        # start_tls wants an SSLContext, and a transport that supports it.
        ct, cp = await loop.create_connection(Recorder, HOST, port)
        with pytest.raises(TypeError) as info:
            await loop.start_tls(ct, cp, True)
        assert str(info.value) == (
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {True!r}")
        ct.close()
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_start_tls_on_a_datagram_transport_is_refused(loop, client_ctx):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0))
        with pytest.raises(TypeError) as info:
            await loop.start_tls(t, p, client_ctx, server_hostname="localhost")
        assert str(info.value) == f"transport {t!r} is not supported by start_tls()"
        t.close()

    loop.run_until_complete(main())

    loop.run_until_complete(main())


# -- verification failures -----------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong_hostname", "untrusted"])
def test_tls_certificate_verification_fails(loop, server_ctx, client_ctx, case):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    made = []

    async def main():
        def factory():
            p = Recorder()
            made.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        if case == "wrong_hostname":
            kwargs = dict(ssl=client_ctx, server_hostname="wrong.example")
        else:
            kwargs = dict(ssl=ssl.create_default_context(), server_hostname="localhost")
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await loop.create_connection(Recorder, HOST, port, **kwargs)
        exc = info.value
        if case == "wrong_hostname":
            assert exc.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
            assert exc.verify_message == (
                "Hostname mismatch, certificate is not valid for 'wrong.example'.")
        else:
            assert exc.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            assert exc.verify_message == "unable to get local issuer certificate"
        # The server side fails its handshake too: asyncio's client does not flush
        # its alert, so the server sees the connection end mid-handshake.
        server.close()
        await server.wait_closed()
        await _other_tasks_done()
        # The server's application protocol never got a connection.
        assert [p.calls for p in made] == [[]]

    loop.run_until_complete(main())
    # asyncio reports a failed incoming TLS handshake to the exception handler in
    # debug mode only.
    if loop.get_debug():
        assert [c["message"] for c in contexts] == [
            "Error on transport creation for incoming connection"]
        assert type(contexts[0]["exception"]) is ConnectionResetError
    else:
        assert contexts == []


def test_tls_client_speaks_plain_to_a_tls_server(loop, server_ctx):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        server = await loop.create_server(Recorder, HOST, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        # The server's handshake fails and it drops the connection.
        try:
            rest = await reader.read()
        except ConnectionResetError:
            rest = b""
        assert b"HTTP" not in rest
        writer.close()
        server.close()
        await server.wait_closed()
        await _other_tasks_done()

    loop.run_until_complete(main())
    if loop.get_debug():
        assert [c["message"] for c in contexts] == [
            "Error on transport creation for incoming connection"]
        assert isinstance(contexts[0]["exception"], ssl.SSLError)
    else:
        assert contexts == []


# -- timeouts -----------------------------------------------------------------------


def test_ssl_handshake_timeout_client_side(loop, client_ctx):
    # A server that accepts (the kernel's backlog does) and never answers.
    listener = socket.create_server((HOST, 0))

    async def main():
        with pytest.raises(ConnectionAbortedError) as info:
            await loop.create_connection(
                Recorder, *listener.getsockname(), ssl=client_ctx,
                server_hostname="localhost", ssl_handshake_timeout=0.2)
        assert str(info.value) == (
            "SSL handshake is taking longer than 0.2 seconds: aborting the connection")
        # Through streams the same.
        with pytest.raises(ConnectionAbortedError):
            await asyncio.open_connection(
                *listener.getsockname(), ssl=client_ctx, server_hostname="localhost",
                ssl_handshake_timeout=0.2)

    try:
        loop.run_until_complete(main())
    finally:
        listener.close()


def test_ssl_handshake_timeout_server_side(loop, server_ctx):
    # A client that connects and never starts the handshake: the server drops it.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    made = []

    async def main():
        def factory():
            p = Recorder()
            made.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=server_ctx,
                                          ssl_handshake_timeout=0.2)
        with socket.create_connection(server.sockets[0].getsockname()) as raw:
            raw.setblocking(False)
            assert await loop.sock_recv(raw, 100) == b""  # closed by the server
        server.close()
        await server.wait_closed()
        await _other_tasks_done()
        assert [p.calls for p in made] == [[]]

    loop.run_until_complete(main())
    if loop.get_debug():
        assert [c["message"] for c in contexts] == [
            "Error on transport creation for incoming connection"]
        exc = contexts[0]["exception"]
        assert type(exc) is ConnectionAbortedError
        assert str(exc) == (
            "SSL handshake is taking longer than 0.2 seconds: aborting the connection")
    else:
        assert contexts == []


def test_ssl_shutdown_timeout(loop, server_ctx, client_ctx):
    # The peer completes the handshake, then never reads: our close_notify is not
    # answered, and the shutdown times out.
    listener = socket.create_server((HOST, 0))
    handshaken = threading.Event()
    release = threading.Event()
    errors = []

    def peer():
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                handshaken.set()
                release.wait(30)
        except Exception as e:  # pragma: no cover - reported by the test
            errors.append(e)
            handshaken.set()

    thread = threading.Thread(target=peer)
    thread.start()

    async def main():
        ct, cp = await loop.create_connection(
            Recorder, *listener.getsockname(), ssl=client_ctx,
            server_hostname="localhost", ssl_shutdown_timeout=0.2)
        await loop.run_in_executor(None, handshaken.wait, 30)
        ct.close()
        assert ct.is_closing()
        exc = await cp.lost
        assert type(exc) is TimeoutError
        assert str(exc) == "SSL shutdown timed out"
        assert cp.calls == ["connection_made", "connection_lost"]

    try:
        loop.run_until_complete(main())
    finally:
        release.set()
        thread.join(30)
        listener.close()
    assert errors == []


# -- start_tls ----------------------------------------------------------------------


def test_start_tls_streams_both_sides(loop, server_ctx, client_ctx):
    data = _payload(1024 * 1024 + 3)

    async def handle(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        assert writer.get_extra_info("ssl_object").server_side
        got = await reader.readexactly(len(data))
        writer.write(got[::-1])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        assert writer.get_extra_info("ssl_object") is None
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        assert writer.get_extra_info("peercert") is not None
        assert isinstance(writer.transport, asyncio.sslproto._SSLProtocolTransport)
        writer.write(data)
        assert await reader.readexactly(len(data)) == data[::-1]
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    loop.run_until_complete(main())


def test_start_tls_protocols_both_sides(loop, server_ctx, client_ctx):
    async def main():
        accepted = loop.create_future()
        server = await loop.create_server(
            lambda: accepted.set_result(Recorder()) or accepted.result(), HOST, 0)
        port = server.sockets[0].getsockname()[1]
        ct, cp = await loop.create_connection(Recorder, HOST, port)
        sp = await accepted
        await sp.made
        ct.write(b"plain")
        await sp.wait_for_bytes(5)
        raw_c, raw_s = ct, sp.transport
        # Both sides upgrade at once; the handshakes meet.
        tc, ts = await asyncio.gather(
            loop.start_tls(raw_c, cp, client_ctx, server_hostname="localhost"),
            loop.start_tls(raw_s, sp, server_ctx, server_side=True))
        assert tc.get_protocol() is cp and ts.get_protocol() is sp
        # The raw transports now feed TLS (a buffered protocol).
        assert isinstance(raw_c.get_protocol(), asyncio.sslproto.SSLProtocol)
        if _is_interloop(loop):
            assert type(raw_c._read_ready).__name__ == "SocketReader"
        assert tc.get_extra_info("ssl_object") is not None
        data = _payload(2 * 1024 * 1024)
        tc.write(data)
        await sp.wait_for_bytes(5 + len(data))
        assert bytes(sp.data) == b"plain" + data
        ts.write(b"secret reply")
        await cp.wait_for_bytes(12)
        assert cp.data == b"secret reply"
        tc.close()
        assert await sp.eof == b"plain" + data
        assert await sp.lost is None
        assert await cp.lost is None
        assert sp.calls == ["connection_made", "data_received", "eof_received",
                            "connection_lost"]
        await _close_server(server)

    loop.run_until_complete(main())


def test_start_tls_handshake_timeout(loop, client_ctx):
    # The peer accepted the plain connection but never starts TLS.
    listener = socket.create_server((HOST, 0))

    async def main():
        ct, cp = await loop.create_connection(Recorder, *listener.getsockname())
        with pytest.raises(ConnectionAbortedError):
            await loop.start_tls(ct, cp, client_ctx, server_hostname="localhost",
                                 ssl_handshake_timeout=0.2)
        assert ct.is_closing()

    try:
        loop.run_until_complete(main())
    finally:
        listener.close()


# -- flow control and closing -------------------------------------------------------


def test_tls_pause_and_resume_reading(loop, server_ctx, client_ctx):
    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_factory=PausedServer)
        st = sp.transport
        assert not st.is_reading()
        ct.write(b"while paused")
        # The record arrives (it waits, encrypted, in the TLS layer's buffer)...
        while st.get_read_buffer_size() == 0:
            await asyncio.sleep(0.001)
        for _ in range(10):
            await asyncio.sleep(0)
        # ...and is not delivered while paused.
        assert sp.data == b"" and sp.calls == ["connection_made"]
        st.resume_reading()
        assert st.is_reading()
        await sp.wait_for_bytes(12)
        assert sp.data == b"while paused"
        ct.close()
        assert await sp.eof == b"while paused"
        assert await sp.lost is None
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_pause_reading_inside_data_received(loop, server_ctx, client_ctx):
    # Pausing in every data_received: the TLS layer's incoming buffer fills and it
    # pauses the socket transport underneath; everything arrives, in order.
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
            asyncio.get_running_loop().call_soon(self.resume)

        def resume(self):
            self.paused = False
            self.transport.resume_reading()

    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_factory=Pauser)
        ct.write(data)
        await sp.wait_for_bytes(len(data))
        assert bytes(sp.data) == data
        assert sp.reads > 1
        ct.close()
        await sp.lost
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_pause_and_resume_writing(loop, server_ctx, client_ctx):
    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_factory=PausedServer)
        # sslproto's defaults: 512 KiB high, a quarter of it low.
        assert ct.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
        chunk = b"t" * (64 * 1024)
        written = 0
        while "pause_writing" not in cp.calls:
            ct.write(chunk)
            written += len(chunk)
            assert written < 512 * 1024 * 1024, "never paused"
        # The TLS layer counts its own buffers and the socket transport's.
        assert ct.get_write_buffer_size() + _raw_transport(ct).get_write_buffer_size() \
            >= 512 * 1024
        sp.transport.resume_reading()
        await cp.resumed.wait()
        await sp.wait_for_bytes(written)
        assert len(sp.data) == written
        assert cp.calls == ["connection_made", "pause_writing", "resume_writing"]
        ct.close()
        await sp.lost
        await cp.lost
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_close_mid_stream_flushes(loop, server_ctx, client_ctx):
    data = _payload(6 * 1024 * 1024)

    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_factory=PausedServer)
        ct.write(data)
        raw = _raw_transport(ct)
        ct.close()  # while most of it is still buffered
        assert ct.is_closing()
        assert raw.get_write_buffer_size() > 0
        sp.transport.resume_reading()
        assert await sp.eof == data
        assert await sp.lost is None
        assert await cp.lost is None
        assert sp.calls == ["connection_made", "data_received", "eof_received",
                            "connection_lost"]
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_server_closes_mid_stream(loop, server_ctx, client_ctx):
    # The server closes after the first chunk while the client still sends: the
    # client gets the server's close_notify (eof_received) and connection_lost.
    class CloseEarly(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx,
                                             server_factory=CloseEarly)
        ct.write(b"first")
        await sp.lost
        assert sp.data.startswith(b"first")
        assert await cp.eof == b""
        exc = await cp.lost
        assert exc is None or isinstance(exc, ConnectionResetError)
        assert ct.is_closing()
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_abort_mid_stream(loop, server_ctx, client_ctx):
    data = _payload(8 * 1024 * 1024)
    # TLS 1.2: a TLS 1.3 server sends its session tickets after the handshake; if
    # they are still unread when the client aborts, the kernel resets instead of
    # sending a FIN, and the server's connection_lost gets ConnectionResetError.
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    async def main():
        # (Not PausedServer: with TLS 1.2 the server's last handshake flight is only
        # flushed by a read, which pausing in connection_made prevents; asyncio's
        # sslproto then never completes the client's handshake.)
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx)
        sp.transport.pause_reading()
        ct.write(data)
        raw = _raw_transport(ct)
        assert raw.get_write_buffer_size() > 0
        ct.abort()
        assert ct.is_closing()
        assert await cp.lost is None
        assert "eof_received" not in cp.calls
        sp.transport.resume_reading()
        exc = await sp.lost
        assert 0 < len(sp.data) < len(data)
        assert bytes(sp.data) == data[:len(sp.data)]
        # No close_notify: the TLS layer treats the TCP EOF as the end.
        assert exc is None
        assert sp.calls == ["connection_made", "data_received", "eof_received",
                            "connection_lost"]
        await _close_server(server)

    loop.run_until_complete(main())


def test_tls_write_after_close_is_dropped(loop, server_ctx, client_ctx, caplog):
    import logging

    async def main():
        server, ct, cp, sp = await _tls_pair(loop, server_ctx, client_ctx)
        ct.write(b"before")
        ct.close()
        ct.write(b"after close")
        assert await sp.eof == b"before"
        await cp.lost
        ct.write(b"after connection_lost")  # the TLS layer is gone: dropped
        await sp.lost
        await _close_server(server)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(main())
