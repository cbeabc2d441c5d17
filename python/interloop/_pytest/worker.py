"""The worker side: one pytest session inside an own-GIL sub-interpreter.

``serve(spec)`` is the pool job (a plain function, so it runs start to end on the
worker's thread and ``Pool``'s interrupt lands in the test that is running). It
builds a pytest ``Config`` from the main run's arguments, registers ``WorkerPlugin``
and runs ``pytest_cmdline_main``: the session starts and finishes as pytest's own
(session fixtures, ``tmp_path``'s base, ``pytest_sessionfinish`` hooks), but
collection is lazy (a module is collected the first time one of its tests arrives)
and the run-test loop pulls node ids from the work channel.
"""
from __future__ import annotations

import io
import time
import traceback
import warnings

import pytest

# An interrupt lands as CancelledError (or, in a job started before the worker's loop
# existed, as the driver's _EarlyInterrupt).
_INTERRUPTS = ("CancelledError", "_EarlyInterrupt")


async def serve(spec):
    """Pool job: configures pytest, waits for the first test, runs one worker
    session; returns its exit status."""
    import asyncio
    from asyncio import events

    from interloop import ChannelClosed

    phases = spec["phases"] = {"start": time.thread_time(), "wall start": time.time()}
    try:
        config = _make_config(spec)
        phases["configured"] = time.thread_time()
        phases["wall configured"] = time.time()
    except BaseException:  # noqa: BLE001 - reported to the controller
        _send(spec, "fatal", spec["wid"], traceback.format_exc())
        return -1
    try:
        first = await spec["work"].recv()
    except ChannelClosed:
        first = None
    phases["first unit"] = time.thread_time()
    phases["wall first unit"] = time.time()
    _code_updates(spec)
    # From here the job runs synchronously inside the worker's loop. Tests make their
    # own loops (asyncio.run, pytest-asyncio's Runner), which refuse to start while
    # another loop runs on the thread, so the worker's loop is hidden meanwhile: it
    # cannot run anything until this job returns anyway. An interrupt (Pool's
    # interrupt=True) still lands in the running code: the test.
    running = events._get_running_loop()
    events._set_running_loop(None)
    asyncio.set_event_loop(None)
    try:
        return _run_session(spec, config, first)
    finally:
        events._set_running_loop(running)
        asyncio.set_event_loop(running)


def _send(spec, *msg):
    from interloop import ChannelClosed

    try:
        spec["results"].send_nowait(msg)
    except ChannelClosed:  # the controller has stopped listening (Ctrl-C)
        pass


def _run_session(spec, config, first):
    wid = spec["wid"]
    plugin = WorkerPlugin(config, spec, first)
    config.pluginmanager.register(plugin, "interloop-worker")
    # Warnings that plugins print while configuring were printed by the main
    # interpreter already; the worker's copies are dropped until its session starts.
    plugin.showwarning = warnings.showwarning
    warnings.showwarning = _drop_warning
    try:
        status = config.hook.pytest_cmdline_main(config=config)
    except BaseException:  # noqa: BLE001
        _send(spec, "fatal", wid, traceback.format_exc())
        return -1
    finally:
        if warnings.showwarning is _drop_warning:
            warnings.showwarning = plugin.showwarning
    status = int(status)
    spec["phases"]["end"] = time.thread_time()
    spec["phases"]["wall end"] = time.time()
    spec["phases"]["tests"] = plugin.ntests
    spec["phases"]["reports"] = plugin.report_cpu
    _send(spec, "phases", wid, spec["phases"])
    _send(spec, "bye", wid, status)
    return status


def _drop_warning(*args, **kwargs):
    pass


def _code_updates(spec):
    """Adds what the main interpreter rewrote while this worker started (its test
    modules) to the worker's cache; sent before the first test."""
    from interloop import ChannelClosed, ChannelEmpty

    cache = spec.get("code")
    try:
        update = spec["code_updates"].recv_nowait()
    except (ChannelEmpty, ChannelClosed):
        return
    if cache is not None:
        cache.update(update)


