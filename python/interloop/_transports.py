"""asyncio's socket transport with interloop's native per-message path.

`SocketTransport` is asyncio's own `_SelectorSocketTransport` (so every decision about
flow control, closing, EOF, errors, sendfile and TLS upgrades is asyncio's), with two
per-instance replacements made in Rust (`src/transport/`):

- `_read_ready`, the reader callback: one `recv` and `protocol.data_received(data)`
  (or `get_buffer`/`recv_into`/`buffer_updated` for buffered protocols, TLS among
  them) without Python frames; EOF and errors go to asyncio's methods. The reactor
  does not re-arm this reader after each event: it re-arms itself when it may have
  left data unread.
- `write`: a direct `send` when nothing is buffered; otherwise asyncio's `write`.
"""
from __future__ import annotations

from asyncio import protocols, selector_events

from . import _interloop

_BaseTransport = selector_events._SelectorSocketTransport
_base_write = _BaseTransport.write


class SocketTransport(_BaseTransport):
    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        fd = sock.fileno()
        # Set before asyncio's __init__, which schedules the reader registration.
        self._read_ready = _interloop.SocketReader(self, fd, loop)
        self.write = _interloop.SocketWriter(self, fd, _base_write)
        super().__init__(loop, sock, protocol, waiter, extra, server)

    def set_protocol(self, protocol):
        self._interloop_plain_protocol = not isinstance(protocol, protocols.BufferedProtocol)
        super().set_protocol(protocol)

    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            # Back to asyncio's methods (which handle a closed transport) and no
            # reference cycle through the native callables.
            self.__dict__.pop("_read_ready", None)
            self.__dict__.pop("write", None)
