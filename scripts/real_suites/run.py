"""Runs uvicorn's, aiohttp's and AnyIO's own test suites on asyncio's loop and on interloop's,
and compares the outcomes test by test.

    python scripts/real_suites/run.py [--subset] [SUITE ...]

SUITE is ``uvicorn``, ``aiohttp`` and/or ``anyio`` (default: all). The suites are the sdists of
the versions installed in this Python (``pip download --no-binary :all:``), unpacked
into ``.cache/real-suites/`` at the top of the repository (git-ignored); only their
tests and test configuration are used, so the tests import the installed packages.
Both runs load ``interloop_plugin`` (next to this file); with
``INTERLOOP_SUITE_LOOP=interloop`` it makes interloop the loop of the suite.

Every test that passes on asyncio's loop must pass on interloop's, unless
``expectations.txt`` (next to this file) lists it with a reason; the runner exits 1
on any other difference, and also when a listed difference no longer occurs (so the
list stays true). A test that passed on asyncio's loop and not on interloop's is run
again by itself, once on each loop: if it then passes on both it is reported as
flaky (timing on a loaded machine), not as a difference. ``--subset`` runs the fixed
subset that CI runs (each suite's ``subset``).
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".cache" / "real-suites"


class Suite:
    def __init__(self, name, config_files, pytest_args, subset):
        self.name = name
        self.config_files = config_files
        self.pytest_args = pytest_args
        self.subset = subset


SUITES = {
    "uvicorn": Suite(
        "uvicorn",
        ["pyproject.toml"],
        # Its addopts ask for pytest-xdist with 8 processes: one process here.
        ["-o", "addopts=-rxXs --strict-config --strict-markers"],
        # The protocol, server, TLS, lifespan and middleware tests: those that run
        # uvicorn's own server on the loop. Left to `scripts/dev real-suites`: the
        # websocket protocol tests' second implementation (the whole file takes
        # ~45 s per loop), the reloader and multiprocess supervisors (which start
        # processes and wait on file watchers, not the loop), the CLI and config.
        [
            "tests/protocols/test_http.py",
            "tests/protocols/test_http2.py",
            "tests/protocols/test_websocket.py::*[[]wsproto*",
            "tests/test_server.py",
            "tests/test_ssl.py",
            "tests/test_main.py",
            "tests/test_lifespan.py",
            "tests/test_default_headers.py",
            "tests/middleware",
        ],
    ),
    "aiohttp": Suite(
        "aiohttp",
        ["pytest.ini"],
        # Its addopts ask for xdist and coverage; keep its own marker selection.
        ["-o", "addopts=-ra --strict-markers",
         "-m", "not dev_mode and not autobahn and not internal"],
        # Server end to end over real sockets, websockets both ways, streams, the
        # test client and the server runner. Left to `scripts/dev real-suites`: the
        # client's functional tests (~280, over two minutes per loop on a loaded
        # 2-core machine), the connector, proxy, sendfile and everything that runs
        # without a loop.
        [
            "tests/test_web_functional.py",
            "tests/test_client_ws_functional.py",
            "tests/test_web_websocket_functional.py",
            "tests/test_web_server.py",
            "tests/test_test_utils.py",
            "tests/test_streams.py",
        ],
    ),
    "anyio": Suite(
        "anyio",
        ["pyproject.toml"],
        # Its own addopts load its plugin (and pytest-mock, pytest-timeout). Its
        # backends are parameters: "asyncio" (asyncio.Runner without a loop factory,
        # so the policy's loop: interloop's in the interloop run) is the one that
        # compares; uvloop's, the eager-task factory's and trio's are deselected.
        ["-k", "not uvloop and not winloop and not eager and not trio"],
        # Sockets (where issue 14's bug was found), task groups, cancellation,
        # synchronization, threads and subprocesses, streams. Left to `scripts/dev
        # real-suites`: files, the pytest plugin's own tests (they start pytest in
        # subprocesses with 3 s timeouts), signals, interpreters and processes.
        [
            "tests/test_sockets.py",
            "tests/test_taskgroups.py",
            "tests/test_synchronization.py",
            "tests/test_to_thread.py",
            "tests/test_from_thread.py",
            "tests/test_subprocesses.py",
            "tests/test_eventloop.py",
            "tests/streams",
        ],
    ),
}


def unpack(suite: Suite) -> Path:
    version = importlib.metadata.version(suite.name)
    dest = CACHE / f"{suite.name}-{version}"
    if (dest / "tests").is_dir():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    dl = CACHE / "sdists"
    sdist = dl / f"{suite.name}-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
             "-d", str(dl), f"{suite.name}=={version}"],
            check=True,
        )
    tmp = CACHE / f".{suite.name}-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = f"{suite.name}-{version}/"
    wanted = ("tests/", *suite.config_files)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(prefix):
                continue
            rel = m.name[len(prefix):]
            if any(rel == w or (w.endswith("/") and rel.startswith(w)) for w in wanted):
                m.name = rel
                members.append(m)
        tar.extractall(tmp, members=members, filter="data")
    tmp.rename(dest)
    return dest


def load_expectations() -> list[tuple[str, str, str, str]]:
    """(suite, pattern, kind, reason) for each line of expectations.txt."""
    out = []
    for line in (HERE / "expectations.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        suite, pattern, kind, reason = line.split(None, 3)
        if kind not in ("exclude", "differs"):
            raise SystemExit(f"expectations.txt: unknown kind {kind!r} in: {line}")
        out.append((suite, pattern, kind, reason))
    return out


def _env(loop: str, report: Path, excluded: list[str], selects: list[str]) -> dict:
    return dict(
        os.environ,
        INTERLOOP_SUITE_LOOP=loop,
        INTERLOOP_SUITE_OUT=str(report),
        INTERLOOP_SUITE_EXCLUDE="\n".join(excluded),
        INTERLOOP_SUITE_SELECT="\n".join(selects),
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    )


def _base_cmd(suite: Suite) -> list[str]:
    # pytest-asyncio is in the venv for interloop's own tests; none of the suites uses
    # it, and its deprecation warning is an error under their warning filters.
    return [sys.executable, "-m", "pytest", "-p", "interloop_plugin", "-p", "no:cacheprovider",
            "-p", "no:asyncio", "-q", "--timeout", "60", *suite.pytest_args]


def rerun(suite: Suite, nodes: list[str], timeout: int) -> dict[str, dict[str, str]]:
    """Runs `nodes` again in one pytest process per loop; their outcomes per loop."""
    where = unpack(suite)
    out = {}
    for loop in ("asyncio", "interloop"):
        report = CACHE / "results" / f"{suite.name}-{loop}-rerun.json"
        report.unlink(missing_ok=True)
        cmd = [*_base_cmd(suite), *nodes]
        print(f"+ [{suite.name} on {loop}, again] {len(nodes)} test(s)", flush=True)
        subprocess.run(cmd, cwd=where, env=_env(loop, report, [], []), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout)
        out[loop] = json.loads(report.read_text())["outcomes"] if report.exists() else {}
    return out


def run_suite(suite: Suite, subset: bool, excluded: list[str], timeout: int) -> dict:
    where = unpack(suite)
    results = CACHE / "results"
    results.mkdir(parents=True, exist_ok=True)
    targets = suite.subset if subset else ["tests"]
    # A pattern with a glob names its file for pytest and selects in the plugin.
    files = [t.split("::", 1)[0] for t in targets]
    selects = [t for t in targets if any(ch in t for ch in "*[")]
    out = {}
    for loop in ("asyncio", "interloop"):
        report = results / f"{suite.name}-{loop}.json"
        report.unlink(missing_ok=True)
        env = _env(loop, report, excluded, selects)
        # A path pattern (no '::') is not even imported: its module may need what is
        # not installed (e.g. a plugin's marks).
        ignore = [f"--ignore-glob={p}" for p in excluded if "::" not in p]
        cmd = [*_base_cmd(suite), *ignore, *dict.fromkeys(files)]
        print(f"+ [{suite.name} on {loop}] (cd {where} && python {shlex.join(cmd[1:])})", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=where, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        took = time.monotonic() - t0
        tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
        print(f"  {tail[0]}  [{took:.0f} s]", flush=True)
        if not report.exists():
            print(proc.stdout[-5000:])
            raise SystemExit(f"{suite.name} on {loop}: pytest wrote no report")
        data = json.loads(report.read_text())
        out[loop] = (data["outcomes"], data["loops"], proc.stdout)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suites", nargs="*", metavar="SUITE", help=f"one of {', '.join(SUITES)} (default: all)")
    ap.add_argument("--subset", action="store_true", help="the fixed subset CI runs")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per pytest run")
    args = ap.parse_args()
    for name in args.suites:
        if name not in SUITES:
            ap.error(f"unknown suite {name!r} (choose from {', '.join(SUITES)})")
    args.suites = args.suites or list(SUITES)
    expectations = load_expectations()
    problems = []
    for name in args.suites:
        suite = SUITES[name]
        mine = [(p, k, r) for s, p, k, r in expectations if s == name]
        excluded = [p for p, k, _ in mine if k == "exclude"]
        differs = [p for p, k, _ in mine if k == "differs"]
        res = run_suite(suite, args.subset, excluded, args.timeout)
        ref, ref_loops, _ = res["asyncio"]
        got, il_loops, _ = res["interloop"]
        if not any(k.startswith("interloop.") for k in il_loops):
            problems.append(f"{name}: the interloop run made no interloop loop ({il_loops})")
        if any(k.startswith("interloop.") for k in ref_loops):
            problems.append(f"{name}: the asyncio run made an interloop loop ({ref_loops})")
        if not ref:
            problems.append(f"{name}: no test ran")
        counts = {s: sum(1 for v in ref.values() if v == s) for s in ("passed", "failed", "skipped")}
        il_counts = {s: sum(1 for v in got.values() if v == s) for s in ("passed", "failed", "skipped")}
        print(f"  {name}: asyncio {counts}, interloop {il_counts}")
        seen_differs = set()
        suspects = []
        for node, state in sorted(ref.items()):
            mine_state = got.get(node, "missing")
            if state == "passed" and mine_state != "passed":
                pat = next((p for p in differs if fnmatch.fnmatchcase(node, p)), None)
                if pat is None:
                    suspects.append((node, mine_state))
                else:
                    seen_differs.add(pat)
        again = rerun(suite, [n for n, _ in suspects], args.timeout) if suspects else {}
        for node, mine_state in suspects:
            if all(again.get(loop, {}).get(node) == "passed" for loop in ("asyncio", "interloop")):
                print(f"  {name}: {node}: {mine_state} on interloop, passed on both when run "
                      "again by itself (flaky, not counted)")
            else:
                again_state = again.get("interloop", {}).get(node, "missing")
                problems.append(f"{name}: {node}: passed on asyncio, {mine_state} on interloop "
                                f"({again_state} when run again)")
        for node in sorted(set(got) - set(ref)):
            problems.append(f"{name}: {node}: ran on interloop only")
        for pat in differs:
            ran = any(fnmatch.fnmatchcase(n, pat) for n in ref)
            if ran and pat not in seen_differs:
                problems.append(f"{name}: listed as differing but did not: {pat}")
        failed_ref = sorted(n for n, s in ref.items() if s == "failed")
        if failed_ref:
            print(f"  {name}: {len(failed_ref)} fail on asyncio's loop too (not compared):")
            for n in failed_ref:
                print(f"    {n}")
    for p in problems:
        print("DIFFERENCE:", p)
    print("real suites:", "OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
