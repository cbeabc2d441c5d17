"""``DaskPool``: ``interloop.Pool``'s API on a Dask cluster (``distributed``).

Imported only when ``interloop.DaskPool`` is first touched, so ``import interloop``
never imports ``distributed``. Design notes: ``docs/design-dask.md``.

Both halves live here: the caller side (``DaskPool``) and the functions Dask runs on
its workers (``_run_async``, ``_run_plain``, ``_cancel_jobs``, ``_Preload``), which
Dask pickles by reference, so ``interloop`` must be installed on every worker.

Every job travels as one pickled ``(fn, args, kwargs)`` and comes back as pickled
bytes, so what cannot travel fails as ``TypeError`` at submit time (in the caller) or
when the result is made (in the worker), never in Dask's transport where it could
leave the caller waiting. A job's exception is raised on the worker as
``_JobFailed`` (Dask sees an erred task, so its ``retries=`` apply) carrying the
exception and the worker's traceback, and is raised again as itself in the caller.
"""
import asyncio
import collections
import concurrent.futures
import inspect
import pickle
import threading
import traceback
import uuid

try:
    import cloudpickle
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as e:
    raise ImportError(
        f"interloop.DaskPool needs Dask's distributed ({e}): pip install 'interloop[dask]'"
    ) from e

from . import RemoteError
from ._futures import RoomWaiters

__all__ = ["DaskPool"]


# -- the worker side ----------------------------------------------------------------
# State of this worker process, touched by jobs and by `_cancel_jobs`.
_running = {}                       # job key -> the asyncio task of an async job
_cancelled_early = collections.OrderedDict()  # keys cancelled before their job started
_EARLY_MAX = 4096                   # a cancel broadcast reaches every worker: keep few
_lock = threading.Lock()


class _JobFailed(Exception):
    """A job's exception, as raised on the Dask worker.

    ``args`` are a summary (what Dask's logs and dashboard show) and the pickled
    ``("err", exc, traceback text)``, ``("remote", type name, message, traceback
    text)`` for an exception that does not survive pickling, or ``("cancelled",)``.
    """

    def __str__(self):
        return self.args[0]

    def __repr__(self):  # what Dask logs: the summary, not the bytes
        return f"_JobFailed({self.args[0]!r})"


def _failure(exc):
    # The traceback text starts at the job's own frames, not this module's.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals is globals():
        tb = tb.tb_next
    tb = "".join(traceback.format_exception(type(exc), exc, tb))
    exc.__traceback__ = None  # the text travels; frames would be pickled by tblib
    t = type(exc)
    try:
        msg = str(exc)
    except BaseException:  # noqa: BLE001 - a broken __str__ must not lose the error
        msg = "<str() failed>"
    if isinstance(exc, asyncio.CancelledError):
        return _JobFailed("CancelledError", pickle.dumps(("cancelled",)))
    try:
        data = cloudpickle.dumps(("err", exc, tb), protocol=5)
        pickle.loads(data)  # pickles but cannot be rebuilt (custom __init__)? then RemoteError
    except BaseException:  # noqa: BLE001
        data = pickle.dumps(("remote", f"{t.__module__}.{t.__qualname__}", msg, tb), protocol=5)
    return _JobFailed(f"{t.__qualname__}: {msg}", data)


def _dumps_result(label, value):
    try:
        return cloudpickle.dumps(value, protocol=5)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"the result of {label} cannot be pickled: {e}") from None


def _started(key):
    with _lock:
        return _cancelled_early.pop(key, 0) == 0


async def _call(fn, args, kwargs):
    """Runs the job: ``(value, None)`` or ``(None, its exception)``. An asyncio task
    ending in SystemExit or KeyboardInterrupt would stop its loop, the Dask worker's:
    the exception is returned, not raised. Cancellation propagates."""
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value, None
    except asyncio.CancelledError:
        raise
    except BaseException as e:  # noqa: BLE001
        return None, e


