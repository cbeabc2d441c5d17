"""The ASGI websocket protocol on interloop serve's connections.

The Rust server recognises the opening handshake (``Upgrade: websocket``) and, once
the app accepts, writes the ``101`` response and passes the connection's bytes
through unframed (``server_upgrade``); framing, ping/pong and closing are done here
by wsproto (pure Python, so it loads in sub-interpreters).

Keep-alive pings (``--ws-ping-interval``/``--ws-ping-timeout``, as uvicorn names
them): every interval the server sends a ping with a random payload; when its pong
has not come within the timeout, the connection is closed with 1011 and the app's
``receive`` gets ``websocket.disconnect``. Incoming bytes are normally parsed only
when the app calls ``receive``; while a ping waits for its pong and the app is not
receiving, what arrives is parsed at once (``_pump``): pongs are taken, pings
answered, everything else kept, in order, for ``receive``.
"""
import base64
import collections
import hashlib
import os

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from .protocol import GONE, HAS_EVENTS, _n

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class WebSocketCycle:
    """One websocket connection: the ``receive`` and ``send`` its app gets."""

    def __init__(self, server, token, scope, key, max_size):
        self.server = server
        self.token = token
        self.scope = scope
        self.key = key
        self.max_size = max_size
        self.conn = Connection(ConnectionType.SERVER)
        self.connect_sent = False
        self.accepted = False
        self.closed = False        # a close frame was sent, or the handshake refused
        self.disconnected = False
        self.started = False       # for the server's bookkeeping (access log, 500s)
        self.complete = False
        self.status = 0
        self.task = None
        self.parts = []            # fragments of the message being received
        self.size = 0
        self.recv_waiter = None
        self.drain_waiter = None
        self.close_code = 1006
        self.backlog = collections.deque()  # events parsed by _pump, for receive
        self.backlog_size = 0
        cfg = server.config
        self.ping_interval = float(cfg.get("ws_ping_interval") or 0)
        self.ping_timeout = float(cfg.get("ws_ping_timeout") or 0)
        self.ping_payload = None  # the ping waiting for its pong
        self.ping_timer = None

    # The server's event dispatch calls these (as for http requests).
    def wake_recv(self):
        w, self.recv_waiter = self.recv_waiter, None
        if w is not None and not w.done():
            w.set_result(None)
        elif self.ping_payload is not None:
            self._pump()  # the app is not receiving: look for the pong now

    # -- keep-alive pings ----------------------------------------------------------
    def _start_pings(self):
        if self.ping_interval > 0:
            self.ping_timer = self.server.loop.call_later(self.ping_interval, self._ping)

    def _stop_pings(self):
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        self.ping_payload = None

    def _ping(self):
        self.ping_timer = None
        if self.closed or self.disconnected or self.complete:
            return
        self.ping_payload = os.urandom(4)
        self._write(self.conn.send(Ping(payload=self.ping_payload)))
        if self.ping_timeout > 0:
            self.ping_timer = self.server.loop.call_later(self.ping_timeout, self._ping_late)
        else:
            self.ping_payload = None
            self.ping_timer = self.server.loop.call_later(self.ping_interval, self._ping)

    def _on_pong(self, ev):
        if self.ping_payload is not None and bytes(ev.payload) == self.ping_payload:
            self._stop_pings()
            self._start_pings()

    def _ping_late(self):
        self.ping_timer = None
        if self.ping_payload is None:
            return
        self._pump()  # a pong may wait, unread, in the server's buffer
        if self.ping_payload is None or self.closed or self.disconnected:
            return
        self.ping_payload = None
        self._close(1011, "keepalive ping timeout")
        if not self.complete:  # closing already under way: end the connection
            self._write(b"", False)
        self.close_code = 1011
        self.disconnected = True
        self.wake_recv()

    def _pump(self):
        """Parses what has arrived without waiting for it: pongs are taken,
        pings answered, other events kept for ``receive``. Stops when the kept
        events hold more than ``--ws-max-size`` (the app is not reading)."""
        while not self.disconnected and self.backlog_size <= self.max_size:
            r = _n.server_recv(self.server.handle, self.token)
            if r is None or r is False:
                return
            try:
                self.conn.receive_data(r[0])
            except Exception:  # noqa: BLE001 - a protocol error: receive reports it
                self.backlog.append(None)
                return
            for ev in self.conn.events():
                if isinstance(ev, Pong):
                    self._on_pong(ev)
                elif isinstance(ev, Ping):
                    self._write(self.conn.send(ev.response()))
                else:
                    self.backlog.append(ev)
                    self.backlog_size += len(getattr(ev, "data", b"") or b"")

    def wake_drain(self):
        w, self.drain_waiter = self.drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _write(self, data, more=True):
        if self.disconnected:
            return
        flags = _n.server_body(self.server.handle, self.token, data, more)
        if flags & GONE:
            self.disconnected = True
        if flags & HAS_EVENTS:
            self.server.poll_soon()
        if not more:
            self.complete = True

    def _disconnect(self, code):
        self.disconnected = True
        self.complete = True
        self._stop_pings()
        return {"type": "websocket.disconnect", "code": code}

    async def receive(self):
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            if self.disconnected or self.closed and not self.accepted:
                return self._disconnect(self.close_code)
            for ev in self._events():
                if ev is None:  # a protocol error found by _pump
                    self._close(1002, "protocol error")
                    return self._disconnect(1002)
                if isinstance(ev, (TextMessage, BytesMessage)):
                    self.parts.append(ev.data)
                    self.size += len(ev.data)
                    if self.size > self.max_size:
                        self._close(1009, "message too big")
                        return self._disconnect(1009)
                    if ev.message_finished:
                        parts, self.parts, self.size = self.parts, [], 0
                        if isinstance(ev, TextMessage):
                            return {"type": "websocket.receive", "text": "".join(parts)}
                        return {"type": "websocket.receive", "bytes": b"".join(parts)}
                elif isinstance(ev, Ping):
                    self._write(self.conn.send(ev.response()))
                elif isinstance(ev, Pong):
                    self._on_pong(ev)
                elif isinstance(ev, CloseConnection):
                    self.close_code = ev.code
                    if self.conn.state is ConnectionState.REMOTE_CLOSING:
                        self._write(self.conn.send(ev.response()))
                    self._write(b"", False)
                    return self._disconnect(ev.code)
            r = _n.server_recv(self.server.handle, self.token)
            if r is None:
                fut = self.recv_waiter = self.server.loop.create_future()
                await fut
                continue
            if r is False:
                return self._disconnect(self.close_code)
            try:
                self.conn.receive_data(r[0])
            except Exception:  # noqa: BLE001 - a protocol error from the client
                self._close(1002, "protocol error")
                return self._disconnect(1002)

    def _events(self):
        """What ``_pump`` kept, then what wsproto has parsed since."""
        while self.backlog:
            ev = self.backlog.popleft()
            self.backlog_size -= len(getattr(ev, "data", b"") or b"")
            yield ev
        yield from self.conn.events()

    def _close(self, code, reason=""):
        self._stop_pings()
        if not self.closed and self.conn.state is ConnectionState.OPEN:
            self.closed = True
            self._write(self.conn.send(CloseConnection(code=code, reason=reason)))
            self._write(b"", False)

    async def send(self, message):
        t = message["type"]
        if t == "websocket.send":
            if not self.accepted:
                raise RuntimeError("ASGI: 'websocket.send' before 'websocket.accept'")
            if self.closed or self.disconnected:
                return
            text = message.get("text")
            data = TextMessage(data=text) if text is not None else BytesMessage(
                data=message.get("bytes") or b"")
            self._write(self.conn.send(data))
        elif t == "websocket.accept":
            if self.accepted or self.closed:
                raise RuntimeError("ASGI: 'websocket.accept' sent twice or after a close")
            head = [b"HTTP/1.1 101 Switching Protocols", b"upgrade: websocket",
                    b"connection: Upgrade", b"sec-websocket-accept: " + accept_key(self.key)]
            sub = message.get("subprotocol")
            if sub:
                head.append(b"sec-websocket-protocol: " + sub.encode("latin-1"))
            for k, v in message.get("headers") or ():
                if b"\r" in k + v or b"\n" in k + v:
                    raise ValueError("websocket.accept header contains CR or LF")
                head.append(bytes(k) + b": " + bytes(v))
            self.accepted = self.started = True
            self.status = 101
            if not _n.server_upgrade(self.server.handle, self.token, b"\r\n".join(head) + b"\r\n\r\n"):
                self.disconnected = True
            else:
                self._start_pings()
        elif t == "websocket.close":
            code = message.get("code", 1000) or 1000
            if not self.accepted:
                self.reject(403)
                return
            self._close(code, message.get("reason") or "")
        else:
            raise RuntimeError(f"ASGI: unexpected message type {t!r} for a websocket")

    def reject(self, status):
        """Refuses the handshake with an HTTP response."""
        if self.closed or self.accepted:
            return
        self.closed = self.started = self.complete = True
        self.status = status
        if _n.server_start(self.server.handle, self.token, status,
                           [(b"content-type", b"text/plain; charset=utf-8")]):
            flags = _n.server_body(self.server.handle, self.token, b"", False)
            if flags & HAS_EVENTS:
                self.server.poll_soon()

    def abandon(self, exc):
        """The app ended (or failed) without closing."""
        if not self.accepted:
            self.reject(500 if exc is not None else 403)
        elif not self.disconnected:
            self._close(1011 if exc is not None else 1000)
        self.complete = True


def scope_of(server, ev):
    """The websocket scope and cycle of a request event, or None with the reason
    for a 400 answer."""
    _, token, _method, path, raw_path, query, version, headers, client, srv, _, tls = ev
    key = None
    subprotocols = []
    version_ok = False
    for k, v in headers:
        if k == b"sec-websocket-key":
            key = v.strip()
        elif k == b"sec-websocket-version":
            version_ok = v.strip() == b"13"
        elif k == b"sec-websocket-protocol":
            subprotocols += [p.strip() for p in v.decode("latin-1").split(",") if p.strip()]
    if key is None or not version_ok:
        return None
    if server.root_path:
        path = server.root_path + path
        raw_path = server.root_path_b + raw_path
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": version,
        "scheme": "wss" if server.scheme == "https" else "ws",
        "server": srv,
        "client": client,
        "root_path": server.root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
        "subprotocols": subprotocols,
        "state": server.state.copy(),
        "extensions": {} if tls is None else {"tls": server.tls_extensions(tls)["tls"]},
    }
    return WebSocketCycle(server, token, scope, key, int(server.config["ws_max_size"]))
