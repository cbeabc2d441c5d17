"""interloop's pytest plugin, driven through pytester in subprocesses.

Part 1: ``--interloop`` and the documented loop factories (pytest-asyncio, AnyIO,
``unittest.IsolatedAsyncioTestCase``) put tests on interloop's loop.
Part 2: ``--interloop-workers N`` runs a suite in own-GIL sub-interpreters with the
outcomes, reports and exit status of a serial run.
"""
from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

# interloop.Pool runs on 3.13, and on 3.12 from 3.12.4 (CPython gh-112140).
POOL_OK = sys.version_info >= (3, 13) or (3, 12, 4) <= sys.version_info < (3, 13)

needs_pool = pytest.mark.skipif(not POOL_OK, reason="sub-interpreter workers need 3.12.4+")
WORKERS = ("--interloop-workers", "2")  # the main interpreter and one sub-interpreter
# Two sub-interpreters, the main interpreter only reporting: tests of what happens in
# a worker use it, so that no test of theirs can run in the main interpreter.
IN_WORKERS = ("--interloop-workers", "2", "--interloop-main", "report")

# A suite with every outcome pytest has, sync and async.
MIXED = '''
import asyncio, pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_pass(): pass
def test_fail(): assert 1 == 2
def test_skip(): pytest.skip("not here")
@pytest.mark.xfail(reason="known", strict=True)
def test_xfail(): assert 0
@pytest.mark.xfail(reason="passes anyway")
def test_xpass(): pass
def test_error(broken): pass
@pytest.mark.parametrize("n", range(6))
def test_param(n): assert n != 4

class TestGroup:
    def test_a(self): pass
    def test_b(self): assert "a" in "abc"

@pytest.mark.asyncio
async def test_async_pass(): await asyncio.sleep(0.01)

@pytest.mark.asyncio
async def test_async_fail():
    await asyncio.sleep(0)
    raise ValueError("async boom")

def test_where(request):
    # Under --interloop-workers the test runs in a worker (xdist's attribute names)
    # or in the main interpreter, which has none (as in a serial run).
    wi = getattr(request.config, "workerinput", None)
    with open(request.config.rootpath / "where.txt", "a") as f:
        f.write((wi or {}).get("workerid", "main") + "\\n")
'''

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""


def junit_outcomes(path):
    """{test id: outcome} from a junit XML file."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        out[name] = "+".join(sorted(kinds)) or "passed"
    return out


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_plugin_is_registered_and_idle_without_options(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_idle='''
        import asyncio, sys, pytest
        def test_nothing_of_interloop_active(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("interloop")
            assert pytestconfig.pluginmanager.get_plugin("interloop-controller") is None
            assert pytestconfig.pluginmanager.get_plugin("interloop-loop") is None
            assert "interloop._pytest.controller" not in sys.modules
            from _pytest.assertion import rewrite  # no recorder installed
            assert rewrite._rewrite_test.__module__ == "_pytest.assertion.rewrite"
            assert type(asyncio.get_event_loop_policy()).__module__.startswith("asyncio")
        @pytest.mark.asyncio
        async def test_asyncio_loop():
            assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")
    ''')
    res = run(pytester)
    res.assert_outcomes(passed=2)
    assert "interloop:" not in res.stdout.str()
    # and the same outcomes with the plugin blocked
    run(pytester, "-p", "no:interloop").assert_outcomes(passed=1, failed=1)


def test_bad_worker_count_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(): pass")
    res = run(pytester, "--interloop-workers", "lots")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--interloop-workers: expected a number of workers or 'auto'*"])


# -- part 1: interloop's loop ------------------------------------------------------

LOOP_SUITE = '''
import asyncio, unittest, pytest
import interloop

def on_interloop():
    return isinstance(asyncio.get_running_loop(), interloop.Loop)

@pytest.fixture
async def fixture_loop():
    return on_interloop()

@pytest.mark.asyncio
async def test_pytest_asyncio(fixture_loop):
    assert on_interloop() and fixture_loop

class TestCase(unittest.IsolatedAsyncioTestCase):
    async def test_isolated(self):
        assert on_interloop()
'''


def test_interloop_option_runs_pytest_asyncio_and_unittest_on_interloop(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_loops=LOOP_SUITE.replace(
        "@pytest.fixture\nasync", "import pytest_asyncio\n@pytest_asyncio.fixture\nasync"))
    run(pytester, "--interloop").assert_outcomes(passed=2)
    # Without the option the same tests see asyncio's loop: the check can fail.
    run(pytester).assert_outcomes(failed=2)


def test_documented_loop_factories_without_the_option(pytester):
    """README's recipes: pytest-asyncio's hook in a conftest, AnyIO's backend
    parameters, IsolatedAsyncioTestCase's loop_factory."""
    pytester.makeini(INI)
    pytester.makeconftest('''
        import interloop, pytest

        def pytest_asyncio_loop_factories(config, item):
            return {"interloop": interloop.new_event_loop}

        @pytest.fixture
        def anyio_backend():
            return ("asyncio", {"loop_factory": interloop.new_event_loop})
    ''')
    pytester.makepyfile(test_recipes='''
        import asyncio, unittest, pytest
        import interloop

        def on_interloop():
            return isinstance(asyncio.get_running_loop(), interloop.Loop)

        @pytest.mark.asyncio
        async def test_pytest_asyncio():
            assert on_interloop()

        @pytest.mark.anyio
        async def test_anyio():
            assert on_interloop()

        class TestCase(unittest.IsolatedAsyncioTestCase):
            loop_factory = staticmethod(interloop.new_event_loop)  # read from 3.13 on

            async def test_isolated(self):
                assert on_interloop()
    ''')
    if sys.version_info >= (3, 13):
        run(pytester).assert_outcomes(passed=3)
    else:  # 3.12's IsolatedAsyncioTestCase has no loop_factory: the policy decides
        run(pytester).assert_outcomes(passed=2, failed=1)
        run(pytester, "--interloop").assert_outcomes(passed=3)


