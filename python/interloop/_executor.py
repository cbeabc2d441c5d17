"""``InterpreterExecutor``: interloop's workers behind ``concurrent.futures``.

The same workers and wire format as ``Pool``; results are resolved by one thread
that sleeps on the pool's completion fd instead of by an event loop.
"""
import asyncio
import concurrent.futures
import functools
import os
import threading

from . import _wire
from ._pool import check_version, start_workers, workers_stopped

__all__ = ["InterpreterExecutor"]


def _settle(f, value=None, exc=None):
    """Resolves ``f`` unless it was cancelled meanwhile (from another thread)."""
    try:
        if exc is None:
            f.set_result(value)
        else:
            f.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        pass


class InterpreterExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` on interloop's sub-interpreter workers,
    e.g. for ``loop.run_in_executor``. Results are resolved by one thread that
    sleeps on the completion fd (no polling)."""

    def __init__(self, workers=None, *, preload=(), concurrency=1):
        check_version()
        self._nworkers = int(workers or os.cpu_count() or 1)
        self._core = start_workers(self._nworkers, preload, concurrency)
        self._lock = threading.Lock()
        self._pending = {}
        self._shutdown = False
        self._exited = set()
        self._thread = threading.Thread(target=self._drain_loop, name="interloop-executor", daemon=True)
        self._thread.start()

    def submit(self, fn, /, *args, **kwargs):
        payload = _wire.dumps_job(fn, args, kwargs)
        sid = _wire.payload_stash(payload)
        f = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                _wire.discard_stash(sid)
                raise RuntimeError("cannot schedule new futures after shutdown")
            job = self._core.submit(payload, False)
            self._pending[job] = f
        f.add_done_callback(functools.partial(self._on_done, job, sid))
        return f

    def _on_done(self, job, sid, f):
        if f.cancelled():
            with self._lock:
                known = self._pending.pop(job, None) is not None
            if known and not self._core.cancel(job, False):
                _wire.discard_stash(sid)  # removed while queued

    def _drain_loop(self):
        core = self._core
        while True:
            core.wait(-1.0)
            for job, kind, data in core.drain():
                self._on_completion(job, kind, data)
            if self._shutdown and len(self._exited) >= self._nworkers:
                return

    def _on_completion(self, job, kind, data):
        """Resolves one completion (``_wire.classify``'s decision, as ``Pool`` does)."""
        action = _wire.classify(kind, data)
        if action is _wire.CONTROL:
            if kind == _wire.WORKER_EXITED:
                self._exited.add(job)
            return
        with self._lock:
            f = self._pending.pop(job, None)
        if action is _wire.TAKE_FILLED:
            value = self._core.take_filled(job)
            if f is not None:
                _settle(f, value)
        elif f is None or f.done():
            _wire.discard_result(kind, data)
        elif action is _wire.START_FILL:
            try:
                self._core.fill(job, *_wire.fill_args(data))
            except BaseException as e:  # noqa: BLE001
                _settle(f, exc=e)
            else:
                with self._lock:
                    self._pending[job] = f  # until its COMPLETION_FILLED
        else:
            try:
                value = _wire.decode(kind, data)
            except asyncio.CancelledError:
                f.cancel()
            except BaseException as e:  # noqa: BLE001 - the job's error, or unpickling failed
                _settle(f, exc=e)
            else:
                _settle(f, value)

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            already = self._shutdown
            self._shutdown = True
            pending = list(self._pending.values())
        if already and not wait:
            return
        if cancel_futures:
            for f in pending:
                f.cancel()

        def finish():
            concurrent.futures.wait(pending)
            self._core.shutdown()
            workers_stopped(self._core, self._core.join(30.0))
        if wait:
            finish()
            self._thread.join(5)
        else:
            threading.Thread(target=finish, daemon=True).start()
