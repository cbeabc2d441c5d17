"""One interpreter's ASGI server: the Rust HTTP server (``src/serve``) driven from
this interpreter's event loop, and the ASGI side (scopes, ``receive``, ``send``,
lifespan) in Python.

The same file runs in a pool worker's own-GIL sub-interpreter (asyncio's loop;
the native functions come from the worker module's ``serve_module()``) and in the
main interpreter (``--workers 1``, interloop's loop; ``interloop._interloop._serve``).

Life of a request: the server's epoll fd turns readable; ``Server.on_ready`` calls
``server_poll``, which accepts, reads and parses in Rust and returns events; a
request event becomes a scope and a task running the app, started eagerly (a
handler that does not wait finishes inside this callback). ``send`` hands the
response to Rust, which writes it at once (head and a one-message body in one
``writev``). Body bytes, disconnects and drained output come back as events that
resolve the futures ``receive``/``send`` wait on.
"""
import asyncio
import base64
import logging
import os
import sys

from .. import _interloop as _native

_IN_WORKER = bool(getattr(_native, "_IS_WORKER", False))
_n = _native.serve_module() if _IN_WORKER else _native._serve

REQUEST, BODY, DISCONNECT, DRAIN, STOP = range(5)
GONE, WAIT_DRAIN, HAS_EVENTS = 1, 2, 4
_TICK = 1.0  # seconds between timeout checks (keep-alive, slow clients)
_DRAIN_TICK = 0.05  # the same while shutting down, and the wait for the last requests

_ASGI = {"version": "3.0", "spec_version": "2.4"}
_EXTENSIONS = {"http.response.pathsend": {}}
_DISCONNECT = {"type": "http.disconnect"}
_PATHSEND_CHUNK = 256 * 1024

logger = logging.getLogger("interloop.serve")
access_logger = logging.getLogger("interloop.serve.access")

if sys.version_info >= (3, 12):
    def _start_task(loop, coro):
        return asyncio.Task(coro, loop=loop, eager_start=True)
else:  # pragma: no cover - interloop needs 3.12
    def _start_task(loop, coro):
        return loop.create_task(coro)


def _resolve(fut):
    """Resolves a waiter future (if any, and not cancelled); returns None."""
    if fut is not None and not fut.done():
        fut.set_result(None)


class Cycle:
    """One request and its response: the ``receive`` and ``send`` the app gets."""

    __slots__ = ("server", "token", "scope", "started", "complete", "disconnected",
                 "body_done", "recv_waiter", "drain_waiter", "status", "task")

    def __init__(self, server, token, scope):
        self.server = server
        self.token = token
        self.scope = scope
        self.started = False
        self.complete = False
        self.disconnected = False
        self.body_done = False
        # Futures resolved by events: BODY (or the response's end) wakes a waiting
        # receive, DRAIN a waiting send, DISCONNECT both. Separate, because apps
        # wait for a disconnect while they stream a response.
        self.recv_waiter = None
        self.drain_waiter = None
        self.status = 0
        self.task = None

    def wake_recv(self):
        self.recv_waiter = _resolve(self.recv_waiter)

    def wake_drain(self):
        self.drain_waiter = _resolve(self.drain_waiter)

    async def _wait_recv(self):
        fut = self.recv_waiter = self.server.loop.create_future()
        await fut

    async def _wait_drain(self):
        fut = self.drain_waiter = self.server.loop.create_future()
        await fut

    async def receive(self):
        if self.disconnected or self.complete:
            return _DISCONNECT
        if self.body_done:
            # The whole body was received: the next message is the disconnect
            # (or the end of the response, after which there is nothing to wait for).
            while not (self.disconnected or self.complete):
                await self._wait_recv()
            return _DISCONNECT
        srv = self.server
        while True:
            r = _n.server_recv(srv.handle, self.token)
            if r is None:
                await self._wait_recv()
                if self.disconnected:
                    return _DISCONNECT
                continue
            if r is False:
                self.disconnected = True
                return _DISCONNECT
            data, more = r
            if not more:
                self.body_done = True
            return {"type": "http.request", "body": data, "more_body": more}

    async def send(self, message):
        t = message["type"]
        srv = self.server
        if t == "http.response.body":
            if not self.started:
                raise RuntimeError("ASGI: 'http.response.body' sent before 'http.response.start'")
            if self.complete:
                raise RuntimeError("ASGI: 'http.response.body' sent after the response was complete")
            more = message.get("more_body", False)
            if self.disconnected:
                self.complete = not more
                return
            flags = _n.server_body(srv.handle, self.token, message.get("body", b""), more)
            if not more:
                self.complete = True
                self.wake_recv()
            if flags:
                if flags & GONE:
                    self.disconnected = True
                if flags & HAS_EVENTS:
                    srv.poll_soon()
                if flags & WAIT_DRAIN and not self.disconnected:
                    await self._wait_drain()  # a DRAIN (or DISCONNECT) event
        elif t == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI: 'http.response.start' sent twice")
            status = message["status"]
            if not _n.server_start(srv.handle, self.token, status, message.get("headers", ())):
                self.disconnected = True
            self.started = True
            self.status = status
        elif t == "http.response.pathsend":
            await self._pathsend(message)
        else:
            raise RuntimeError(f"ASGI: unexpected message type {t!r} for an http request")

    def abandon(self, exc):
        """The app ended (or failed, ``exc``) without a complete response."""
        if self.complete or self.disconnected:
            return
        srv = self.server
        if exc is None:
            logger.error("ASGI application returned without %s the response",
                         "completing" if self.started else "starting")
        if not self.started:
            # Nothing sent yet: answer 500 ourselves; the connection stays usable.
            self.status = 500
            try:
                if _n.server_start(srv.handle, self.token, 500, [
                        (b"content-type", b"text/plain; charset=utf-8")]):
                    if _n.server_body(srv.handle, self.token, b"Internal Server Error",
                                      False) & HAS_EVENTS:
                        srv.poll_soon()
            except RuntimeError:
                _n.server_abort(srv.handle, self.token)
        else:
            _n.server_abort(srv.handle, self.token)
            srv.poll_soon()
        self.complete = True

    async def _pathsend(self, message):
        if not self.started:
            raise RuntimeError("ASGI: 'http.response.pathsend' sent before 'http.response.start'")
        path = message["path"]
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            left = size
            while True:
                chunk = f.read(min(_PATHSEND_CHUNK, left)) if left > 0 else b""
                left -= len(chunk)
                await self.send({"type": "http.response.body", "body": chunk,
                                 "more_body": left > 0 and bool(chunk)})
                if left <= 0 or not chunk or self.disconnected:
                    break