# -- part 2: the parallel runner -----------------------------------------------------

@needs_pool
def test_outcomes_reports_and_junitxml_match_a_serial_run(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_mixed=MIXED)
    serial = run(pytester, "-rA", "--junitxml=serial.xml")
    where = pytester.path / "where.txt"
    assert where.read_text() == "main\n"
    where.unlink()
    par = run(pytester, "-rA", "--junitxml=par.xml", *WORKERS, "--durations=3")
    counts = serial.parseoutcomes()
    assert counts == {"passed": 10, "failed": 3, "skipped": 1, "xfailed": 1,
                      "xpassed": 1, "errors": 1}
    assert par.parseoutcomes() == counts
    assert par.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    assert junit_outcomes(pytester.path / "par.xml") == junit_outcomes(pytester.path / "serial.xml")
    # the short summary (-rA), failure details and --durations come through
    for line in (
        "interloop: 2 runners: the main interpreter and 1 own-GIL sub-interpreter worker*",
        "*slowest 3 durations*",
        "E       ValueError: async boom",
        "FAILED test_mixed.py::test_param[[]4[]] - assert 4 != 4",
        "ERROR test_mixed.py::test_error - RuntimeError: fixture broke",
        "XFAIL test_mixed.py::test_xfail - known",
        "PASSED test_mixed.py::TestGroup::test_a",
    ):
        par.stdout.fnmatch_lines([line])
    assert {w for w in where.read_text().split()} <= {"main", "il0"}


@needs_pool
def test_exitfirst_stops_the_run(pytester):
    pytester.makeini(INI)
    body = "\n".join(f"def test_{i}():\n    import time; time.sleep(0.05)\n    assert {i} != 3\n"
                     for i in range(30))
    pytester.makepyfile(test_many=body)
    res = run(pytester, "-x", *WORKERS)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    counts = res.parseoutcomes()
    assert counts["failed"] == 1
    assert counts.get("passed", 0) < 29  # stopped: not everything ran
    res.stdout.fnmatch_lines(["*stopping after 1 failures*"])


@needs_pool
def test_last_failed_reruns_only_the_failures(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_lf="""
        import pytest
        @pytest.mark.parametrize("n", range(10))
        def test_n(n): assert n % 4 != 1
    """)
    first = pytester.runpytest_subprocess(*WORKERS, timeout=120)
    first.assert_outcomes(passed=7, failed=3)
    again = pytester.runpytest_subprocess("--lf", *WORKERS, timeout=120)
    again.assert_outcomes(failed=3)  # as serially: only the three ran
    again.stdout.fnmatch_lines(["*run-last-failure: rerun previous 3 failures*"])


@needs_pool
def test_capture_per_interpreter_and_capfd_in_the_main_interpreter(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_cap='''
        import os, sys
        def test_prints_and_fails():
            print("out of the worker")
            print("err of the worker", file=sys.stderr)
            assert 0
        def test_capsys(capsys):
            print("mine")
            assert capsys.readouterr().out == "mine\\n"
        def test_capfd(capfd, request):
            os.write(1, b"raw fd write\\n")
            assert capfd.readouterr().out == "raw fd write\\n"
            assert not hasattr(request.config, "workerinput")  # main interpreter
        def test_quiet_pass():
            print("never shown")
    ''')
    res = run(pytester, *WORKERS)
    res.assert_outcomes(passed=3, failed=1)
    res.stdout.fnmatch_lines([
        "*Captured stdout call*", "out of the worker",
        "*Captured stderr call*", "err of the worker",
        "*interloop: 1 test using capfd ran in the main interpreter*",
    ])
    assert "never shown" not in res.stdout.str()


def _refused_module():
    """A stdlib extension module that refuses to load in a sub-interpreter."""
    for name in ("readline", "_curses", "_tkinter"):
        try:
            __import__(name)
        except ImportError:
            continue
        return name
    return None


@needs_pool
def test_module_that_does_not_import_in_a_worker_runs_in_the_main_interpreter(pytester):
    mod = _refused_module()
    if mod is None:
        pytest.skip("no stdlib extension without sub-interpreter support is built here")
    pytester.makeini(INI)
    pytester.makepyfile(
        test_native=f"import {mod}\ndef test_a(): pass\ndef test_b(): assert 0\n",
        test_plain="def test_c(): pass\ndef test_d(): pass\n",
    )
    res = run(pytester, *IN_WORKERS)
    res.assert_outcomes(passed=3, failed=1)
    res.stdout.fnmatch_lines([
        "interloop: ran in the main interpreter (import failed in a sub-interpreter): "
        f"test_native.py (ImportError: module {mod} does not support loading in subinterpreters)",
    ])


