"""The pool worker's driver, and the wire format shared with the caller.

Inside a worker this file is executed by the worker thread (``src/interp/worker.rs``,
embedded at build time) as module ``interloop._worker`` in the worker's own-GIL
sub-interpreter; ``main(native, config)`` runs one persistent asyncio loop until the
pool shuts down. In the caller, ``interloop._pool`` imports the same file for the
wire format (``dumps_job``, ``decode``), so both sides agree by construction.

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
   job only when it would otherwise go idle. (A job that never lets its loop go idle,
   e.g. one polling with ``sleep(0)``, keeps its worker to itself, as a thread would.)
4. A job is started eagerly (a plain function runs to completion; a coroutine
   runs as an eager task until its first real suspension), and completes with
   exactly one ``native.complete(job, kind, bytes)``. Before asyncio is imported
   (most of a worker's start-up), plain-function jobs already run (step 1b).
"""
import marshal
import pickle
import sys
from collections import deque as _deque

_marshal_dumps = marshal.dumps
_marshal_loads = marshal.loads

OK, ERR, REMOTE_ERR, CANCELLED, LOST = 0, 1, 2, 3, 4
FILLED = 5  # a FILL result was copied into the caller's object (src/bridge/fill.rs)
WORKER_READY, WORKER_FAILED, WORKER_EXITED = 16, 17, 18
FLAG_INTERRUPT = 1

_IN_WORKER = False
_config = {}
_driver = None  # the running Driver (inside a worker only)


class RemoteError(Exception):
    """An exception raised in a pool worker that could not be sent back as itself.

    ``type_name`` is the original exception's qualified type name, ``message`` its
    text, and ``remote_traceback`` the worker's formatted traceback.
    """

    def __init__(self, type_name, message, remote_traceback=""):
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self):
        return f"{self.type_name}: {self.message}"


