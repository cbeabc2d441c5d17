"""The pool worker's driver: one persistent asyncio loop per worker.

Inside a worker the worker thread (``src/interp/worker.rs``) executes this file,
embedded at build time, as module ``interloop._worker`` in the worker's own-GIL
sub-interpreter, right after ``_wire.py`` (the wire format, shared with the caller);
``main(native, config)`` runs until the pool shuts down. The caller imports this
module only for ``interloop.spawn`` inside a worker (``driver()``).

Worker protocol (the native half is ``interloop._interloop`` *in the worker*, a
raw-FFI module; see ``src/interp/module.rs``):

1. ``main`` copies the caller's ``sys.path``/``sys.argv``, imports ``preload``,
   reports ``ready`` (with the preload error, if any), (1b) runs plain-function
   jobs while there are some, then imports asyncio and makes the worker's loop.
2. The loop watches ``native.wake_fd()``. Idle, it blocks in epoll on that fd: that
   is how a worker parks (no polling). A wake-up means new work, cancel requests,
   results of nested spawns, or shutdown (``native.poll()``).
3. ``pump`` takes jobs while the worker has capacity: fewer than ``concurrency``
   running jobs (jobs waiting for their own nested spawns do not count) *and* the
   loop has nothing else ready to run. So a busy worker never hoards: it takes a new
   job only when it would otherwise go idle (docs/design.md, trap 6). (A job that never lets its loop go idle,
   e.g. one polling with ``sleep(0)``, keeps its worker to itself, as a thread would.)
4. A job is started eagerly (a plain function runs to completion; a coroutine
   runs as an eager task until its first real suspension), and completes with
   exactly one ``native.complete(job, kind, bytes)``. Before asyncio is imported
   (most of a worker's start-up), plain-function jobs already run (step 1b).
"""
import sys

# In a worker, `_wire` was executed just before this module; importing it through
# the package would import the whole of interloop (and asyncio) at start-up.
_wire = sys.modules.get("interloop._wire")
if _wire is None:  # in the caller, as part of the package
    from . import _wire

from ._wire import (  # noqa: E402
    COMPLETION_CANCELLED,
    COMPLETION_ERR,
    COMPLETION_OK,
    JOB_FLAG_INTERRUPT,
    discard_result,
    discard_stash,
    dumps_job,
    encode_error,
    encode_result,
    loads_job,
    payload_stash,
    resolve,
)

_driver = None  # the running Driver (inside a worker only)


def driver():
    """The running worker's ``Driver``, or None (not in a worker, or shutting down)."""
    return _driver


# --- the worker ----------------------------------------------------------------

def _stub(name):
    def _unavailable(*a, **k):
        raise RuntimeError(f"interloop.{name} is not available inside a pool worker")
    return type(name, (), {"__init__": _unavailable, "__call__": _unavailable})


def _install_module_getattr(native):
    # The caller's interloop/__init__.py imports names from the native PyO3 module,
    # which cannot load here; the worker module stands in, with stubs for the rest.
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(name)
    native.__getattr__ = __getattr__


def _guard_current_frames(native):
    """CPython's ``sys._current_frames`` (3.12, 3.13) builds frame objects for the
    threads of every interpreter, the caller's and the other workers' included,
    without their GILs, which corrupts memory; in a worker it is replaced for good by
    the native walk of this interpreter's threads only (docs/design-pool.md)."""
    try:
        native.current_frames()  # the thread-state layout is the expected one
    except RuntimeError:
        return
    sys._current_frames = native.current_frames


def main(native, config):
    global _driver
    import marshal
    cfg = marshal.loads(config)
    _wire.set_caller_main(cfg.get("main_name"), cfg.get("main_path"))
    sys.path[:] = cfg["path"]  # the caller's, not the default (docs/design.md, trap 5)
    if cfg.get("argv") is not None:
        sys.argv[:] = cfg["argv"]
    _install_module_getattr(native)
    _guard_current_frames(native)
    err = None
    for name in cfg.get("preload", ()):
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - reported to the caller
            import traceback
            err = f"preload of {name!r} failed in worker {native.index()}:\n{traceback.format_exc()}"
            break
    # Plain-function jobs need no event loop: serve them while asyncio is not
    # imported yet (that import is most of a worker's start-up).
    native.set_interrupt_handler(_early_interrupt)
    early = _run_plain_jobs_early(native)
    import asyncio
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    d = _driver = Driver(native, loop, cfg)
    native.ready(err)
    try:
        loop.add_reader(native.wake_fd(), d.on_wake)
        native.set_interrupt_handler(d.on_interrupt)
        if early is not None:
            d.pending_launch = early[0]
            loop.call_soon(d.launch_early, *early)
        d.pump_soon()
        loop.run_until_complete(d.stopped)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        _driver = None
        loop.remove_reader(native.wake_fd())
        loop.close()
        asyncio.set_event_loop(None)
        _forget_dummy_thread()