@needs_pool
def test_timeout_interrupts_a_hanging_test_and_the_run_goes_on(pytester):
    pytest.importorskip("pytest_timeout")
    pytester.makeini(INI)
    pytester.makepyfile(test_hang='''
        import pytest
        def test_before(): pass
        @pytest.mark.timeout(1)
        def test_spins_forever():
            while True:
                pass
        @pytest.mark.parametrize("n", range(6))
        def test_after(n): pass
    ''')
    res = run(pytester, *IN_WORKERS, "-ra")
    res.assert_outcomes(passed=7, failed=1)
    res.stdout.fnmatch_lines([
        "FAILED test_hang.py::test_spins_forever - Failed: Timeout (>1.0s) from pytest*",
    ])


@needs_pool
def test_failing_collection_is_reported_as_in_a_serial_run(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_ok="def test_ok(): pass", test_broken="def test_x(:\n    pass")
    serial = run(pytester)
    par = run(pytester, *WORKERS)
    assert par.ret == serial.ret == pytest.ExitCode.INTERRUPTED
    for res in (serial, par):
        res.stdout.fnmatch_lines(["*ERROR collecting test_broken.py*", "*1 error during collection*"])
    # and with --continue-on-collection-errors the rest runs
    run(pytester, *WORKERS, "--continue-on-collection-errors").assert_outcomes(passed=1, errors=1)


@needs_pool
def test_loadscope_runs_module_fixtures_once_per_module(pytester):
    pytester.makeini(INI)
    fixture = '''
import pytest
@pytest.fixture(scope="module")
def setup_count(request):
    with open(request.config.rootpath / "setups.txt", "a") as f:
        f.write(request.module.__name__ + "\\n")
'''
    tests = "\n".join(f"def test_{i}(setup_count): pass" for i in range(8))
    pytester.makepyfile(test_m1=fixture + tests, test_m2=fixture + tests, test_m3=fixture + tests)
    run(pytester, *WORKERS, "--interloop-dist", "loadscope").assert_outcomes(passed=24)
    setups = (pytester.path / "setups.txt").read_text().split()
    assert sorted(setups) == ["test_m1", "test_m2", "test_m3"]


@needs_pool
def test_session_fixture_runs_once_per_worker_that_needs_it(pytester):
    pytester.makeini(INI)
    pytester.makeconftest('''
import pytest
@pytest.fixture(scope="session")
def shared(request):
    wid = getattr(request.config, "workerinput", {}).get("workerid", "main")
    with open(request.config.rootpath / "session.txt", "a") as f:
        f.write(wid + "\\n")
''')
    pytester.makepyfile(test_s="\n".join(
        f"def test_{i}(shared):\n    import time; time.sleep(0.02)" for i in range(20)))
    res = run(pytester, "--interloop-workers", "auto")
    res.assert_outcomes(passed=20)
    n = len(os.sched_getaffinity(0))
    res.stdout.fnmatch_lines([f"interloop: {n} runners: the main interpreter and {n - 1} own-GIL*"])
    runs = (pytester.path / "session.txt").read_text().split()
    assert len(runs) == len(set(runs)) and 1 <= len(runs) <= n


@pytest.mark.skipif(POOL_OK, reason="only where workers cannot start")
def test_without_workers_the_run_is_serial_and_says_so(pytester):
    pytester.makepyfile("def test_a(): pass\ndef test_b(): assert 0")
    res = run(pytester, *WORKERS)
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["*interloop: workers unavailable, all tests ran in the main interpreter*"])


@needs_pool
def test_tests_refused_by_a_sub_interpreter_run_again_in_the_main_interpreter(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_limits='''
        import signal, threading
        def test_signal_handler():
            old = signal.signal(signal.SIGUSR1, lambda *a: None)
            signal.signal(signal.SIGUSR1, old)
        def test_daemon_thread():
            t = threading.Thread(target=lambda: None, daemon=True)
            t.start()
            t.join()
        def test_plain(request):
            assert request.config.workerinput["workerid"].startswith("il")
    ''')
    res = run(pytester, *IN_WORKERS, "-v")
    res.assert_outcomes(passed=3)
    res.stdout.fnmatch_lines([
        "interloop: ran again in the main interpreter (RuntimeError: daemon threads are "
        "disabled in this (sub)interpreter): test_limits.py::test_daemon_thread",
        "interloop: ran again in the main interpreter (ValueError: signal only works in main "
        "thread of the main interpreter): test_limits.py::test_signal_handler",
    ])
    # each test is reported once
    assert res.stdout.str().count("test_limits.py::test_signal_handler PASSED") == 1


@needs_pool
@pytest.mark.parametrize("runners", [WORKERS, IN_WORKERS], ids=["main-runs", "main-reports"])
def test_pytest_exit_in_a_worker_ends_the_run_as_serially(pytester, runners):
    pytester.makeini(INI)
    pytester.makepyfile(test_exit='''
        import pytest
        def test_a(): pass
        def test_exits(): pytest.exit("enough", returncode=3)
        def test_b(): pass
    ''')
    serial = run(pytester)
    par = run(pytester, *runners)
    assert serial.ret == par.ret == 3
    for res in (serial, par):
        res.stdout.fnmatch_lines(["*Exit: enough*"])