class RemoteTraceback(Exception):
    """Set as ``__cause__`` of exceptions from workers; its text is the worker's traceback."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return "\n\nTraceback in the pool worker:\n" + self.tb


# --- wire format --------------------------------------------------------------

def _main_available():
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None)) or bool(
        getattr(getattr(main, "__spec__", None), "name", None))


_fn_cache = {}  # fn -> (length-prefixed pickled fn, label); pickled once per process

# Values of exactly these types travel by marshal (2-3x cheaper than pickle both ways,
# and exact for them): positional arguments of a call without keywords, and results.
# Subclasses (bool aside, listed itself) still go by pickle, which keeps their type.
_MARSHAL_TYPES = frozenset((int, float, str, bytes, bool, type(None)))


def dumps_job(fn, args, kwargs):
    """Encodes a call; raises ``TypeError`` naming what cannot travel.

    Payload: 4-byte little-endian length of the pickled function, the pickled
    function (cached: pickling a function reference costs microseconds), then the
    arguments: nothing for a call without arguments, marshalled positional
    arguments, the pickled ``(args, kwargs)``, or, when large buffers travel out of
    band (see ``dumps_value``), a 0 byte, the 8-byte stash id and the pickle. The
    worker module splits the payload (``src/interp/module.rs`` ``w_take``). A payload
    with stashed buffers is a ``_Stashed`` (a ``bytes`` carrying ``.sid``): whoever
    drops the job before a worker takes it gives them back (``discard_stash``).
    """
    return encode_call(fn, args, kwargs)[0]


def encode_call(fn, args, kwargs):
    """``(payload, label)`` of a call (one cache lookup for both)."""
    try:
        fnb, label = _fn_cache[fn]
    except (KeyError, TypeError):
        fnb, label = _pickle_fn(fn, args, kwargs)
    if not kwargs:
        if not args:
            return fnb, label
        if len(args) <= 4:
            for a in args:
                t = type(a)
                if t not in _MARSHAL_TYPES or (t is bytes and len(a) >= _ZERO_COPY_MIN):
                    break
            else:
                return fnb + _marshal_dumps(args), label
    forced = None
    if not _BUFFER_TYPES.isdisjoint(map(type, args)) or (
            kwargs and not _BUFFER_TYPES.isdisjoint(map(type, kwargs.values()))):
        forced = []
        args = tuple([_wrap(a, forced) for a in args])
        kwargs = {k: _wrap(v, forced) for k, v in kwargs.items()}
    try:
        rest, sid = dumps_value((args, kwargs), forced)
    except Exception as e:
        raise _why_unpicklable(fn, args, kwargs, e) from e
    if sid:
        payload = _Stashed(fnb + b"\x00" + sid.to_bytes(8, "little") + rest)
        payload.sid = sid
        return payload, label
    return fnb + rest, label


# --- large buffers (zero-copy through src/buffer) -------------------------------------
# A buffer of at least _ZERO_COPY_MIN bytes found while pickling (a PickleBuffer: the
# out-of-band buffers of NumPy arrays and the like) is not copied into the pickle:
# Rust keeps a reference to the sender's memory (a "region") in a stash, and the
# receiver rebuilds the object over a read-only memoryview of that same memory.
# Top-level large bytes/bytearray arguments and results are sent the same way and
# rebuilt as bytes/bytearray (one copy, in the receiver: they are values); a
# memoryview or PickleBuffer argument or result arrives as a read-only memoryview.
# Stashed data starts with a 0 byte, which no pickle (0x80) or marshal stream starts with.

_ZERO_COPY_MIN = 64 * 1024
_STASHED = 0
# A result that is a large bytes or bytearray: a 1 byte, the 8-byte stash id of its
# buffer, and 1 if it is a bytearray. The caller's pool copies it into a new object
# off its loop thread (`PoolCore.fill`); anyone else copies it at once (`loads`).
_FILL = 1
_BUFFER_TYPES = frozenset((bytes, bytearray, memoryview, pickle.PickleBuffer))
_chan_module = None


class _Stashed(bytes):
    """A job payload whose buffers wait in the stash under ``.sid``."""


def _chan():
    global _chan_module
    if _chan_module is None:
        from interloop import _channel
        _chan_module = _channel._n
    return _chan_module


class _Big:
    """A large bytes/bytearray, pickled out of band and rebuilt as its own type."""

    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v

    def __reduce_ex__(self, protocol):
        return type(self.v), (pickle.PickleBuffer(self.v),)


def _wrap(v, forced):
    t = type(v)
    if t is bytes or t is bytearray:
        return _Big(v) if len(v) >= _ZERO_COPY_MIN else v
    if t is memoryview or t is pickle.PickleBuffer:
        pb = pickle.PickleBuffer(v)  # always out of band: it arrives as a memoryview
        forced.append(pb)
        return pb
    return v


def dumps_value(obj, forced=None):
    """``(pickle, stash id or 0)``: ``obj`` pickled (protocol 5) with its large
    buffers (and those in ``forced``) out of band, in the stash."""
    data, bufs = pickle_oob(obj, forced)
    if bufs is None:
        return data, 0
    return data, _chan().stash(bufs)


def pickle_oob(obj, forced=None):
    """``(pickle, buffers or None)``: ``obj`` pickled (protocol 5) with its
    ``PickleBuffer``s of at least ``_ZERO_COPY_MIN`` bytes (and those in ``forced``)
    left out of band, to travel by reference (a channel message, the stash)."""
    bufs = None

    def out_of_band(pb):
        nonlocal bufs
        if not (forced and any(pb is f for f in forced)):
            with memoryview(pb) as m:
                if m.nbytes < _ZERO_COPY_MIN:
                    return True  # small: in band
        if bufs is None:
            bufs = []
        bufs.append(pb)
        return False

    return pickle.dumps(obj, 5, buffer_callback=out_of_band), bufs


def payload_stash(payload):
    """The stash id of a job payload (0: none)."""
    return payload.sid if type(payload) is _Stashed else 0


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
    if isinstance(ready, _deque):
        return lambda: not ready
    return never_idle


def discard_stash(sid):
    """Releases stashed buffers nobody will take (a dropped job or result)."""
    if sid:
        _chan().unstash(sid)


def dumps_result(value):
    """A result's bytes: a pickle, or, with buffers in the stash, a 0 byte, the
    8-byte stash id, then the pickle; a large bytes or bytearray is ``_FILL``ed."""
    t = type(value)
    if (t is bytes or t is bytearray) and len(value) >= _ZERO_COPY_MIN:
        sid = _chan().stash([value])
        return b"\x01" + sid.to_bytes(8, "little") + (b"\x01" if t is bytearray else b"\x00")
    if t in _BUFFER_TYPES:
        forced = []
        data, sid = dumps_value(_wrap(value, forced), forced)
    else:
        data, sid = dumps_value(value)
    if sid:
        return b"\x00" + sid.to_bytes(8, "little") + data
    return data


def _load_stashed(data):
    bufs = _chan().unstash(int.from_bytes(data[1:9], "little"))
    if bufs is None:
        raise RuntimeError("the buffers of this job or result were already released "
                           "(was it cancelled?)")
    return loads(data[9:], bufs)


def _load_filled(data):
    bufs = _chan().unstash(int.from_bytes(data[1:9], "little"))
    if bufs is None:
        raise RuntimeError("the buffer of this result was already released (was it cancelled?)")
    with bufs[0] as view:
        return bytearray(view) if data[9] else bytes(view)


def fill_args(data):
    """``(stash id, is a bytearray)`` of a ``_FILL`` result, or None for any other."""
    if data and data[0] == _FILL:
        return int.from_bytes(data[1:9], "little"), data[9] == 1
    return None


def discard_result(kind, data):
    """A completion nobody will read: releases its stashed buffers."""
    if kind == OK and data and (data[0] == _STASHED or data[0] == _FILL):
        _chan().unstash(int.from_bytes(data[1:9], "little"))


def label_of(fn):
    try:
        return _fn_cache[fn][1]
    except (KeyError, TypeError):
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _pickle_fn(fn, args, kwargs):
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    if not _IN_WORKER and getattr(fn, "__module__", None) == "__main__" and not _main_available():
        raise TypeError(
            f"cannot send {getattr(fn, '__qualname__', fn)!r} to a pool worker: it is defined in "
            "an interactive __main__ that workers cannot import; put it in a module or a script file")
    try:
        fnb = pickle.dumps(fn, 5)
    except Exception as e:
        raise _why_unpicklable(fn, args, kwargs, e) from e
    fnb = len(fnb).to_bytes(4, "little") + fnb
    entry = (fnb, f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}")
    try:
        if len(_fn_cache) > 4096:
            _fn_cache.clear()
        _fn_cache[fn] = entry
    except TypeError:  # unhashable callable
        pass
    return entry


_fn_loaded = {}  # pickled fn -> fn, in the receiving interpreter


def loads_job(fnb, argsb):
    """``(fn, args, kwargs)`` from the two halves of ``dumps_job``'s bytes (split
    by the worker module's ``take``)."""
    fn = _fn_loaded.get(fnb)
    if fn is None:
        fn = loads(fnb)
        if len(_fn_loaded) > 4096:
            _fn_loaded.clear()
        _fn_loaded[fnb] = fn
    if not argsb:
        return fn, (), {}
    if argsb[0] != 0x80:
        if argsb[0] == _STASHED:  # a pickle whose buffers wait in the stash
            args, kwargs = _load_stashed(argsb)
            return fn, args, kwargs
        return fn, _marshal_loads(argsb), {}  # marshalled positional arguments
    args, kwargs = loads(argsb)
    return fn, args, kwargs


