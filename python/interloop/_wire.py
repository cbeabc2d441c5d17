"""The wire format between the caller and pool workers, and the completion decision.

The same file runs on both sides: in the caller it is ``interloop._wire``, imported by
``_pool``, ``_executor`` and ``_channel``; in each worker the worker thread executes
it as ``interloop._wire`` before the driver (``_worker.py``), without importing the
``interloop`` package (that would import asyncio, most of a worker's start-up). So
this module imports nothing of interloop's by the package: the native module (the
PyO3 extension in the caller, the raw-FFI worker module in a worker, both
registered as ``interloop._interloop``) is taken from ``sys.modules``.

A job travels as bytes (``encode_call``), a result or an error comes back as a
``(kind, bytes)`` completion (``encode_result``, ``encode_error``), and ``decode``
turns it back into a value or an exception. Large buffers do not travel in the
bytes: they wait in a stash (``src/buffer``) under an id that travels instead.
"""
import marshal
import pickle
import sys

_native = sys.modules.get("interloop._interloop")
if _native is None:  # pragma: no cover - the package imports the native module first
    from . import _interloop as _native

IN_WORKER = bool(getattr(_native, "_IS_WORKER", False))

# The protocol's numbers are defined once, in Rust (src/wire.rs), and exported by
# the native module. Completion kinds (`native.complete(job, kind, data)`,
# `PoolCore.drain`); COMPLETION_FILLED: a PAYLOAD_FILL result was copied into a
# caller's object.
COMPLETION_OK = _native.COMPLETION_OK
COMPLETION_ERR = _native.COMPLETION_ERR
COMPLETION_REMOTE_ERR = _native.COMPLETION_REMOTE_ERR
COMPLETION_CANCELLED = _native.COMPLETION_CANCELLED
COMPLETION_LOST = _native.COMPLETION_LOST
COMPLETION_FILLED = _native.COMPLETION_FILLED
# Control messages (their job field is a worker's index); every one is at least
# WORKER_READY, every completion kind below it.
WORKER_READY = _native.WORKER_READY
WORKER_FAILED = _native.WORKER_FAILED
WORKER_EXITED = _native.WORKER_EXITED
JOB_FLAG_INTERRUPT = _native.JOB_FLAG_INTERRUPT  # `native.spawn(payload, flags)`: cancelling interrupts
# First byte of data whose buffers wait in the stash: a pickle with out-of-band
# buffers (STASHED), or a large bytes/bytearray result (FILL). A pickle starts with
# 0x80 and no marshal stream starts with either.
PAYLOAD_STASHED = _native.PAYLOAD_STASHED
PAYLOAD_FILL = _native.PAYLOAD_FILL
ZERO_COPY_MIN = _native.ZERO_COPY_MIN  # buffers this large travel by reference

_marshal_dumps = marshal.dumps
_marshal_loads = marshal.loads
_chan_functions = None
_caller_main = (None, None)  # in a worker: (module name, path) of the caller's __main__


def channel_functions():
    """The native channel and stash functions of this interpreter (``src/channel``)."""
    global _chan_functions
    if _chan_functions is None:
        _chan_functions = _native.channel_module() if IN_WORKER else _native._chan
    return _chan_functions


def set_caller_main(name, path):
    """In a worker: where the caller's ``__main__`` comes from, for pickles that
    refer to it (loaded on first need as ``__mp_main__``)."""
    global _caller_main
    _caller_main = (name, path)


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


# --- calls ----------------------------------------------------------------------

def _main_available():
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None)) or bool(
        getattr(getattr(main, "__spec__", None), "name", None))