@needs_pool
@pytest.mark.parametrize("runners", [WORKERS, IN_WORKERS], ids=["main-runs", "main-reports"])
def test_ctrl_c_stops_the_workers_and_prints_the_summary(pytester, runners):
    import signal
    import subprocess
    import time

    pytester.makeini(INI)
    pytester.makepyfile(test_slow='''
        import time
        def test_fast(): pass
        def test_blocks(request):
            (request.config.rootpath / "started").write_text("")
            for _ in range(600):
                time.sleep(0.05)
        def test_blocks_too():
            for _ in range(600):
                time.sleep(0.05)
    ''')
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *runners],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pytester.path / "started").exists():
            assert time.monotonic() < deadline, "the test never started"
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    assert "1 passed" in out  # the summary counts what finished


@needs_pool
def test_a_conftest_that_does_not_import_in_a_worker_runs_the_suite_in_the_main_interpreter(
        pytester):
    mod = _refused_module()
    if mod is None:
        pytest.skip("no stdlib extension without sub-interpreter support is built here")
    pytester.makeini(INI)
    pytester.makeconftest(f"import {mod}")
    pytester.makepyfile(test_c="def test_a(): pass\ndef test_b(): assert 0\n")
    res = run(pytester, *IN_WORKERS)
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines([
        f"interloop: workers 0, 1 could not start a session: *{mod} does not support loading "
        "in subinterpreters*",
        "interloop: 2 test(s) whose worker ended without their result ran in the main interpreter",
    ])


@needs_pool
def test_a_test_blocked_in_c_is_reported_and_the_run_does_not_wait_for_it(pytester):
    pytest.importorskip("pytest_timeout")
    pytester.makeini(INI)
    pytester.makepyfile(test_stuck='''
        import time, pytest
        @pytest.mark.timeout(1)
        def test_sleeps_in_c():
            time.sleep(60)  # pending calls (the interrupt) do not run in C code
        @pytest.mark.parametrize("n", range(4))
        def test_others(n): pass
    ''')
    res = run(pytester, *IN_WORKERS, "-ra", "--junitxml=out.xml")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.assert_outcomes(passed=4, failed=1)
    res.stdout.fnmatch_lines([
        "*Timeout (>1.0s) from pytest-timeout: interloop worker * could not be interrupted*",
        "interloop: could not stop worker * (test_stuck.py::test_sleeps_in_c)",
    ])
    assert junit_outcomes(pytester.path / "out.xml")["test_stuck::test_sleeps_in_c"] == "failure"
    assert res.duration < 40  # well before the sleep would have ended


@needs_pool
def test_the_main_interpreter_and_a_worker_take_tests_from_one_queue(pytester):
    """A test the main interpreter takes waits until a worker has run one: both
    runners must take tests from the queue for the run to pass."""
    pytester.makeini(INI)
    pytester.makepyfile(test_share='''
        import time, pytest
        @pytest.mark.parametrize("n", range(12))
        def test_n(n, request):
            wi = getattr(request.config, "workerinput", None)
            where = request.config.rootpath / "where.txt"
            with open(where, "a") as f:
                f.write((wi or {}).get("workerid", "main") + "\\n")
            if wi is None:
                deadline = time.monotonic() + 60
                while "il0" not in where.read_text().split():
                    assert time.monotonic() < deadline, "no worker ran a test"
                    time.sleep(0.02)
    ''')
    res = run(pytester, *WORKERS)
    res.assert_outcomes(passed=12)
    runners = (pytester.path / "where.txt").read_text().split()
    assert len(runners) == 12  # each test ran once
    assert set(runners) == {"main", "il0"}


@needs_pool
def test_a_timeout_in_the_main_interpreter_is_pytest_timeouts_own(pytester):
    """capfd tests run in the main interpreter: there pytest-timeout works as in a
    serial run (its signal), and the run goes on."""
    pytest.importorskip("pytest_timeout")
    pytester.makeini(INI)
    pytester.makepyfile(test_main_hang='''
        import pytest
        @pytest.mark.timeout(1)
        def test_spins_forever(capfd, request):
            assert not hasattr(request.config, "workerinput")
            while True:
                pass
        @pytest.mark.parametrize("n", range(6))
        def test_after(n): pass
    ''')
    res = run(pytester, *WORKERS, "-ra")
    res.assert_outcomes(passed=6, failed=1)
    res.stdout.fnmatch_lines(["FAILED test_main_hang.py::test_spins_forever - Failed: Timeout*"])
    assert "interloop worker" not in res.stdout.str()


@needs_pool
def test_one_runner_is_a_serial_run(pytester):
    pytester.makepyfile("def test_a(request): assert not hasattr(request.config, 'workerinput')")
    res = run(pytester, "--interloop-workers", "1")
    res.assert_outcomes(passed=1)
    assert "interloop:" not in res.stdout.str()