def _why_unpicklable(fn, args, kwargs, err):
    name = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        pickle.dumps(fn, 5)
    except Exception as e:
        if "<lambda>" in name:
            why = "it is a lambda"
        elif "<locals>" in name:
            why = "it is defined inside another function (a closure or local function)"
        else:
            why = f"{type(e).__name__}: {e}"
        return TypeError(
            f"cannot send {name!r} to a pool worker: {why}; functions travel by module "
            "and qualified name, so define it at the top level of a module")
    for i, a in enumerate(args):
        try:
            pickle.dumps(a, 5)
        except Exception as e:
            return TypeError(
                f"argument {i} of {name}() ({type(a).__qualname__}) cannot be pickled: "
                f"{type(e).__name__}: {e}")
    for k, v in kwargs.items():
        try:
            pickle.dumps(v, 5)
        except Exception as e:
            return TypeError(
                f"keyword argument {k!r} of {name}() ({type(v).__qualname__}) cannot be "
                f"pickled: {type(e).__name__}: {e}")
    return TypeError(f"the call {name}(...) cannot be pickled: {type(err).__name__}: {err}")


class UnguardedMainError(RuntimeError):
    """The caller's main script started a pool or a loop at its top level while a
    pool worker was loading it to find a function."""


_loading_main = None  # while _ensure_main runs the caller's script: its name or path


