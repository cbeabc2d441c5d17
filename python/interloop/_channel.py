"""Cross-interpreter channels: ``interloop.Channel``.

The state lives in Rust (``src/channel``), shared by every interpreter of the
process; this module is the Python face, identical in the caller and in pool
workers (in a worker the native functions come from the worker module).

Life of one ``await ch.recv()`` (``send`` is symmetric, waiting for room):

1. Try ``recv`` natively; an item is unpickled in this interpreter and returned.
2. Otherwise register as a waiter with this loop's notifier (one per loop: an
   eventfd watched with ``add_reader``, or drained natively by interloop's own
   loop) and a fresh token. The registration re-checks under
   the channel's lock, so a message that arrived meanwhile is never missed.
3. A sender (in any interpreter, on any thread) that makes a message available
   wakes one waiting receiver: its token is queued in the receiver's notifier and
   the eventfd is written if the queue was empty (one ``write`` per burst).
4. The loop's reader resolves the futures of the woken tokens; each woken task
   goes back to step 1 (another receiver may have been faster).
5. A waiter cancelled after it was woken passes its wake-up on to another waiter,
   so no message (or free slot) is left with nobody woken for it.

A channel pickles as its process-wide id, so it can be an argument of
``pool.run`` or be sent through another channel.
"""
import asyncio
import itertools
import os
import pickle
import weakref

from . import _interloop as _native
from . import _wire
from ._futures import idle_probe

__all__ = ["Channel", "ChannelClosed", "ChannelEmpty", "ChannelFull"]

_n = _wire.channel_functions()
_attach_loop = None if _wire.IN_WORKER else _native._chan_attach_loop

# The channel protocol's numbers, defined in Rust (src/channel/ffi.rs): the side a
# waiter waits on, and what native `send` returns: SENT (0, so `if r:` reads "not
# sent"), FULL or CLOSED.
_SEND, _RECV = _n.SEND, _n.RECV
_CLOSED = _n.CLOSED
_loads = _wire.loads  # handles pickles that refer to __main__ (see _wire.py)


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


# What native recv returns instead of a message (never a user object).
_EMPTY, _DONE = _Sentinel("<empty>"), _Sentinel("<closed and drained>")


class ChannelClosed(Exception):
    """The channel is closed (and, for a receiver, drained)."""


class ChannelEmpty(Exception):
    """``recv_nowait`` on an empty channel."""


class ChannelFull(Exception):
    """``send_nowait`` on a full channel."""


# Message tags: how the receiver rebuilds a message.
_PICKLE, _RAW, _BUFFER, _PICKLE_OOB = _n.TAG_PICKLE, _n.TAG_RAW, _n.TAG_BUFFER, _n.TAG_PICKLE_OOB
_ZERO_COPY_MIN = _wire.ZERO_COPY_MIN  # buffers this large travel by reference (src/buffer)
_PickleBuffer = pickle.PickleBuffer


def _encode(obj):
    """``(data, tag, bufs)`` for native ``send``.

    ``bytes`` below the zero-copy size travel as they are. A large ``bytes`` or
    ``bytearray``, and any ``memoryview`` or ``PickleBuffer``, travels as one buffer
    by reference (the receiver gets a read-only ``memoryview`` over the sender's
    memory). Anything else is pickled (protocol 5) here, in the sender, so what
    cannot travel fails before anything is queued; its large out-of-band buffers
    (``PickleBuffer``s, e.g. of NumPy arrays) travel by reference.
    """
    t = type(obj)
    if t is bytes:
        if len(obj) < _ZERO_COPY_MIN:
            return obj, _RAW, None
        return b"", _BUFFER, (obj,)
    if t is memoryview or t is _PickleBuffer or (t is bytearray and len(obj) >= _ZERO_COPY_MIN):
        return b"", _BUFFER, (obj,)
    try:
        data, bufs = _wire.pickle_oob(obj)
    except Exception as e:  # noqa: BLE001 - any pickling failure is the caller's TypeError
        raise TypeError(
            f"cannot send {type(obj).__qualname__} through an interloop.Channel: it cannot "
            f"be pickled ({type(e).__name__}: {e})") from e
    return data, (_PICKLE if bufs is None else _PICKLE_OOB), bufs