def test_rewritten_code_is_reused_only_for_the_same_source(tmp_path, monkeypatch, pytestconfig):
    """What the main interpreter rewrote is served to a worker's import, as long as
    the source file is the one it was made from."""
    from _pytest.assertion import rewrite

    from interloop._pytest.rewrite import Recorder, use_recorded

    monkeypatch.setattr(rewrite, "_rewrite_test", rewrite._rewrite_test)
    monkeypatch.setattr(rewrite, "_read_pyc", lambda *a, **k: None)  # pytest's own cache: empty
    rec = Recorder()
    assert rec.install()
    src = tmp_path / "mod_rw.py"
    src.write_text("def f(x):\n    assert x == 1\n")
    _, co = rewrite._rewrite_test(src, pytestconfig)
    shipped = rec.take()
    assert list(shipped) == [str(src)]
    assert rec.take() == {}  # handed over once; everything=True gives it again
    assert list(rec.take(everything=True)) == [str(src)]
    cache = {}
    assert use_recorded(cache)
    assert rewrite._read_pyc(src, tmp_path / "none.pyc") is None  # nothing shipped yet
    cache.update(shipped)
    got = rewrite._read_pyc(src, tmp_path / "none.pyc")
    assert got is not None and got == co  # code objects compare by content
    src.write_text("def f(x):\n    assert x == 2\n")  # changed since: rewritten as usual
    assert rewrite._read_pyc(src, tmp_path / "none.pyc") is None
    rec.uninstall()
    assert rewrite._rewrite_test.__module__ == "_pytest.assertion.rewrite"


def test_long_first_orders_by_recorded_durations():
    from interloop._pytest.controller import _long_first, long_first

    units = [("a",), ("b",), ("c",), ("d",), ("new",), ("e",)]
    durations = {"a": 0.01, "b": 3.0, "c": 0.01, "d": 1.0, "e": 0.02, "gone": 9.0}
    # b and d are long (>= 2% of the expected total), longest first, then the new
    # test (counted as the mean of the known ones); the rest keep their order
    assert long_first(units, durations) == [("b",), ("d",), ("new",), ("a",), ("c",), ("e",)]
    assert long_first(units, {}) == units
    assert _long_first(units, durations)[1] == 3
    # a unit's time is the sum of its tests'
    assert long_first([("a", "c"), ("b",), ("d", "e")], {"a": 2, "c": 2, "b": 3, "d": 0.1, "e": 0.1}) \
        == [("a", "c"), ("b",), ("d", "e")]
    assert long_first([("x",), ("y", "z")], {"x": 1, "y": 1, "z": 1}) == [("y", "z"), ("x",)]


@needs_pool
def test_the_tests_that_took_longest_last_time_start_first(pytester):
    pytester.makeini(INI)
    body = "\n".join(f"def test_{i}(): record('test_{i}')" for i in range(10))
    pytester.makepyfile(test_order=(
        "import time\n"
        "def record(name):\n"
        "    with open('started.txt', 'a') as f:\n"
        "        f.write(name + '\\n')\n"
        f"{body}\n"
        "def test_slow():\n"
        "    record('test_slow')\n"
        "    time.sleep(0.3)\n"))
    started = pytester.path / "started.txt"
    one = ("--interloop-workers", "1", "--interloop-main", "report")  # queue order, exactly
    pytester.runpytest_subprocess(*one, timeout=120).assert_outcomes(passed=11)
    assert started.read_text().split()[-1] == "test_slow"  # no durations yet: collection order
    cached = pytester.path / ".pytest_cache" / "v" / "interloop" / "durations"
    durations = json.loads(cached.read_text())
    assert durations["test_order.py::test_slow"] >= 0.3
    assert set(durations) == {f"test_order.py::test_{i}" for i in range(10)} | {"test_order.py::test_slow"}
    started.unlink()
    pytester.runpytest_subprocess(*one, timeout=120).assert_outcomes(passed=11)
    assert started.read_text().split() == ["test_slow"] + [f"test_{i}" for i in range(10)]
    started.unlink()
    # --ff's order is kept
    pytester.runpytest_subprocess(*one, "--ff", timeout=120).assert_outcomes(passed=11)
    assert started.read_text().split()[-1] == "test_slow"


# The forked helper process (interloop/_pytest/forked.py) runs the tests that need
# the process alone; INTERLOOP_PYTEST_NO_FORK=1 turns it off (they then run in the
# main interpreter, after the workers or before them).
IN_HELPER = "interloop: ran again in a process forked before the workers started"


@needs_pool
@pytest.mark.parametrize("runners", [WORKERS, IN_WORKERS], ids=["main-runs", "main-reports"])
@pytest.mark.parametrize("where", [
    IN_HELPER,
    # without the helper: after the workers, in the main interpreter
    "interloop: ran again in the main interpreter",
], ids=["helper", "no-helper"])
def test_a_forking_test_runs_again_once_alone_and_reports_once(pytester, runners, where,
                                                               monkeypatch):
    """os.fork() with sub-interpreters running would leave a broken child: in a worker
    CPython refuses it, in the main interpreter the plugin does while workers run;
    either way the test runs again where the process has no sub-interpreter (the
    helper process forked before the pool started, or the main interpreter once the
    workers are done), and passes."""
    if where != IN_HELPER:
        monkeypatch.setenv("INTERLOOP_PYTEST_NO_FORK", "1")
    pytester.makeini(INI)
    pytester.makepyfile(test_fork='''
        import os, pytest
        def test_forks():
            pid = os.fork()
            if pid == 0:
                os._exit(5)
            assert os.waitpid(pid, 0)[1] >> 8 == 5
        @pytest.mark.parametrize("n", range(8))
        def test_other(n): pass
    ''')
    res = run(pytester, *runners, "-v")
    res.assert_outcomes(passed=9)
    res.stdout.fnmatch_lines([f"{where} (*fork*): test_fork.py::test_forks"])
    assert res.stdout.str().count("test_fork.py::test_forks PASSED") == 1


