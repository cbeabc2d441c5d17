"""Test-suite wall time: serial pytest vs ``pytest -n 2`` (pytest-xdist) vs
``pytest --interloop-workers 2``, end to end (command start to exit), plus the time
from command start to the first test result in the main process.

    python benches/bench_pytest.py [--runs 5] [--tests 400] [--ms 10] [--no-real]
        [--suites synthetic,asgiref] [--runners serial,xdist,interloop,...]

Suites:
- synthetic: ``--tests`` CPU-bound tests of about ``--ms`` ms each (pure-Python
  arithmetic), half of them ``async def`` under pytest-asyncio, in 8 modules; written
  to a temporary directory.
- the real suites of ``scripts/plugin_suites.py`` (fetched into ``.cache/plugin-suites``).

Each run is a fresh ``python -m pytest`` process; the runners alternate within a
round and the table gives medians and ratios from the same rounds. pytest's cache
is on (``.pytest_cache`` in the suite's directory): an untimed run of each interloop
runner first records the tests' durations, which the timed runs use to start the
long tests first. Writes
``benches/results/pytest.json`` (Markdown included; ``python benches/report.py`` puts
it into ``docs/benchmarks.md``). Needs pytest-asyncio and pytest-xdist (both in
``scripts/requirements-dev.txt``); run it with the dev venv's python.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
sys.path.insert(0, str(ROOT / "scripts"))

import plugin_suites  # noqa: E402

PROBE_DIR = None
# short name: (label, extra pytest arguments); the first three make the table
ALL_RUNNERS = {
    "serial": ("serial", []),
    "xdist": ("pytest -n 2 (xdist)", ["-n", "2"]),
    "interloop": ("--interloop-workers 2", ["--interloop-workers", "2"]),
    # the main interpreter and two sub-interpreters (3 runners on 2 cores)
    "interloop3": ("--interloop-workers 3", ["--interloop-workers", "3"]),
    # two sub-interpreters, the main interpreter only reports (the earlier design)
    "interloop-report": ("--interloop-workers 2 --interloop-main report",
                         ["--interloop-workers", "2", "--interloop-main", "report"]),
}
DEFAULT_RUNNERS = "serial,xdist,interloop"
RUNNERS = {}

# A plugin (-p bench_first_result, from a temporary directory on PYTHONPATH) that
# records when the main process saw its first and last test reports; xdist's workers
# and interloop's have config.workerinput and stay quiet.
PROBE = """
import os, time
_state = {}
def pytest_configure(config):
    _state["main"] = not hasattr(config, "workerinput")
def pytest_runtest_logreport(report):
    if _state.get("main") and report.when == "call":
        _state.setdefault("first", time.time())
        _state["last"] = time.time()
def pytest_unconfigure(config):
    path = os.environ.get("BENCH_FIRST_RESULT")
    if path and "first" in _state:
        with open(path, "w") as f:
            f.write(f"{_state['first']!r} {_state['last']!r}")