class _EarlyInterrupt(BaseException):
    """Interrupts a plain-function job run before asyncio is imported."""


_early_job = None
_early_doomed = set()  # interrupted before their early start (handed to the Driver)


def _early_interrupt(job):
    if job == _early_job:
        return _EarlyInterrupt()
    _early_doomed.add(job)
    return None


def _run_plain_jobs_early(native):
    """Runs plain-function jobs before the worker's loop exists. Stops at the first
    coroutine job (returned as ``(job, coroutine)``, to start once the loop runs) or
    when no job is queued (the worker is then registered for a wake-up)."""
    global _early_job
    while True:
        job = native.take()
        if job is None:
            return None
        job, fnb, argsb, _flags, _local = job
        try:
            _early_job = job
            if job in _early_doomed:
                _early_doomed.discard(job)
                raise _EarlyInterrupt()
            fn, args, kwargs = loads_job(fnb, argsb)
            r = fn(*args, **kwargs)
        except _EarlyInterrupt:
            _early_job = None
            native.complete(job, COMPLETION_CANCELLED, b"")
            continue
        except BaseException as e:  # noqa: BLE001
            _early_job = None
            _complete_error(native, job, e)
            continue
        _early_job = None
        if type(r) is _CoroutineType or (hasattr(r, "send") and hasattr(r, "throw")):
            return job, r
        _complete_value(native, job, r)


def _complete_value(native, job, value):
    try:
        data = encode_result(value)
    except TypeError as e:
        _complete_error(native, job, e)
        return
    native.complete(job, COMPLETION_OK, data)


def _complete_error(native, job, exc):
    import asyncio
    if isinstance(exc, asyncio.CancelledError):
        native.complete(job, COMPLETION_CANCELLED, b"")
        return
    kind, data = encode_error(exc)
    native.complete(job, kind, data)


def _forget_dummy_thread():
    # On 3.13 the _DummyThread of this (non-Python-created) thread is dropped during
    # interpreter teardown, too late ("Exception ignored in _DeleteDummyThreadOnDel";
    # docs/design.md, trap 4). Drop it now, while threading is intact.
    threading = sys.modules.get("threading")
    if threading is None:
        return
    info = getattr(threading, "_thread_local_info", None)
    if info is not None and hasattr(info, "_track_dummy_thread_ref"):
        try:
            del info._track_dummy_thread_ref
        except BaseException:  # noqa: BLE001
            pass
    threading._active.pop(threading.get_ident(), None)


async def _coro_type_probe():
    pass


_probe = _coro_type_probe()
_CoroutineType = type(_probe)
_probe.close()
del _probe


class _Escaped(Exception):
    """Carries SystemExit/KeyboardInterrupt out of a job's task: asyncio re-raises
    those out of the loop, which would stop the worker."""

    def __init__(self, exc):
        super().__init__()
        self.exc = exc


async def _guarded(coro):
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as e:
        raise _Escaped(e) from None