@needs_pool
def test_a_worker_whose_session_breaks_in_a_test_loses_no_test(pytester):
    """A hook that fails in a worker while it reports a test ends the worker's
    session (pytest's internal error): the test runs again in the main interpreter,
    the worker is named, another session takes the remaining tests."""
    pytester.makeini(INI)
    pytester.makeconftest('''
        _where = {}
        def pytest_configure(config):
            _where["worker"] = hasattr(config, "workerinput")
        def pytest_runtest_logreport(report):
            if (_where["worker"] and report.when == "call"
                    and report.nodeid.endswith("test_breaks_its_worker")):
                raise RuntimeError("broken reporting")
    ''')
    pytester.makepyfile(test_break='''
        import pytest
        @pytest.mark.parametrize("n", range(4))
        def test_before(n): pass
        def test_breaks_its_worker(): pass
        @pytest.mark.parametrize("n", range(8))
        def test_after(n): pass
    ''')
    res = run(pytester, *IN_WORKERS, "-v")
    res.assert_outcomes(passed=13)
    res.stdout.fnmatch_lines([
        "interloop: worker * session ended in test_break.py::test_breaks_its_worker (exit status 3);"
        " the test ran again in the main interpreter",
    ])
    assert res.stdout.str().count("test_break.py::test_breaks_its_worker PASSED") == 1


@needs_pool
def test_a_test_that_forked_last_time_goes_straight_to_the_helper(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_fork2='''
        import os, pytest
        @pytest.mark.parametrize("n", range(6))
        def test_other(n): pass
        def test_forks():
            pid = os.fork()
            if pid == 0:
                os._exit(5)
            assert os.waitpid(pid, 0)[1] >> 8 == 5
    ''')
    first = pytester.runpytest_subprocess(*WORKERS, "-v", timeout=120)
    first.assert_outcomes(passed=7)
    first.stdout.fnmatch_lines([f"{IN_HELPER} (*fork*): test_fork2.py::test_forks"])
    again = pytester.runpytest_subprocess(*WORKERS, "-v", timeout=120)
    again.assert_outcomes(passed=7)
    out = again.stdout.str()
    assert "ran again" not in out
    again.stdout.fnmatch_lines(["interloop: 1 test that needed the process alone in an earlier run "
                                "(os.fork, tracemalloc) ran in a process forked before the "
                                "workers started"])
    assert out.count("test_fork2.py::test_forks PASSED") == 1


@needs_pool
def test_without_the_helper_a_test_that_forked_last_time_runs_first(pytester, monkeypatch):
    monkeypatch.setenv("INTERLOOP_PYTEST_NO_FORK", "1")
    pytester.makeini(INI)
    pytester.makepyfile(test_fork2='''
        import os, pytest
        @pytest.mark.parametrize("n", range(6))
        def test_other(n): pass
        def test_forks():
            pid = os.fork()
            if pid == 0:
                os._exit(5)
            assert os.waitpid(pid, 0)[1] >> 8 == 5
    ''')
    first = pytester.runpytest_subprocess(*WORKERS, "-v", timeout=120)
    first.assert_outcomes(passed=7)
    first.stdout.fnmatch_lines(["interloop: ran again in the main interpreter (*fork*): test_fork2.py::test_forks"])
    again = pytester.runpytest_subprocess(*WORKERS, "-v", timeout=120)
    again.assert_outcomes(passed=7)
    out = again.stdout.str()
    assert "ran again in the main interpreter" not in out
    again.stdout.fnmatch_lines(["interloop: 1 test that needed the process alone in an earlier run "
                                "(os.fork, tracemalloc) ran first, before the workers started"])
    # it is the first test reported
    reported = [ln for ln in out.splitlines() if ln.startswith("test_fork2.py::")]
    assert reported[0].startswith("test_fork2.py::test_forks PASSED")


@needs_pool
def test_a_test_refused_in_a_worker_last_time_goes_to_the_main_interpreter(pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_thr='''
        import threading
        def test_daemon_thread():
            t = threading.Thread(target=lambda: None, daemon=True)
            t.start()
            t.join()
        def test_plain(): pass
    ''')
    first = pytester.runpytest_subprocess(*IN_WORKERS, timeout=120)
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["interloop: ran again in the main interpreter (*daemon threads*"])
    again = pytester.runpytest_subprocess(*IN_WORKERS, timeout=120)
    again.assert_outcomes(passed=2)
    assert "ran again" not in again.stdout.str()
    again.stdout.fnmatch_lines(
        ["interloop: 1 test a sub-interpreter refused in an earlier run ran in the main interpreter"])


