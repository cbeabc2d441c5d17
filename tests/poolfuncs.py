"""Functions the pool tests send to workers (workers import this module by name)."""
import asyncio
import enum
import os
import sys
import threading
import time

import interloop

LOG = []  # per interpreter: what happened to jobs in this worker


def add(a, b):
    return a + b


async def aadd(a, b):
    await asyncio.sleep(0)
    return a + b


async def noop():
    return None


def plain_noop():
    return None


def ident(x):
    return x


def kw(a, *, b=2, c=3):
    return (a, b, c)


async def sleep_then(x, delay):
    await asyncio.sleep(delay)
    return x


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


async def sleep_for(delay):
    await asyncio.sleep(delay)
    return delay


class CustomError(Exception):
    pass


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be rebuilt from its args: arrives as RemoteError."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


class HoldsLock(Exception):
    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


async def boom(kind):
    await asyncio.sleep(0)
    if kind == "value":
        raise ValueError("bad value 42")
    if kind == "key":
        raise KeyError("missing")
    if kind == "custom":
        raise CustomError("custom trouble")
    if kind == "needs-two":
        raise NeedsTwoArgs(1, 2)
    if kind == "lock":
        raise HoldsLock("holds a lock")
    if kind == "exit":
        raise SystemExit(3)
    if kind == "zero":
        return 1 / 0
    raise RuntimeError(kind)


def plain_boom():
    raise ValueError("plain failure")


def returns_unpicklable():
    return threading.Lock()


async def log_cancel(tag):
    """Waits forever; records in LOG whether it saw CancelledError."""
    LOG.append(("start", tag))
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        LOG.append(("cancelled", tag))
        raise


async def mark(tag):
    LOG.append(("ran", tag))
    return tag


async def get_log(wait_for=None):
    """The worker's LOG, after waiting (bounded) until it contains ``wait_for``."""
    for _ in range(500):
        if wait_for is None or wait_for in LOG:
            break
        await asyncio.sleep(0.01)
    return list(LOG)


def spin_forever():
    while True:
        pass


async def async_spin_forever():
    LOG.append(("spin", 1))
    while True:
        pass


def hang():
    time.sleep(3600)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def pfib(n, cutoff=12):
    if n < cutoff:
        return fib(n)
    a, b = await asyncio.gather(interloop.spawn(pfib, n - 1, cutoff), interloop.spawn(pfib, n - 2, cutoff))
    return a + b


async def spawn_lambda():
    return await interloop.spawn(lambda: 1)


def worker_env():
    return {"path": list(sys.path), "argv": list(sys.argv), "tid": threading.get_ident(),
            "index": sys.modules["interloop._interloop"].index(), "pid": os.getpid()}


async def subprocess_echo():
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print(6*7)", stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return out.decode().strip()


async def crunch(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    await asyncio.sleep(0)
    return total


async def break_worker_loop():
    """Stops the worker's own loop from inside: the worker's driver fails."""
    asyncio.get_running_loop().stop()
    await asyncio.sleep(3600)


async def interrupt_targets():
    """Asks this worker's interrupt handler, for the job running it, whether it
    would raise: while the job's coroutine executes (yes), and while its task is
    current but the coroutine is not executing, as when asyncio's C code schedules
    the task's done callbacks (no: raising there strands the task)."""
    from interloop import _worker
    d = _worker.driver()
    loop = asyncio.get_running_loop()
    job = d.job_var.get()
    task = asyncio.current_task()
    running = d.on_interrupt(job)
    outside = loop.create_future()

    def probe():
        asyncio.tasks._enter_task(loop, task)
        try:
            outside.set_result(d.on_interrupt(job))
        finally:
            asyncio.tasks._leave_task(loop, task)

    loop.call_soon(probe)
    around = await outside
    return type(running).__name__, type(around).__name__


def buffer_arg_info(buf, *, also=None):
    """What a buffer argument arrived as, and where its memory is."""
    from interloop import _channel
    out = (type(buf).__name__, _channel._n.buffer_address(buf), len(buf), bytes(buf[:4]))
    if also is not None:
        out += (type(also).__name__, len(also))
    return out


def big_view_result(nbytes, fill):
    """Returns a large buffer without a copy: (its view, its address here)."""
    import pickle
    from interloop import _channel
    data = bytes([fill]) * nbytes
    return pickle.PickleBuffer(data), _channel._n.buffer_address(data)


def big_bytes_result(nbytes, fill):
    return bytes([fill]) * nbytes


def big_bytearray_result(nbytes, fill):
    return bytearray([fill]) * nbytes


async def nested_big_bytes(nbytes, fill):
    """A nested spawn's large bytes result, received by a worker (not the caller)."""
    import interloop
    b = await interloop.spawn(big_bytes_result, nbytes, fill)
    return type(b).__name__, len(b), b.count(fill)


async def wait_for_flag(path):
    import os
    while not os.path.exists(path):
        await asyncio.sleep(0.005)


IN_CALLER = False  # set by the tests in the caller only: workers import this afresh


def _rebuild_only_in_workers(x):
    if IN_CALLER:
        raise ValueError("cannot rebuild this result in the caller")
    return x


class FailsToLoadInCaller:
    def __reduce__(self):
        return _rebuild_only_in_workers, (1,)


def returns_unloadable(_i=None):
    return FailsToLoadInCaller()


def exhaust_memory():
    return bytearray(1 << 62)


def recurse_python(n=0):
    return recurse_python(n + 1)


async def recurse_async(n=0):
    return await recurse_async(n + 1)


def recurse_in_c(depth=200_000):
    nested = []
    for _ in range(depth):
        nested = [nested]
    return len(repr(nested))


def sleep_in_c(seconds):
    time.sleep(seconds)
    return "slept"


def view_len(buf):
    return len(buf)


def iso_date(year):
    import _datetime  # the C module itself (datetime may fall back to _pydatetime)
    return _datetime.datetime(year, 1, 2).isoformat()


def frames_seen_in_worker(calls):
    """The thread ids ``sys._current_frames()`` reports in a worker over ``calls``
    calls, this thread's id, and the name of the function behind it."""
    import sys
    import threading
    seen = set()
    for _ in range(calls):
        seen.update(sys._current_frames())
    return sorted(seen), threading.get_ident(), sys._current_frames.__name__