class Driver:
    def __init__(self, native, loop, cfg):
        import asyncio
        import contextvars
        self.asyncio = asyncio
        self.contextvars = contextvars
        self.native = native
        self.loop = loop
        self.concurrency = max(1, int(cfg.get("concurrency") or 1))
        self.spin_us = max(0, int(cfg.get("spin_us") or 0))
        self.tasks = {}        # job id -> Task, started and not finished
        self.coros = {}        # job id -> the coroutine its Task runs (set before eager start)
        self.blocked = {}      # job id -> how many nested results it is awaiting
        self.nblocked = 0      # jobs with a non-zero count in `blocked`
        self.sync_job = None   # job whose plain function (or eager first step) runs now
        self.doomed = set(_early_doomed)  # jobs interrupted after `take`, before they started
        _early_doomed.clear()
        self.pending_launch = None  # coroutine job taken before the loop existed
        self.local = set()     # running jobs that this worker spawned itself
        self.children = {}     # nested job id -> Future in this loop
        self.stopped = loop.create_future()
        self.closing = False
        self.pump_scheduled = False
        self.ready = loop._ready  # asyncio's ready queue: "would the loop go idle?"
        self.job_var = contextvars.ContextVar("interloop_job", default=None)

    # -- wake-ups --
    def on_wake(self):
        self.drain_inbox()
        self.pump()

    def drain_inbox(self):
        shutdown, cancels, done = self.native.poll()
        for job, _interrupt in cancels:
            t = self.tasks.get(job)
            if t is not None:
                t.cancel()
            elif job == self.pending_launch:
                self.doomed.add(job)
        for job, kind, data in done:
            fut = self.children.pop(job, None)
            if fut is not None:
                resolve(fut, kind, data)
            else:
                discard_result(kind, data)
        if shutdown and not self.closing:
            self.shutdown()

    def on_interrupt(self, job):
        """Pending-call handler: the exception to raise in the running code, if it is ``job``.

        The exception is raised only where it can unwind into the job: inside its
        plain function (``start``'s try block) or while its coroutine is executing.
        A task is also "current" while asyncio's C code runs around its coroutine
        (scheduling done callbacks after it returned, in debug mode through Python
        frames); raising there would abort that machinery and strand the task. A
        suspended job is cancelled through the inbox instead (``drain_inbox``)."""
        if self.sync_job == job:
            return self.asyncio.CancelledError()
        coro = self.coros.get(job)
        if coro is None:
            # Taken but not started yet (the pending call fired between `take` and
            # the call): `start`/`launch` will see it. (Or already finished: harmless.)
            self.doomed.add(job)
        elif coro.cr_running:
            return self.asyncio.CancelledError()
        return None

    # -- scheduling --
    def pump_soon(self):
        if not self.pump_scheduled:
            self.pump_scheduled = True
            self.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self):
        self.pump_scheduled = False
        self.pump()

    def pump(self):
        native = self.native
        while not self.closing:
            if len(self.tasks) - self.nblocked >= self.concurrency:
                native.busy()
                return
            if self.ready and self.tasks:
                # Other work is ready here: a job taken now would wait (hoarded) while
                # an idle worker could start it. Look again next loop iteration.
                native.busy()
                self.pump_soon()
                return
            # With no job of its own left, a worker that just ran one spins briefly
            # for the next (round trips and bursts skip the park and wake-up).
            job = native.take(0 if self.tasks or self.ready else self.spin_us)
            if job is None:
                return  # registered: the next submission writes our wake fd
            self.start(*job)

    def start(self, job, fnb, argsb, flags, local):
        if local:
            self.local.add(job)
        try:
            fn, args, kwargs = loads_job(fnb, argsb)
        except BaseException as e:  # noqa: BLE001
            self.fail(job, e)
            return
        try:
            self.sync_job = job
            if self.doomed and job in self.doomed:
                self.doomed.discard(job)
                raise self.asyncio.CancelledError()
            r = fn(*args, **kwargs)
            is_coro = type(r) is _CoroutineType or (r is not None and self.asyncio.iscoroutine(r))
            # From here an interrupt finds no running code for `job`: it is marked
            # doomed, and `launch` closes the coroutine instead of starting it.
            self.sync_job = None
        except BaseException as e:  # noqa: BLE001
            self.sync_job = None
            if isinstance(e, self.asyncio.CancelledError):
                self.cancelled(job)
            else:
                self.fail(job, e)
            return
        if is_coro:
            self.launch(job, r)
        else:
            self.succeed(job, r)

    def launch_early(self, job, coro):
        """Starts the coroutine job taken before the loop existed, unless it was
        cancelled meanwhile (its interrupt, if any, found no handler then)."""
        self.drain_inbox()
        self.pending_launch = None
        if job in self.doomed or self.closing:
            self.doomed.discard(job)
            coro.close()
            self.cancelled(job)
            return
        self.launch(job, coro)

    def launch(self, job, coro):
        """Runs a job's coroutine as an eager task."""
        if self.doomed and job in self.doomed:
            self.doomed.discard(job)
            coro.close()
            self.cancelled(job)
            return
        guarded = _guarded(coro)
        self.coros[job] = guarded
        try:
            ctx = self.contextvars.copy_context()
            ctx.run(self.job_var.set, job)
            # The first step runs now; an interrupt lands in it while `guarded` runs.
            task = self.asyncio.Task(guarded, loop=self.loop, context=ctx, eager_start=True)
        except BaseException as e:  # noqa: BLE001
            self.coros.pop(job, None)
            guarded.close()
            if isinstance(e, self.asyncio.CancelledError):
                self.cancelled(job)
            else:
                self.fail(job, e)
            return
        if job in self.doomed:
            # Interrupted after the first step suspended (the handler found the
            # coroutine not running): cancel it the ordinary way.
            self.doomed.discard(job)
            task.cancel()
        if task.done():
            self.coros.pop(job, None)
            self.finish_task(job, task)
            return
        self.tasks[job] = task
        task.add_done_callback(lambda t, job=job: self.on_task_done(job, t))

    def on_task_done(self, job, task):
        self.tasks.pop(job, None)
        self.coros.pop(job, None)
        if self.blocked.pop(job, 0):
            self.nblocked -= 1
        self.finish_task(job, task)
        if self.closing:
            if not self.tasks and not self.stopped.done():
                self.stopped.set_result(None)
        else:
            self.pump_soon()

    def finish_task(self, job, task):
        if task.cancelled():
            self.cancelled(job)
            return
        e = task.exception()
        if e is not None:
            self.fail(job, e.exc if isinstance(e, _Escaped) else e)
        else:
            self.succeed(job, task.result())

    # Completions. A job spawned by this worker and run by this worker ("local")
    # resolves its future here directly, by reference: no pickling, no wake-up.
    def succeed(self, job, value):
        if self.local and job in self.local:
            self.local.discard(job)
            fut = self.children.pop(job, None)
            if fut is not None and not fut.done():
                fut.set_result(value)
            self.native.complete(job, COMPLETION_OK, b"")
            return
        _complete_value(self.native, job, value)

    def fail(self, job, exc):
        if self.local and job in self.local:
            self.local.discard(job)
            fut = self.children.pop(job, None)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            self.native.complete(job, COMPLETION_ERR, b"")
            return
        kind, data = encode_error(exc)
        self.native.complete(job, kind, data)

    def cancelled(self, job):
        if self.local and job in self.local:
            self.local.discard(job)
            fut = self.children.pop(job, None)
            if fut is not None:
                fut.cancel()
        self.native.complete(job, COMPLETION_CANCELLED, b"")

    def shutdown(self):
        self.closing = True
        for fut in self.children.values():
            fut.cancel()
        for t in list(self.tasks.values()):
            t.cancel()
        if not self.tasks and not self.stopped.done():
            self.stopped.set_result(None)

    # -- nested spawn (interloop.spawn inside a worker) --
    def spawn(self, fn, args, kwargs, interrupt=False):
        payload = dumps_job(fn, args, kwargs)
        child = self.native.spawn(payload, JOB_FLAG_INTERRUPT if interrupt else 0)
        fut = self.loop.create_future()
        self.children[child] = fut
        self.pump_soon()  # if this loop goes idle, it takes the child back itself
        return self._await_child(child, fut, interrupt, payload_stash(payload))

    async def _await_child(self, child, fut, interrupt, sid):
        parent = self.job_var.get()
        if parent is not None:
            n = self.blocked.get(parent, 0)
            self.blocked[parent] = n + 1
            if n == 0:
                self.nblocked += 1
            self.pump_soon()  # capacity was lent: take work while we wait
        try:
            return await fut
        except self.asyncio.CancelledError:
            if self.children.pop(child, None) is not None:
                if not self.native.cancel(child, interrupt):
                    discard_stash(sid)  # removed while queued: nobody takes its buffers
            raise
        finally:
            n = self.blocked.get(parent, 0) if parent is not None else 0
            if n:
                self.blocked[parent] = n - 1
                if n == 1:
                    self.nblocked -= 1
