"""interloop serve over TLS (rustls): the Starlette app of tests/test_serve.py
served with ``--ssl-certfile/--ssl-keyfile`` by two own-GIL sub-interpreter workers
and by ``--workers 1``, checked with httpx, aiohttp and ssl-wrapped raw sockets.

The certificate is made here by ``trustme`` (a throw-away CA that the clients
trust); every server is a child process on 127.0.0.1 with an ephemeral port.
"""
import asyncio
import http.client
import json
import os
import socket
import ssl
import time

import httpx
import pytest
import trustme

from test_serve import (LIMITS, Served, _Wire, needs_pool, read_to_close, responses,
                        slow_read_of_a_large_response)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = d / "cert.pem", d / "key.pem"
    certfile.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    other = ca.issue_cert("example.org")  # a key that does not fit `cert`
    otherkey = d / "other-key.pem"
    other.private_key_pem.write_to_path(str(otherkey))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return {"cert": str(certfile), "key": str(keyfile), "ctx": ctx, "dir": d,
            "client": ca.issue_cert("client.example.org"),
            "other_key": str(otherkey), "ca_pem": ca.cert_pem.bytes().decode()}


def tls_args(certs):
    return ["--ssl-certfile", certs["cert"], "--ssl-keyfile", certs["key"]]


@pytest.fixture(scope="module", params=[
    pytest.param(2, marks=needs_pool, id="2-subinterpreters"),
    pytest.param(1, id="1-main-interpreter"),
])
def srv(request, certs):
    s = Served("serve_app:app", "--workers", str(request.param), *LIMITS, *tls_args(certs))
    yield s
    assert s.stop() == 0, s.log


def tls_conn(srv, certs, timeout=5.0):
    ctx = certs["ctx"]
    raw_sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    return ctx.wrap_socket(raw_sock, server_hostname="localhost")


def read_response(f, method="GET"):
    r = http.client.HTTPResponse(_Wire(b""), method=method)
    r.fp = f
    r.begin()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


# -- HTTPS through httpx -----------------------------------------------------------------

def test_get_and_scope_over_https(srv, certs):
    assert srv.url.startswith("https://")
    with httpx.Client(base_url=srv.url, verify=certs["ctx"]) as c:
        r = c.get("/")
        assert (r.status_code, r.text) == (200, "Hello, world!")
        s = c.get("/scope", params={"a": "1"}).json()
    assert s["scheme"] == "https" and s["path"] == "/scope" and s["query_string"] == "a=1"
    assert s["server"] == ["127.0.0.1", srv.port]
    tls = s["tls"]
    # TLS 1.3 (0x0304) with one of its cipher suites (0x1301..0x1303).
    assert tls["tls_version"] == 0x0304 and 0x1301 <= tls["cipher_suite"] <= 0x1303, tls
    assert tls["client_cert_chain"] == [] and tls["server_cert"] is None


def test_large_body_echo_and_chunked_upload_over_https(srv, certs):
    blob = os.urandom(5 * 1024 * 1024 + 3)
    with httpx.Client(base_url=srv.url, verify=certs["ctx"], timeout=30) as c:
        r = c.post("/echo", content=blob)
        assert r.status_code == 200 and r.content == blob
        assert r.headers["x-length"] == str(len(blob))
        parts = [os.urandom(100_000) for _ in range(20)]
        r = c.post("/echo", content=iter(parts))  # sent chunked
        assert r.status_code == 200 and r.content == b"".join(parts)


def test_streaming_response_over_https(srv, certs):
    with httpx.Client(base_url=srv.url, verify=certs["ctx"]) as c:
        with c.stream("GET", "/stream", params={"n": 6}) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            got = b"".join(r.iter_bytes())
    assert got == b"".join(f"chunk {i}\n".encode() for i in range(6))


# -- the wire, through ssl-wrapped sockets -------------------------------------------------

