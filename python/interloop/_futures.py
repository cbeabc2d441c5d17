"""asyncio-side helpers of the pools and channels: the pool's job future, the batch
runner of its kept done-callbacks, the probe telling whether a loop would go idle,
and the queue of callers waiting for room under ``max_pending``.

Nothing here knows the wire format or the native module; ``_pool``, ``_dask`` and
``_channel`` build on it.
"""
import asyncio
import collections
import contextvars

__all__ = ["JobFuture", "JobFuturePlain", "MapSink", "RoomWaiters", "idle_probe", "never_idle",
           "run_callbacks"]


class RoomWaiters(collections.deque):
    """Callers waiting for room under a pool's ``max_pending`` bound, oldest first.

    A deque, so the pool's hot path tests ``if waiters:`` without a Python call.
    ``Pool`` and ``DaskPool`` share it: a woken waiter that was cancelled before it
    could use its slot passes the slot on, and a closed pool wakes everyone, who then
    raise the pool's closed error.
    """

    __slots__ = ()

    def wake(self, room=1):
        """Wakes up to ``room`` waiters (those cancelled meanwhile do not count)."""
        while room > 0 and self:
            w = self.popleft()
            if not w.done():
                w.set_result(None)
                room -= 1

    def wake_all(self):
        """Wakes every waiter (the pool closed); they see it and raise."""
        while self:
            w = self.popleft()
            if not w.done():
                w.set_result(None)

    async def wait(self, loop, full, closed, closed_error):
        """Returns once ``full()`` is false. Raises ``closed_error()`` if the pool
        closed meanwhile (``closed()`` true after a wake-up)."""
        while full():
            w = loop.create_future()
            self.append(w)
            try:
                await w
            except asyncio.CancelledError:
                if w.done() and not w.cancelled():
                    self.wake()  # woken, but will not use the slot: pass it on
                raise
            if closed():
                raise closed_error()


class MapSink:
    """Where an unordered ``map()`` collects its finished futures."""

    __slots__ = ("done", "waiter")

    def __init__(self):
        self.done = collections.deque()
        self.waiter = None

    def add(self, fut):
        self.done.append(fut)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


_Future = asyncio.Future
_fut_add_done_callback = _Future.add_done_callback
_fut_remove_done_callback = _Future.remove_done_callback
_fut_set_result = _Future.set_result
_fut_set_exception = _Future.set_exception
_copy_context = contextvars.copy_context


class JobFuture(asyncio.Future):
    """The awaitable of one job: a real ``asyncio.Future`` whose ``cancel()`` also
    cancels the job (cheaper than a done-callback per job).

    Done-callbacks added while the job is pending (``await``, ``gather``) are kept
    here rather than in asyncio's future: when a batch of completions is drained,
    the futures are resolved and all their callbacks run from *one* loop callback
    (``run_callbacks``), instead of one ``loop.call_soon`` and one ``Handle`` per
    future (on asyncio's loop that was ~8k instructions per job). They still run
    after the future is done, from the loop, in their own context, in order; an
    exception in one goes to the loop's exception handler as it would from a
    ``Handle``. Resolved any other way (``cancel``, ``set_result``), the kept
    callbacks are scheduled one by one as asyncio would.

    The pool fills the slots at submission: ``_pool`` (the ``Pool``, whose
    ``_cancel_job(job, interrupt)`` a ``cancel()`` calls; None once resolved),
    ``_job``, ``_interrupt``, ``_label`` (names the job when a worker is stuck).
    """

    __slots__ = ("_pool", "_job", "_interrupt", "_label", "_cb", "_cbctx", "_more")

    def add_done_callback(self, fn, *, context=None):
        if self._pool is None or self.done():
            # Resolved, or resolving: asyncio's own scheduling.
            return _fut_add_done_callback(self, fn, context=context)
        if context is None:
            context = _copy_context()
        if self._cb is None:
            self._cb = fn
            self._cbctx = context
        elif self._more is None:
            self._more = [(fn, context)]
        else:
            self._more.append((fn, context))

    def remove_done_callback(self, fn):
        n = _fut_remove_done_callback(self, fn)
        if self.done():
            return n  # as asyncio: callbacks of a done future are already scheduled
        more = self._more
        if more:
            keep = [(f, c) for f, c in more if f != fn]
            n += len(more) - len(keep)
            self._more = keep or None
        cb = self._cb
        if cb is not None and cb == fn:
            n += 1
            more = self._more
            if more:
                self._cb, self._cbctx = more.pop(0)
                if not more:
                    self._more = None
            else:
                self._cb = self._cbctx = None
        return n

    def _schedule_kept(self):
        """Schedules the kept callbacks one by one (the future is done)."""
        cb = self._cb
        if cb is None:
            return
        loop = self.get_loop()
        loop.call_soon(cb, self, context=self._cbctx)
        more = self._more
        self._cb = self._cbctx = self._more = None
        if more:
            for fn, ctx in more:
                loop.call_soon(fn, self, context=ctx)

    def cancel(self, msg=None):
        if not super().cancel(msg):
            return False
        self._schedule_kept()
        pool = self._pool
        if pool is not None:
            self._pool = None
            pool._cancel_job(self._job, self._interrupt)
        return True

    def set_result(self, result):
        _fut_set_result(self, result)
        self._schedule_kept()

    def set_exception(self, exception):
        _fut_set_exception(self, exception)
        self._schedule_kept()