fn_cache = {}  # fn -> (length-prefixed pickled fn, label); pickled once per process

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
    band (see ``dumps_value``), a PAYLOAD_STASHED byte, the 8-byte stash id and the
    pickle. The worker module splits the payload (``src/interp/module.rs``
    ``w_take``). A payload with stashed buffers is a ``Stashed`` (a ``bytes``
    carrying ``.sid``): whoever drops the job before a worker takes it gives them
    back (``discard_stash``).
    """
    return encode_call(fn, args, kwargs)[0]


def encode_call(fn, args, kwargs):
    """``(payload, label)`` of a call (one cache lookup for both)."""
    try:
        fnb, label = fn_cache[fn]
    except (KeyError, TypeError):
        fnb, label = _pickle_fn(fn, args, kwargs)
    if not kwargs:
        if not args:
            return fnb, label
        if len(args) <= 4:
            for a in args:
                t = type(a)
                if t not in _MARSHAL_TYPES or (t is bytes and len(a) >= ZERO_COPY_MIN):
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
        payload = Stashed(fnb + bytes((PAYLOAD_STASHED,)) + sid.to_bytes(8, "little") + rest)
        payload.sid = sid
        return payload, label
    return fnb + rest, label


def _pickle_fn(fn, args, kwargs):
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    if not IN_WORKER and getattr(fn, "__module__", None) == "__main__" and not _main_available():
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
        if len(fn_cache) > 4096:
            fn_cache.clear()
        fn_cache[fn] = entry
    except TypeError:  # unhashable callable
        pass
    return entry


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
        if argsb[0] == PAYLOAD_STASHED:  # a pickle whose buffers wait in the stash
            args, kwargs = _load_stashed(argsb)
            return fn, args, kwargs
        return fn, _marshal_loads(argsb), {}  # marshalled positional arguments
    args, kwargs = loads(argsb)
    return fn, args, kwargs


# --- large buffers (zero-copy through src/buffer) -------------------------------------
# A buffer of at least ZERO_COPY_MIN bytes found while pickling (a PickleBuffer: the
# out-of-band buffers of NumPy arrays and the like) is not copied into the pickle:
# Rust keeps a reference to the sender's memory (a "region") in a stash, and the
# receiver rebuilds the object over a read-only memoryview of that same memory.
# Top-level large bytes/bytearray arguments and results are sent the same way and
# rebuilt as bytes/bytearray (one copy, in the receiver: they are values); a
# memoryview or PickleBuffer argument or result arrives as a read-only memoryview.
# A large bytes or bytearray *result* is a PAYLOAD_FILL byte, the 8-byte stash id of
# its buffer, and 1 if it is a bytearray: the caller's pool copies it into a new
# object off its loop thread (`PoolCore.fill`); anyone else copies it at once (`loads`).

_BUFFER_TYPES = frozenset((bytes, bytearray, memoryview, pickle.PickleBuffer))


class Stashed(bytes):
    """A job payload whose buffers wait in the stash under ``.sid``."""


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
        return _Big(v) if len(v) >= ZERO_COPY_MIN else v
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
    return data, channel_functions().stash(bufs)


def pickle_oob(obj, forced=None):
    """``(pickle, buffers or None)``: ``obj`` pickled (protocol 5) with its
    ``PickleBuffer``s of at least ``ZERO_COPY_MIN`` bytes (and those in ``forced``)
    left out of band, to travel by reference (a channel message, the stash)."""
    bufs = None

    def out_of_band(pb):
        nonlocal bufs
        if not (forced and any(pb is f for f in forced)):
            with memoryview(pb) as m:
                if m.nbytes < ZERO_COPY_MIN:
                    return True  # small: in band
        if bufs is None:
            bufs = []
        bufs.append(pb)
        return False

    return pickle.dumps(obj, 5, buffer_callback=out_of_band), bufs


def payload_stash(payload):
    """The stash id of a job payload (0: none)."""
    return payload.sid if type(payload) is Stashed else 0


def discard_stash(sid):
    """Releases stashed buffers nobody will take (a dropped job or result)."""
    if sid:
        channel_functions().unstash(sid)


def _stash_id(data):
    return int.from_bytes(data[1:9], "little")


def _load_stashed(data):
    bufs = channel_functions().unstash(_stash_id(data))
    if bufs is None:
        raise RuntimeError("the buffers of this job or result were already released "
                           "(was it cancelled?)")
    return loads(data[9:], bufs)


def _load_filled(data):
    bufs = channel_functions().unstash(_stash_id(data))
    if bufs is None:
        raise RuntimeError("the buffer of this result was already released (was it cancelled?)")
    with bufs[0] as view:
        return bytearray(view) if data[9] else bytes(view)


# --- results --------------------------------------------------------------------

def encode_result(value):
    """A result's bytes: empty for None, marshal for plain values, else a pickle
    (``dumps_result``). Raises ``TypeError`` if the value cannot travel."""
    if value is None:  # empty data means None (a pickle is never empty)
        return b""
    t = type(value)
    if t in _MARSHAL_TYPES and not (t is bytes and len(value) >= ZERO_COPY_MIN):
        return _marshal_dumps(value)
    try:
        return dumps_result(value)
    except Exception as e:
        raise TypeError(f"the result ({type(value).__qualname__}) cannot be pickled: "
                        f"{type(e).__name__}: {e}") from e


def dumps_result(value):
    """A result's bytes: a pickle, or, with buffers in the stash, a PAYLOAD_STASHED
    byte, the 8-byte stash id, then the pickle; a large bytes or bytearray is a
    PAYLOAD_FILL (see above)."""
    t = type(value)
    if (t is bytes or t is bytearray) and len(value) >= ZERO_COPY_MIN:
        sid = channel_functions().stash([value])
        return (bytes((PAYLOAD_FILL,)) + sid.to_bytes(8, "little")
                + (b"\x01" if t is bytearray else b"\x00"))
    if t in _BUFFER_TYPES:
        forced = []
        data, sid = dumps_value(_wrap(value, forced), forced)
    else:
        data, sid = dumps_value(value)
    if sid:
        return bytes((PAYLOAD_STASHED,)) + sid.to_bytes(8, "little") + data
    return data


def encode_error(exc):
    """``(kind, bytes)`` for an exception raised by a job."""
    import traceback
    tb = "".join(traceback.format_exception(exc))
    try:
        data = pickle.dumps((exc, tb), 5)
        loads(data)  # pickles but cannot be rebuilt (e.g. custom __init__)? then RemoteError
        return COMPLETION_ERR, data
    except BaseException:
        t = type(exc)
        try:
            msg = str(exc)
        except BaseException:
            msg = "<str() failed>"
        return COMPLETION_REMOTE_ERR, pickle.dumps((f"{t.__module__}.{t.__qualname__}", msg, tb), 5)


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
    if not IN_WORKER:
        return "__main__"
    if "__mp_main__" in sys.modules:
        return "__mp_main__"
    # Load the caller's main script as __mp_main__, as multiprocessing's spawn does.
    import builtins
    import runpy
    import types
    global _loading_main
    name, path = _caller_main
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
    0x80, which no marshal stream does (see ``_MARSHAL_TYPES``); a PAYLOAD_STASHED
    or PAYLOAD_FILL byte starts data whose buffers wait in the stash."""
    if data[0] != 0x80:
        if data[0] == PAYLOAD_STASHED:
            return _load_stashed(data)
        if data[0] == PAYLOAD_FILL:
            return _load_filled(data)
        return _marshal_loads(data)
    if b"main__" not in data:
        return pickle.loads(data, buffers=buffers)
    import io
    return _Unpickler(io.BytesIO(data), buffers=buffers).load()


