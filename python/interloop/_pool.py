"""The parallel engine, caller side: ``Pool`` and ``spawn``.

Jobs run in own-GIL sub-interpreters on worker threads (``src/interp``), scheduled by
a work-stealing scheduler (``src/sched``); results come back through a batched
completion queue (``src/bridge``) drained in the caller's loop. The wire format is
``interloop._wire``; the worker's driver is ``interloop._worker``.

Caller-side life cycle of one ``pool.run`` (the native steps are in
``src/sched/mod.rs``):

1. The call is pickled here, so a lambda, a closure or an unpicklable argument
   raises ``TypeError`` in the caller, at submit time.
2. ``run`` is a coroutine (so ``TaskGroup.create_task(pool.run(...))`` works);
   ``submit`` is its eager half: it submits at once and returns a plain
   ``asyncio.Future`` (no task per job). With ``max_pending`` reached, both wait
   for room first (backpressure).
3. Completions are drained in batches from the loop: an ``add_reader`` callback on
   the pool's eventfd, or the loop's own native drain when it offers
   ``_interloop_attach_completions``. What each completion means is decided by
   ``_wire.classify`` (plain values take its native fast path, ``PoolCore.resolve``);
   each resolves its future unless the future is already done (cancelled by the
   caller): every future resolves exactly once.
4. Cancelling the future removes the job if still queued, or cancels the worker
   task (and with ``interrupt=True`` interrupts CPU-bound code too).
"""
import asyncio
import atexit
import collections
import contextvars
import marshal
import os
import sys
import threading
import weakref

from . import _interloop as _native
from . import _wire, _worker
from ._futures import (JobFuture, JobFuturePlain, MapSink, RoomWaiters, idle_probe, never_idle,
                       run_callbacks)
from ._wire import RemoteError  # noqa: F401 - re-exported

_classify = _wire.classify
_CONTROL, _TAKE_FILLED, _START_FILL = _wire.CONTROL, _wire.TAKE_FILLED, _wire.START_FILL

_get_running_loop = asyncio.get_running_loop
_encode_call = _wire.encode_call
_fn_cache = _wire.fn_cache  # fn -> (payload of a call without arguments, label)

__all__ = ["Pool", "spawn", "RemoteError"]

_fut_set_result = asyncio.Future.set_result
_fut_set_exception = asyncio.Future.set_exception
_Context = contextvars.Context

_IN_WORKER = _wire.IN_WORKER
_live_cores = set()  # cores to shut down at interpreter exit
_stuck_cores = set()  # cores whose close() already timed out on stuck workers
_live_lock = threading.Lock()
_replaced_current_frames = None  # sys._current_frames as it was before the first pool


def _guard_current_frames():
    """While workers live, ``sys._current_frames`` is the native one that walks only
    this interpreter's threads: CPython's (3.12, 3.13) builds frame objects for the
    threads of every interpreter, without their GILs, and corrupts the heap when a
    profiler or a stack dump calls it while own-GIL workers run. Called under
    ``_live_lock`` when the first live core appears."""
    global _replaced_current_frames
    mine = _native.current_frames_here
    if sys._current_frames is not mine and _native._own_frames_layout_ok():
        _replaced_current_frames = sys._current_frames
        sys._current_frames = mine


def _unguard_current_frames():
    """Puts CPython's ``sys._current_frames`` back (no workers live any more), unless
    someone replaced ours meanwhile. Called under ``_live_lock``."""
    global _replaced_current_frames
    if _replaced_current_frames is not None and sys._current_frames is _native.current_frames_here:
        sys._current_frames = _replaced_current_frames
    _replaced_current_frames = None


def check_version():
    v = sys.version_info
    if v < (3, 12):
        raise RuntimeError(
            "interloop.Pool needs CPython 3.12 or newer (own-GIL sub-interpreters, PEP 684)")
    if v[:2] == (3, 12) and v < (3, 12, 4):
        raise RuntimeError(
            f"interloop.Pool needs CPython 3.12.4 or newer on the 3.12 line (this is "
            f"{v.major}.{v.minor}.{v.micro}): CPython 3.12.0 to 3.12.3 crash at process exit "
            "after a sub-interpreter imports asyncio (CPython gh-112140, fixed in 3.12.4). "
            "Upgrade to 3.12.4+ or use CPython 3.13.")
    if _IN_WORKER:
        _wire.check_not_loading_main("interloop.Pool()")
        raise RuntimeError(
            "a Pool cannot be created inside a pool worker; use interloop.spawn() there")