@needs_pool
@pytest.mark.parametrize("runners", [WORKERS, IN_WORKERS], ids=["main-runs", "main-reports"])
def test_a_tracemalloc_test_runs_alone_after_the_workers(pytester, runners):
    """tracemalloc traces the whole process: a test measuring allocations must not
    see the workers'. It does not load in a sub-interpreter, and the main interpreter
    refuses tracemalloc.start() while workers run: it runs after them."""
    pytester.makeini(INI)
    pytester.makepyfile(test_tm='''
        import time, tracemalloc, pytest
        @pytest.mark.parametrize("n", range(6))
        def test_allocates(n):
            end = time.monotonic() + 0.3
            junk = []
            while time.monotonic() < end:
                junk.append(bytearray(10_000))
                if len(junk) > 50:
                    junk.clear()
        def test_measures():
            tracemalloc.start()
            try:
                time.sleep(0.5)
                assert tracemalloc.get_traced_memory()[1] < 200_000  # nobody else's
            finally:
                tracemalloc.stop()
    ''')
    res = run(pytester, *runners, "-v")
    res.assert_outcomes(passed=7)
    res.stdout.fnmatch_lines([f"{IN_HELPER} (*tracemalloc*test_tm.py::test_measures"])


@needs_pool
def test_without_the_helper_a_tracemalloc_test_runs_after_the_workers(pytester, monkeypatch):
    monkeypatch.setenv("INTERLOOP_PYTEST_NO_FORK", "1")
    pytester.makeini(INI)
    pytester.makepyfile(test_tm='''
        import tracemalloc
        def test_measures():
            tracemalloc.start()
            tracemalloc.stop()
        def test_plain(): pass
    ''')
    res = run(pytester, *WORKERS, "-v")
    res.assert_outcomes(passed=2)
    res.stdout.fnmatch_lines(["interloop: ran again in the main interpreter (*tracemalloc*test_tm.py::test_measures"])


@needs_pool
def test_the_helper_reports_output_warnings_and_failures_as_serially(pytester, monkeypatch):
    """A test in the forked helper: its captured output is in its report, its
    warnings reach the summary, a failure fails the run; a module fixture is set up
    there and torn down (the file its teardown writes proves it ran)."""
    pytester.makeini(INI)
    pytester.makepyfile(test_alone='''
        import os, warnings, pytest
        @pytest.fixture(scope="module")
        def mod_fixture():
            yield os.getpid()
            with open(os.path.join(os.environ["ALONE_DIR"], f"torn-down-{os.getpid()}"), "w"):
                pass
        def forks():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        def test_prints_and_fails(mod_fixture):
            forks()
            print("said by the forked helper")
            assert mod_fixture == os.getpid()
            assert 1 == 2
        def test_warns(mod_fixture):
            forks()
            warnings.warn("careful, from the helper", UserWarning)
        @pytest.mark.parametrize("n", range(6))
        def test_other(n): pass
    ''')
    out_dir = pytester.path / "alone"
    out_dir.mkdir()
    monkeypatch.setenv("ALONE_DIR", str(out_dir))
    res = run(pytester, *WORKERS)
    res.assert_outcomes(passed=7, failed=1)
    out = res.stdout.str()
    assert "said by the forked helper" in out  # its captured stdout, in the failure
    assert "assert 1 == 2" in out
    res.stdout.fnmatch_lines(["*careful, from the helper*"])
    assert res.ret == 1
    torn = sorted(p.name for p in out_dir.iterdir())
    # torn down in the helper (and in the main interpreter, where the first tries
    # ran and were refused os.fork)
    assert len(torn) >= 1


@needs_pool
def test_a_test_that_ends_the_helper_process_is_reported_and_loses_nothing(pytester):
    """The helper process dies inside a test (os._exit): that test fails with a
    message naming the helper, every other test runs, and the run ends."""
    pytester.makeini(INI)
    pytester.makepyfile(test_die='''
        import os, pytest
        def test_kills_its_process():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            os._exit(7)
        def test_forks_fine():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        @pytest.mark.parametrize("n", range(6))
        def test_other(n): pass
    ''')
    res = run(pytester, *WORKERS, "-v")
    res.assert_outcomes(passed=7, failed=1)
    res.stdout.fnmatch_lines(["*the forked helper process*died while running this test*"])
    assert res.stdout.str().count("test_die.py::test_forks_fine PASSED") == 1