class Channel:
    """A FIFO of objects between interpreters (the caller and pool workers),
    awaitable on both ends.

    ``maxsize`` bounds the number of queued messages (``await send`` waits for
    room); ``0`` means unbounded. Objects travel pickled (small ``bytes`` as they
    are): each receiver gets its own copy. Buffers travel without being copied: a
    ``bytes`` or ``bytearray`` of 64 KiB or more, any ``memoryview`` or
    ``PickleBuffer``, and the large out-of-band buffers of pickled objects (NumPy
    arrays...) arrive as read-only ``memoryview``s (or objects rebuilt on them)
    over the sender's memory, which stays alive while any view of it does; do not
    modify a mutable buffer after sending it. ``close()`` refuses further sends; receivers
    drain what is left, then get ``ChannelClosed`` (``async for`` ends). A channel
    pickles as its process-wide id: handles unpickled anywhere (e.g. in a worker,
    as an argument of ``pool.run``) are equal and share the same state.
    """

    __slots__ = ("_h", "_id", "__weakref__")

    def __init__(self, maxsize=0):
        maxsize = int(maxsize)
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0 (0 means unbounded)")
        self._h = _n.new(maxsize)
        self._id = _n.id(self._h)

    @classmethod
    def _from_handle(cls, h):
        self = object.__new__(cls)
        self._h = h
        self._id = _n.id(h)
        return self

    def __reduce__(self):
        # Kept alive until the copy is unpickled, even if this handle goes first.
        _n.pin(self._h)
        return (_open, (self._id,))

    def __eq__(self, other):
        if not isinstance(other, Channel):
            return NotImplemented
        return self._id == other._id

    def __hash__(self):
        return hash(self._id)

    def __repr__(self):
        n, maxsize, closed, _, _ = _n.info(self._h)
        state = "closed" if closed else "open"
        return f"<interloop.Channel id={self._id} {state} queued={n} maxsize={maxsize}>"

    # -- state --
    @property
    def maxsize(self):
        return _n.info(self._h)[1]

    @property
    def closed(self):
        return _n.info(self._h)[2]

    def qsize(self):
        """Messages queued now."""
        return _n.info(self._h)[0]

    def empty(self):
        return _n.info(self._h)[0] == 0

    def full(self):
        n, maxsize, _, _, _ = _n.info(self._h)
        return maxsize != 0 and n >= maxsize

    def close(self):
        """Refuses further sends; what is queued stays receivable. Returns whether
        the channel was open. Waiters are woken (senders get ``ChannelClosed``)."""
        return _n.close(self._h)

    # -- sending --
    def send_nowait(self, obj):
        """Queues ``obj`` or raises ``ChannelFull`` / ``ChannelClosed``; an object
        that cannot be pickled raises ``TypeError`` (nothing is queued)."""
        if type(obj) is bytes and len(obj) < _ZERO_COPY_MIN:  # the common case, inline
            data, tag, bufs = obj, _RAW, None
        else:
            data, tag, bufs = _encode(obj)
        r = _n.send(self._h, data, tag, bufs)
        if r:
            if tag == _PICKLE or tag == _PICKLE_OOB:
                _unpin(data, bufs)
            if r == _CLOSED:
                raise ChannelClosed("send on a closed channel")
            raise ChannelFull()

    async def send(self, obj):
        """Queues ``obj``, waiting for room if the channel is full."""
        if type(obj) is bytes and len(obj) < _ZERO_COPY_MIN:  # the common case, inline
            data, tag, bufs = obj, _RAW, None
        else:
            data, tag, bufs = _encode(obj)
        h = self._h
        r = _n.send(h, data, tag, bufs)
        if not r:
            return
        try:
            while r:
                if r == _CLOSED:
                    raise ChannelClosed("send on a closed channel")
                await _wait(h, _SEND)
                r = _n.send(h, data, tag, bufs)
        except BaseException:
            if tag == _PICKLE or tag == _PICKLE_OOB:
                _unpin(data, bufs)
            raise

    # -- receiving --
    def recv_nowait(self):
        """The next message, or raises ``ChannelEmpty`` / ``ChannelClosed`` (closed
        and drained)."""
        r = _n.recv(self._h, _loads, _EMPTY, _DONE)
        if r is _EMPTY:
            raise ChannelEmpty()
        if r is _DONE:
            raise ChannelClosed("the channel is closed and drained")
        return r

    async def recv(self):
        """The next message, waiting for one; ``ChannelClosed`` once the channel
        is closed and drained."""
        h = self._h
        while True:
            r = _n.recv(h, _loads, _EMPTY, _DONE)
            if r is _EMPTY:
                if not _spun(h):
                    await _wait(h, _RECV)
            elif r is _DONE:
                raise ChannelClosed("the channel is closed and drained")
            else:
                return r

    def __aiter__(self):
        return self

    async def __anext__(self):
        h = self._h
        while True:
            r = _n.recv(h, _loads, _EMPTY, _DONE)
            if r is _EMPTY:
                if not _spun(h):
                    await _wait(h, _RECV)
            elif r is _DONE:
                raise StopAsyncIteration
            else:
                return r


