"""The controller: the main interpreter's side of ``--interloop-workers``.

When collection starts, the controller starts an ``interloop.Pool`` and one
``serve`` job per worker (they configure pytest meanwhile, then wait for work).
pytest collects in the main interpreter as usual (so ``-k``, ``-m``, ``--lf``/``--ff``
and deselection happen once, here). ``pytest_runtestloop`` then puts the selected
tests into the work ``Channel`` (one test per unit, or one module/class/file per unit
with ``--interloop-dist``), closes it, and replays what comes back through pytest's
hooks (``pytest_runtest_logstart``/``logreport``/``logfinish``): every plugin of the
main run sees the reports of a serial run.

Tests that run in the main interpreter instead, after the workers are done:
``capfd``/``capfdbinary`` tests (descriptors 1 and 2 are the process's: any worker
writing to them would land in the capture), modules that fail to import in a
sub-interpreter (extensions without sub-interpreter support), and any test whose
worker ended without a complete report for it.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
import warnings

import pytest

from . import forked
from .worker import LONG, reconcile, serve

# A test with one of these fixtures runs in the main interpreter: fd capture there is
# the process's, and workers run concurrently.
_MAIN_ONLY_FIXTURES = frozenset({"capfd", "capfdbinary"})
# After a timeout's interrupt, how long a worker gets to report the test before the
# controller gives up on it (code blocked in C cannot be interrupted).
_INTERRUPT_GRACE = 3.0
# While the main interpreter runs tests, it looks at the workers' messages between
# tests when there are some, and at least this often (seconds) for timers.
_PUMP_EVERY = 0.05
# The main GIL's switch interval while workers start (see _Dispatch._fast_switch).
_STARTUP_SWITCH = 0.0002


# pytest's cache key of the tests' durations (seconds: setup + call + teardown) in the
# last run with --interloop-workers that ran them.
DURATIONS_KEY = "interloop/durations"
# ... and of the tests that needed the process alone (os.fork, tracemalloc) while
# workers ran: they run first next time, before the pool starts.
EXCLUSIVE_KEY = "interloop/exclusive"
# ... and of those a sub-interpreter refused something else (they go to the main one).
IN_MAIN_KEY = "interloop/in_main"
# A unit whose expected time is at least this share of the whole run's is handed out
# first, longest first; the others keep collection order (module fixtures stay up).
_LONG_SHARE = 0.02


def long_first(units, durations):
    """``units`` (tuples of node ids) with the long ones first, by the durations an
    earlier run recorded; a test without one counts as the mean of those known."""
    return _long_first(units, durations)[0]


def _long_first(units, durations):
    """(``long_first``'s order, how many long units lead it)."""
    known = [durations[n] for u in units for n in u if n in durations]
    if not known:
        return units, 0
    mean = sum(known) / len(known)
    est = [sum(durations.get(n, mean) for n in u) for u in units]
    cut = sum(est) * _LONG_SHARE
    long = sorted((i for i, e in enumerate(est) if e >= cut and e > 0), key=lambda i: -est[i])
    first = set(long)
    return [units[i] for i in long] + [u for i, u in enumerate(units) if i not in first], len(long)


def _pool_possible() -> bool:
    """Whether this Python can run interloop.Pool (else the run is serial)."""
    from interloop._pool import check_version

    try:
        check_version()
    except RuntimeError:
        return False
    return True


def _exclusive(why: str) -> bool:
    """Whether a refusal means the test needs the process alone: os.fork() beside
    running sub-interpreters leaves a child that aborts, and tracemalloc traces the
    whole process's allocations (every interpreter's)."""
    return "fork" in why or "tracemalloc" in why


def _unit_key(nodeid: str, dist: str) -> str:
    if dist == "loadfile":
        return nodeid.split("::", 1)[0]
    # loadscope: a class's tests together, otherwise the module's (as xdist does)
    return nodeid.rsplit("::", 1)[0] if "::" in nodeid else nodeid


class Controller:
    """The plugin object registered in the main interpreter by ``--interloop-workers``."""

    def __init__(self, config, workers: int, recorder=None):
        self.config = config
        self.recorder = recorder  # assertion rewriting done here, for the workers
        self.workers = workers
        # The main interpreter runs tests too (one of the N runners) unless
        # --interloop-main=report keeps it to collecting and reporting.
        self.main_runs = config.getoption("interloop_main") == "run"
        self.subs = workers - 1 if self.main_runs else workers
        self.dist = config.getoption("interloop_dist")
        self.fallback = {}  # module node id -> why it cannot import in a worker
        self.refused = {}  # what CPython refused in a worker -> tests that ran in the main interpreter
        self.notes = []  # summary lines
        self.no_session = {}  # why a worker could not start a session -> workers
        self.stuck = []  # "worker N (test id)" that could not be stopped
        self._abandoned_tests = set()
        self.durations = {}  # node id -> seconds, this run's (for the next run's order)
        self.forks = []  # tests that needed the process alone in an earlier run
        self.helper = None  # the forked helper process for those (forked.Helper)
        self.helper_ran = []  # tests it ran
        self.runner = None  # the main interpreter's loop that drives the pool
        self.dispatch = None
        # Thread CPU time per phase, here and in each worker (written as JSON to the
        # file INTERLOOP_PYTEST_PHASES names, if set: benches/bench_pytest.py).
        self.phases = {"main": {"configured": time.thread_time(), "main tests": 0,
                                "main test cpu": 0.0, "replay cpu": 0.0}, "workers": {}}

    # -- pytest hooks -------------------------------------------------------------
    def pytest_sessionstart(self, session):
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            # Reports of several files interleave: progress without file names, as
            # pytest-xdist shows it.
            tr.showfspath = False

    def pytest_report_header(self, config):
        subs = f"{self.subs} own-GIL sub-interpreter worker{'s' if self.subs != 1 else ''}"
        if self.main_runs:
            return f"interloop: {self.workers} runners: the main interpreter and {subs}, dist={self.dist}"
        return f"interloop: {subs} (the main interpreter reports), dist={self.dist}"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection(self, session):
        # Workers start (import pytest, configure, start their sessions) while this
        # interpreter collects; they wait for their first test.
        self.phases["main"]["collection start"] = time.thread_time()
        # Tests that need the process alone (os.fork, tracemalloc) run in a helper
        # process forked now, before the pool exists (forked.py). Without one, those
        # that needed it in an earlier run run first, before the workers start: the
        # pool then starts after them, once collection is over.
        self.forks = self._recorded(EXCLUSIVE_KEY, list)
        collectonly = session.config.option.collectonly
        if (not collectonly and self.subs >= 1 and forked.available() and _pool_possible()
                and os.environ.get("INTERLOOP_PYTEST_NO_FORK") != "1"):
            # the run's temporary directory first, so that the helper's tests make
            # theirs in it too
            factory = getattr(self.config, "_tmp_path_factory", None)
            if factory is not None:
                factory.getbasetemp()
            self.helper = forked.Helper.fork(session)
        if not collectonly and (not self.forks or self.helper is not None):
            self._start(session)
            self.phases["main"]["workers started"] = time.thread_time()
            self.phases["main"]["wall workers started"] = time.time()
        try:
            return (yield)
        finally:
            self.phases["main"]["collected"] = time.thread_time()
            self.phases["main"]["wall collected"] = time.time()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        try:
            return self._runtestloop(session)
        finally:
            self._stop()

    def _runtestloop(self, session):
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            n = session.testsfailed
            raise session.Interrupted(f"{n} error{'s' if n != 1 else ''} during collection")
        if session.config.option.collectonly:
            return True
        items = list(session.items)
        order = {it.nodeid: i for i, it in enumerate(items)}
        self.by_id = {it.nodeid: it for it in items}
        in_main = [it for it in items if _MAIN_ONLY_FIXTURES.intersection(
            getattr(it, "fixturenames", ()))]
        if in_main:
            self.notes.append(
                f"{len(in_main)} test{'s' if len(in_main) != 1 else ''} using capfd ran in "
                "the main interpreter")
        main_ids = {it.nodeid for it in in_main}
        to_workers = [it for it in items if it.nodeid not in main_ids]
        if self.forks and self.runner is None:
            forks = set(self.forks)
            first = [it for it in to_workers if it.nodeid in forks]
            if first:
                self.notes.append(
                    f"{len(first)} test{'s' if len(first) != 1 else ''} that needed the "
                    "process alone in an earlier run (os.fork, tracemalloc) ran first, "
                    "before the workers started")
            for i, item in enumerate(first):
                nextitem = first[i + 1] if i + 1 < len(first) else None
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                if session.shouldfail or session.shouldstop:
                    break
            if session.shouldfail or session.shouldstop:
                to_workers = []
            else:
                to_workers = [it for it in to_workers if it.nodeid not in forks]
                self._start(session)
                self.phases["main"]["workers started"] = time.thread_time()
        if self.dispatch is not None:
            later = self._run_with_workers(session, to_workers)
        else:
            later = to_workers
        if not (session.shouldfail or session.shouldstop):
            rest = sorted(in_main + later, key=lambda it: order[it.nodeid])
            for i, item in enumerate(rest):
                nextitem = rest[i + 1] if i + 1 < len(rest) else None
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                if session.shouldfail or session.shouldstop:
                    break
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def pytest_terminal_summary(self, terminalreporter):
        if self.fallback:
            mods = ", ".join(f"{m} ({why})" for m, why in sorted(self.fallback.items()))
            terminalreporter.write_line(
                f"interloop: ran in the main interpreter (import failed in a sub-interpreter): {mods}")
        in_helper = set(self.helper_ran)
        for why, ids in sorted(self.refused.items()):
            here = [n for n in ids if n not in in_helper]
            there = [n for n in ids if n in in_helper]
            if here:
                terminalreporter.write_line(
                    f"interloop: ran again in the main interpreter ({why}): {', '.join(here)}")
            if there:
                terminalreporter.write_line(
                    f"interloop: ran again in a process forked before the workers started "
                    f"({why}): {', '.join(there)}")
        known = set(self.forks)
        recorded = [n for n in self.helper_ran if n in known]
        if recorded:
            terminalreporter.write_line(
                f"interloop: {len(recorded)} test{'s' if len(recorded) != 1 else ''} that "
                "needed the process alone in an earlier run (os.fork, tracemalloc) ran in a "
                "process forked before the workers started")
        for why, wids in self.no_session.items():
            who = f"worker{'s' if len(wids) > 1 else ''} {', '.join(sorted(wids))}"
            terminalreporter.write_line(f"interloop: {who} could not start a session: {why}")
        for note in self.notes:
            terminalreporter.write_line(f"interloop: {note}")
        for s in self.stuck:
            terminalreporter.write_line(f"interloop: could not stop {s}", red=True)

    def pytest_unconfigure(self, config):
        path = os.environ.get("INTERLOOP_PYTEST_PHASES")
        if path:
            import json

            self.phases["main"]["end"] = time.thread_time()
            self.phases["main"]["wall end"] = time.time()
            with open(path, "a") as f:
                f.write(json.dumps(self.phases) + "\n")
        if self.stuck:
            # A worker still runs a test that ignored its interrupt (blocked in C).
            # CPython aborts at exit while a sub-interpreter's thread runs, so leave
            # now, with the run's status (the reports are all written by now).
            sys.stdout.flush()
            sys.stderr.flush()
            status = getattr(config, "_interloop_exitstatus", 1)
            os._exit(int(status))

    def pytest_runtest_logreport(self, report):
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration

    def _recorded_durations(self):
        return self._recorded(DURATIONS_KEY, dict)

    def _recorded(self, key, kind):
        cache = getattr(self.config, "cache", None)
        if cache is None:
            return kind()
        got = cache.get(key, kind())
        return got if isinstance(got, kind) else kind()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        self._stop()
        self.config._interloop_exitstatus = int(exitstatus)
        cache = getattr(self.config, "cache", None)
        if cache is not None and self.durations:
            merged = self._recorded_durations()
            merged.update((k, round(v, 6)) for k, v in self.durations.items())
            cache.set(DURATIONS_KEY, merged)
        forked = {n for why, ids in self.refused.items() if _exclusive(why) for n in ids}
        if cache is not None and not forked <= set(self.forks):
            cache.set(EXCLUSIVE_KEY, sorted(forked.union(self.forks)))
        refused = {n for why, ids in self.refused.items() if not _exclusive(why) for n in ids}
        known = self._recorded(IN_MAIN_KEY, list)
        if cache is not None and not refused <= set(known):
            cache.set(IN_MAIN_KEY, sorted(refused.union(known)))

    # -- the parallel part -----------------------------------------------------
    def _start(self, session):
        if self.subs < 1:
            return  # the main interpreter alone: a serial run
        import interloop

        loop_factory = interloop.new_event_loop if self.config.getoption("interloop") else None
        self.runner = asyncio.Runner(loop_factory=loop_factory)
        self.dispatch = _Dispatch(self, session)
        try:
            self.runner.run(self.dispatch.start())
            # The runner's loop is not the thread's event loop: collection and the
            # tests run here find none set, as in a serial run.
            asyncio.set_event_loop(None)
        except RuntimeError as e:
            self.runner.close()
            self.runner = self.dispatch = None
            if "interloop.Pool needs" not in str(e):
                raise
            # No sub-interpreter workers on this Python: a serial run.
            self.notes.append(f"workers unavailable, all tests ran in the main interpreter: {e}")

    def _run_with_workers(self, session, items):
        """Queues ``items`` for the workers, and runs units from the same queue here,
        replaying the workers' reports between tests. Returns the tests left for the
        main interpreter once the workers are done."""
        d, runner = self.dispatch, self.runner
        d.queue(items)
        self._forks_refused(True)
        # Tests here run outside the controller's loop (they start their own loops,
        # as serially), and find no event loop set.
        asyncio.set_event_loop(None)
        hook = self.config.hook
        ph = self.phases["main"]

        def run_here(item, nextitem):
            t = time.thread_time()
            self._buffered = True
            try:
                hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            finally:
                self._buffered = False
            ph["main tests"] += 1
            ph["main test cpu"] += time.thread_time() - t

        order = list(self.by_id.values())  # collection order
        index = {it.nodeid: i for i, it in enumerate(order)}

        def following(item):
            i = index[item.nodeid] + 1
            return order[i] if i < len(order) else None

        held = None  # pytest tears an item down knowing the next one: hold one back
        guessed = None  # (item, the next item it was torn down for) after a long test
        last_pump = time.monotonic()
        while not d.stopping:
            if d.results.qsize() or time.monotonic() - last_pump > _PUMP_EVERY:
                runner.run(d.pump())
                last_pump = time.monotonic()
                if d.stopping:
                    break
            if held is not None and held.nodeid in d.long_ids:
                # A long test is not held back while this interpreter takes the next
                # one from the queue (a worker would lose that one for the long
                # test's whole length): it runs now, torn down for the next test in
                # collection order; reconcile() fixes that up if another comes.
                guess = following(held)
                run_here(held, guess)
                guessed, held = (held, guess), None
                if self._check_stop(session):
                    break
                continue
            unit = d.take_for_main() if self.main_runs or d.to_main else None
            if unit is None:
                if held is not None:
                    run_here(held, None)
                    held = None
                    self._check_stop(session)
                    continue
                if not d.jobs:
                    break
                runner.run(d.wait())  # idle: until a worker says something
                last_pump = time.monotonic()
                continue
            for item in unit:
                if guessed is not None:
                    reconcile(*guessed, item)
                    guessed = None
                if held is not None:
                    run_here(held, item)
                    if self._check_stop(session):
                        held = None
                        break
                held = item
        if guessed is not None:
            reconcile(*guessed, None)
        ph["wall queue empty"] = time.time()
        later = runner.run(d.finish())
        ph["wall workers done"] = time.time()
        self._forks_refused(False)
        return later + d.after

    # -- tests in the main interpreter while workers run ---------------------------
    # os.fork() in a process whose sub-interpreters run on other threads leaves a
    # child that aborts in CPython's after-fork code, and tracemalloc traces every
    # interpreter's allocations. While the workers run, the main interpreter's tests
    # find os.fork and tracemalloc.start refused, as they are in a sub-interpreter,
    # and run again after the workers are done. Their reports are held back until
    # the test is over (as a worker's are), so that such a test reports only once.
    _buffered = False
    _forked = None  # why the running test needs the process alone
    _real = None  # (module, name, function) patched while workers run

    def _forks_refused(self, on):
        if on and self._real is None:
            import tracemalloc

            self._real = []
            for mod, name in ((os, "fork"), (os, "forkpty"), (tracemalloc, "start")):
                real = getattr(mod, name, None)
                if real is None:
                    continue
                what = f"{mod.__name__}.{name}()"

                def refused(*args, _what=what, **kwargs):
                    self._forked = f"{_what} while sub-interpreter workers run"
                    raise RuntimeError(
                        f"interloop: {_what} is refused in the main interpreter while "
                        "sub-interpreter workers run; this test runs again after them")

                self._real.append((mod, name, real))
                setattr(mod, name, refused)
        elif not on and self._real is not None:
            for mod, name, real in self._real:
                setattr(mod, name, real)
            self._real = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if not self._buffered:
            return None  # pytest's own protocol
        from _pytest.runner import runtestprotocol

        self._forked = None
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        if self._forked is not None:
            self.refused.setdefault(self._forked, []).append(item.nodeid)
            self.dispatch.alone(item)
            return True
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for rep in reports:
            ihook.pytest_runtest_logreport(report=rep)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _check_stop(self, session):
        if session.shouldfail or session.shouldstop:
            self.dispatch.stop()
            return True
        return False

    def _stop(self):
        """Ends the workers if the run did not get to (or through) dispatching."""
        self._forks_refused(False)
        if self.runner is None:
            if self.helper is not None:
                self.helper.reap(timeout=0)
            return
        runner, self.runner = self.runner, None
        try:
            if not self.dispatch.finished:
                runner.run(self.dispatch.shutdown())
        finally:
            runner.close()


class _Dispatch:
    """The pool, its worker sessions and the messages from them (its coroutines run
    in the controller's ``asyncio.Runner``)."""

    def __init__(self, controller, session):
        self.c = controller
        self.config = controller.config
        self.session = session
        self.items = []
        self.pending = set()  # tests handed to workers without their reports yet
        self.to_main = []  # fallback: run in the main interpreter
        self.after = []  # ... once the workers are done (they may fork)
        self.running = {}  # worker -> node id between logstart and logfinish
        self.jobs = {}  # live worker sessions: worker -> future
        self.timers = {}  # worker -> (node id, TimerHandle)
        self.ready = set()  # workers whose session started
        self.long_ids = set()  # tests queued as long (not held back by a runner)
        self.helper = None  # the controller's forked.Helper, once the pool starts
        self.next_wid = 0
        self.stopping = False
        self.finished = False

    async def start(self):
        """Starts the pool and one worker session per worker; they wait for tests."""
        import interloop

        self.work = interloop.Channel()
        self.results = interloop.Channel()
        # Rewritten code recorded after the workers started (test modules,
        # conftests collected here): one copy per worker, taken with its first test.
        self.code = interloop.Channel()
        self.nworkers = self.alive = self.c.subs
        factory = getattr(self.config, "_tmp_path_factory", None)
        base = factory.getbasetemp() if factory is not None else None
        self.spec = {
            "args": list(self.config.invocation_params.args),
            "workers": self.nworkers,
            "testrunuid": uuid.uuid4().hex,
            "work": self.work,
            "results": self.results,
            "code_updates": self.code,
            "capture": self.config.option.capture,
            "base": str(base) if base is not None else None,
        }
        self.pool = interloop.Pool(workers=self.nworkers, concurrency=1)
        self._fast_switch(True)
        self.helper = self.c.helper
        if self.helper is not None:
            asyncio.get_running_loop().add_reader(self.helper.from_child, self._from_helper)
        # Not awaiting pool.start(): this interpreter collects meanwhile. A worker
        # that cannot start fails its job ("crashed"); its tests run elsewhere.
        for _ in range(self.nworkers):
            self._start_worker()

    # CPython 3.13 runs every extension module's init function in the main
    # interpreter when a sub-interpreter imports one (import.c,
    # switch_to_main_interpreter): the worker waits for the main GIL, which the tests
    # running here hold for the whole switch interval (5 ms) before they let go. A
    # worker's start imports about a hundred extension modules, so it took twice its
    # CPU time in wall time. While workers start, this interpreter lets go of its GIL
    # after _STARTUP_SWITCH instead (the interval only matters when another thread
    # waits for this GIL, so tests that do not share it run as before).
    _saved_switch = None

    def _fast_switch(self, on):
        if on and self._saved_switch is None:
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch, _STARTUP_SWITCH))
        elif not on and self._saved_switch is not None:
            if sys.getswitchinterval() == min(self._saved_switch, _STARTUP_SWITCH):
                sys.setswitchinterval(self._saved_switch)  # (unless a test changed it)
            self._saved_switch = None

    def queue(self, items):
        """Puts ``items`` into the work channel (one unit per test, module, class or
        file) and closes it: runners take what is queued, then find the end."""
        rec = self.c.recorder
        if rec is not None:
            update = rec.take()
            if update:
                for _ in range(self.nworkers):
                    self.code.send_nowait(update)
        self.code.close()
        self.items = items
        # Tests a sub-interpreter refused in an earlier run (a daemon thread, a signal
        # handler) go straight to the main interpreter.
        in_main = set(self.c._recorded(IN_MAIN_KEY, list))
        known = [it for it in items if it.nodeid in in_main]
        if known:
            self.to_main.extend(known)
            items = [it for it in items if it.nodeid not in in_main]
            self.c.notes.append(
                f"{len(known)} test{'s' if len(known) != 1 else ''} a sub-interpreter refused "
                "in an earlier run ran in the main interpreter")
        forks = set(self.c.forks) if self.helper is not None else ()
        if forks:
            # Tests that needed the process alone in an earlier run: straight to the
            # forked helper.
            for it in items:
                if it.nodeid in forks:
                    self.alone(it)
            items = [it for it in items if it.nodeid not in forks]
        self.pending.update(it.nodeid for it in items)
        dist = self.c.dist
        if dist == "load":
            units = [(it.nodeid,) for it in items]
        else:
            groups = {}
            for it in items:
                groups.setdefault(_unit_key(it.nodeid, dist), []).append(it.nodeid)
            units = [tuple(g) for g in groups.values()]
        opt = self.config.option
        if not (getattr(opt, "failedfirst", False) or getattr(opt, "newfirst", False)):
            # (--ff/--nf: their order is what the user asked for)
            units, nlong = _long_first(units, self.c._recorded_durations())
            if nlong and self.c.main_runs and nlong < len(units):
                # The main interpreter starts with the first short unit, so the first
                # result comes as early as serially; the long ones go out meanwhile.
                short = units.pop(nlong)
                self.pending.difference_update(short)
                self.to_main.extend(self.c.by_id[n] for n in short)
        else:
            nlong = 0
        if dist == "load":
            # Long tests are marked: a runner runs one without first taking the next
            # test from the queue to tear it down knowingly (it would keep that one
            # from the others for the long test's whole length).
            self.long_ids = {u[0] for u in units[:nlong]}
            units = [(LONG,) + u for u in units[:nlong]] + units[nlong:]
        for u in units:
            self.work.send_nowait(u)
        self.work.close()

    def alone(self, item):
        """A test that needs the process alone: to the forked helper if there is one,
        else to the main interpreter once the workers are done."""
        h = self.helper
        if h is None or h.gone or h.closed:
            self.after.append(item)
            return
        self.pending.add(item.nodeid)
        self.c.helper_ran.append(item.nodeid)
        h.send(item)

    def _from_helper(self):
        """The loop's reader callback on the helper's pipe: its messages join the
        workers' (the waiting coroutines wake on the results channel)."""
        h = self.helper
        for msg in h.read():
            self.results.send_nowait(msg)
        if h.gone:
            asyncio.get_running_loop().remove_reader(h.from_child)
            self.results.send_nowait(("helper gone", forked.FORKED))

    def _helper_busy(self) -> bool:
        h = self.helper
        return h is not None and not h.gone and (bool(h.outstanding) or h.closed)

    def take_for_main(self):
        """The next unit for the main interpreter (its items), or None: tests sent
        back by workers first, then the shared queue."""
        from interloop import ChannelClosed, ChannelEmpty

        if self.to_main:
            return [self.to_main.pop(0)]
        try:
            unit = self.work.recv_nowait()
        except (ChannelEmpty, ChannelClosed):
            return None
        if unit and unit[0] == LONG:
            unit = unit[1:]
        self.pending.difference_update(unit)
        return [self.c.by_id[n] for n in unit]

    async def pump(self):
        """Lets the loop run what is due (timers, completions), then handles every
        waiting message."""
        from interloop import ChannelClosed, ChannelEmpty

        await asyncio.sleep(0)
        while True:
            try:
                msg = self.results.recv_nowait()
            except (ChannelEmpty, ChannelClosed):
                return
            self._handle(msg)

    async def wait(self):
        """Waits for one message from a worker, then handles what else is there."""
        self._handle(await self.results.recv())
        await self.pump()

    def stop(self):
        """The run stops (-x, --maxfail, pytest.exit in the main interpreter): no
        runner takes another unit."""
        if not self.stopping:
            self.stopping = True
            self._drain_work()

    async def finish(self):
        """Waits for the workers and the forked helper to end; returns the tests to run
        in the main interpreter after them."""
        try:
            while self.jobs:
                msg = await self.results.recv()
                self._handle(msg)
            if self.helper is not None and not self.stopping:
                self.helper.close()  # nothing more for it: it ends after its tests
                while self._helper_busy():
                    self._handle(await self.results.recv())
        finally:
            await self.shutdown()
        if not self.stopping:
            leftovers = [it for it in self.items if it.nodeid in self.pending
                         and it.nodeid not in self.c._abandoned_tests]
            if leftovers:
                self.c.notes.append(
                    f"{len(leftovers)} test(s) whose worker ended without their result "
                    "ran in the main interpreter")
            self.to_main.extend(leftovers)
        return self.to_main

    def _start_worker(self):
        wid = self.next_wid
        self.next_wid += 1
        spec = dict(self.spec, wid=wid)
        rec = self.c.recorder
        # what was rewritten here so far (a worker started later gets all of it)
        spec["code"] = rec.take(everything=True) if rec is not None else {}
        spec["basetemp"] = os.path.join(spec.pop("base"), f"il{wid}") if spec["base"] else None
        fut = self.pool.submit(serve, spec, interrupt=True)
        self.jobs[wid] = fut
        fut.add_done_callback(lambda f, wid=wid: self._job_done(wid, f))

    def _job_done(self, wid, fut):
        if fut.cancelled():
            return  # interrupted on purpose: its session reports "bye" itself
        exc = fut.exception()
        if exc is not None:
            try:
                self.results.send_nowait(("crashed", wid, f"{type(exc).__name__}: {exc}"))
            except interloop_closed():
                pass

    async def shutdown(self):
        self.finished = True
        self._fast_switch(False)
        self.stopping = self.stopping or bool(self.session.shouldfail or self.session.shouldstop)
        self.work.close()  # a worker still waiting for its first test gets none
        self._drain_work()
        for _, h in self.timers.values():
            h.cancel()
        for fut in self.jobs.values():
            fut.cancel()
        stuck = await self.pool.close(cancel=True, timeout=5)
        h = self.helper
        if h is not None:
            if not h.gone:
                asyncio.get_running_loop().remove_reader(h.from_child)
            # (stopping: -x, Ctrl-C: the test it runs is not waited for)
            h.reap(timeout=0 if self.stopping else 5)
            if not self.stopping:
                for nodeid in list(h.outstanding):
                    self._later(nodeid)
        self.results.close()
        if stuck:
            self.c.stuck.extend(stuck)

    def _drain_work(self):
        from interloop import ChannelClosed, ChannelEmpty

        while True:
            try:
                self.work.recv_nowait()
            except (ChannelEmpty, ChannelClosed):
                return

    # -- messages ------------------------------------------------------------------
    def _handle(self, msg):
        kind, wid = msg[0], msg[1]
        if kind == "done":
            t = time.thread_time()
            self._replay(msg)
            self.c.phases["main"]["replay cpu"] += time.thread_time() - t
        elif kind == "start":
            self.running[wid] = msg[2]
        elif kind == "timer":
            self._cancel_timer(wid)
            loop = asyncio.get_running_loop()
            h = loop.call_later(msg[3], self._expired, wid, msg[2], msg[3])
            self.timers[wid] = (msg[2], h)
        elif kind == "untimer":
            self._cancel_timer(wid)
        elif kind == "warning":
            self._warning(msg[2])
        elif kind == "fallback":
            _, _, nodeid, mod, why = msg
            if self.running.get(wid) == nodeid:
                del self.running[wid]
            if wid == forked.FORKED:
                self._later(nodeid)  # not collected in the forked helper
                return
            if mod is None:
                self.c.refused.setdefault(why, []).append(nodeid)
            else:
                self.c.fallback.setdefault(mod, why)
            if nodeid in self.pending:
                self.pending.discard(nodeid)
                # A module that does not import in a sub-interpreter, a test refused
                # a daemon thread or a signal handler: it runs here at once. A test
                # refused os.fork: in the forked helper, or after the workers, when
                # the process has no other interpreter (a child forked meanwhile
                # would abort).
                if mod is None and _exclusive(why):
                    self.alone(self.c.by_id[nodeid])
                else:
                    self.to_main.append(self.c.by_id[nodeid])
        elif kind == "late":
            # a teardown that failed after its test's reports were sent
            _, _, nodeid, location, reports = msg
            if nodeid not in self.c._abandoned_tests:
                self._log(nodeid, location, reports)
        elif kind == "helper gone":
            self._helper_gone()
        elif kind == "ready":
            self.ready.add(wid)
            if len(self.ready) >= self.nworkers:
                self._fast_switch(False)
        elif kind in ("bye", "fatal", "crashed"):
            self._worker_ended(wid, kind, msg[2])
        elif kind == "abandon":
            self._abandon(wid, msg[2], msg[3])
        elif kind == "phases":
            self.c.phases["workers"].setdefault(str(wid), []).append(msg[2])

    def _replay(self, msg):
        """A test's reports from a worker, through this session's hooks."""
        _, wid, nodeid, location, reports = msg
        if self.running.get(wid) == nodeid:
            del self.running[wid]
        if nodeid in self.c._abandoned_tests or nodeid not in self.pending:
            return
        self.pending.discard(nodeid)
        self._log(nodeid, location, reports)
        if self.session.shouldfail or self.session.shouldstop:
            self.stop()

    def _log(self, nodeid, location, reports):
        """Serialized reports of one test through this session's hooks."""
        hook = self.config.hook
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        for data in reports:
            rep = hook.pytest_report_from_serializable(config=self.config, data=data)
            hook.pytest_runtest_logreport(report=rep)
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def _cancel_timer(self, wid):
        t = self.timers.pop(wid, None)
        if t is not None:
            t[1].cancel()

    def _expired(self, wid, nodeid, seconds):
        self.timers.pop(wid, None)
        fut = self.jobs.get(wid)
        if fut is None or self.running.get(wid) != nodeid:
            return
        fut.cancel()  # submitted with interrupt=True: raises in the running test
        loop = asyncio.get_running_loop()
        loop.call_later(_INTERRUPT_GRACE, self._grace_over, wid, nodeid, seconds)

    def _grace_over(self, wid, nodeid, seconds):
        if wid in self.jobs and nodeid in self.pending:
            self.results.send_nowait(("abandon", wid, nodeid, seconds))

    def _abandon(self, wid, nodeid, seconds):
        """The interrupt did not land (code blocked in C): report the timeout here,
        leave the worker to itself, and go on with a fresh one."""
        if wid not in self.jobs or nodeid not in self.pending:
            return
        self.c._abandoned_tests.add(nodeid)
        self.pending.discard(nodeid)
        self.running.pop(wid, None)
        self._report_failed(nodeid, (
            f"Failed: Timeout (>{seconds}s) from pytest-timeout: interloop worker {wid} "
            "could not be interrupted (blocked outside Python code)"))
        self.c.stuck.append(f"worker {wid} ({nodeid})")
        self._worker_ended(wid, "abandoned", None)

    def _report_failed(self, nodeid, text):
        """Reports a test its worker could not report (stuck or gone) as failed."""
        location = self.c.by_id[nodeid].location
        hook = self.config.hook
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        hook.pytest_runtest_logreport(report=pytest.TestReport(
            nodeid=nodeid, location=location, keywords={}, outcome="failed",
            longrepr=text, when="call"))
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def _worker_ended(self, wid, kind, detail):
        if wid not in self.jobs:
            return
        del self.jobs[wid]
        self._cancel_timer(wid)
        nodeid = self.running.pop(wid, None)
        if kind == "bye" and nodeid is not None and nodeid in self.pending:
            # The session ended inside this test (pytest.exit, a KeyboardInterrupt the
            # test raised, an internal error): it runs again in the main interpreter,
            # where it does to the run what it would serially.
            self.pending.discard(nodeid)
            self.to_main.append(self.c.by_id[nodeid])
            self.c.notes.append(
                f"worker {wid}'s session ended in {nodeid} (exit status {detail}); "
                "the test ran again in the main interpreter")
        if kind == "crashed":
            self.alive -= 1  # its interpreter is gone
        if kind == "fatal" and wid not in self.ready:
            # No session could start there (a conftest that does not import in a
            # sub-interpreter...): another worker would fail the same way.
            self.c.no_session.setdefault(detail.strip().splitlines()[-1], []).append(str(wid))
            return
        if kind == "fatal" or kind == "crashed":
            if nodeid is not None and nodeid in self.pending:
                # The test it was running is reported as failed and not run again
                # (it would likely take the next worker down too).
                self.pending.discard(nodeid)
                self._report_failed(
                    nodeid, f"interloop worker {wid} failed while running this test:\n{detail}")
            else:
                self.c.notes.append(f"worker {wid} failed: {detail.strip().splitlines()[-1]}")
        if self.stopping:
            return
        if self.work.qsize() > 0 and len(self.jobs) < self.alive:
            self._start_worker()

    def _helper_gone(self):
        """The forked helper exited: after its "bye", or died. A test it was running
        is reported as failed (as a worker's crash is); the others it had run in the
        main interpreter after the workers."""
        h = self.helper
        if h.running is not None and h.running in self.pending:
            nodeid = h.running
            self.pending.discard(nodeid)
            self._report_failed(nodeid, "the forked helper process (for tests that need "
                                        "the process alone) died while running this test")
        for nodeid in list(h.outstanding):
            self._later(nodeid)
        h.outstanding.clear()

    def _later(self, nodeid):
        """A test still pending runs in the main interpreter once the workers are done."""
        if nodeid in self.pending:
            self.pending.discard(nodeid)
            self.after.append(self.c.by_id[nodeid])

    def _warning(self, d):
        import importlib

        try:
            cat = importlib.import_module(d["category"][0])
            for part in d["category"][1].split("."):
                cat = getattr(cat, part)
        except Exception:  # noqa: BLE001 - a category only the worker knows
            cat = UserWarning
        wm = warnings.WarningMessage(
            message=cat(d["message"]), category=cat, filename=d["filename"], lineno=d["lineno"])
        self.config.hook.pytest_warning_recorded.call_historic(kwargs=dict(
            warning_message=wm, when=d["when"], nodeid=d["nodeid"], location=d["location"]))


def interloop_closed():
    from interloop import ChannelClosed

    return ChannelClosed