@needs_pool
def test_the_helpers_tests_share_the_runs_temporary_directory_and_lf(pytester, monkeypatch):
    """The helper's tests make their tmp_path inside the run's base directory (made
    before the fork); with --lf, the test the controller sends is run there even
    though the helper collects its module alone."""
    pytester.makeini(INI)
    pytester.makepyfile(test_tmp='''
        import os, pytest
        def forks():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        def test_in_helper(tmp_path):
            forks()
            (tmp_path / "mark").write_text(str(os.getpid()))
            assert os.environ.get("FAIL_ONCE") != "1"
        def test_in_main_or_worker(tmp_path):
            (tmp_path / "mark").write_text(str(os.getpid()))
        @pytest.mark.parametrize("n", range(4))
        def test_other(n): pass
    ''')
    base = pytester.path / "base"
    res = pytester.runpytest_subprocess(*WORKERS, f"--basetemp={base}", timeout=120)
    res.assert_outcomes(passed=6)
    marks = {p.parent.name.rstrip("0123456789"): int(p.read_text()) for p in base.glob("**/mark")}
    assert set(marks) == {"test_in_helper", "test_in_main_or_worker"}, marks
    assert marks["test_in_helper"] != marks["test_in_main_or_worker"]  # another process
    # --lf: the helper's test failed last time; only it runs, in the helper
    monkeypatch.setenv("FAIL_ONCE", "1")
    res = pytester.runpytest_subprocess(*WORKERS, timeout=120)
    res.assert_outcomes(passed=5, failed=1)
    monkeypatch.delenv("FAIL_ONCE")
    res = pytester.runpytest_subprocess(*WORKERS, "--lf", "-v", timeout=120)
    res.assert_outcomes(passed=1)
    out = res.stdout.str()
    assert "test_tmp.py::test_in_helper PASSED" in out
    assert "not collected in the forked helper" not in out


@needs_pool
@pytest.mark.parametrize("runners", [WORKERS, IN_WORKERS], ids=["main-runs", "main-reports"])
def test_a_runner_does_not_take_a_second_long_test_while_it_runs_one(pytester, runners):
    """A runner holds one test back to tear it down knowing the next one; with a long
    test held it would take a second long test from the queue and keep it from the
    other runner for the first one's whole length. Long tests (by the durations of
    the previous run) run at once instead, so two of them go to two runners."""
    pytester.makeini(INI)
    pytester.makepyfile(test_long='''
        import os, time, pytest
        @pytest.fixture(scope="module")
        def counted():
            with open("setups.txt", "a") as f:
                f.write("s\\n")
            yield
            with open("setups.txt", "a") as f:
                f.write("t\\n")
        def where(request):
            wi = getattr(request.config, "workerinput", None)
            return wi["workerid"] if wi else "main"
        @pytest.mark.parametrize("n", range(6))
        def test_short(n, counted): pass
        def test_long_a(request, counted):
            with open("long.txt", "a") as f:
                f.write(f"a {where(request)}\\n")
            time.sleep(1.5)
        def test_long_b(request, counted):
            with open("long.txt", "a") as f:
                f.write(f"b {where(request)}\\n")
            time.sleep(1.5)
        @pytest.mark.parametrize("n", range(6))
        def test_after(n, counted): pass
    ''')
    pytester.makepyfile(test_other='''
        import pytest
        @pytest.mark.parametrize("n", range(8))
        def test_other(n): pass
    ''')
    first = pytester.runpytest_subprocess(*runners, timeout=120)
    first.assert_outcomes(passed=22)
    (pytester.path / "long.txt").unlink()
    (pytester.path / "setups.txt").unlink()
    again = pytester.runpytest_subprocess(*runners, timeout=120)
    again.assert_outcomes(passed=22)
    where = dict(line.split() for line in (pytester.path / "long.txt").read_text().splitlines())
    assert where["a"] != where["b"], where
    # every module fixture set up was torn down once (fixed up when the guessed next
    # test was not the one that came)
    marks = (pytester.path / "setups.txt").read_text().split()
    assert marks.count("s") == marks.count("t") >= 1


@needs_pool
def test_plugins_output_hooks_that_fail_in_a_sub_interpreter_do_not_end_a_worker(pytester):
    # hypothesis' pytest_terminal_summary imports hypothesis, whose native module
    # refuses sub-interpreters: a worker's session ended at its end, after its tests.
    pytester.makeini(INI)
    pytester.makeconftest("""
        def _refuse(config):
            if hasattr(config, "workerinput"):
                raise ImportError("module fake._native does not support loading in subinterpreters")
        def pytest_report_header(config):
            _refuse(config)
            return ["conftest header line"]
        def pytest_terminal_summary(terminalreporter, exitstatus, config):
            _refuse(config)
            terminalreporter.write_line("conftest summary line")
    """)
    pytester.makepyfile(test_out="""
        import pytest
        @pytest.mark.parametrize("i", range(6))
        def test_in_worker(request, i):
            assert request.config.workerinput["workerid"].startswith("il")
    """)
    res = run(pytester, *IN_WORKERS, "-rA")
    res.assert_outcomes(passed=6)
    out = res.stdout.str()
    assert "conftest header line" in out and "conftest summary line" in out
    assert "failed:" not in out and "ran in the main interpreter" not in out, out


@needs_pool
def test_hypothesis_installed_and_used_beside_the_workers(pytester):
    pytest.importorskip("hypothesis")
    pytester.makeini(INI)
    pytester.makepyfile(test_plain="""
        import pytest
        @pytest.mark.parametrize("i", range(4))
        def test_in_worker(request, i):
            assert request.config.workerinput["workerid"].startswith("il")
    """, test_prop="""
        from hypothesis import given, strategies as st
        @given(st.integers())
        def test_int(x):
            assert isinstance(x, int)
    """)
    res = run(pytester, *IN_WORKERS, "-rA")
    res.assert_outcomes(passed=5)
    out = res.stdout.str()
    # The module that imports hypothesis ran in the main interpreter, named once.
    assert "test_prop.py" in out and "failed:" not in out, out