class Server:
    """This interpreter's server: one Rust ``Server`` and the ASGI tasks it feeds."""

    def __init__(self, app, config, gid, index, listeners, state, loop):
        self.app = app
        self.config = config
        self.loop = loop
        self.state = state
        self.handle = _n.server_new(gid, index, listeners, (
            int(config["limit_request_head"]), int(config["limit_request_body"] or 0),
            float(config["timeout_keep_alive"]), float(config["timeout_slow_client"]),
            int(config["limit_concurrency"] or 0)))
        self.fd = _n.server_fd(self.handle)
        self.cycles = {}
        self.root_path = config["root_path"] or ""
        self.root_path_b = self.root_path.encode()
        self.scheme = "https" if config["ssl_certfile"] else "http"
        self._tls_ext = {}
        self.access_log = config["access_log"]
        self.proxy = _ProxyHeaders(config) if config["proxy_headers"] else None
        self.stopped = loop.create_future()
        self.draining = False
        self.scheduled = False
        self.timer = None
        self.closed = False

    def start(self):
        self.loop.add_reader(self.fd, self.on_ready)
        self.timer = self.loop.call_later(_TICK, self.on_timer)
        self.poll_soon()  # connections that arrived before the reader was added

    def on_ready(self):
        if not self.closed:
            self.dispatch(_n.server_poll(self.handle, False))

    def on_timer(self):
        self.timer = self.loop.call_later(_DRAIN_TICK if self.draining else _TICK, self.on_timer)
        self.dispatch(_n.server_poll(self.handle, True))

    def poll_soon(self):
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._scheduled_poll)

    def _scheduled_poll(self):
        self.scheduled = False
        self.on_ready()

    def dispatch(self, events):
        for ev in events:
            kind = ev[0]
            if kind == REQUEST:
                self.begin(ev)
                continue
            if kind == STOP:
                if not self.stopped.done():
                    self.stopped.set_result(None)
                continue
            c = self.cycles.get(ev[1])
            if c is None:
                continue
            if kind == BODY:
                c.wake_recv()
            elif kind == DRAIN:
                c.wake_drain()
            else:
                c.disconnected = True
                c.wake_recv()
                c.wake_drain()

    def begin(self, ev):
        if ev[10]:
            return self.begin_websocket(ev)
        _, token, method, path, raw_path, query, version, headers, client, server, _, tls = ev
        if self.root_path:
            path = self.root_path + path
            raw_path = self.root_path_b + raw_path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": server,
            "client": client,
            "scheme": self.scheme,
            "method": method,
            "root_path": self.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "state": self.state.copy(),
            "extensions": _EXTENSIONS if tls is None else self.tls_extensions(tls),
        }
        if self.proxy is not None:
            self.proxy.apply(scope)
        c = Cycle(self, token, scope)
        self.cycles[token] = c
        c.task = _start_task(self.loop, self.run_app(c))

    def tls_extensions(self, tls):
        """The scope's extensions with ASGI's ``tls`` one: the negotiated version
        and cipher suite, and the client's certificate chain (PEM) when it sent
        one (``--ssl-cert-reqs``); one shared dict per version and suite."""
        if len(tls) > 2:
            return dict(_EXTENSIONS, tls={
                "server_cert": None, "client_cert_chain": [_pem(d) for d in tls[2]],
                "client_cert_name": None, "client_cert_error": None,
                "tls_version": tls[0], "cipher_suite": tls[1]})
        ext = self._tls_ext.get(tls)
        if ext is None:
            ext = self._tls_ext[tls] = dict(_EXTENSIONS, tls={
                "server_cert": None, "client_cert_chain": [], "client_cert_name": None,
                "client_cert_error": None, "tls_version": tls[0], "cipher_suite": tls[1]})
        return ext

    def begin_websocket(self, ev):
        token = ev[1]
        try:
            from . import websocket
        except ImportError:
            return self.answer(token, 501, b"websockets need the wsproto package")
        c = websocket.scope_of(self, ev)
        if c is None:
            return self.answer(token, 400, b"bad websocket handshake")
        if self.proxy is not None:
            self.proxy.apply(c.scope)
        self.cycles[token] = c
        c.task = _start_task(self.loop, self.run_app(c))

    def answer(self, token, status, body):
        if _n.server_start(self.handle, token, status, [(b"content-type", b"text/plain")]):
            if _n.server_body(self.handle, token, body, False) & HAS_EVENTS:
                self.poll_soon()

    async def run_app(self, c):
        try:
            await self.app(c.scope, c.receive, c.send)
        except asyncio.CancelledError:
            if not c.complete:
                c.abandon(asyncio.CancelledError())
            raise
        except BaseException as exc:  # noqa: BLE001 - the app's failure is the request's
            logger.error("Exception in ASGI application", exc_info=exc)
            c.abandon(exc)
        else:
            if not c.complete:
                c.abandon(None)
        finally:
            self.cycles.pop(c.token, None)
            if self.access_log:
                s = c.scope
                cl = s["client"]
                access_logger.info('%s - "%s %s HTTP/%s" %d',
                                   f"{cl[0]}:{cl[1]}" if cl else "-", s.get("method", "WEBSOCKET"),
                                   s["path"] + ("?" + s["query_string"].decode("latin-1")
                                                if s["query_string"] else ""),
                                   s["http_version"], c.status or 500)

    async def shutdown(self, timeout):
        """Stops accepting and lets the requests that reached this server finish
        within ``timeout`` seconds (then cancels them); returns once every
        connection is closed (each closes after its last response)."""
        loop = self.loop
        self.draining = True
        _n.server_drain(self.handle)
        self.dispatch(_n.server_poll(self.handle, False))  # requests read by the drain
        self.timer.cancel()
        self.timer = loop.call_later(_DRAIN_TICK, self.on_timer)
        deadline = loop.time() + timeout
        while (self.cycles or _n.server_load(self.handle)[1]) and loop.time() < deadline:
            await asyncio.sleep(_DRAIN_TICK)
        if self.cycles:
            logger.warning("graceful shutdown timed out: cancelling %d request(s)",
                           len(self.cycles))
            tasks = [c.task for c in self.cycles.values() if c.task is not None]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
        self.close()

    def close(self):
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.loop.remove_reader(self.fd)
        except Exception:  # noqa: BLE001 - loop already closed
            pass
        _n.server_close(self.handle)