def test_keep_alive_and_pipelining_on_one_tls_connection(srv, certs):
    with tls_conn(srv, certs) as s:
        for i in range(5):
            s.sendall(f"GET /json/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            status, headers, body = read_response(s.makefile("rb"))
            assert status == 200 and json.loads(body)["n"] == i
            assert headers.get("connection") != "close"
        # Pipelined, the last one asks to close: answered in order, then closed.
        s.sendall(b"GET /json/7 HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /json/8 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rest = read_to_close(s, 5)  # the server closes after the second
    rs = responses(rest)
    assert [(st, json.loads(b)["n"]) for st, _, b in rs] == [(200, 7), (200, 8)]


def test_alpn_selects_http11(srv, certs):
    c = certs["ctx"]
    c.set_alpn_protocols(["h2", "http/1.1"])
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw_sock:
            with c.wrap_socket(raw_sock, server_hostname="localhost") as s:
                assert s.selected_alpn_protocol() == "http/1.1"
                assert s.version() == "TLSv1.3"
                s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                (status, _, body), = responses(read_to_close(s, 5))
                assert (status, body) == (200, b"Hello, world!")
    finally:
        c.set_alpn_protocols(["http/1.1"])


def test_tls12_client(srv, certs, tmp_path):
    ctx = ssl.create_default_context(cafile=None)
    ctx.load_verify_locations(cadata=certs["ca_pem"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.2"
            s.sendall(b"GET /scope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            (status, _, body), = responses(read_to_close(s, 5))
    assert status == 200 and json.loads(body)["tls"]["tls_version"] == 0x0303


def test_plain_http_and_broken_handshakes_are_closed_without_disturbing_others(srv, certs):
    # A TLS connection opened first, kept open over the bad ones.
    with tls_conn(srv, certs) as good:
        good.sendall(b"GET /json/1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(good.makefile("rb"))[0] == 200
        # Plain HTTP on the TLS port: no HTTP response, the connection is closed
        # (after a TLS alert at most).
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            data = read_to_close(s, 5)
        assert b"HTTP/" not in data and len(data) < 100, data
        # A client that sends half a ClientHello and leaves.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        # A client that connects and says nothing (still open meanwhile).
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            # Garbage that is not TLS at all.
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(os.urandom(3000))
                read_to_close(s, 5)
            # The first connection and new ones are served as before.
            good.sendall(b"GET /json/2 HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, body = read_response(good.makefile("rb"))
            assert status == 200 and json.loads(body)["n"] == 2
            with httpx.Client(base_url=srv.url, verify=certs["ctx"]) as c:
                assert all(c.get(f"/json/{i}").json()["n"] == i for i in range(10))
        finally:
            silent.close()
    # The client's certificate check fails (it does not trust our CA): the server
    # sees an aborted handshake and goes on.
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw_sock:
            ssl.create_default_context().wrap_socket(raw_sock, server_hostname="localhost")
    with httpx.Client(base_url=srv.url, verify=certs["ctx"]) as c:
        assert c.get("/").text == "Hello, world!"


def test_slow_but_steady_reader_gets_the_whole_response_over_tls(srv, certs):
    raw_sock = socket.socket()
    raw_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    raw_sock.settimeout(10)
    raw_sock.connect(("127.0.0.1", srv.port))
    with certs["ctx"].wrap_socket(raw_sock, server_hostname="localhost") as s:
        blob, body = slow_read_of_a_large_response(s)
    assert body == blob


def test_silent_client_is_closed_after_the_keep_alive_timeout(srv, certs):
    # No ClientHello at all: an idle connection (--timeout-keep-alive 2 here).
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        t0 = time.monotonic()
        assert read_to_close(s, 10) == b""
        assert 1.5 < time.monotonic() - t0 < 6


# -- websockets over TLS -------------------------------------------------------------------

def test_websocket_echo_over_wss(srv, certs):
    import aiohttp

    async def main():
        async with aiohttp.ClientSession() as session:
            url = srv.url.replace("https://", "wss://") + "/ws"
            async with session.ws_connect(url, ssl=certs["ctx"], protocols=["chat"]) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("héllo")
                assert (await ws.receive(5)).data == "héllo"
                blob = os.urandom(300_000)
                await ws.send_bytes(blob)
                assert (await ws.receive(5)).data == blob
                await ws.send_str("scheme")
                assert (await ws.receive(5)).data == "wss"
                await ws.send_str("close-me")
                m = await ws.receive(5)
                assert m.type == aiohttp.WSMsgType.CLOSE and m.data == 4001

    asyncio.run(main())


# -- client certificates ------------------------------------------------------------------

def _client_ctx(certs, with_cert):
    ctx = ssl.create_default_context(cafile=None)
    ctx.load_verify_locations(cadata=certs["ca_pem"])
    if with_cert:
        certs["client"].configure_cert(ctx)
    return ctx


def _get_scope(port, ctx):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="localhost") as s:
            s.sendall(b"GET /scope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = read_to_close(s, 5)
    (status, _, body), = responses(data)
    assert status == 200
    return json.loads(body)


@pytest.mark.parametrize("workers", [
    pytest.param(2, marks=needs_pool, id="2-subinterpreters"),
    pytest.param(1, id="1-main-interpreter"),
])
def test_client_certificates_required_and_optional(certs, workers):
    client_pem = certs["client"].cert_chain_pems[0].bytes().decode()
    ca = str(certs["dir"] / "ca.pem")

    def chain_ok(chain):
        # The client's own certificate first; OpenSSL's client adds the CA's.
        return chain[0] == client_pem and chain[1:] in ([], [certs["ca_pem"]])
    s = Served("serve_app:app", "--workers", str(workers), "--no-access-log", *tls_args(certs),
               "--ssl-ca-certs", ca, "--ssl-cert-reqs", "2")
    try:
        tls = _get_scope(s.port, _client_ctx(certs, True))["tls"]
        assert chain_ok(tls["client_cert_chain"])
        # Without a certificate the handshake fails (TLS 1.3: seen at the first read).
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError, ValueError)):
            _get_scope(s.port, _client_ctx(certs, False))
        # A certificate from another CA is refused too.
        stranger = trustme.CA().issue_cert("stranger.example.org")
        ctx = _client_ctx(certs, False)
        stranger.configure_cert(ctx)
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError, ValueError)):
            _get_scope(s.port, ctx)
        assert _get_scope(s.port, _client_ctx(certs, True))["scheme"] == "https"
    finally:
        assert s.stop() == 0, s.log
    s = Served("serve_app:app", "--workers", str(workers), "--no-access-log", *tls_args(certs),
               "--ssl-ca-certs", ca, "--ssl-cert-reqs", "1")
    try:
        assert _get_scope(s.port, _client_ctx(certs, False))["tls"]["client_cert_chain"] == []
        tls = _get_scope(s.port, _client_ctx(certs, True))["tls"]
        assert chain_ok(tls["client_cert_chain"])
    finally:
        assert s.stop() == 0, s.log


def test_client_certificates_need_a_ca_file(certs):
    s = Served("serve_app:app", "--workers", "1", *tls_args(certs), "--ssl-cert-reqs", "2",
               wait=False)
    assert s.proc.wait(30) == 2
    s.ready.wait(5)
    assert "need --ssl-ca-certs" in s.log


# -- start-up ---------------------------------------------------------------------------------

def test_worker_processes_serve_tls(certs):
    s = Served("serve_app:app", "--workers", "2", "--worker-kind", "process", "--no-access-log",
               *tls_args(certs))
    try:
        with httpx.Client(base_url=s.url, verify=certs["ctx"]) as c:
            assert c.get("/scope").json()["scheme"] == "https"
            blob = os.urandom(1_000_000)
            assert c.post("/echo", content=blob).content == blob
    finally:
        assert s.stop() == 0, s.log


@needs_pool
def test_tls_on_a_unix_socket(certs, tmp_path):
    path = str(tmp_path / "tls.sock")
    s = Served("serve_app:app", "--workers", "2", "--uds", path, "--no-access-log",
               *tls_args(certs), wait=False)
    try:
        deadline = time.monotonic() + 60
        while "listening on unix:" not in s.log and time.monotonic() < deadline:
            assert s.proc.poll() is None, s.log
            time.sleep(0.05)
        u = socket.socket(socket.AF_UNIX)
        u.settimeout(5)
        u.connect(path)
        with certs["ctx"].wrap_socket(u, server_hostname="localhost") as t:
            t.sendall(b"GET /json/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            (status, _, body), = responses(read_to_close(t, 5))
        assert status == 200 and json.loads(body)["n"] == 3
    finally:
        assert s.stop() == 0, s.log


@pytest.mark.parametrize("workers", [
    pytest.param(["--workers", "2"], marks=needs_pool, id="2-subinterpreters"),
    pytest.param(["--workers", "1"], id="1-main-interpreter"),
    pytest.param(["--workers", "2", "--worker-kind", "process"], id="2-processes"),
])
@pytest.mark.parametrize("case", ["missing-cert", "garbage-key", "key-of-another-cert",
                                  "cert-as-key"])
def test_bad_certificate_or_key_stops_start_up_naming_the_file(certs, workers, case):
    garbage = certs["dir"] / "garbage.pem"
    garbage.write_text("this is not a key\n")
    cert, key = certs["cert"], certs["key"]
    if case == "missing-cert":
        cert = str(certs["dir"] / "no-such-cert.pem")
        named = cert
    elif case == "garbage-key":
        key, named = str(garbage), str(garbage)
    elif case == "key-of-another-cert":
        key, named = certs["other_key"], certs["other_key"]
    else:
        key, named = cert, cert
    t0 = time.monotonic()
    s = Served("serve_app:app", *workers, "--ssl-certfile", cert, "--ssl-keyfile", key,
               wait=False)
    rc = s.proc.wait(30)
    s.ready.wait(5)
    assert rc != 0 and s.port is None, s.log
    assert named in s.log, s.log
    assert time.monotonic() - t0 < 20


def test_tls_needs_both_files():
    s = Served("serve_app:app", "--workers", "1", "--ssl-certfile", "x.pem", wait=False)
    assert s.proc.wait(30) == 2
    s.ready.wait(5)
    assert "needs both --ssl-certfile and --ssl-keyfile" in s.log