def decode(kind, data):
    """The job's result, or raises its exception (worker traceback as ``__cause__``)."""
    if kind == COMPLETION_OK:
        return loads(data) if data else None
    if kind == COMPLETION_ERR:
        exc, tb = loads(data)
        exc.__cause__ = RemoteTraceback(tb)
        raise exc
    if kind == COMPLETION_REMOTE_ERR:
        type_name, msg, tb = loads(data)
        exc = RemoteError(type_name, msg, tb)
        exc.__cause__ = RemoteTraceback(tb)
        raise exc
    if kind == COMPLETION_LOST:
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


# --- the completion decision ------------------------------------------------------
# What the code resolving job futures does with one completion (`classify`). The
# caller's two resolvers (`Pool`, `InterpreterExecutor`) follow it; `PoolCore.resolve`
# (src/bridge/core.rs) is its fast path for plain values (COMPLETION_OK data that does
# not start with PAYLOAD_STASHED or PAYLOAD_FILL) and hands every other completion here.

CONTROL = "control"    # a worker's life-cycle message: `job` is the worker's index
TAKE_FILLED = "taken"  # a copied large result: `core.take_filled(job)` gives it (and drops it)
START_FILL = "fill"    # a large bytes result: start its copy, `core.fill(job, *fill_args(data))`;
#                        the job stays pending until its COMPLETION_FILLED
DECODE = "decode"      # `decode(kind, data)`: a value, or the job's exception


def classify(kind, data):
    """One of CONTROL, TAKE_FILLED, START_FILL, DECODE for completion ``(kind, data)``.

    Whatever the action, a completion of a job whose future is gone or already done
    (cancelled by the caller) is not resolved: ``discard_result(kind, data)``
    releases its buffers (TAKE_FILLED aside: taking the copy drops it)."""
    if kind >= WORKER_READY:
        return CONTROL
    if kind == COMPLETION_FILLED:
        return TAKE_FILLED
    if kind == COMPLETION_OK and data and data[0] == PAYLOAD_FILL:
        return START_FILL
    return DECODE


def fill_args(data):
    """``(stash id, is a bytearray)`` of a PAYLOAD_FILL result."""
    return _stash_id(data), data[9] == 1


def discard_result(kind, data):
    """A completion nobody will read: releases its stashed buffers."""
    if kind == COMPLETION_OK and data and (data[0] == PAYLOAD_STASHED or data[0] == PAYLOAD_FILL):
        channel_functions().unstash(_stash_id(data))