# -- a short spin before sleeping ------------------------------------------------------
# A receiver whose loop has nothing else to run would sleep in epoll and be woken by
# the sender: two thread wake-ups per round trip, tens of microseconds each on an idle
# VM. Instead it first spins briefly (GIL released, yielding the CPU) for a message
# that is about to come, as the pool does for results. After 8 spins in a row that
# found nothing (slow senders) it stops spinning, and probes again every 64 waits.
# INTERLOOP_CHANNEL_SPIN_US sets the budget (0: never spin).

_SPIN_US = int(os.environ.get("INTERLOOP_CHANNEL_SPIN_US", "30") or 0)
_spin_credit = 8 if _SPIN_US > 0 else 0


def _spun(h):
    """Spins for a message if this loop would go idle; True if one may be there."""
    global _spin_credit
    credit = _spin_credit
    if credit <= 0:
        if credit < 0:
            _spin_credit = credit + 1 if credit < -1 else 1
        return False
    if not idle_probe(asyncio.get_running_loop())():
        return False
    if _n.spin_recv(h, _SPIN_US):
        _spin_credit = 8
        return True
    _spin_credit = credit - 1 if credit > 1 else -64
    return False


def _unpin(data, bufs=None):
    """A pickled message that will not be queued: if it holds channels (each pinned
    when pickled, see ``__reduce__``), unpickle it to release their pins."""
    if b"_open" in data:
        try:
            _loads(data, bufs)
        except Exception:  # noqa: BLE001 - best effort; the sender gets its own error
            pass


def _open(id_):
    """Unpickles a channel: the same state, a handle of this interpreter."""
    return Channel._from_handle(_n.open(id_, True))


# -- waking loops -------------------------------------------------------------------

class _LoopNotifier:
    """One per event loop that waits on channels: a native notifier (eventfd and
    woken tokens) watched with ``add_reader``; token -> future of the waiter."""

    __slots__ = ("handle", "fd", "futures", "tokens", "__weakref__")

    def __init__(self, loop):
        self.handle = _n.notifier()
        self.fd = _n.notifier_fd(self.handle)
        self.futures = {}
        self.tokens = itertools.count(1)
        # interloop's loop drains the notifier natively; other loops watch its fd.
        if _attach_loop is None or not _attach_loop(loop, self.handle, self._on_tokens):
            loop.add_reader(self.fd, self._on_wake)

    def _on_wake(self):
        self._on_tokens(_n.notifier_drain(self.handle))

    def _on_tokens(self, tokens):
        futures = self.futures
        for token in tokens:
            fut = futures.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(None)


_notifiers = weakref.WeakKeyDictionary()  # loop -> _LoopNotifier, for loops without a __dict__


def _notifier(loop):
    # Kept on the loop itself: the notifier holds the futures of waiting tasks (so a
    # task nobody else references stays alive while it waits, as with
    # asyncio.Queue), and those futures hold the loop. As an attribute that is a
    # cycle the GC can collect; in a module-level dict it would keep the loop alive.
    nt = getattr(loop, "_interloop_channel_notifier", None)
    if nt is None:
        nt = _notifiers.get(loop)
    if nt is None:
        nt = _LoopNotifier(loop)
        try:
            loop._interloop_channel_notifier = nt
        except AttributeError:
            _notifiers[loop] = nt
        # A loop dropped with tasks still waiting (never cancelled): channels must
        # not hand wake-ups to its waiters any more.
        weakref.finalize(loop, _n.notifier_close, nt.handle)
    return nt


async def _wait(h, side):
    """Steps 2-5 of the protocol: returns when the operation may succeed now."""
    loop = asyncio.get_running_loop()
    nt = _notifier(loop)
    token = next(nt.tokens)
    fut = loop.create_future()
    nt.futures[token] = fut
    if not _n.wait(h, side, nt.handle, token):
        del nt.futures[token]
        return
    try:
        await fut
    except BaseException:
        nt.futures.pop(token, None)
        if not _n.unwait(h, side, nt.handle, token):
            _n.wake(h, side)  # we were woken: pass it on
        raise