# Bounded spinning right after activity (docs/design-pool.md, "Spinning"): a worker
# that just finished a job spins this long for the next one before it parks, and
# `Pool.run` on an otherwise idle loop spins this long for its result before the
# loop sleeps. 0 turns both off.
_SPIN_US = int(os.environ.get("INTERLOOP_POOL_SPIN_US", "50"))


def _config(preload, concurrency):
    main = sys.modules.get("__main__")
    main_path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    main_name = getattr(spec, "name", None)
    if main_name == "__main__":
        main_name = None
    path = []
    for p in sys.path:
        try:
            path.append(os.fspath(p))
        except TypeError:
            pass
    # Workers see the script's directory even if sys.path[0] was changed.
    if main_path:
        d = os.path.dirname(os.path.abspath(main_path))
        if d not in path:
            path.insert(0, d)
    return marshal.dumps({
        "path": path,
        "argv": list(sys.argv),
        "preload": list(preload),
        "concurrency": concurrency,
        "main_path": os.path.abspath(main_path) if main_path else None,
        "main_name": main_name,
        "spin_us": _SPIN_US,
    })


def start_workers(nworkers, preload, concurrency):
    """A ``PoolCore`` starting ``nworkers`` workers; shut down at interpreter exit
    unless ``workers_stopped`` says they all stopped."""
    if "_datetime" not in sys.modules:
        # CPython 3.13: ``_datetime``'s static types are set up by the first
        # interpreter that imports it; when that is a worker, ending the workers
        # frees memory twice ("double free or corruption" at close, in about half of
        # the runs where workers used datetime). Set up by the main interpreter
        # first, they are not (CPython gh-136421/gh-136423, fixed upstream by setting
        # them up at interpreter start, gh-136583). A builtin module: ~0.3 ms, once.
        import _datetime  # noqa: F401
    config = _config(preload, concurrency)
    with _live_lock:
        if not _live_cores:
            _guard_current_frames()  # before the first worker thread starts
        try:
            core = _native.PoolCore(nworkers, config)
        except BaseException:
            if not _live_cores:
                _unguard_current_frames()
            raise
        _live_cores.add(core)
    return core


def workers_stopped(core, stuck):
    """``core``'s workers were joined; ``stuck`` lists those that did not stop."""
    with _live_lock:
        if stuck:
            _stuck_cores.add(core)  # already waited for: no second wait at exit
        else:
            _live_cores.discard(core)
            if not _live_cores:
                _unguard_current_frames()