async def _run_async(key, label, payload):
    """Runs an ``async def`` job on the Dask worker's event loop, as a task of its own
    so that cancelling the job (``_cancel_jobs``) cancels only it."""
    if not _started(key):
        raise _failure(asyncio.CancelledError())
    try:
        fn, args, kwargs = pickle.loads(payload)
        task = asyncio.ensure_future(_call(fn, args, kwargs))
    except BaseException as e:  # noqa: BLE001
        failed = _failure(e)
    else:
        _running[key] = task
        try:
            value, exc = await task
            if exc is None:
                return _dumps_result(label, value)
            failed = _failure(exc)
        except asyncio.CancelledError as e:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the worker is closing: Dask reschedules the job elsewhere
            failed = _failure(e)
        except BaseException as e:  # noqa: BLE001 - SystemExit too: it must not end the worker
            failed = _failure(e)
        finally:
            _running.pop(key, None)
    # Raised out here, not in the handler: the job's exception must not travel again
    # as the __context__ of this one (it may not pickle).
    raise failed


def _run_plain(key, label, payload):
    """Runs a plain function job in the Dask worker's thread pool."""
    if not _started(key):
        raise _failure(asyncio.CancelledError())
    try:
        fn, args, kwargs = pickle.loads(payload)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):  # e.g. a callable object with an async __call__
            loop = distributed.get_worker().loop.asyncio_loop
            value, exc = asyncio.run_coroutine_threadsafe(_call(lambda: value, (), {}), loop).result()
            if exc is not None:
                raise exc
        return _dumps_result(label, value)
    except BaseException as e:  # noqa: BLE001
        failed = _failure(e)
    raise failed  # out of the handler, as in _run_async


async def _cancel_jobs(keys):
    """Run on every worker (``Client.run``): cancels the listed jobs running here; a
    key not seen yet is remembered so that its job, if it starts later, does not run."""
    for key in keys:
        task = _running.get(key)
        if task is not None:
            task.cancel()
            continue
        with _lock:
            _cancelled_early[key] = 1
            while len(_cancelled_early) > _EARLY_MAX:
                _cancelled_early.popitem(last=False)


class _Preload(WorkerPlugin):
    """Imports modules on every worker, including workers that join later."""

    idempotent = True

    def __init__(self, modules):
        self.modules = tuple(modules)
        self.name = "interloop-preload:" + ",".join(self.modules)

    def setup(self, worker):
        import importlib
        for m in self.modules:
            importlib.import_module(m)


# -- the caller side ------------------------------------------------------------------
class _RemoteTraceback(Exception):
    """Set as ``__cause__`` of a job's exception; its text is the worker's traceback."""

    def __str__(self):
        return "\n\nTraceback on the Dask worker:\n" + self.args[0]


def _job_exception(e):
    """The job's exception (worker traceback as ``__cause__``) from ``_JobFailed``;
    None for a job that was cancelled."""
    kind, *rest = pickle.loads(e.args[1])
    if kind == "cancelled":
        return None
    if kind == "err":
        exc, tb = rest
    else:
        type_name, msg, tb = rest
        exc = RemoteError(type_name, msg, tb)
    exc.__cause__ = _RemoteTraceback(tb)
    return exc


def _label(fn):
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{name}()"


_ONE_BY_ONE = object()  # a batch gather failed: fetch this result alone


