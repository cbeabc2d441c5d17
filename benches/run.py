"""Runs the benchmarks and writes the report.

    bash scripts/dev bench [--quick] [--runs K] [--only NAME[,NAME]] [--loops a,b,...]

`scripts/dev bench` builds interloop (release) for CPython 3.13 and starts this script
with that interpreter. This script then makes (once) a separate bench virtualenv,
`.venv-bench-X.Y`, from the same CPython, with the peers from benches/requirements.txt
(uvloop, rloop, matplotlib) and interloop from this checkout, and re-executes itself
there. A peer that fails to install is reported as unavailable, not fatal.

Results: benches/results/<suite>.json, then docs/benchmarks.md and docs/benchmarks.png
from every JSON in benches/results/. With --quick (CI smoke) they go to
benches/results/quick/ instead, so that a smoke run never overwrites the real report.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
sys.path.insert(0, str(BENCHES))

import harness  # noqa: E402
import report  # noqa: E402
from bench_loop import LOOPS  # noqa: E402

REQUIREMENTS = BENCHES / "requirements.txt"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
BENCH_VENV = ROOT / f".venv-bench-{VERSION}"
INSTALL_STATUS = "bench-install.json"  # inside the venv: what failed to install, and why


def parse_args(argv: "list[str]") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash scripts/dev bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N, for CI smoke runs")
    p.add_argument("--runs", type=int, default=5, metavar="K", help="runs per loop and case (default 5)")
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help="only these cases or suites (e.g. sleep_zero, or loop)")
    p.add_argument("--loops", metavar="a,b,...",
                   help="only these event loops (default: all of asyncio,uvloop,rloop,interloop)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per run")
    p.add_argument("--no-venv", action="store_true",
                   help="run in this interpreter as it is (no bench virtualenv)")
    p.add_argument("--list", action="store_true", help="list suites and cases, then exit")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


# --------------------------------------------------------------------------- bench venv


def _requirements() -> "list[str]":
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def _project_name(requirement: str) -> str:
    """The project name in a requirement line ("uvloop>=0.19" gives "uvloop"): install
    failures are keyed by it, as variants are named."""
    return re.split(r"[<>=!~\[;@ ]", requirement, maxsplit=1)[0].strip().lower()


def ensure_bench_venv() -> Path:
    """Makes .venv-bench-X.Y if needed and returns its python."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        print(f"bench: making {BENCH_VENV.name} from {base}", file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(BENCH_VENV)], check=True)

    stamp = BENCH_VENV / ".bench-deps-stamp"
    want = hashlib.sha1(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    if not stamp.exists() or stamp.read_text().strip() != want:
        status: dict[str, str] = {}
        # One package at a time: a peer that fails to install must not stop the others.
        for requirement in _requirements():
            print(f"bench: pip install {requirement}", file=sys.stderr)
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                why = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
                status[_project_name(requirement)] = why
                print(f"bench: could not install {requirement}: {why}", file=sys.stderr)
        (BENCH_VENV / INSTALL_STATUS).write_text(json.dumps(status, indent=1))
        stamp.write_text(want + "\n")

    _link_checkout(python)
    return python


def _link_checkout(python: Path) -> None:
    """interloop comes from this checkout: `maturin develop --release` (run by
    `scripts/dev build`) puts the native module beside python/interloop/, so a .pth
    pointing at python/ is all the bench venv needs. Builds it first if it is missing."""
    package = ROOT / "python" / "interloop"
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    if not list(package.glob(f"_interloop*{suffix}")):
        print(f"bench: interloop is not built; bash scripts/dev build {VERSION}", file=sys.stderr)
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "dev"), "build", VERSION],
                              stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            print("bench: building interloop failed; it will be reported as unavailable",
                  file=sys.stderr)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(site) / "interloop_checkout.pth").write_text(str(ROOT / "python") + "\n")


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == BENCH_VENV.resolve()


def install_failures() -> "dict[str, str]":
    try:
        return json.loads((Path(sys.prefix) / INSTALL_STATUS).read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- running


def select_variants(suite: harness.Suite, loops: "list[str] | None") -> "list[str]":
    """--loops narrows the event loops; variants of a suite that are not loops (a pool
    suite's "threads", say) are kept."""
    if not loops:
        return list(suite.variants)
    return [v for v in suite.variants if v in loops or v not in LOOPS]


def select_cases(module: str, suite: harness.Suite, only: "list[str] | None") -> "list[str] | None":
    if not only:
        return None
    if suite.name in only or module in only:
        return [c.name for c in suite.cases]
    return [c.name for c in suite.cases if c.name in only or f"{suite.name}.{c.name}" in only]


# Benchmarks run as their own scripts: bench_pool.py, bench_channel.py and bench_dask.py.
STANDALONE = ("pool", "channel", "dask")


def main(argv: "list[str]") -> int:
    args = parse_args(argv)
    if not args.no_venv and not in_bench_venv():
        python = ensure_bench_venv()
        env = dict(os.environ)
        env.setdefault("INTERLOOP_BENCH_COMMAND", " ".join(["bash scripts/dev bench", *argv]))
        os.execve(str(python), [str(python), str(Path(__file__).resolve()), *argv], env)

    suites = harness.discover_suites()
    if args.list:
        for module, suite in suites:
            if isinstance(suite, Exception):
                print(f"{module}: cannot import ({suite})")
                continue
            print(f"{suite.name} ({module}.py): {', '.join(c.name for c in suite.cases)}")
        return 0

    only = args.only.split(",") if args.only else None
    loops = args.loops.split(",") if args.loops else None
    failures = install_failures()
    out_dir = BENCHES / "results" / ("quick" if args.quick else "")
    wrote = []
    for module, suite in suites:
        if isinstance(suite, Exception):
            print(f"bench: {module}.py cannot be imported, skipped: {suite}", file=sys.stderr)
            continue
        cases = select_cases(module, suite, only)
        if cases == []:
            continue
        doc = harness.run_suite(
            module, suite,
            variants=select_variants(suite, loops),
            runs=args.runs, quick=args.quick, cases=cases, timeout=args.timeout,
        )
        for variant, info in doc["variants"].items():
            if not info["available"] and variant in failures:
                info["error"] = f"pip install failed: {failures[variant]}"
        wrote.append(harness.write_results(doc, out_dir))
    # Standalone scripts whose peers are not event loops (pools, cross-interpreter
    # queues): each writes a JSON with its own Markdown, merged into the report.
    for name in STANDALONE:
        if only is not None and name not in only:
            continue
        out = out_dir / f"{name}.json"
        cmd = [sys.executable, str(BENCHES / f"bench_{name}.py"), "--out", str(out)]
        cmd += ["--quick"] if args.quick else ["--runs", str(args.runs)]
        if subprocess.run(cmd).returncode == 0:
            wrote.append(out)
        else:
            print(f"bench: bench_{name}.py failed", file=sys.stderr)
    if not wrote:
        print("bench: no benchmark matched", file=sys.stderr)
        return 1
    report_dir = out_dir if args.quick else ROOT / "docs"
    md, png = report.write_report(out_dir, report_dir / "benchmarks.md", report_dir / "benchmarks.png")
    print(report.render_console(report.load_results(out_dir)))
    print(f"bench: wrote {', '.join(str(p.relative_to(ROOT)) for p in [*wrote, md, png] if p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