class Pool:
    """Own-GIL sub-interpreter workers running ``async def`` (or plain) functions.

    ``workers=None`` means one per core. ``concurrency`` is how many jobs one
    worker runs at once on its own asyncio loop (a worker takes a new job only when
    its loop would otherwise go idle, so CPU-bound jobs never pile up on one worker).
    ``max_pending`` bounds submitted-but-unfinished jobs: ``await pool.run`` waits for
    room. ``preload`` modules are imported once per worker at start.
    """

    def __init__(self, workers=None, *, preload=(), concurrency=16, max_pending=None, loop=None):
        check_version()
        if isinstance(preload, str):
            preload = (preload,)
        self._nworkers = int(workers or os.cpu_count() or 1)
        if self._nworkers < 1:
            raise ValueError("workers must be at least 1")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._concurrency = int(concurrency)
        self._max_pending = max_pending
        self._core = start_workers(self._nworkers, preload, self._concurrency)
        self._loop = loop
        self._attached = None  # "reader" | "native"
        self._loop_idle = never_idle
        self._future_class = JobFuture
        self._spin_credit = 8 if _SPIN_US > 0 else 0  # 0: never spin
        self._pending = {}     # job id -> asyncio.Future
        self._sinks = {}       # job id -> MapSink of the unordered map() it belongs to
        self._stashes = {}     # job id -> stash id of its buffers, until a worker takes them
        self._room_waiters = RoomWaiters()
        self._control_waiters = []
        self._ready = set()
        self._failed = {}
        self._exited = set()
        self._closed = False
        self._close_task = None

    # -- plumbing -------------------------------------------------------------
    def _attach(self):
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this Pool is bound to another event loop")
        if self._attached is None:
            hook = getattr(loop, "_interloop_attach_completions", None)
            how_native = hook is not None
            if hook is not None:
                hook(self._core, self._on_completions)
                self._attached = "native"
            else:
                loop.add_reader(self._core.fd(), self._on_completions)
                self._attached = "reader"
            self._loop_idle = idle_probe(loop)
            self._future_class = JobFuturePlain if how_native or loop.get_debug() else JobFuture
        return loop

    def _detach(self):
        loop, how = self._loop, self._attached
        self._attached = None
        if how is None or loop is None or loop.is_closed():
            return
        if how == "native":
            loop._interloop_detach_completions(self._core)
        else:
            loop.remove_reader(self._core.fd())

    def _on_completions(self, _none=None):
        """Resolves every waiting completion. Called by the loop: an ``add_reader``
        callback, or interloop's native drain (which passes None: the batch is
        taken here, by ``PoolCore.resolve``)."""
        pending = self._pending
        sinks = self._sinks
        stashes = self._stashes
        core = self._core
        # Plain values resolve their futures natively (the fast path of
        # `_wire.classify`'s decision); `rest` is every other completion.
        kept, rest, error = core.resolve(
            pending, sinks, stashes, _fut_set_result, _fut_set_exception, _wire.loads)
        if kept is not None:
            self._loop.call_soon(run_callbacks, self._loop, kept, context=_Context())
        for job, kind, data in rest:
            action = _classify(kind, data)
            if action is _CONTROL:
                self._on_control(job, kind, data)
                continue
            fut = pending.pop(job, None)
            if fut is not None:
                core.retrack(fut)  # taken out of the GC while pending
            if stashes:
                stashes.pop(job, None)  # a worker took the call's buffers
            if action is _TAKE_FILLED:
                value = core.take_filled(job)
                if fut is None or fut.done():
                    continue
                fut._pool = None
                _fut_set_result(fut, value)
            elif fut is None or fut.done():
                _wire.discard_result(kind, data)
                continue
            elif action is _START_FILL:
                try:
                    core.fill(job, *_wire.fill_args(data))
                except BaseException as e:  # noqa: BLE001
                    fut._pool = None
                    _fut_set_exception(fut, e)
                else:
                    pending[job] = fut  # until its COMPLETION_FILLED
                    continue
            else:
                fut._pool = None
                try:
                    value = _wire.decode(kind, data)
                except asyncio.CancelledError:
                    fut.cancel()  # its kept callbacks are scheduled by `cancel`
                except BaseException as e:  # noqa: BLE001 - the job's error, or unpickling failed
                    _fut_set_exception(fut, e)
                else:
                    _fut_set_result(fut, value)
            kept = self._kept_callbacks(fut, kept)
            if sinks:
                sink = sinks.pop(job, None)
                if sink is not None:
                    sink.add(fut)
        if self._room_waiters:
            self._wake_room()
        if self._control_waiters and not pending:
            self._wake_control()
        if error is not None:
            raise error

    def _kept_callbacks(self, fut, kept):
        """Adds a future resolved here whose callbacks the pool keeps to the batch
        that one loop callback runs (``run_callbacks``); returns the batch."""
        if fut._cb is not None:
            if kept is None:
                kept = [fut]
                self._loop.call_soon(run_callbacks, self._loop, kept, context=_Context())
            else:
                kept.append(fut)
        return kept

    def _on_control(self, worker, kind, data):
        if kind == _wire.WORKER_READY:
            self._ready.add(worker)
        elif kind == _wire.WORKER_FAILED:
            self._failed[worker] = data.decode("utf-8", "replace")
            if len(self._failed) == self._nworkers:
                # No worker will ever take the submitted jobs, nor any new one.
                self._closed = True
                for job, fut in list(self._pending.items()):
                    self._cancel_job(job, False)
                    if not fut.done():
                        fut.set_exception(self._start_error())
        elif kind == _wire.WORKER_EXITED:
            self._exited.add(worker)
        self._wake_control()

    def _wake_control(self):
        waiters, self._control_waiters = self._control_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _control_changed(self):
        w = self._loop.create_future()
        self._control_waiters.append(w)
        await w

    def _wake_room(self):
        self._room_waiters.wake(self._max_pending - len(self._pending))

    def _full(self):
        return len(self._pending) >= self._max_pending

    def _is_closed(self):
        return self._closed

    def _cancel_job(self, job, interrupt):
        fut = self._pending.pop(job, None)
        if fut is not None:
            self._core.retrack(fut)  # taken out of the GC while pending
            sink = self._sinks.pop(job, None) if self._sinks else None
            if sink is not None:
                sink.add(fut)
            sid = self._stashes.pop(job, 0) if self._stashes else 0
            if not self._core.cancel(job, interrupt) and sid:
                _wire.discard_stash(sid)  # removed while queued: nobody takes its buffers
            if self._room_waiters:
                self._wake_room()

    def _submit(self, loop, payload, interrupt, label):
        fut = self._future_class()  # the running loop (checked): no kwargs dict
        job = self._core.submit(payload, interrupt, fut)  # fut: out of the GC while pending
        fut._pool = self
        fut._job = job
        fut._interrupt = interrupt
        fut._label = label
        fut._cb = fut._more = None
        self._pending[job] = fut
        if type(payload) is not bytes:
            self._stashes[job] = payload.sid
        return fut

    async def _submit_when_room(self, loop, payload, interrupt, label):
        try:
            await self._room_waiters.wait(loop, self._full, self._is_closed, self._closed_error)
        except BaseException:
            _wire.discard_stash(_wire.payload_stash(payload))  # never submitted
            raise
        return await self._submit(loop, payload, interrupt, label)

    # -- public API -------------------------------------------------------------
    def run(self, fn, /, *args, interrupt=False, **kwargs):
        """Runs ``fn(*args, **kwargs)`` in a worker; returns a coroutine of its result.

        ``fn`` is an ``async def`` or plain function importable by module and
        qualified name; the call is pickled now, so what cannot travel raises
        ``TypeError`` here. With ``max_pending`` reached, awaiting it first waits for
        room. With ``interrupt=True``, cancelling also interrupts code that never
        awaits (``CancelledError`` is raised in it at its next bytecode).
        """
        if self._closed:
            raise self._closed_error()
        payload, label = _wire.encode_call(fn, args, kwargs)
        return self._run(payload, interrupt, label)

    async def _run(self, payload, interrupt, label):
        loop = _get_running_loop()
        if loop is not self._loop or self._attached is None:
            loop = self._attach()
        if self._closed:
            _wire.discard_stash(_wire.payload_stash(payload))
            raise self._closed_error()
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
            return await self._submit_when_room(loop, payload, interrupt, label)
        # `_submit`, inlined (as in `submit`).
        fut = self._future_class()  # the running loop (checked): no kwargs dict
        job = self._core.submit(payload, interrupt, fut)  # fut: out of the GC while pending
        fut._pool = self
        fut._job = job
        fut._interrupt = interrupt
        fut._label = label
        fut._cb = fut._more = None
        self._pending[job] = fut
        if type(payload) is not bytes:
            self._stashes[job] = payload.sid
        credit = self._spin_credit
        if credit > 0:
            if self._loop_idle():
                # Nothing else to run here: rather than sleep in epoll and be woken,
                # spin briefly for a fast result and resolve it now (then `await`
                # does not suspend). Credit: after failed spins (slow jobs) stop
                # spinning, and probe again every 64 calls.
                if self._core.spin(_SPIN_US):
                    self._on_completions()
                    self._spin_credit = 8
                else:
                    self._spin_credit = credit - 1 if credit > 1 else -64
        elif credit < 0:
            self._spin_credit = credit + 1 if credit < -1 else 1
        return await fut

    def submit(self, fn, /, *args, interrupt=False, **kwargs):
        """Like ``run`` but submits now and returns the ``asyncio.Future`` itself
        (cheaper for many small jobs: no task per job). With ``max_pending``
        reached it returns a coroutine that waits for room, then submits."""
        if self._closed:
            raise self._closed_error()
        loop = _get_running_loop()
        if loop is not self._loop or self._attached is None:
            loop = self._attach()
        if args or kwargs:
            payload, label = _encode_call(fn, args, kwargs)
        else:
            try:
                payload, label = _fn_cache[fn]
            except (KeyError, TypeError):
                payload, label = _encode_call(fn, args, kwargs)
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
            return self._submit_when_room(loop, payload, interrupt, label)
        # `_submit`, inlined: this is the hot path of many small jobs.
        fut = self._future_class()  # the running loop (checked): no kwargs dict
        job = self._core.submit(payload, interrupt, fut)  # fut: out of the GC while pending
        fut._pool = self
        fut._job = job
        fut._interrupt = interrupt
        fut._label = label
        fut._cb = fut._more = None
        self._pending[job] = fut
        if type(payload) is not bytes:
            self._stashes[job] = payload.sid
        return fut

    async def map(self, fn, iterable, *, ordered=True, window=None):
        """Yields ``fn(item)`` for each item, in order or as they complete.

        At most ``window`` jobs are in flight (default: enough to keep every worker
        busy); leaving the loop early cancels the rest.
        """
        window = window or max(64, 4 * self._nworkers * self._concurrency)
        inflight = collections.deque()
        it = iter(iterable)
        try:
            if ordered:
                for item in it:
                    f = self.submit(fn, item)
                    if not isinstance(f, asyncio.Future):
                        f = asyncio.ensure_future(f)  # waiting for room (max_pending)
                    inflight.append(f)
                    if len(inflight) >= window:
                        yield await inflight.popleft()
                while inflight:
                    yield await inflight.popleft()
            else:
                # Futures of this pool report to `sink` straight from the drain (no
                # done-callback, no call_soon per job); others (waiting for room)
                # through a done-callback.
                sink = MapSink()
                done = sink.done
                sinks = self._sinks
                inflight = set()  # not yet yielded

                def on_done(f):
                    done.append(f)
                    w = sink.waiter
                    if w is not None and not w.done():
                        w.set_result(None)
                count = 0
                exhausted = False
                while True:
                    while not exhausted and count < window:
                        try:
                            item = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                        f = self.submit(fn, item)
                        if isinstance(f, JobFuture):
                            sinks[f._job] = sink
                        else:
                            f = asyncio.ensure_future(f)
                            f.add_done_callback(on_done)
                        inflight.add(f)
                        count += 1
                    if count == 0 and exhausted:
                        break
                    while not done:
                        sink.waiter = self._loop.create_future()
                        await sink.waiter
                    f = done.popleft()
                    inflight.discard(f)
                    count -= 1
                    yield f.result()
        finally:
            for f in inflight:
                if not f.done():
                    f.cancel()

    async def start(self):
        """Waits until every worker has started; raises if a preload import failed."""
        self._attach()
        while len(self._ready) + len(self._failed) < self._nworkers:
            await self._control_changed()
        if self._failed:
            await self.close(cancel=True, timeout=5)
            raise self._start_error()
        return self

    def _closed_error(self):
        if self._failed and len(self._failed) == self._nworkers:
            return self._start_error()
        return RuntimeError("the pool is closed")

    def _start_error(self):
        """The exception for a pool whose workers (some, or all) failed to start."""
        first = sorted(self._failed.items())[0][1]
        return ImportError(first) if "preload" in first else RuntimeError(first)

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, et, e, tb):
        await self.close(cancel=et is not None and issubclass(et, BaseException)
                         and not issubclass(et, Exception))

    async def close(self, *, cancel=False, timeout=None):
        """Shuts the pool down.

        Waits for submitted work (or cancels it with ``cancel=True``), then stops
        the workers. With ``timeout``, unfinished work is cancelled and interrupted
        when it expires, and stuck workers are left behind. Returns a list naming
        the workers that did not stop (empty when all did).
        """
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close(cancel, timeout))
        return await asyncio.shield(self._close_task)

    async def _close(self, cancel, timeout):
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._closed = True
        if self._attached is None and self._loop is None:
            self._loop = loop
        if self._attached is None and self._pending:
            self._attach()
        self._room_waiters.wake_all()
        if not cancel and self._pending:
            futs = list(self._pending.values())
            await asyncio.wait(futs, timeout=None if deadline is None else max(0, deadline - loop.time()))
        labels = {job: fut._label for job, fut in self._pending.items()}
        for job in list(self._pending):
            fut = self._pending.get(job)
            if fut is not None and not fut.done():
                fut._interrupt = True
                fut.cancel()
        stuck_jobs = {w: [labels.get(j, f"job {j}") for j in self._core.running_on(w)]
                      for w in range(self._nworkers)}
        self._core.shutdown()
        remaining = 10.0 if deadline is None else max(0.0, deadline - loop.time())
        stuck = await _join_in_thread(loop, self._core, remaining if deadline is not None else None)
        self._detach()
        for fut in self._pending.values():
            self._core.retrack(fut)  # taken out of the GC while pending
        self._pending.clear()
        workers_stopped(self._core, stuck)
        report = [f"worker {w} (running {', '.join(stuck_jobs.get(w) or ['no job'])})" for w in stuck]
        if report:
            import warnings
            warnings.warn("interloop.Pool.close: stuck workers left behind: " + "; ".join(report),
                          RuntimeWarning, stacklevel=3)
        return report

    def stats(self):
        """``workers``, ``queued``, ``running`` (per worker), ``submitted``,
        ``completed``, ``failed``, ``cancelled``, ``stolen``, ``pending`` and a
        ``latency`` summary in microseconds (submit to completion, log2 buckets)."""
        d = self._core.stats()
        d["pending"] = len(self._pending)
        return d

    @property
    def workers(self):
        return self._nworkers