class DaskPool:
    """``interloop.Pool``'s API on a Dask cluster.

    ``address_or_client`` is a scheduler address (``"tcp://host:8786"``), a Dask
    cluster object (e.g. ``LocalCluster``), or an asynchronous ``distributed.Client``
    running on this loop. Given a client, the pool uses it and leaves it open; else it
    makes one (connecting within ``timeout`` seconds, Dask's default when None) and
    closes it in ``close()``.

    ``async def`` jobs run on the Dask worker's event loop, plain functions in its
    thread pool. ``preload`` modules are imported on every worker, including those
    that join later. ``max_pending`` bounds submitted-but-unfinished jobs;
    ``retries`` is Dask's: how many times a job that raised is run again.
    """

    def __init__(self, address_or_client, *, preload=(), max_pending=None, retries=0,
                 timeout=None):
        if isinstance(preload, str):
            preload = (preload,)
        preload = tuple(preload)
        for m in preload:
            if not isinstance(m, str):
                raise TypeError(f"preload takes module names (str), not {type(m).__name__}")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be an int, 0 or more")
        if isinstance(address_or_client, distributed.Client):
            self._client, self._own_client, self._address = address_or_client, False, None
        else:
            if address_or_client is None:
                raise TypeError("DaskPool needs a scheduler address, a cluster or a Client")
            self._client, self._own_client, self._address = None, True, address_or_client
        self._preload = preload
        self._max_pending = max_pending
        self._retries = retries
        self._timeout = timeout
        self._loop = None
        self._start_task = None
        self._ready = False
        self._closed = False
        self._close_task = None
        self._pending = {}          # job key -> (the caller's task, the Dask future)
        self._room_waiters = RoomWaiters()
        self._to_cancel = []        # job keys whose running coroutines to cancel
        self._background = set()    # cancel messages and batch gathers in flight
        self._batch = None          # (Dask futures, their waiters) to gather together
        self._counts = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0}
        self._latency = [0] * 64    # log2 buckets of microseconds, submit to completion
        self._latency_sum = 0.0

    # -- start ---------------------------------------------------------------------
    async def start(self):
        """Connects (or checks the given client) and registers ``preload`` on the
        workers; raises ``ImportError`` if a worker cannot import a preload module."""
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start())
        await asyncio.shield(self._start_task)
        return self

    async def _start(self):
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this DaskPool is bound to another event loop")
        if self._own_client:
            try:
                kw = {} if self._timeout is None else {"timeout": self._timeout}
                self._client = await distributed.Client(
                    self._address, asynchronous=True, set_as_default=False, **kw)
            except (OSError, TimeoutError) as e:
                raise OSError(
                    f"DaskPool: cannot reach the Dask scheduler at {self._address!r}: {e}"
                ) from e
        else:
            c = self._client
            if not getattr(c, "_asynchronous", False) or c.loop.asyncio_loop is not loop:
                raise ValueError(
                    "DaskPool needs a Client made with asynchronous=True on the running "
                    "event loop (or a scheduler address, and it makes one)")
            if c.status not in ("running", "connecting", "newly-created"):
                raise RuntimeError(f"the Dask client is {c.status}")
        if self._preload:
            plugin = _Preload(self._preload)
            try:
                await self._client.register_plugin(plugin, name=plugin.name)
            except Exception as e:  # noqa: BLE001 - what a worker's import raised
                try:
                    await self._client.unregister_worker_plugin(plugin.name)
                except Exception:  # noqa: BLE001 - the import error is the news
                    pass
                await self._close_client()
                self._closed = True
                if isinstance(e, ImportError):
                    raise
                raise ImportError(f"DaskPool preload {list(self._preload)} failed on a worker: "
                                  f"{type(e).__name__}: {e}") from e
        self._ready = True

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, et, e, tb):
        await self.close(cancel=et is not None and issubclass(et, BaseException)
                         and not issubclass(et, Exception))

    # -- jobs ------------------------------------------------------------------------
    def _encode(self, fn, args, kwargs):
        if self._closed:
            raise self._closed_error()
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        label = _label(fn)
        try:
            payload = cloudpickle.dumps((fn, args, kwargs), protocol=5)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"cannot send {label} to a Dask worker: {e}") from e
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None))
        return (_run_async if is_async else _run_plain), label, payload

    def _full(self):
        return self._max_pending is not None and len(self._pending) >= self._max_pending

    def _submit(self, job):
        runner, label, payload = job
        loop = self._loop
        key = f"{label[:-2]}-{uuid.uuid4().hex}"
        df = self._client.submit(runner, key, label, payload, key=key, pure=False,
                                 retries=self._retries)
        fut = loop.create_future()
        # The job's outcome is set on a plain future by a task of its own: a task
        # cannot end in SystemExit or KeyboardInterrupt without stopping the loop, a
        # future can carry them, as Pool's do.
        waiter = loop.create_task(self._wait(df, fut, loop.time()))
        self._pending[key] = (fut, df, waiter)
        fut.add_done_callback(lambda f, key=key: self._finished(key, f))
        self._counts["submitted"] += 1
        return fut

    async def _wait(self, df, fut, t0):
        try:
            value = pickle.loads(await self._result(df))
        except asyncio.CancelledError:  # this waiter, because `fut` was cancelled
            fut.cancel()
            raise
        except concurrent.futures.CancelledError:
            # Dask's own: the Dask future was cancelled elsewhere (Client.cancel from
            # another caller, the client closing).
            fut.cancel()
        except _JobFailed as e:
            self._record(t0)
            try:
                exc = _job_exception(e)
            except BaseException as e2:  # noqa: BLE001 - does not load here
                exc = e2
            if fut.done():
                return
            if exc is None:
                fut.cancel()
            else:
                fut.set_exception(exc)
        except BaseException as e:  # noqa: BLE001 - KilledWorker, a result that does not load
            self._record(t0)
            if not fut.done():
                fut.set_exception(e)
        else:
            self._record(t0)
            if not fut.done():
                fut.set_result(value)

    async def _result(self, df):
        """The job's result bytes, fetched with those of other jobs that finished in
        the same loop iteration: one ``Client.gather`` per batch, where ``await df``
        would make a request per job (most of DaskPool's cost over the plain client
        for many small jobs)."""
        state = getattr(df, "_state", None)  # Dask's wait without fetching
        if state is None or not hasattr(state, "wait"):
            return await df
        await state.wait()
        if df.status != "finished":
            return await df  # raises the job's error, or cancelled
        if self._batch is None:
            self._batch = ([], [])
            self._loop.call_soon(self._gather_batch)
        w = self._loop.create_future()
        self._batch[0].append(df)
        self._batch[1].append(w)
        data = await w
        return await df if data is _ONE_BY_ONE else data

    def _gather_batch(self):
        dfs, ws = self._batch
        self._batch = None
        self._spawn_background(self._gather(dfs, ws))

    async def _gather(self, dfs, ws):
        try:
            values = await self._client.gather(dfs)
        except BaseException:  # noqa: BLE001 - a result lost since: each job finds out
            values = [_ONE_BY_ONE] * len(ws)
        for w, v in zip(ws, values):
            if not w.done():
                w.set_result(v)

    def _record(self, t0):
        us = (self._loop.time() - t0) * 1e6
        self._latency[min(63, int(us).bit_length())] += 1
        self._latency_sum += us

    def _finished(self, key, fut):
        entry = self._pending.pop(key, None)
        if fut.cancelled():
            self._counts["cancelled"] += 1
            if entry is not None:
                _, df, waiter = entry
                waiter.cancel()
                if self._client.status != "closed":
                    self._cancel_remote(key, df)
        elif fut.exception() is not None:
            self._counts["failed"] += 1
        else:
            self._counts["completed"] += 1
        if self._room_waiters:
            self._wake_room()

    def _cancel_remote(self, key, df):
        if not df.done():
            r = self._client.cancel([df])
            if inspect.isawaitable(r):
                self._spawn_background(r)
        # One cancel message per loop iteration to all workers, for every job
        # cancelled in it (leaving a map early cancels a whole window at once).
        if not self._to_cancel:
            self._loop.call_soon(self._flush_cancels)
        self._to_cancel.append(key)

    def _flush_cancels(self):
        keys, self._to_cancel = self._to_cancel, []
        if keys and self._client.status == "running":
            self._spawn_background(self._client.run(_cancel_jobs, keys, on_error="ignore"))

    def _spawn_background(self, aw):
        t = asyncio.ensure_future(aw)
        self._background.add(t)

        def done(t):
            self._background.discard(t)
            if not t.cancelled():
                t.exception()  # a message lost with a worker is no one's error
        t.add_done_callback(done)

    def _wake_room(self):
        self._room_waiters.wake()

    def _is_closed(self):
        return self._closed

    def _closed_error(self):
        return RuntimeError("the pool is closed")

    async def _wait_room_and_submit(self, job):
        loop = asyncio.get_running_loop()
        if not self._ready:
            await self.start()
        await self._room_waiters.wait(loop, self._full, self._is_closed, self._closed_error)
        if self._closed:
            raise self._closed_error()
        return await self._submit(job)

    def _check_loop(self):
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this DaskPool is bound to another event loop")

    def run(self, fn, /, *args, interrupt=False, **kwargs):
        """Runs ``fn(*args, **kwargs)`` on a Dask worker; returns a coroutine of its
        result. The call is pickled now (cloudpickle, as Dask does), so what cannot
        travel raises ``TypeError`` here. ``interrupt`` is accepted for ``Pool``'s
        signature: cancelling reaches an ``async def`` job at its next ``await``; a
        plain function running in a Dask thread finishes and its result is dropped.
        """
        job = self._encode(fn, args, kwargs)
        return self._run(job)

    async def _run(self, job):
        self._check_loop()
        if not self._ready or self._full():
            return await self._wait_room_and_submit(job)
        if self._closed:
            raise self._closed_error()
        return await self._submit(job)

    def submit(self, fn, /, *args, interrupt=False, **kwargs):
        """Like ``run`` but submits now and returns an ``asyncio.Future`` (a task);
        with ``max_pending`` reached it returns a coroutine that waits for room, then
        submits (as ``Pool.submit``)."""
        job = self._encode(fn, args, kwargs)
        self._check_loop()
        if not self._ready:
            return asyncio.ensure_future(self._wait_room_and_submit(job))
        if self._full():
            return self._wait_room_and_submit(job)
        return self._submit(job)

    async def map(self, fn, iterable, *, ordered=True, window=None):
        """Yields ``fn(item)`` for each item, in order or as they complete.

        At most ``window`` jobs are in flight (default 256); leaving the loop early
        cancels the rest.
        """
        window = window or 256
        it = iter(iterable)
        inflight = collections.deque() if ordered else set()
        try:
            if ordered:
                for item in it:
                    inflight.append(asyncio.ensure_future(self.submit(fn, item)))
                    if len(inflight) >= window:
                        yield await inflight.popleft()
                while inflight:
                    yield await inflight.popleft()
                return
            exhausted = False
            while True:
                while not exhausted and len(inflight) < window:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    inflight.add(asyncio.ensure_future(self.submit(fn, item)))
                if not inflight:
                    break
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    inflight.discard(f)
                    yield f.result()
        finally:
            for f in inflight:
                if not f.done():
                    f.cancel()

    # -- shutdown ----------------------------------------------------------------------
    async def close(self, *, cancel=False, timeout=None):
        """Waits for submitted work (or cancels it with ``cancel=True``; with
        ``timeout``, what is unfinished when it expires is cancelled), then closes the
        client if the pool made it. Returns a list of what did not stop: always empty
        here (Dask's workers are not the pool's to stop), as ``Pool.close`` returns."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close(cancel, timeout))
        return await asyncio.shield(self._close_task)

    async def _close(self, cancel, timeout):
        self._closed = True
        self._room_waiters.wake_all()
        if self._start_task is not None and not self._start_task.done():
            try:
                await self._start_task
            except BaseException:  # noqa: BLE001 - start() reports it
                pass
        tasks = [f for f, _, _ in self._pending.values()]
        if tasks and not cancel:
            await asyncio.wait(tasks, timeout=timeout)
        for t in tasks:
            if not t.done():
                t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._to_cancel:
            self._flush_cancels()
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        await self._close_client()
        return []

    async def _close_client(self):
        if self._own_client and self._client is not None and self._client.status != "closed":
            await self._client.close()

    # -- introspection -------------------------------------------------------------------
    def stats(self):
        """``workers`` (Dask workers the client knows of), ``submitted``,
        ``completed``, ``failed``, ``cancelled``, ``pending`` and a ``latency``
        summary in microseconds (submit to result in the caller, log2 buckets), as
        ``Pool.stats()``; Dask's own view is on its dashboard."""
        d = dict(self._counts)
        d["workers"] = self.workers
        d["pending"] = len(self._pending)
        d["latency"] = _summary(self._latency, self._latency_sum)
        return d

    @property
    def workers(self):
        c = self._client
        if c is None:
            return 0
        info = c.scheduler_info() or {}
        return info.get("n_workers", len(info.get("workers", ())))

    @property
    def client(self):
        """The ``distributed.Client`` in use (None before ``start()``)."""
        return self._client


def _summary(buckets, total_us):
    count = sum(buckets)

    def pct(q):
        if not count:
            return 0.0
        seen = 0
        for b, n in enumerate(buckets):
            seen += n
            if seen >= q * count:
                return float(1 << b)  # the bucket's upper bound
        return float(1 << 63)
    return {"count": count, "mean_us": total_us / count if count else 0.0,
            "p50_us": pct(0.5), "p90_us": pct(0.9), "p99_us": pct(0.99),
            "max_us": pct(1.0)}