def check_not_loading_main(what):
    """Raises `UnguardedMainError` if this is a pool worker running the caller's main
    script (to find a function in it) and that script starts ``what`` at top level."""
    if _loading_main is not None:
        raise UnguardedMainError(
            f"{what} was started by the top level of {_loading_main}, which a pool "
            "worker runs as '__mp_main__' to find the functions sent to it, so the "
            "program would start again in every worker. Put the script's entry point "
            "under  if __name__ == \"__main__\":  (as multiprocessing's spawn requires).")


_REFUSED = "does not support loading in subinterpreters"


class _Refused:
    """A name the caller's script imported from a module this worker cannot load
    (see `_RefusedModule`): any use raises that module's ImportError."""

    def __init__(self, module, attr):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_attr", attr)

    def __repr__(self):
        return f"<unavailable in this pool worker: {self._module.__name__}.{self._attr}>"

    def __call__(self, *args, **kwargs):
        raise self._module._refused_error()

    def __getattr__(self, name):
        raise self._module._refused_error()


class _RefusedModule(type(sys)):
    """Stands, in a pool worker's ``__mp_main__``, for a module whose import failed
    only because an extension module refuses own-GIL sub-interpreters: jobs that do
    not use it run; touching it raises the import's ImportError with the reason."""

    def __init__(self, name, error):
        super().__init__(name)
        self._refused = str(error)

    def _refused_error(self):
        return ImportError(
            f"{self._refused} (interloop: pool workers are sub-interpreters with their "
            f"own GIL, where this extension cannot load. The script's top-level "
            f"import of '{self.__name__}' left this placeholder in the worker so that "
            "jobs which do not use it can run; run the work that needs it in the main "
            "interpreter or in a process pool.)", name=self.__name__)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if _loading_main is not None:
            # `from mod import name` at the script's top: a stand-in for the name.
            return _Refused(self, name)
        raise self._refused_error()


def _import_leaving_placeholders(real_import):
    """``__import__`` for the time the worker runs the caller's script: an import
    made by the script itself that fails because an extension refuses
    sub-interpreters gives a `_RefusedModule` instead of failing the whole script."""

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        try:
            return real_import(name, globals, locals, fromlist, level)
        except ImportError as e:
            if level or _REFUSED not in str(e) or (globals or {}).get("__name__") != "__mp_main__":
                raise
            return _RefusedModule(name if fromlist else name.partition(".")[0], e)

    return __import__


def _ensure_main():
    """Module name to use for pickles that reference ``__main__``."""
    if not _IN_WORKER:
        return "__main__"
    if "__mp_main__" in sys.modules:
        return "__mp_main__"
    # Load the caller's main script as __mp_main__, as multiprocessing's spawn does.
    import builtins
    import runpy
    import types
    global _loading_main
    name, path = _config.get("main_name"), _config.get("main_path")
    if not name and not path:
        raise ImportError("the caller's __main__ has no file the worker could load")
    real_import = builtins.__import__
    _loading_main = f"module {name}" if name else path
    builtins.__import__ = _import_leaving_placeholders(real_import)
    try:
        if name:
            content = runpy.run_module(name, run_name="__mp_main__", alter_sys=False)
        else:
            content = runpy.run_path(path, run_name="__mp_main__")
    except RuntimeError as e:
        # asyncio.run() at the script's top level meets the worker's running loop.
        if type(e) is RuntimeError and "cannot be called from a running event loop" in str(e):
            try:
                check_not_loading_main("asyncio.run()")
            except UnguardedMainError as guard:
                raise guard from None
        raise
    finally:
        builtins.__import__ = real_import
        _loading_main = None
    mod = types.ModuleType("__mp_main__")
    mod.__dict__.update(content)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = mod
    return "__mp_main__"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "__main__" or module == "__mp_main__":
            module = _ensure_main()
        return super().find_class(module, name)