def _pem(der):
    """A DER certificate as PEM text."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


class _ProxyHeaders:
    """``--proxy-headers``: client address and scheme from the proxy's headers
    when the direct peer is a trusted proxy (``--forwarded-allow-ips``).

    ``Forwarded`` (RFC 7239) is used when present: its ``for=`` list is walked
    from the nearest hop back to the first address that is not a trusted proxy,
    which becomes the client (with its port when given), and that element's
    ``proto=`` the scheme. Otherwise ``X-Forwarded-For`` (the same walk) and
    ``X-Forwarded-Proto``, as uvicorn reads them. A websocket's scheme is the ws
    form of the forwarded one."""

    def __init__(self, config):
        ips = config["forwarded_allow_ips"]
        if ips is None:
            ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
        self.trusted = {ip.strip() for ip in ips.split(",") if ip.strip()}
        self.any = "*" in self.trusted

    def apply(self, scope):
        client = scope["client"]
        if not (self.any or (client and client[0] in self.trusted)):
            return
        forwarded = []
        xproto = xfor = None
        for name, value in scope["headers"]:
            if name == b"forwarded":
                forwarded.append(value)
            elif name == b"x-forwarded-proto":
                xproto = value
            elif name == b"x-forwarded-for":
                xfor = value
        if forwarded:
            elements = _forwarded_elements(b",".join(forwarded).decode("latin-1"))
            if not elements:
                return
            # The nearest hop that is not a trusted proxy, or the farthest one.
            chosen = elements[0]
            for el in reversed(elements):
                host, _ = _forwarded_node(el.get("for", ""))
                if host is None or self.any or host not in self.trusted:
                    chosen = el
                    break
            host, port = _forwarded_node(chosen.get("for", ""))
            if host is not None:  # "unknown" or obfuscated: the peer stays
                scope["client"] = (host, port)
            self._scheme(scope, chosen.get("proto"))
            return
        if xproto is not None:
            self._scheme(scope, xproto.decode("latin-1"))
        if xfor is not None:
            hosts = [h.strip() for h in xfor.decode("latin-1").split(",") if h.strip()]
            for host in reversed(hosts):
                if self.any or host not in self.trusted:
                    scope["client"] = (host, 0)
                    break

    @staticmethod
    def _scheme(scope, proto):
        if not proto:
            return
        proto = proto.strip().lower()
        if proto in ("http", "https", "ws", "wss"):
            if scope["type"] == "websocket":
                proto = {"http": "ws", "https": "wss"}.get(proto, proto)
            scope["scheme"] = proto


def _forwarded_elements(text):
    """RFC 7239 ``Forwarded`` field values: a list of {parameter: value} dicts
    (names lowercased, quoted strings unquoted); malformed pairs are skipped."""
    elements, token, quoted, i = [], [], False, 0
    pending = []  # tokens of the current element, split at ';'

    def end_pair():
        pair = "".join(token).strip()
        token.clear()
        if pair:
            pending.append(pair)

    def end_element():
        end_pair()
        el = {}
        for pair in pending:
            k, sep, v = pair.partition("=")
            if sep and k.strip():
                el[k.strip().lower()] = v.strip()
        pending.clear()
        if el:
            elements.append(el)

    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                token.append(text[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
            else:
                token.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ";":
            end_pair()
        elif ch == ",":
            end_element()
        else:
            token.append(ch)
        i += 1
    end_element()
    return elements


def _forwarded_node(node):
    """``(host, port)`` of a ``for=`` node (``1.2.3.4``, ``1.2.3.4:80``,
    ``[::1]:80``); ``(None, 0)`` for ``unknown`` and obfuscated ones."""
    node = node.strip()
    port = 0
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        return (host or None), port
    if node.count(":") == 1:
        node, _, p = node.partition(":")
        port = int(p) if p.isdigit() else 0
    if not node or node.lower() == "unknown" or node.startswith("_"):
        return None, 0
    return node, port


class Lifespan:
    """The ASGI lifespan protocol for one interpreter's app (``--lifespan``)."""

    def __init__(self, app, mode, state, loop):
        self.app = app
        self.mode = mode
        self.state = state
        self.loop = loop
        self.inbox = asyncio.Queue()
        self.started = loop.create_future()
        self.ended = loop.create_future()
        self.failed = None      # message of a startup/shutdown failure
        self.unsupported = False
        self.task = None

    async def startup(self):
        """Runs startup; returns an error message, or None."""
        if self.mode == "off":
            return None
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        self.task = self.loop.create_task(self._main(scope))
        self.inbox.put_nowait({"type": "lifespan.startup"})
        await asyncio.wait([self.started, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.failed is not None:
            return self.failed
        if self.unsupported and self.mode == "on":
            return "the application does not support the lifespan protocol (--lifespan on)"
        return None

    async def shutdown(self):
        if self.task is None or self.task.done():
            return
        self.inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait([self.ended, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.failed is not None:
            logger.error("lifespan shutdown failed: %s", self.failed)

    async def _main(self, scope):
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:  # noqa: BLE001
            if self.failed is None:
                self.unsupported = True
                if self.mode == "auto" and not self.started.done():
                    logger.info("ASGI 'lifespan' protocol appears unsupported.")
                else:
                    logger.error("Exception in 'lifespan' protocol", exc_info=exc)
                    if not self.started.done():
                        self.failed = f"{type(exc).__name__}: {exc}"
        finally:
            for f in (self.started, self.ended):
                if not f.done():
                    f.set_result(None)

    async def _send(self, message):
        t = message["type"]
        if t == "lifespan.startup.complete":
            self.started.done() or self.started.set_result(None)
        elif t == "lifespan.startup.failed":
            self.failed = message.get("message", "") or "lifespan startup failed"
            self.started.done() or self.started.set_result(None)
        elif t == "lifespan.shutdown.complete":
            self.ended.done() or self.ended.set_result(None)
        elif t == "lifespan.shutdown.failed":
            self.failed = message.get("message", "") or "lifespan shutdown failed"
            self.ended.done() or self.ended.set_result(None)
        else:
            raise RuntimeError(f"ASGI: unexpected lifespan message type {t!r}")
