"""Real projects' test suites, serial and with ``--interloop-workers 2``: same outcomes?

    python scripts/plugin_suites.py            # the whole suites
    python scripts/plugin_suites.py --subset   # the fixed subset CI runs (scripts/test-all)
    python scripts/plugin_suites.py --json out.json   # also write wall times and counts

Each project's sdist is fetched with pip (pinned versions) into `.cache/plugin-suites/`
(git-ignored) and unpacked there; its tests run twice from the unpacked tree with
this interpreter, each run writing junit XML; the outcome of every test id must be
the same in both runs. Exit status 1 if any differs or a run cannot start.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "plugin-suites"

# name: (pip requirement, unpacked directory, whole-suite args, subset args)
SUITES = {
    # async-heavy: asyncio tests under pytest-asyncio, threads, executors, subprocesses
    "asgiref": ("asgiref==3.13.0", "asgiref-3.13.0", ["tests"],
                ["tests/test_sync.py", "tests/test_local.py"]),
    # CPU-bound pure Python, unittest classes with subtests
    "more-itertools": ("more-itertools==11.2.1", "more_itertools-11.2.1", ["tests"],
                       ["tests/test_recipes.py"]),
}


def fetch(req: str, dirname: str) -> Path:
    src = CACHE / dirname
    if src.is_dir():
        return src
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", "-d", str(CACHE), req], check=True)
    with tarfile.open(CACHE / f"{dirname}.tar.gz") as tar:
        tar.extractall(CACHE, filter="data")
    return src


def outcomes(xml_path: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        kinds = sorted(c.tag for c in case if c.tag in ("failure", "error", "skipped"))
        key = f"{case.get('classname')}::{case.get('name')}"
        # a test id reported twice (a teardown error after a pass) keeps both
        out[key] = (out[key] + "," if key in out else "") + ("+".join(kinds) or "passed")
    return out


def run_pytest(src: Path, args: list[str], extra: list[str], xml: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *extra, *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    wall = time.perf_counter() - t
    tail = proc.stdout.strip().splitlines()[-3:]
    print(f"  {' '.join(extra) or 'serial':24s} {wall:6.2f} s  rc={proc.returncode}  {tail[-1] if tail else ''}")
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    return wall, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subset", action="store_true", help="the fixed subset CI runs")
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suite names")
    ap.add_argument("--json", help="write wall times and counts here")
    opts = ap.parse_args()
    status = 0
    results = {}
    for name in opts.only.split(","):
        req, dirname, whole, subset = SUITES[name]
        src = fetch(req, dirname)
        args = subset if opts.subset else whole
        print(f"{name} ({req}), {' '.join(args)}")
        ser_xml, par_xml = CACHE / f"{name}-serial.xml", CACHE / f"{name}-par.xml"
        ser_wall, ser_rc = run_pytest(src, args, [], ser_xml)
        par_wall, par_rc = run_pytest(src, args, ["--interloop-workers", "2"], par_xml)
        a, b = outcomes(ser_xml), outcomes(par_xml)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        for k in diff[:50]:
            print(f"  DIFFERENT {k}: serial={a.get(k)} workers={b.get(k)}")
        if diff or ser_rc != par_rc:
            status = 1
        print(f"  {len(a)} tests, {len(diff)} different outcomes, exit status {ser_rc}/{par_rc}")
        results[name] = {"tests": len(a), "different": len(diff), "serial_s": ser_wall,
                         "workers2_s": par_wall}
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