"""


def calibrate(ms: float) -> int:
    """Loop count of ``spin`` that takes about ``ms`` milliseconds here (the median of
    seven measurements of about 0.1 s: this VM's speed moves)."""
    n = 20000
    while True:
        t = time.perf_counter()
        spin(n)
        dt = time.perf_counter() - t
        if dt > 0.1:
            break
        n *= 2
    rates = []
    for _ in range(7):
        t = time.perf_counter()
        spin(n)
        rates.append(n / (time.perf_counter() - t))
    return max(1, int(statistics.median(rates) * ms / 1000))


def spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


def make_synthetic(root: Path, tests: int, n: int) -> Path:
    suite = root / "synthetic"
    suite.mkdir()
    (suite / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    modules = 8
    per = tests // modules
    for m in range(modules):
        lines = ["import asyncio, pytest", "",
                 "def spin(n):", "    acc = 0", "    for i in range(n):",
                 "        acc = (acc + i * i) % 1000003", "    return acc", ""]
        for t in range(per):
            if t % 2:
                lines += ["@pytest.mark.asyncio", f"async def test_{t}():",
                          "    await asyncio.sleep(0)", f"    assert spin({n}) >= 0", ""]
            else:
                lines += [f"def test_{t}():", f"    assert spin({n}) >= 0", ""]
        (suite / f"test_cpu_{m}.py").write_text("\n".join(lines))
    return suite


# Where each run's python comes from: "dev" is the interpreter running this script
# (the project's dev venv, which carries every plugin the project's own tests need:
# hypothesis, anyio and trio, pytest-mock, pytest-timeout), "lean" a venv made here
# with only what the suites need (pytest, pytest-asyncio, pytest-xdist, packaging for
# asgiref) and interloop, as a project's own environment would be. Plugins cost
# every runner their import at start-up, and hypothesis' terminal summary imports
# hypothesis at the end of every run (0.5-0.8 s here): fixed costs that a serial run
# pays once and xdist once per process.
LEAN_PACKAGES = ("pytest", "pytest-asyncio", "pytest-xdist", "packaging")
PYTHON = {"dev": sys.executable}


def lean_python() -> str:
    """The lean venv's python (``.cache/pytest-bench/venv-X.Y``), made on first use
    with the dev venv's versions of ``LEAN_PACKAGES`` and this checkout's interloop
    (its installed files copied: the ``.pth`` of a development install or the package)."""
    import importlib.metadata as md
    import shutil
    import sysconfig

    tag = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = ROOT / ".cache" / "pytest-bench" / f"venv-{tag}"
    py = venv / "bin" / "python"
    stamp = venv / "interloop-bench.txt"
    pins = [f"{name}=={md.version(name)}" for name in LEAN_PACKAGES]
    want = "\n".join(pins) + "\n"
    if stamp.exists() and stamp.read_text() == want and py.exists():
        return str(py)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                   check=True)
    site = Path(subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    dist = md.distribution("interloop")
    here = Path(sysconfig.get_paths()["purelib"])
    for f in dist.files or ():
        src = Path(dist.locate_file(f))
        rel = Path(f)
        if rel.parts[0] == ".." or not src.is_file():
            continue  # the console script (bin/): not needed to run pytest
        dst = site / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    if not (site / "interloop.pth").exists() and not (site / "interloop").exists():
        raise SystemExit(f"interloop's files were not found under {here}")
    stamp.write_text(want)
    return str(py)


def forget_rewrites(suite: Path, python: str, pyc: str):
    """With ``--pyc off``, removes pytest's cached rewritten modules (``*-pytest-*.pyc``,
    left by a run with bytecode writing on) from the suite and the environment, so
    every run rewrites as on a fresh checkout."""
    if pyc != "off":
        return
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    for root in (suite, Path(site)):
        for f in root.rglob("*-pytest-*.pyc"):
            f.unlink()


def run_once(cwd: Path, args: list[str], extra: list[str], python: str):
    """(wall s, first result s or None, CPU s, last output line, phases or None):
    phases is the plugin's thread CPU per phase in the main interpreter and each
    worker (INTERLOOP_PYTEST_PHASES), for interloop's runners."""
    probe = Path(tempfile.mktemp(prefix="bench-first-"))
    phases_file = Path(tempfile.mktemp(prefix="bench-phases-"))
    env = dict(os.environ, BENCH_FIRST_RESULT=str(probe), INTERLOOP_PYTEST_PHASES=str(phases_file),
               PYTHONPATH=os.pathsep.join(filter(None, [PROBE_DIR, os.environ.get("PYTHONPATH")])))
    cmd = [python, "-m", "pytest", "-q", "-p", "bench_first_result", *extra, *args]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    first = last = None
    if probe.exists():
        first, last = (float(x) - t0 for x in probe.read_text().split())
        probe.unlink()
    phases = None
    if phases_file.exists():
        phases = json.loads(phases_file.read_text().splitlines()[-1])
        phases_file.unlink()
    # pytest's last line (output of a test's child process can come after it)
    tail = [ln for ln in proc.stdout.strip().splitlines()
            if re.search(r"\d+ (passed|failed|errors?|skipped|deselected)\b", ln)][-1:] or [""]
    if proc.returncode not in (0, 1):
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    return wall, first, last, cpu, tail[0], phases


def bench(name: str, cwd: Path, args: list[str], runs: int, python: str) -> dict:
    walls = {r: [] for r in RUNNERS}
    firsts = {r: [] for r in RUNNERS}
    cpus = {r: [] for r in RUNNERS}
    loads = {r: [] for r in RUNNERS}
    phases = {r: [] for r in RUNNERS}
    bounds = []
    outcome = {}
    # One untimed run of each interloop runner first: it records the tests' durations
    # in pytest's cache (.pytest_cache in the suite's directory), which the timed runs
    # use to hand out the long tests first, as in a developer's repeated runs.
    for r, extra in RUNNERS.items():
        if any(a.startswith("--interloop") for a in extra):
            run_once(cwd, args, extra, python)
    for i in range(runs):
        order = list(RUNNERS) if i % 2 == 0 else list(reversed(RUNNERS))
        for r in order:
            wall, first, last, cpu, tail, ph = run_once(cwd, args, RUNNERS[r], python)
            if ph is not None:
                phases[r].append(ph)
            load = os.getloadavg()[0]
            walls[r].append(wall)
            cpus[r].append(cpu)
            if first is not None:
                firsts[r].append(first)
                if r == "serial":
                    # The best any 2 runners could do with this run's start and end:
                    # its start to the first result, half of its tests, its end.
                    bounds.append(first + (last - first) / 2 + (wall - last))
            outcome[r] = tail
            loads[r].append(load)
            print(f"  {name:16s} {r:24s} {wall:7.2f} s  cpu {cpu:6.2f} s  first result "
                  f"{'-' if first is None else f'{first:.2f} s'}  load {load:.1f}  {tail}",
                  flush=True)
    med = {r: statistics.median(v) for r, v in walls.items()}
    fmed = {r: (statistics.median(v) if v else None) for r, v in firsts.items()}
    cmed = {r: statistics.median(v) for r, v in cpus.items()}
    return {"wall": walls, "first": firsts, "cpu": cpus, "load": loads, "phases": phases,
            "median": med, "bound": statistics.median(bounds) if bounds else None,
            "first_median": fmed, "cpu_median": cmed, "outcome": outcome}


def _ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def markdown(results: dict, meta: dict) -> str:
    il, xd, se = "--interloop-workers 2", "pytest -n 2 (xdist)", "serial"
    out = [f"# pytest runners (CPython {meta['python']}, {meta['cpus']} cores, median of {meta['runs']})",
           "",
           f"Environments: {', '.join(meta.get('envs', ['dev']))} (\"lean\": a venv with "
           "pytest, pytest-asyncio, pytest-xdist and interloop only, as a project's own; "
           "\"dev\": the project's dev venv, whose extra plugins (hypothesis, anyio, trio, "
           "pytest-mock, pytest-timeout) every runner imports, and hypothesis' terminal "
           f"summary imports hypothesis at every run's end). Bytecode cache: {meta.get('pyc', 'off')} "
           "(off: PYTHONDONTWRITEBYTECODE=1, every run rewrites the asserts of what it imports).",
           "",
           "End to end: command start to exit, each run a fresh `python -m pytest -q`. "
           "\"first result\": command start to the first test's call report in the main "
           "process. CPU: user + system time of the pytest process and its children "
           "(xdist's workers). Ratios are of medians from the same rounds (runners alternate).",
           "",
           "| suite | runner | seconds | vs serial | vs xdist | first result, s | CPU s (all processes) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for suite, r in results.items():
        med = r["median"]
        for runner in med:
            m = med[runner]
            f = r["first_median"][runner]
            out.append(
                f"| {suite} | {runner} | {m:.2f} | {_ratio(med.get(se), m)} | "
                f"{_ratio(med.get(xd), m)} | {'-' if f is None else f'{f:.2f}'} | "
                f"{r['cpu_median'][runner]:.2f} |")
    out += ["", "Targets (issue 12), from these medians:", ""]
    for suite, r in results.items():
        m = r["median"]
        f = r["first_median"]
        if il not in m:
            continue
        line = (f"- {suite}: `--interloop-workers 2` is {_ratio(m.get(se), m[il])} serial and "
                f"{_ratio(m.get(xd), m[il])} xdist")
        if f[il] and f.get(xd):
            line += f"; first result after {f[il] / f[xd]:.2f} of xdist's time"
        b = r.get("bound")
        if b and m.get(se):
            line += (f". Bound for 2 runners from the serial runs (serial's start to its "
                     f"first result, half its tests, its end): {b:.2f} s, at most "
                     f"{m[se] / b:.2f}x serial; interloop takes {m[il] / b:.2f} of it")
        out.append(line + ".")
    out += ["", "Outcomes (last run): " + "; ".join(
        f"{s}: " + ", ".join(f"{k} `{v}`" for k, v in r["outcome"].items())
        for s, r in results.items()),
        "", f"Load average at start {meta['load_start']}, at end {meta['load_end']}. "
        "This VM's speed moves by up to 30% over minutes, so absolute times are noisy; "
        "compare ratios."]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tests", type=int, default=400)
    ap.add_argument("--ms", type=float, default=10.0)
    ap.add_argument("--no-real", action="store_true", help="only the synthetic suite")
    ap.add_argument("--suites", default=None,
                    help="comma-separated: synthetic and/or names of scripts/plugin_suites.py's "
                         "suites (default: all, or synthetic alone with --no-real)")
    ap.add_argument("--runners", default=DEFAULT_RUNNERS,
                    help=f"comma-separated, of {', '.join(ALL_RUNNERS)} (default {DEFAULT_RUNNERS})")
    ap.add_argument("--envs", default="lean,dev",
                    help="comma-separated, of lean and dev: the environments the suites run in "
                         "(see LEAN_PACKAGES; default both)")
    ap.add_argument("--pyc", choices=("off", "on"), default="off",
                    help="off (default): PYTHONDONTWRITEBYTECODE=1 and no rewritten-module "
                         "cache, so every run rewrites the asserts of the test modules and "
                         "plugins it imports (a fresh checkout, CI; this machine's setting); on: "
                         "pytest caches them in __pycache__ (a developer's repeated runs)")
    ap.add_argument("--out", default=str(BENCHES / "results" / "pytest.json"))
    opts = ap.parse_args()
    envs = opts.envs.split(",")
    for env in envs:
        if env not in ("lean", "dev"):
            ap.error(f"--envs: unknown environment {env!r} (known: lean, dev)")
    if opts.pyc == "off":
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for name in opts.runners.split(","):
        if name not in ALL_RUNNERS:
            ap.error(f"--runners: unknown runner {name!r} (known: {', '.join(ALL_RUNNERS)})")
        label, args = ALL_RUNNERS[name]
        RUNNERS[label] = args
    if opts.suites is None:
        suites = ["synthetic"] + ([] if opts.no_real else list(plugin_suites.SUITES))
    else:
        suites = opts.suites.split(",")
        for name in suites:
            if name != "synthetic" and name not in plugin_suites.SUITES:
                ap.error(f"--suites: unknown suite {name!r}")
    meta = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "runs": opts.runs,
            "envs": envs, "pyc": opts.pyc,
            "load_start": tuple(round(x, 2) for x in os.getloadavg())}
    results = {}
    global PROBE_DIR
    with tempfile.TemporaryDirectory() as tmp:
        PROBE_DIR = tmp
        Path(tmp, "bench_first_result.py").write_text(PROBE)
        n = calibrate(opts.ms) if "synthetic" in suites else 0
        for env in envs:
            python = PYTHON[env] if env in PYTHON else lean_python()
            for name in suites:
                if name == "synthetic":
                    suite = Path(tmp) / "synthetic"
                    if not suite.exists():
                        make_synthetic(Path(tmp), opts.tests, n)
                    label, args = f"synthetic {opts.tests} x {opts.ms:g} ms", []
                else:
                    req, dirname, args, _subset = plugin_suites.SUITES[name]
                    suite, label = plugin_suites.fetch(req, dirname), name
                forget_rewrites(suite, python, opts.pyc)
                results[f"{env}: {label}"] = bench(f"{env} {name}", suite, args, opts.runs, python)
    meta["load_end"] = tuple(round(x, 2) for x in os.getloadavg())
    doc = {"meta": meta, "results": results, "markdown": markdown(results, meta), "order": 45,
           "command": " ".join(["python benches/bench_pytest.py", *sys.argv[1:]])}
    Path(opts.out).write_text(json.dumps(doc, indent=1))
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