class JobFuturePlain(JobFuture):
    """Callbacks stay asyncio's (one ``Handle`` each): in debug mode, so that
    slow-callback warnings name the callback, and on interloop's loop, whose native
    ``call_soon`` is cheaper than keeping them in Python."""

    __slots__ = ()
    add_done_callback = _Future.add_done_callback
    remove_done_callback = _Future.remove_done_callback


def run_callbacks(loop, futs):
    """Runs the kept done-callbacks of a batch of resolved ``JobFuture``s (one loop
    callback for the whole batch; see ``JobFuture``)."""
    i = 0
    n = len(futs)
    more = None
    j = 0
    try:
        while i < n:
            fut = futs[i]
            i += 1
            cb = fut._cb
            if cb is None:
                continue
            ctx = fut._cbctx
            more = fut._more
            j = 0
            fut._cb = fut._cbctx = fut._more = None
            try:
                ctx.run(cb, fut)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001 - as asyncio.Handle._run does
                _callback_failed(loop, cb, fut, ctx, exc)
            if more is not None:
                for cb, ctx in more:
                    j += 1
                    try:
                        ctx.run(cb, fut)
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:  # noqa: BLE001
                        _callback_failed(loop, cb, fut, ctx, exc)
                more = None
    except BaseException:
        # SystemExit/KeyboardInterrupt leave the loop as from a Handle; what is left
        # of the batch still runs, in later callbacks.
        if more is not None:
            for cb, ctx in more[j:]:
                loop.call_soon(cb, fut, context=ctx)
        if i < n:
            loop.call_soon(run_callbacks, loop, futs[i:], context=contextvars.Context())
        raise


def _callback_failed(loop, cb, fut, ctx, exc):
    handle = asyncio.Handle(cb, (fut,), loop, context=ctx)
    from asyncio import format_helpers
    context = {
        "message": f"Exception in callback {format_helpers._format_callback_source(cb, (fut,))}",
        "exception": exc,
        "handle": handle,
    }
    loop.call_exception_handler(context)


def never_idle():
    return False


def idle_probe(loop):
    """A function telling whether ``loop`` has no callback ready (so the running
    coroutine would leave it idle: the moment a short spin beats sleeping), or
    one that always says no."""
    sizes = getattr(loop, "_queue_sizes", None)  # interloop's loop: (ready, timers)
    if sizes is not None:
        return lambda: sizes()[0] == 0
    ready = getattr(loop, "_ready", None)  # asyncio's base event loop
    if isinstance(ready, collections.deque):
        return lambda: not ready
    return never_idle
