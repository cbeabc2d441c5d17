"""asyncio's transports with interloop's native per-event paths.

Each class here *is* asyncio's own transport (so every decision about flow control,
closing, EOF, errors, sendfile and TLS upgrades is asyncio's), with its hot methods
replaced per instance by native callables from `src/transport/`:

- `SocketTransport` (TCP and Unix stream sockets): `_read_ready` is one `recv` and
  `protocol.data_received(data)` (or `get_buffer`/`recv_into`/`buffer_updated` for
  buffered protocols, TLS among them); `write` is a direct `send` when nothing is
  buffered.
- `DatagramTransport` (UDP): `_read_ready` is one `recvfrom` and
  `protocol.datagram_received(data, addr)` (`error_received` on an OSError);
  `sendto` is a direct `send`/`sendto` when nothing is buffered.
- `ReadPipeTransport`: `_read_ready` is one `read` and `protocol.data_received(data)`.
- `WritePipeTransport`: `write` is a direct `write` when nothing is buffered, an
  append (and the high-water check) when something is; `_write_ready`, the writer
  callback while data is buffered, writes the buffer and trims it.

Whatever the native path does not handle itself goes to asyncio's method. The
native callables hold the transport; they are removed when the connection is lost.
"""
from __future__ import annotations

import os
import socket
import stat
from asyncio import protocols, selector_events, streams, unix_events
from asyncio.log import logger

from . import _interloop

__all__ = ("SocketTransport", "DatagramTransport", "ReadPipeTransport", "WritePipeTransport")

_SocketBase = selector_events._SelectorSocketTransport
_DatagramBase = selector_events._SelectorDatagramTransport
_ReadPipeBase = unix_events._UnixReadPipeTransport
_WritePipeBase = unix_events._UnixWritePipeTransport


def _drop_native(transport, *names):
    # Back to asyncio's methods (which handle a closed transport), and no reference
    # cycle through the native callables.
    for name in names:
        transport.__dict__.pop(name, None)


# asyncio's stream classes and the methods a read runs through them, as asyncio
# defines them: a `StreamReaderProtocol` over a `StreamReader` whose methods are
# these is fed natively (`Kind::Stream` in src/transport/stream.rs). Subclasses, or
# classes whose methods were replaced (instrumentation, patches), take the plain
# path and run whatever `data_received` they have.
_STREAM_METHODS = (
    (streams.StreamReaderProtocol, "data_received", streams.StreamReaderProtocol.data_received),
    (streams.StreamReader, "feed_data", streams.StreamReader.feed_data),
    (streams.StreamReader, "_wakeup_waiter", streams.StreamReader._wakeup_waiter),
)


def _protocol_kind(protocol) -> int:
    """0: plain protocol, 1: buffered protocol, 2: asyncio's stream protocol."""
    if isinstance(protocol, protocols.BufferedProtocol):
        return 1
    if (type(protocol) is streams.StreamReaderProtocol
            and type(protocol._stream_reader) is streams.StreamReader
            and all(cls.__dict__.get(name) is fn for cls, name, fn in _STREAM_METHODS)):
        return 2
    return 0


class SocketTransport(_SocketBase):
    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        fd = sock.fileno()
        # Set before asyncio's __init__, which schedules the reader registration.
        self._read_ready = _interloop.SocketReader(self, fd, loop)
        self.write = _interloop.SocketWriter(self, fd, _SocketBase.write).function()
        super().__init__(loop, sock, protocol, waiter, extra, server)

    def set_protocol(self, protocol):
        super().set_protocol(protocol)
        reader = self.__dict__.get("_read_ready")
        if reader is not None:  # the native reader keeps the protocol (and its kind)
            reader.set_protocol(protocol, _protocol_kind(protocol))

    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            _drop_native(self, "_read_ready", "write")


class _UnnamedPeer(str):
    """The peername `''` of a connected socket, true as a condition: the socket
    has a peer, it only has no name."""

    __slots__ = ()

    def __bool__(self):
        return True


class DatagramTransport(_DatagramBase):
    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        fd = sock.fileno()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Other families (AF_UNIX datagrams) keep asyncio's reader: their
            # addresses are CPython's to convert.
            self._read_ready = _interloop.DatagramReader(self, fd)
        super().__init__(loop, sock, protocol, address, waiter, extra)
        if self._extra["peername"] == "":
            # A connected socket whose peer has no name (a socketpair's AF_UNIX end).
            # asyncio picks `send` over `sendto` by a truthy peername, so it fails
            # `sendto(data)` here; uvloop sends to the peer, and so does this.
            self._extra["peername"] = _UnnamedPeer()
        self.sendto = _interloop.DatagramSender(
            self, fd, sock.family, bool(self._extra["peername"]),
            address if address else None, _DatagramBase.sendto,
        )

    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            _drop_native(self, "_read_ready", "sendto")


class ReadPipeTransport(_ReadPipeBase):
    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        # A short read drains a pipe or a stream socket; not a terminal (one line per
        # read in canonical mode) nor a datagram socket (one message per read): only
        # the former may skip the reactor's re-arm.
        drains = stat.S_ISFIFO(os.fstat(pipe.fileno()).st_mode) or (
            isinstance(pipe, socket.socket) and pipe.type == socket.SOCK_STREAM)
        self._read_ready = _interloop.PipeReader(self, pipe.fileno(), loop, drains)
        try:
            super().__init__(loop, pipe, protocol, waiter, extra)
        except BaseException:
            _drop_native(self, "_read_ready")
            raise

    def _interloop_on_eof(self):
        """The native reader read EOF: what asyncio's `_read_ready` does then."""
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._loop._remove_reader(self._fileno)
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            _drop_native(self, "_read_ready")


class WritePipeTransport(_WritePipeBase):
    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(loop, pipe, protocol, waiter, extra)
        self.write = _interloop.PipeWriter(self, self._fileno, _WritePipeBase.write)
        self._write_ready = _interloop.PipeFlusher(
            self, self._fileno, _WritePipeBase._write_ready)

    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            _drop_native(self, "write", "_write_ready")