def _make_config(spec):
    from _pytest.config import _prepareconfig

    from .rewrite import use_recorded

    if spec.get("code") is not None:
        use_recorded(spec["code"])

    args = list(spec["args"])
    if spec["capture"] == "fd":
        # Descriptors 1 and 2 belong to the whole process: a worker capturing them
        # would take every other interpreter's output too. sys-level capture is
        # per interpreter (each has its own sys.stdout).
        args.append("--capture=sys")
    config = _prepareconfig(args, None)
    # Plugins that look for xdist's worker attributes (junitxml, the cache's
    # last-failed and step-wise plugins) then leave the run's files to the main
    # interpreter.
    config.workerinput = {
        "workerid": f"il{spec['wid']}",
        "workercount": spec["workers"],
        "testrunuid": spec["testrunuid"],
        "interloop_worker": True,
    }
    config.workeroutput = {}
    opt = config.option
    # The controller decides when the run stops and what runs first.
    for name, value in (
        ("interloop_workers", None), ("maxfail", 0), ("lf", False), ("failedfirst", False),
        ("newfirst", False), ("stepwise", False), ("stepwise_skip", False),
        ("usepdb", False), ("trace", False), ("basetemp", spec["basetemp"]),
    ):
        if hasattr(opt, name) or name == "basetemp":
            setattr(opt, name, value)
    # faulthandler is process-wide (and its fd is the process's stderr): the main
    # interpreter's is enough.
    pm = config.pluginmanager
    if pm.get_plugin("faulthandler") is not None:
        pm.unregister(name="faulthandler")
    return config


# What CPython says when something cannot be done in a sub-interpreter; a test that
# fails with one of these runs again in the main interpreter.
_REFUSALS = (
    "does not support loading in subinterpreters",
    "daemon threads are disabled in this (sub)interpreter",
    "not supported for isolated subinterpreters",
    "main thread of the main interpreter",
)


# A unit of the work channel whose first element is LONG is a long test (by the
# durations recorded in an earlier run): runners do not hold it back (see
# WorkerPlugin.pytest_runtestloop and the controller's loop).
LONG = ""


def reconcile(prev, guess, nxt, late=None):
    """``prev`` ran and was torn down for ``guess`` as the next item; ``nxt`` is the
    real one. Tears down what ``nxt`` does not share (a module or class fixture kept
    for ``guess``). A failure there is reported as ``prev``'s teardown error, where
    a serial run reports it: through ``late(report)`` if given, else this session's
    hooks."""
    if nxt is guess:
        return
    from _pytest.runner import CallInfo

    state = prev.session._setupstate
    call = CallInfo.from_call(lambda: state.teardown_exact(nxt), when="teardown")
    if call.excinfo is None:
        return
    ihook = prev.ihook
    report = ihook.pytest_runtest_makereport(item=prev, call=call)
    if late is not None:
        late(report)
        return
    ihook.pytest_runtest_logstart(nodeid=prev.nodeid, location=prev.location)
    ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=prev.nodeid, location=prev.location)


def warning_data(warning_message, when, nodeid, location) -> dict:
    """A recorded warning as plain data (the controller's ``_warning`` rebuilds it)."""
    cat = warning_message.category
    return {
        "message": str(warning_message.message),
        "category": (cat.__module__, cat.__qualname__),
        "filename": warning_message.filename,
        "lineno": warning_message.lineno,
        "when": when,
        "nodeid": nodeid,
        "location": location,
    }


def _refused_here(report):
    lines = [ln for ln in str(report.longrepr).splitlines() if any(r in ln for r in _REFUSALS)]
    # the exception's own line ("E   RuntimeError: ...") rather than the source line
    lines.sort(key=lambda ln: not ln.startswith("E "))
    if not lines:
        return None
    return lines[0][1:].strip() if lines[0].startswith("E ") else lines[0].strip()


def _is_interrupt(exc) -> bool:
    return type(exc).__name__ in _INTERRUPTS


