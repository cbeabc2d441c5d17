"""A forked helper process for the tests that need the process alone.

A process that forks while own-GIL sub-interpreters exist gets a child that aborts in
CPython's after-fork code, and tracemalloc traces every interpreter's allocations. So
tests that fork (``multiprocessing`` with the fork start method, ``os.fork``) or trace
memory cannot run in a worker, nor in the main interpreter while workers run.

The controller forks this helper at the start of collection, before the pool
exists: a copy of the configured main interpreter with no sub-interpreter, which can
fork and trace as a serial run does. It waits for node ids on a pipe, collects a
test's module the first time it sees one (as a worker does), runs pytest's run-test
protocol and sends the serialized reports back; the controller replays them. So
those tests run beside the workers instead of after them.

Messages are length-prefixed pickles. Controller to helper: a node id, or None (no
more tests: tear down and exit). Helper to controller, the workers' formats with the
worker number ``FORKED``: ``("start", FORKED, nodeid, location)``, ``("done", FORKED,
nodeid, location, reports)``, ``("fallback", FORKED, nodeid, module, why)`` (not
collected there), ``("bye", FORKED, status)``.
"""
from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import traceback

FORKED = "forked"
_HEADER = struct.Struct("!I")
_WINDOW = 8  # node ids written to the child ahead of its reports


