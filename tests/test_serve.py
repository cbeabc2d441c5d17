"""interloop serve (issue 13): a real Starlette app served by `python -m interloop
serve`, with two own-GIL sub-interpreter workers and with `--workers 1` (the main
interpreter on interloop's loop), checked with httpx and with raw sockets.

Every server here runs as a child process on 127.0.0.1 with an ephemeral port.
"""
import http.client
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POOL_OK = sys.version_info >= (3, 12, 4)
needs_pool = pytest.mark.skipif(
    not POOL_OK, reason="sub-interpreter workers need CPython >= 3.12.4 (gh-112140)")

# Short limits so that the fault tests run quickly.
LIMITS = ["--timeout-slow-client", "1", "--timeout-keep-alive", "2",
          "--limit-request-body", "10000000", "--limit-request-head", "8192",
          "--ws-max-size", "1000000", "--metrics-port", "0"]


class Served:
    """`python -m interloop serve ...` in a child process; its stderr is collected."""

    def __init__(self, app, *args, env=None, wait=True):
        cmd = [sys.executable, "-m", "interloop", "serve", app, "--app-dir", HERE,
               "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines = []
        self.port = None
        self.scheme = "http"
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            if not self.ready.wait(60) or self.port is None:
                self.proc.kill()
                raise AssertionError("server did not start:\n" + self.log)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", line)
            if m:
                self.scheme, self.port = m.group(1), int(m.group(2))
                self.ready.set()
        self.ready.set()

    @property
    def log(self):
        return "".join(self.lines)

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop:\n" + self.log)


@pytest.fixture(scope="module", params=[
    pytest.param(2, marks=needs_pool, id="2-subinterpreters"),
    pytest.param(1, id="1-main-interpreter"),
])
def srv(request):
    s = Served("serve_app:app", "--workers", str(request.param), *LIMITS)
    yield s
    assert s.stop() == 0, s.log


# -- raw socket helpers ------------------------------------------------------------

def raw(port, data, timeout=5.0, pause=None, rest=b""):
    """Sends ``data`` (then, after ``pause`` s, ``rest``), returns all bytes read
    until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
            s.sendall(rest)
        return read_to_close(s, timeout)


def read_to_close(s, timeout):
    s.settimeout(timeout)
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except (TimeoutError, socket.timeout):
            break
        except ConnectionResetError:
            break
        if not b:
            break
        out.append(b)
    return b"".join(out)


class _Unclosable(io.BytesIO):
    def close(self):  # HTTPResponse closes its file after a "connection: close" reply
        pass


class _Wire:
    def __init__(self, data):
        self.f = _Unclosable(data)

    def makefile(self, mode):
        return self.f


def responses(data, method="GET"):
    """Parses consecutive HTTP/1.1 responses: [(status, headers, body)]."""
    w = _Wire(data)
    out = []
    while w.f.tell() < len(data):
        r = http.client.HTTPResponse(w, method=method)
        r.begin()
        body = r.read()
        out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, body))
    return out


# -- behaviour through httpx ---------------------------------------------------------

def test_routes_json_and_scope(srv):
    with httpx.Client(base_url=srv.url) as c:
        r = c.get("/")
        assert (r.status_code, r.text) == (200, "Hello, world!")
        assert r.headers["server"] == "interloop" and "date" in r.headers
        assert c.get("/json/7", params={"q": "x y"}).json() == {"n": 7, "q": "x y", "items": [0, 1, 2]}
        assert c.get("/nowhere").status_code == 404
        s = c.get("/scope", params={"a": "1"}, headers={"X-Custom": "Value"}).json()
    assert s["type"] == "http" and s["http_version"] == "1.1" and s["method"] == "GET"
    assert s["scheme"] == "http" and s["path"] == "/scope" and s["raw_path"] == "/scope"
    assert s["query_string"] == "a=1" and s["root_path"] == ""
    assert ["x-custom", "Value"] in s["headers"]  # names lowercased, values as sent
    assert s["client"][0] == "127.0.0.1" and isinstance(s["client"][1], int)
    assert s["server"] == ["127.0.0.1", srv.port]
    assert s["state"] == "yes"  # lifespan state, copied into each request's scope
    assert s["asgi"]["version"] == "3.0"


def test_percent_encoded_path(srv):
    data = raw(srv.port, b"GET /sc%6fpe?x=%20 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    (status, _, body), = responses(data)
    assert status == 200
    import json
    s = json.loads(body)
    assert s["path"] == "/scope" and s["raw_path"] == "/sc%6fpe" and s["query_string"] == "x=%20"


def test_large_body_echo_and_chunked_upload(srv):
    blob = os.urandom(5 * 1024 * 1024 + 3)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/echo", content=blob)
        assert r.status_code == 200 and r.content == blob
        parts = [os.urandom(100_000) for _ in range(20)]
        r = c.post("/echo", content=iter(parts))  # an iterator: sent chunked
        assert r.status_code == 200 and r.content == b"".join(parts)


def test_streaming_response(srv):
    with httpx.Client(base_url=srv.url) as c:
        with c.stream("GET", "/stream", params={"n": 6}) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.headers
            got = b"".join(r.iter_bytes())
    assert got == b"".join(f"chunk {i}\n".encode() for i in range(6))


def test_keep_alive_reuses_the_connection(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        for i in range(3):
            s.sendall(f"GET /json/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            f = s.makefile("rb")
            r = http.client.HTTPResponse(_Wire(b""), method="GET")
            r.fp = f
            r.begin()
            assert r.status == 200 and b'"n":%d' % i in r.read()


def test_app_exception_is_500_and_the_worker_keeps_serving(srv):
    with httpx.Client(base_url=srv.url) as c:
        for _ in range(3):
            r = c.get("/boom")
            assert r.status_code == 500 and r.text == "Internal Server Error"
        assert c.get("/").status_code == 200
    deadline = time.monotonic() + 5
    while "boom from the app" not in srv.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Exception in ASGI application" in srv.log
    assert "RuntimeError: boom from the app" in srv.log  # the traceback is logged


def test_proxy_headers_forwarded_and_x_forwarded(srv):
    def scope_with(*headers):
        with httpx.Client(base_url=srv.url) as c:
            return c.get("/scope", headers=list(headers)).json()

    # The peer (127.0.0.1) is a trusted proxy by default.
    s = scope_with(("Forwarded", 'for=198.51.100.7;proto=https, for="[2001:db8::1]:4711"'))
    # Walked from the nearest hop: 2001:db8::1 is not trusted, so it is the client.
    assert s["client"] == ["2001:db8::1", 4711] and s["scheme"] == "http"
    s = scope_with(("Forwarded", "for=198.51.100.7:5555;proto=https"),
                   ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "http"))
    assert s["client"] == ["198.51.100.7", 5555] and s["scheme"] == "https"  # Forwarded wins
    s = scope_with(("X-Forwarded-For", "203.0.113.9, 127.0.0.1"), ("X-Forwarded-Proto", "https"))
    assert s["client"] == ["203.0.113.9", 0] and s["scheme"] == "https"
    s = scope_with(("Forwarded", "for=unknown;proto=https"))
    assert s["client"][0] == "127.0.0.1" and s["scheme"] == "https"


def test_proxy_headers_parsing_and_trust():
    from interloop._serve.protocol import _forwarded_elements, _ProxyHeaders

    assert _forwarded_elements('for=192.0.2.60;proto=http;by=203.0.113.43, '
                               'For="[2001:db8:cafe::17]:4711"') == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711"}]
    assert _forwarded_elements('for="a\\"b;c,d";proto=https,junk,for=1.2.3.4') == [
        {"for": 'a"b;c,d', "proto": "https"}, {"for": "1.2.3.4"}]

    def apply(trusted, peer, headers, kind="http"):
        scope = {"type": kind, "client": (peer, 1234), "scheme": "ws" if kind != "http" else "http",
                 "headers": [(k.encode(), v.encode()) for k, v in headers]}
        _ProxyHeaders({"forwarded_allow_ips": trusted}).apply(scope)
        return scope["client"], scope["scheme"]

    fwd = [("forwarded", "for=192.0.2.1;proto=https, for=10.0.0.2;proto=http")]
    # An untrusted peer's headers are ignored.
    assert apply("127.0.0.1", "192.0.2.200", fwd) == (("192.0.2.200", 1234), "http")
    # A trusted chain is walked past: 10.0.0.2 is a trusted proxy too.
    assert apply("127.0.0.1,10.0.0.2", "127.0.0.1", fwd) == (("192.0.2.1", 0), "https")
    assert apply("127.0.0.1", "127.0.0.1", fwd) == (("10.0.0.2", 0), "http")
    assert apply("*", "192.0.2.200", fwd) == (("10.0.0.2", 0), "http")
    # Websocket scopes get the ws form of the scheme.
    assert apply("127.0.0.1", "127.0.0.1", [("x-forwarded-proto", "https")], "websocket") == \
        (("127.0.0.1", 1234), "wss")
    assert apply("127.0.0.1", "127.0.0.1", [("forwarded", "for=_hidden;proto=https")],
                 "websocket") == (("127.0.0.1", 1234), "wss")


# -- the wire, through raw sockets ------------------------------------------------------

def test_pipelined_requests_answer_in_order(srv):
    reqs = b"".join(f"GET /json/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for i in range(5))
    reqs += b"GET /json/99 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    rs = responses(raw(srv.port, reqs))
    assert [r[0] for r in rs] == [200] * 6
    assert [int(re.search(rb'"n":(\d+)', r[2]).group(1)) for r in rs] == [0, 1, 2, 3, 4, 99]
    assert rs[-1][1]["connection"] == "close"


def test_chunked_request_body_with_extensions_and_trailers(srv):
    body = b"5;name=v\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    data = raw(srv.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n" + body[:9], pause=0.1, rest=body[9:])
    (status, headers, got), = responses(data, "POST")
    assert status == 200 and got == b"hello world" and headers["x-length"] == "11"


def test_expect_100_continue(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        first = s.recv(100)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"ping")
        (status, _, got), = responses(read_to_close(s, 5), "POST")
    assert status == 200 and got == b"ping"


def test_head_gets_the_length_and_no_body(srv):
    data = raw(srv.port, b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-length: 13" in head and rest == b""


def test_http10_closes_after_the_response(srv):
    data = raw(srv.port, b"GET / HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"Hello, world!")
    assert b"connection: close" in data


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET nope HTTP/1.1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["request-line", "header", "target", "two-lengths", "length-and-chunked", "chunk-size"])
def test_malformed_request_gets_400_and_close(srv, request_bytes):
    data = raw(srv.port, request_bytes)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    assert b"connection: close" in data


def test_oversized_headers_get_431(srv):
    data = raw(srv.port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    many = b"".join(b"X-%d: v\r\n" % i for i in range(150))
    assert raw(srv.port, b"GET / HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431 ")


def test_body_over_the_limit_gets_413(srv):
    data = raw(srv.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 20000000\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413 "), data[:100]
    chunk = b"%x\r\n" % (6 * 1024 * 1024) + b"x" * (6 * 1024 * 1024) + b"\r\n"
    data = raw(srv.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunk + chunk, timeout=10)
    assert data.startswith(b"HTTP/1.1 413 "), data[:100]


def test_slow_client_is_closed(srv):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")  # and never finishes
        assert read_to_close(s, 10) == b""
    assert time.monotonic() - t0 < 5  # --timeout-slow-client 1 (checked every second)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        # A body the app waits for that stops coming.
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        assert read_to_close(s, 10) == b""
    assert time.monotonic() - t0 < 5


def slow_read_of_a_large_response(sock, size=8_000_000, piece=128 * 1024, pause=0.05):
    """POSTs ``size`` bytes to /echo on ``sock`` and reads the echoed response
    ``piece`` bytes at a time with ``pause`` s between reads (longer in all than
    the server's --timeout-slow-client of 1 s); returns the body."""
    blob = os.urandom(size)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(blob) + blob)
    got = []
    t0 = time.monotonic()
    done = False
    while not done:
        n = 0
        while n < piece:  # (a TLS socket returns one record, 16 KiB at most, a call)
            b = sock.recv(piece - n)
            if not b:
                done = True
                break
            got.append(b)
            n += len(b)
        time.sleep(pause)
    data = b"".join(got)
    assert time.monotonic() - t0 > 2  # slower than the slow-client limit
    (status, _, body), = responses(data, "POST")
    assert status == 200
    return blob, body


def test_slow_but_steady_reader_gets_the_whole_response(srv):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(10)
        s.connect(("127.0.0.1", srv.port))
        blob, body = slow_read_of_a_large_response(s)
    assert body == blob


def test_idle_keep_alive_connection_is_closed(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        t0 = time.monotonic()
        data = read_to_close(s, 10)
    assert data.endswith(b"Hello, world!")
    assert 1.5 < time.monotonic() - t0 < 6  # --timeout-keep-alive 2


def test_client_disconnect_reaches_the_app(srv, tmp_path):
    marker = tmp_path / "gone"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(f"GET /wait-disconnect?marker={marker} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "disconnected"


def test_prometheus_metrics(srv):
    with httpx.Client(base_url=srv.url) as c:
        for _ in range(5):
            c.get("/")
    m = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", srv.log)
    assert m, srv.log
    text = httpx.get(m.group(1) + "/metrics").text
    served = [int(v) for v in re.findall(r'interloop_serve_requests_total\{worker="\d+"\} (\d+)', text)]
    workers = int(re.search(r"--workers', '(\d)", repr(srv.proc.args)).group(1))
    assert len(served) == workers and sum(served) >= 5
    assert '# TYPE interloop_serve_latency_us summary' in text
    assert re.search(r'interloop_serve_latency_us\{worker="0",quantile="0.99"\} \d', text)


# -- websockets -------------------------------------------------------------------------

def test_websocket_echo_ping_close_codes_and_limits(srv):
    import asyncio

    import aiohttp

    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(srv.url + "/ws", protocols=["chat"],
                                          autoping=False) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("héllo")
                assert (await ws.receive(5)).data == "héllo"
                blob = os.urandom(300_000)
                await ws.send_bytes(blob)
                assert (await ws.receive(5)).data == blob
                await ws.ping(b"p1")
                m = await ws.receive(5)
                assert (m.type, m.data) == (aiohttp.WSMsgType.PONG, b"p1")
                await ws.send_str("state")  # lifespan state reaches websocket scopes
                assert (await ws.receive(5)).data == "yes"
                await ws.send_str("close-me")
                m = await ws.receive(5)
                assert m.type == aiohttp.WSMsgType.CLOSE and m.data == 4001 and m.extra == "asked to"
            async with session.ws_connect(srv.url + "/ws") as ws:
                await ws.send_bytes(b"x" * 2_000_000)  # over --ws-max-size
                m = await ws.receive(5)
                assert m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 1009
            async with session.ws_connect(srv.url + "/ws") as ws:
                await ws.close(code=1000)  # the client closes; the server answers
                assert ws.close_code == 1000
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await session.ws_connect(srv.url + "/ws-refuse")
            assert e.value.status == 403

    asyncio.run(main())
    data = raw(srv.port, b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")  # no Sec-WebSocket-Key


@pytest.mark.parametrize("workers", [
    pytest.param(2, marks=needs_pool, id="2-subinterpreters"),
    pytest.param(1, id="1-main-interpreter"),
])
def test_websocket_keepalive_pings(workers):
    import asyncio

    import aiohttp

    s = Served("serve_app:app", "--workers", str(workers), "--no-access-log",
               "--ws-ping-interval", "0.2", "--ws-ping-timeout", "1")

    async def main():
        async with aiohttp.ClientSession() as session:
            # A client that answers: pings come every ~0.2 s, the connection lives on.
            async with session.ws_connect(s.url + "/ws", autoping=False) as ws:
                pings = 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < 1.5:
                    m = await ws.receive(2)
                    assert m.type == aiohttp.WSMsgType.PING, m
                    assert len(m.data) == 4  # a random payload
                    pings += 1
                    await ws.pong(m.data)
                assert 3 <= pings <= 9, pings
                await ws.send_str("still open")
                m = await ws.receive(2)
                while m.type == aiohttp.WSMsgType.PING:
                    await ws.pong(m.data)
                    m = await ws.receive(2)
                assert m.data == "still open"
            # An app that neither receives nor sends for 2 s (longer than interval +
            # timeout): the pongs are still seen (aiohttp answers pings by itself here).
            async with session.ws_connect(s.url + "/ws-quiet?ms=2000") as ws:
                m = await ws.receive(5)
                assert (m.type, m.data) == (aiohttp.WSMsgType.TEXT, "still here")
            # A client that does not answer: closed with 1011 after interval + timeout.
            async with session.ws_connect(s.url + "/ws", autoping=False) as ws:
                t0 = time.monotonic()
                while True:
                    m = await ws.receive(5)
                    if m.type != aiohttp.WSMsgType.PING:
                        break
                elapsed = time.monotonic() - t0
                assert m.type == aiohttp.WSMsgType.CLOSE and m.data == 1011, m
                assert m.extra == "keepalive ping timeout"
                assert 1.0 < elapsed < 4, elapsed

    try:
        asyncio.run(main())
    finally:
        assert s.stop() == 0, s.log


# -- start-up, shutdown, worker kinds ---------------------------------------------------

@needs_pool
def test_graceful_shutdown_loses_no_request(tmp_path):
    s = Served("serve_app:app", "--workers", "2", "--no-access-log",
               env={"SERVE_TEST_MARKER_DIR": str(tmp_path)})
    # 16 fresh connections (SO_REUSEPORT spreads them over both workers), each
    # with a request sent before the signal: every one must be answered.
    conns = [socket.create_connection(("127.0.0.1", s.port), timeout=20) for _ in range(16)]
    try:
        for c in conns:
            c.sendall(b"GET /slow?ms=800 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        got = [responses(read_to_close(c, 20)) for c in conns]
    finally:
        for c in conns:
            c.close()
    rc = s.stop()
    assert rc == 0, s.log
    assert [[(st, h.get("connection"), b) for st, h, b in r] for r in got] == \
        [[(200, "close", b"slow done")]] * 16, s.log
    assert time.monotonic() - t0 < 10
    # Lifespan shutdown ran in both workers; both served requests.
    assert len(list(tmp_path.glob("shutdown-*"))) == 2, s.log
    served = [int(n) for n in re.findall(r"worker \d served (\d+) requests", s.log)]
    assert len(served) == 2 and sum(served) == 16 and min(served) > 0, s.log
    # Nothing is accepted once the server has stopped.
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/", timeout=2)


@needs_pool
def test_shared_listener_and_unix_socket(tmp_path):
    # Two workers on one listening socket: TCP (--listener shared) and --uds.
    s = Served("serve_app:app", "--workers", "2", "--listener", "shared", "--no-access-log")
    try:
        with httpx.Client(base_url=s.url) as c:
            assert all(c.get("/json/3").json()["n"] == 3 for _ in range(20))
    finally:
        assert s.stop() == 0, s.log
    path = str(tmp_path / "serve.sock")
    u = Served("serve_app:app", "--workers", "2", "--uds", path, "--no-access-log", wait=False)
    try:
        deadline = time.monotonic() + 60
        while "listening on unix:" not in u.log and time.monotonic() < deadline:
            assert u.proc.poll() is None, u.log
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://x") as c:
            r = c.get("/json/5")  # (a unix socket's scope has no client address)
            assert r.status_code == 200 and r.json()["n"] == 5
    finally:
        assert u.stop() == 0, u.log
    assert not os.path.exists(path)  # removed at shutdown


@needs_pool
def test_app_that_cannot_load_in_a_subinterpreter_fails_fast_and_clearly():
    t0 = time.monotonic()
    s = Served("serve_fastapi_app:app", "--workers", "2", wait=False)
    rc = s.proc.wait(30)
    elapsed = time.monotonic() - t0
    s.ready.wait(5)
    assert rc == 1
    assert "pydantic_core" in s.log  # names the module
    assert "--worker-kind process" in s.log and "--workers 1" in s.log
    assert elapsed < 10, elapsed  # ~0.3 s on an idle machine; the slack is for CI load


def test_fastapi_app_served_by_worker_processes():
    s = Served("serve_fastapi_app:app", "--workers", "2", "--worker-kind", "process")
    try:
        with httpx.Client(base_url=s.url) as c:
            assert c.get("/items/5").json() == {"item_id": 5, "pid_kind": "process"}
            r = c.post("/items", json={"name": "a", "price": 1.5})
            assert r.json() == {"name": "a", "price": 1.5}
            assert c.post("/items", json={"name": "a"}).status_code == 422
    finally:
        assert s.stop() == 0, s.log


def test_prometheus_metrics_of_worker_processes():
    s = Served("serve_app:app", "--workers", "2", "--worker-kind", "process", "--no-access-log",
               "--metrics-port", "0")
    try:
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", s.log)
        assert m, s.log
        metrics = m.group(1) + "/metrics"
        with httpx.Client(base_url=s.url) as c:
            for _ in range(12):
                with httpx.Client(base_url=s.url) as fresh:  # new connections: both may serve
                    assert fresh.get("/json/1").status_code == 200
                assert c.get("/").status_code == 200
            deadline = time.monotonic() + 5
            while True:  # (the closed connections' ends may still be on their way)
                text = httpx.get(metrics, timeout=10).text
                conns = re.findall(r'interloop_serve_connections\{worker="\d+"\} (\d+)', text)
                if sum(map(int, conns)) == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert sum(map(int, conns)) == 1, text  # `c`'s keep-alive connection
            served = dict(re.findall(r'interloop_serve_requests_total\{worker="(\d+)"\} (\d+)', text))
            assert sorted(served) == ["0", "1"], text  # one series per worker process
            assert sum(map(int, served.values())) == 24, text
            assert re.search(r'interloop_serve_latency_us_count\{worker="1"\} \d+', text), text
            # Asked again: the counts move on (each scrape asks the processes anew).
            c.get("/")
            text2 = httpx.get(metrics, timeout=10).text
            served2 = re.findall(r'interloop_serve_requests_total\{worker="\d+"\} (\d+)', text2)
            assert sum(map(int, served2)) == 25, text2
    finally:
        assert s.stop() == 0, s.log


def test_missing_module_is_reported():
    s = Served("no_such_module_xyz:app", "--workers", "1", wait=False)
    assert s.proc.wait(30) == 1
    s.ready.wait(5)
    assert "could not import module 'no_such_module_xyz'" in s.log


def test_serve_rejects_bad_options():
    import interloop
    with pytest.raises(ValueError, match="import string"):
        interloop.serve("no_colon")
    with pytest.raises(TypeError, match="unknown serve option"):
        interloop.serve("a:b", bogus=1)
    with pytest.raises(ValueError, match="lifespan"):
        interloop.serve("a:b", lifespan="sometimes")
    with pytest.raises(ValueError, match="TLS needs both --ssl-certfile and --ssl-keyfile"):
        interloop.serve("a:b", ssl_certfile="x.pem")