def loads(data, buffers=None):
    """Unpickles ``data``, or unmarshals it: our pickles (protocol 5) start with
    0x80, which no marshal stream does (see ``_MARSHAL_TYPES``); a 0 byte starts
    data whose buffers wait in the stash (``dumps_result``)."""
    if data[0] != 0x80:
        if data[0] == _STASHED:
            return _load_stashed(data)
        if data[0] == _FILL:
            return _load_filled(data)
        return _marshal_loads(data)
    if b"main__" not in data:
        return pickle.loads(data, buffers=buffers)
    import io
    return _Unpickler(io.BytesIO(data), buffers=buffers).load()


def encode_error(exc):
    """``(kind, bytes)`` for an exception raised by a job."""
    import traceback
    tb = "".join(traceback.format_exception(exc))
    try:
        data = pickle.dumps((exc, tb), 5)
        loads(data)  # pickles but cannot be rebuilt (e.g. custom __init__)? then RemoteError
        return ERR, data
    except BaseException:
        t = type(exc)
        try:
            msg = str(exc)
        except BaseException:
            msg = "<str() failed>"
        return REMOTE_ERR, pickle.dumps((f"{t.__module__}.{t.__qualname__}", msg, tb), 5)


def decode(kind, data):
    """The job's result, or raises its exception (worker traceback as ``__cause__``)."""
    if kind == OK:
        return loads(data) if data else None
    if kind == ERR:
        exc, tb = loads(data)
        exc.__cause__ = RemoteTraceback(tb)
        raise exc
    if kind == REMOTE_ERR:
        type_name, msg, tb = loads(data)
        exc = RemoteError(type_name, msg, tb)
        exc.__cause__ = RemoteTraceback(tb)
        raise exc
    if kind == LOST:
        raise RuntimeError(bytes(data).decode("utf-8", "replace"))
    import asyncio
    raise asyncio.CancelledError()


def resolve(fut, kind, data):
    """Resolves an asyncio future from a completion, exactly once."""
    if fut.done():
        discard_result(kind, data)
        return
    try:
        fut.set_result(decode(kind, data))
    except BaseException as e:  # noqa: BLE001 - every outcome goes to the future
        import asyncio
        if isinstance(e, asyncio.CancelledError):
            fut.cancel()
        else:
            fut.set_exception(e)


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


def main(native, config):
    global _IN_WORKER, _config, _driver
    import marshal
    _IN_WORKER = True
    _config = cfg = marshal.loads(config)
    sys.path[:] = cfg["path"]
    if cfg.get("argv") is not None:
        sys.argv[:] = cfg["argv"]
    _install_module_getattr(native)
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
            native.complete(job, CANCELLED, b"")
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
    if value is None:  # empty data means None (a pickle is never empty)
        native.complete(job, OK, b"")
        return
    t = type(value)
    if t in _MARSHAL_TYPES and not (t is bytes and len(value) >= _ZERO_COPY_MIN):
        native.complete(job, OK, _marshal_dumps(value))
        return
    try:
        data = dumps_result(value)
    except Exception as e:  # noqa: BLE001
        _complete_error(native, job, TypeError(
            f"the result ({type(value).__qualname__}) cannot be pickled: {type(e).__name__}: {e}"))
        return
    native.complete(job, OK, data)


def _complete_error(native, job, exc):
    import asyncio
    if isinstance(exc, asyncio.CancelledError):
        native.complete(job, CANCELLED, b"")
        return
    kind, data = encode_error(exc)
    native.complete(job, kind, data)


def _forget_dummy_thread():
    # Trap 4: on 3.13 the _DummyThread of this (non-Python-created) thread is dropped
    # during interpreter teardown, too late ("Exception ignored in
    # _DeleteDummyThreadOnDel"). Drop it now, while threading is intact.
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
            self.native.complete(job, OK, b"")
            return
        _complete_value(self.native, job, value)

    def fail(self, job, exc):
        if self.local and job in self.local:
            self.local.discard(job)
            fut = self.children.pop(job, None)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            self.native.complete(job, ERR, b"")
            return
        kind, data = encode_error(exc)
        self.native.complete(job, kind, data)

    def cancelled(self, job):
        if self.local and job in self.local:
            self.local.discard(job)
            fut = self.children.pop(job, None)
            if fut is not None:
                fut.cancel()
        self.native.complete(job, CANCELLED, b"")

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
        child = self.native.spawn(payload, FLAG_INTERRUPT if interrupt else 0)
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