def available() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class Helper:
    """The controller's side: the child's pid and the two pipe ends."""

    def __init__(self, pid, to_child, from_child):
        self.pid = pid
        self.to_child = to_child  # write end (blocking; messages are small)
        self.from_child = from_child  # read end (non-blocking)
        self.buf = bytearray()
        self.outstanding = {}  # node id -> item, given and not yet reported
        self.queue = []  # node ids given and not yet written to the child
        self.written = 0  # written and not yet reported
        self.running = None  # node id between "start" and "done"
        self.closed = False  # no more tests will be sent
        self.gone = False  # the child exited (EOF on its pipe)

    @classmethod
    def fork(cls, session):
        """Forks the helper; returns the controller's ``Helper``, or None if fork failed."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            return None
        if pid == 0:  # the child: never returns
            status = 1
            try:
                os.close(down_w)
                os.close(up_r)
                status = _child(session, down_r, up_w)
            except BaseException:  # noqa: BLE001 - the controller reports the loss
                try:
                    sys.__stderr__.write(traceback.format_exc())
                    sys.__stderr__.flush()
                except Exception:  # noqa: BLE001
                    pass
            finally:
                os._exit(status)
        os.close(down_r)
        os.close(up_w)
        os.set_blocking(up_r, False)
        return cls(pid, down_w, up_r)

    def send(self, item):
        self.outstanding[item.nodeid] = item
        self.queue.append(item.nodeid)
        self._feed()

    def close(self):
        """No more tests: the child finishes what it has, tears down and exits."""
        if not self.closed:
            self.closed = True
            self._feed()

    def _feed(self):
        # At most _WINDOW node ids in the pipe at a time: a write never blocks (the
        # child, busy writing reports nobody reads meanwhile, could not drain it),
        # and the child still sees the next test when it tears one down.
        while self.queue and self.written < _WINDOW:
            self._write(self.queue.pop(0))
            self.written += 1
        if self.closed and not self.queue and not self.ended:
            self._write(None)
            self.ended = True

    ended = False  # the end (None) is written

    def _write(self, obj):
        body = pickle.dumps(obj)
        view = memoryview(_HEADER.pack(len(body)) + body)
        try:
            while view:
                view = view[os.write(self.to_child, view):]
        except OSError:  # the child is gone; its EOF tells the controller
            pass

    def read(self):
        """The messages that arrived (non-blocking); sets ``gone`` at EOF."""
        while True:
            try:
                chunk = os.read(self.from_child, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.gone = True
                break
            self.buf += chunk
        out = []
        while len(self.buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + n:
                break
            msg = pickle.loads(bytes(self.buf[_HEADER.size:_HEADER.size + n]))
            del self.buf[:_HEADER.size + n]
            kind = msg[0]
            if kind == "start":
                self.running = msg[2]
            elif kind in ("done", "fallback"):
                self.outstanding.pop(msg[2], None)
                self.written -= 1
                if self.running == msg[2]:
                    self.running = None
            out.append(msg)
        self._feed()
        return out

    def reap(self, timeout=5.0):
        """Waits for the child (``timeout`` seconds, then kills it); closes the pipes."""
        import time

        self.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            if time.monotonic() > deadline:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                break
            time.sleep(0.01)
        for fd in (self.to_child, self.from_child):
            try:
                os.close(fd)
            except OSError:
                pass


# -- the child ------------------------------------------------------------------------
def _child(session, rfd, wfd) -> int:
    """The helper's life: reads node ids until None, runs them, exits."""
    import io

    config = session.config
    pm = config.pluginmanager
    # Selection is the controller's (it sends only selected tests): --lf/--ff/--nf
    # and step-wise would judge this process's one-module collections alone.
    for name in ("lfplugin", "nfplugin", "stepwiseplugin"):
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
    # Output: this process's terminal writes nowhere; its capture must not share the
    # controller's temporary files (same open files: one offset, one truncation).
    tr = pm.get_plugin("terminalreporter")
    if tr is not None:
        from _pytest.config import create_terminal_writer

        tr._tw = create_terminal_writer(config, io.StringIO())
    capman = pm.get_plugin("capturemanager")
    if capman is not None and getattr(capman, "_method", None) == "fd":
        # Stop the inherited capture without reading it (reading truncates the
        # controller's file), send this process's descriptors 1 and 2 nowhere, and
        # capture afresh into files of its own.
        inherited = getattr(capman, "_global_capturing", None)
        if inherited is not None:
            inherited.stop_capturing()
            capman._global_capturing = None
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        capman.start_global_capturing()
        capman.suspend_global_capture()
    # The session's end (junitxml's file, the cache's last-failed and durations) is
    # the controller's: this process never runs pytest_sessionfinish. Plugins that
    # look for xdist's attribute see a worker.
    config.workerinput = {"workerid": "ilforked", "workercount": 1,
                          "testrunuid": "forked", "interloop_worker": True}
    out = os.fdopen(wfd, "wb", buffering=0)
    inp = os.fdopen(rfd, "rb", buffering=0)

    def send(*msg):
        data = pickle.dumps(msg)
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[out.write(view):]

    def recv():
        head = _read_exactly(inp, _HEADER.size)
        if head is None:
            return None
        (n,) = _HEADER.unpack(head)
        body = _read_exactly(inp, n)
        return None if body is None else pickle.loads(body)

    from .worker import warning_data

    class Relay:
        """Sends each test's reports back when it finishes, and the warnings recorded
        here, as a worker does (this process's own reporting goes nowhere)."""

        reports = []

        def pytest_runtest_logstart(self, nodeid, location):
            self.reports = []
            send("start", FORKED, nodeid, location)

        def pytest_runtest_logreport(self, report):
            self.reports.append(config.hook.pytest_report_to_serializable(
                config=config, report=report))

        def pytest_runtest_logfinish(self, nodeid, location):
            send("done", FORKED, nodeid, location, self.reports)
            self.reports = []

        def pytest_warning_recorded(self, warning_message, when, nodeid, location):
            if when != "config":
                send("warning", FORKED, warning_data(warning_message, when, nodeid, location))

    pm.register(Relay(), "interloop-forked-relay")
    modules = {}
    held = None

    def run(item, nextitem):
        # pytest's whole protocol hook (the warnings, timeout and logging plugins
        # wrap it)
        item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)

    while True:
        if held is not None and not _readable(rfd):
            # Nothing else queued: run it now (its module and session fixtures are
            # torn down; a later test sets them up again).
            run(held, None)
            held = None
        nodeid = recv()
        if nodeid is None:
            break
        item = _item(session, modules, nodeid)
        if isinstance(item, str):
            send("fallback", FORKED, nodeid, nodeid.split("::", 1)[0], item)
            continue
        if held is not None:
            run(held, item)
        held = item
    if held is not None:
        run(held, None)  # (nextitem None: the session's fixtures are torn down)
    send("bye", FORKED, 0)
    out.close()
    return 0


def _readable(fd) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def _read_exactly(f, n):
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _item(session, modules, nodeid):
    """The collected item for ``nodeid`` (its module collected on first use), or why not."""
    mod = nodeid.split("::", 1)[0]
    got = modules.get(mod)
    if got is None:
        try:
            items = session.perform_collect([str(session.config.rootpath / mod)])
            got = {it.nodeid: it for it in items}
        except BaseException as e:  # noqa: BLE001 - the test runs in the main interpreter
            got = f"{type(e).__name__}: {e}"
        modules[mod] = got
    if isinstance(got, str):
        return got
    item = got.get(nodeid)
    return item if item is not None else "not collected in the forked helper"