async def _join_in_thread(loop, core, timeout):
    """Waits for the workers without blocking the loop; returns the stuck ones."""
    fut = loop.create_future()

    def join():
        if timeout is None:
            stuck = core.join(3600.0 * 24)
        else:
            stuck = core.join(timeout)
        try:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(stuck))
        except RuntimeError:  # loop closed
            pass
    threading.Thread(target=join, name="interloop-pool-join", daemon=True).start()
    return await fut


# -- spawn ------------------------------------------------------------------------
_default_pools = weakref.WeakKeyDictionary()


def spawn(fn, /, *args, interrupt=False, **kwargs):
    """Runs ``fn(*args, **kwargs)`` in a worker of the running loop's default pool
    (made on first use, one worker per core). Inside a worker, the job goes to that
    worker's own deque, where idle workers can steal it."""
    if _IN_WORKER:
        d = _worker.driver()
        if d is None:
            raise RuntimeError("interloop.spawn: the worker is shutting down")
        return d.spawn(fn, args, kwargs, interrupt)
    loop = asyncio.get_running_loop()
    pool = _default_pools.get(loop)
    if pool is None or pool._closed:
        pool = Pool()
        _default_pools[loop] = pool
        weakref.finalize(loop, pool._core.shutdown)
    return pool.run(fn, *args, interrupt=interrupt, **kwargs)


def default_pool(loop=None):
    """The default pool of ``loop`` (the running loop), or None."""
    return _default_pools.get(loop or asyncio.get_running_loop())


# -- interpreter exit ----------------------------------------------------------------
def _shutdown_all_at_exit():
    """A pool left open: stop its workers before the interpreter finalizes (which
    would abort on a sub-interpreter that still has a running thread)."""
    with _live_lock:
        cores = list(_live_cores)
        _live_cores.clear()
    for c in cores:
        c.shutdown()
    stuck = []
    for c in cores:
        s = c.join(0.0 if c in _stuck_cores else 5.0)
        if s:
            stuck.append((c, s))
    if stuck:
        names = "; ".join(f"workers {s}" for _, s in stuck)
        sys.stderr.write(
            f"interloop: pool {names} stuck in code that cannot be interrupted; exiting "
            "without finalizing them (finalizing would abort the process)\n")
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        code = 1 if getattr(sys, "last_exc", None) or getattr(sys, "last_value", None) else 0
        os._exit(code)


if not _IN_WORKER:
    atexit.register(_shutdown_all_at_exit)