# Hooks whose only purpose is the terminal's text. A worker's terminal writes nowhere
# (the main interpreter prints its own header and summary), so their plain
# implementations are skipped in workers: they cost time there, and some import what
# a sub-interpreter refuses (hypothesis' pytest_terminal_summary imports hypothesis,
# whose native module does not load in sub-interpreters), which ended the worker's
# session. Wrappers (pytest's own) still run.
_OUTPUT_ONLY_HOOKS = ("pytest_report_header", "pytest_report_collectionfinish",
                      "pytest_terminal_summary")


def _nothing(*args):
    return None


def _silence_output_hooks(pm):
    for name in _OUTPUT_ONLY_HOOKS:
        caller = getattr(pm.hook, name, None)
        if caller is None:
            continue
        for impl in caller.get_hookimpls():
            if not (impl.hookwrapper or getattr(impl, "wrapper", False)):
                impl.function = _nothing


class WorkerPlugin:
    def __init__(self, config, spec, first):
        self.first = [first]  # the unit the job waited for
        self.config = config
        self.spec = spec
        self.wid = spec["wid"]
        self.work = spec["work"]
        self.modules = {}  # module node id -> {item node id: item} or why it failed
        self.collect_failure = None
        self.timer = None  # (node id, deadline, seconds) while pytest-timeout's timer is armed
        self.reports = []  # the running test's serialized reports
        self.refused = None  # why the running test cannot run in a sub-interpreter
        self.interrupted = False
        self.ntests = 0
        self.report_cpu = 0.0  # thread CPU spent serializing and sending reports

    def send(self, *msg):
        _send(self.spec, msg[0], self.wid, *msg[1:])

    # -- session ----------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        # The controller prints; a worker's terminal reporter writes nowhere.
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            from _pytest.config import create_terminal_writer

            tr._tw = create_terminal_writer(config, io.StringIO())

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        if warnings.showwarning is _drop_warning:
            warnings.showwarning = self.showwarning
        _silence_output_hooks(session.config.pluginmanager)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        # Again for conftests registered since (the terminal summary comes after this).
        _silence_output_hooks(session.config.pluginmanager)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session):
        return True  # collected lazily, module by module, as tests arrive

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        self.send("ready")
        held = None  # pytest tears an item down knowing the next one: hold one back
        held_long = False
        guessed = None  # (item, the next item it was run with) after a long test
        while True:
            if held is not None and held_long:
                # A long test is not held back while this worker takes the next one
                # from the queue (the other runners would lose it for the test's
                # whole length): it runs now, torn down for a guessed next item.
                guess = self._following(held)
                self._run(held, guess)
                guessed, held = (held, guess), None
                if self.interrupted or session.shouldstop or session.shouldfail:
                    return True
            unit = self._next_unit()
            if unit is None:
                break
            held_long = bool(unit) and unit[0] == LONG
            for nodeid in unit[1:] if held_long else unit:
                item = self._item(session, nodeid)
                if item is None:
                    continue
                if guessed is not None:
                    reconcile(*guessed, item, late=self._late)
                    guessed = None
                if held is not None:
                    self._run(held, item)
                    if self.interrupted or session.shouldstop or session.shouldfail:
                        # Leave now (a fresh session replaces this one); what this
                        # worker took and did not run is run by the controller.
                        return True
                held = item
        if guessed is not None:
            reconcile(*guessed, None, late=self._late)
        if held is not None:
            self._run(held, None)
        return True

    def _late(self, report):
        """A report of a test already sent (its teardown failed later)."""
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.send("late", report.nodeid, report.location, [data])

    def _following(self, item):
        """The item after ``item`` in its module's collection order (None if last)."""
        items = self.modules.get(item.nodeid.split("::", 1)[0])
        if not isinstance(items, dict):
            return None
        ids = list(items)
        i = ids.index(item.nodeid) + 1 if item.nodeid in items else len(ids)
        return items[ids[i]] if i < len(ids) else None

    def _next_unit(self):
        from interloop import ChannelClosed, ChannelEmpty

        if self.first:
            return self.first.pop()
        try:
            return self.work.recv_nowait()
        except (ChannelEmpty, ChannelClosed):
            return None

    def _run(self, item, nextitem):
        try:
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        except BaseException as e:
            if not _is_interrupt(e):
                raise
            # An interrupt that landed outside a test phase (between hooks): the
            # controller re-runs whatever got no complete report.
            self.interrupted = True

    # -- lazy collection ------------------------------------------------------------
    def _item(self, session, nodeid):
        mod = nodeid.split("::", 1)[0]
        got = self.modules.get(mod)
        if got is None:
            got = self.modules[mod] = self._collect(session, mod)
        if isinstance(got, str):
            self.send("fallback", nodeid, mod, got)
            return None
        item = got.get(nodeid)
        if item is None:
            self.send("fallback", nodeid, mod, "not collected in the worker")
        return item

    def _collect(self, session, mod):
        path = session.config.rootpath / mod
        self.collect_failure = None
        try:
            items = session.perform_collect([str(path)])
        except BaseException as e:  # noqa: BLE001 - the module runs in the main interpreter
            if _is_interrupt(e):
                self.interrupted = True
            return f"{type(e).__name__}: {e}"
        if self.collect_failure is not None:
            return self.collect_failure
        return {it.nodeid: it for it in items}

    def pytest_collectreport(self, report):
        if report.failed and self.collect_failure is None:
            text = str(report.longrepr).strip().splitlines()
            last = text[-1] if text else "collection failed"
            self.collect_failure = last[1:].strip() if last.startswith("E ") else last

    # -- reports --------------------------------------------------------------------
    # A test's reports go back together when it finishes, so that a test that failed
    # only because it ran in a sub-interpreter can be sent to the main interpreter
    # instead, reporting nothing from here.
    def pytest_runtest_logstart(self, nodeid, location):
        self.reports = []
        self.refused = None
        self.send("start", nodeid, location)

    def pytest_runtest_logfinish(self, nodeid, location):
        t = time.thread_time()
        if self.refused is not None:
            self.send("fallback", nodeid, None, self.refused)
        else:
            self.send("done", nodeid, location, self.reports)
        self.reports = []
        self.ntests += 1
        if self.ntests == 1:
            self.spec["phases"]["first test"] = t
            self.spec["phases"]["wall first test"] = time.time()
        self.report_cpu += time.thread_time() - t

    def pytest_runtest_logreport(self, report):
        if report.failed and self.refused is None:
            self.refused = _refused_here(report)
        t = time.thread_time()
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.reports.append(data)
        self.report_cpu += time.thread_time() - t

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        if when == "config":
            return  # the main interpreter parsed the same configuration and warned
        self.send("warning", warning_data(warning_message, when, nodeid, location))

    # -- pytest-timeout: the controller keeps the timer and interrupts this worker --
    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_timeout_set_timer(self, item, settings):
        self.timer = (item.nodeid, time.monotonic() + settings.timeout, settings.timeout)
        self.send("timer", item.nodeid, settings.timeout)
        return True

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_timeout_cancel_timer(self, item):
        self.timer = None
        self.send("untimer", item.nodeid)
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        rep = yield
        exc = call.excinfo
        timer = self.timer
        if (exc is not None and timer is not None and timer[0] == item.nodeid
                and _is_interrupt(exc.value) and time.monotonic() >= timer[1] - 0.1):
            self.interrupted = True
            msg = f"Failed: Timeout (>{timer[2]}s) from pytest-timeout"
            crash = getattr(rep.longrepr, "reprcrash", None)
            if crash is not None:
                crash.message = msg
            if hasattr(rep.longrepr, "addsection"):
                rep.longrepr.addsection(
                    "Timeout", f"{msg}: interrupted in interloop worker {self.wid}")
            else:
                rep.longrepr = f"{rep.longrepr}\n{msg}"
        return rep

