"""The benchmark harness: suites of cases, run against several variants, summarised.

A *suite* (`Suite`) is a set of *cases* (`Case`) measured against the same *variants*:
event loops for the loop-overhead suite (asyncio, uvloop, rloop, interloop), or other
peers for other suites (threads, process pools, ...). One variant is the *baseline*
(ratios are taken against it) and one is the *subject* (interloop; it is also compared
with the best of the others, its "best peer").

How a suite is run (`run_suite`):
  1. Probe each variant in a fresh subprocess (`Suite.probe`): a variant that cannot be
     imported or started is reported as unavailable, with the reason, and skipped.
  2. For each case, `runs` rounds; each round measures every available variant once,
     each in its own fresh subprocess so that loops never share an interpreter. The
     order of variants rotates from round to round so that drift (thermal, a neighbour's
     build) does not always land on the same variant.
  3. `summarise_case` turns the runs into medians and ratios.

A case's `measure(variant, n)` returns the figure to compare: seconds (`better="lower"`),
or a rate (`better="higher"`). It may instead return a dict with that figure under
"value" and extra figures (say, latency percentiles) beside it; their medians are kept.
It times only the workload: interpreter start, imports and loop creation stay outside.

This file is also the subprocess entry point:
  python benches/harness.py probe  MODULE VARIANT
  python benches/harness.py worker MODULE CASE VARIANT N
Each prints one line `RESULT <json>` on stdout.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Union

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
RESULT_PREFIX = "RESULT "
SCHEMA = 1

Measurement = Union[float, "dict[str, float]"]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    measure: Callable[[str, int], Measurement]
    n: int  # operations in a full run
    quick_n: int  # operations with --quick (CI smoke runs)
    unit: str = "s"
    better: str = "lower"  # "lower" for durations, "higher" for rates
    # The goal from the issue, as (peer, ratio): the subject must be at least `ratio`
    # times better than `peer`, e.g. ("rloop", 1.2). None: no goal.
    target: "tuple[str, float] | None" = None

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher"):
            raise ValueError(f"case {self.name}: better must be 'lower' or 'higher'")


@dataclass(frozen=True)
class Suite:
    name: str  # results go to benches/results/<name>.json
    title: str
    variants: tuple[str, ...]
    baseline: str
    subject: str
    cases: tuple[Case, ...]
    # Returns a short version string, or raises if the variant cannot run here.
    probe: Callable[[str], str]
    description: str = ""
    order: int = 50  # position in docs/benchmarks.md (lower first)
    # What the extra figures that cases return mean, for the report: {"cpu_s": "..."}.
    figures: "dict[str, str]" = field(default_factory=dict)

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"suite {self.name} has no case {name!r}")


# --------------------------------------------------------------------------- summary


def primary(measurement: Measurement) -> float:
    """The figure that is compared: the measurement itself, or its "value"."""
    return measurement["value"] if isinstance(measurement, dict) else float(measurement)


def ratio(baseline: float, value: float, better: str) -> float:
    """How many times better `value` is than `baseline` (> 1: better)."""
    return baseline / value if better == "lower" else value / baseline


def is_duration(figure: str) -> bool:
    """Extra figures named with a time unit suffix (cpu_s, p99_us, ...) are durations:
    lower is better, and they get ratios like the main figure."""
    return figure.endswith(("_s", "_ms", "_us", "_ns"))


def compare(
    medians: "dict[str, float]", *, baseline: str, subject: str, better: str
) -> "tuple[dict[str, float | None], str | None, float | None]":
    """Each variant's ratio against the baseline, the best variant other than the
    subject (its best peer), and the subject's ratio against that peer."""
    base = medians.get(baseline)
    vs_baseline = {v: (ratio(base, m, better) if base else None) for v, m in medians.items()}
    peers = {v: m for v, m in medians.items() if v != subject}
    best_peer = None
    if peers:
        pick = min if better == "lower" else max
        best_peer = pick(peers, key=peers.__getitem__)
    vs_best = (
        ratio(peers[best_peer], medians[subject], better)
        if best_peer is not None and subject in medians
        else None
    )
    return vs_baseline, best_peer, vs_best


def check_target(
    results: "dict[str, Any]", subject: str, target: "tuple[str, float]", better: str
) -> "dict[str, Any]":
    """Whether the subject reaches `target` = (peer, ratio) on the medians; "met" is
    None when either side has no median."""
    peer, wanted = target
    mine = results.get(subject, {}).get("median")
    theirs = results.get(peer, {}).get("median")
    measured = ratio(theirs, mine, better) if mine and theirs else None
    # Beside it, for information: the median of the ratios of runs made in the same
    # round (variants take turns within a round), which the machine's drift between
    # rounds disturbs less than the medians taken apart.
    pairs = list(zip(results.get(subject, {}).get("runs", []), results.get(peer, {}).get("runs", [])))
    paired = statistics.median(ratio(t, m, better) for m, t in pairs) if pairs else None
    return {
        "peer": peer,
        "ratio": wanted,
        "measured": measured,
        "paired": paired,
        "met": None if measured is None else measured >= wanted,
    }


def summarise_case(
    runs: "dict[str, list[Measurement]]",
    errors: "dict[str, str]",
    *,
    baseline: str,
    subject: str,
    better: str,
    n: int,
) -> "dict[str, Any]":
    """Medians per variant, each one's ratio against the baseline, and the subject's
    ratio against the best other variant (its best peer); the same for each extra
    figure that is a duration (see `is_duration`), under "extra_ratios".

    `runs` maps a variant to its measurements (floats, or dicts with "value" and extra
    figures); `errors` maps a variant that failed to why.
    """
    results: dict[str, Any] = {}
    for variant, measured in runs.items():
        values = [primary(m) for m in measured]
        entry: dict[str, Any] = {
            "runs": values,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        extras = [m for m in measured if isinstance(m, dict)]
        if extras:
            keys = sorted({k for m in extras for k in m} - {"value"})
            entry["extra"] = {
                k: statistics.median(m[k] for m in extras if k in m) for k in keys
            }
        if better == "lower" and n:
            entry["per_op_ns"] = entry["median"] / n * 1e9
        results[variant] = entry
    for variant, why in errors.items():
        results[variant] = {"error": why}

    medians = {v: e["median"] for v, e in results.items() if "median" in e}
    vs_baseline, best_peer, vs_best = compare(
        medians, baseline=baseline, subject=subject, better=better
    )
    for variant, r in vs_baseline.items():
        results[variant]["vs_baseline"] = r
    summary: dict[str, Any] = {
        "results": results, "best_peer": best_peer, "subject_vs_best_peer": vs_best,
    }

    figures = sorted({k for e in results.values() for k in e.get("extra", {}) if is_duration(k)})
    extra_ratios = {}
    for figure in figures:
        by_variant = {v: e["extra"][figure] for v, e in results.items() if figure in e.get("extra", {})}
        vs_baseline, best_peer, vs_best = compare(
            by_variant, baseline=baseline, subject=subject, better="lower"
        )
        extra_ratios[figure] = {
            "vs_baseline": vs_baseline, "best_peer": best_peer, "subject_vs_best_peer": vs_best,
        }
    if extra_ratios:
        summary["extra_ratios"] = extra_ratios
    return summary


# --------------------------------------------------------------------------- running


def load_suite(module: str) -> Suite:
    """Imports benches/<module>.py and returns its SUITE."""
    if str(BENCHES) not in sys.path:
        sys.path.insert(0, str(BENCHES))
    mod = importlib.import_module(module)
    suite = getattr(mod, "SUITE", None)
    if not isinstance(suite, Suite):
        raise LookupError(f"benches/{module}.py defines no SUITE")
    return suite


def discover_suites() -> "list[tuple[str, Suite | Exception]]":
    """Every benches/bench_*.py that defines SUITE, in report order.

    A module that fails to import is returned with its exception, so that the run can
    report it instead of stopping; a module without SUITE (a standalone script that
    writes its own JSON) is left out.
    """
    found: list[tuple[str, Suite | Exception]] = []
    for path in sorted(BENCHES.glob("bench_*.py")):
        try:
            found.append((path.stem, load_suite(path.stem)))
        except LookupError:
            continue
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            found.append((path.stem, exc))
    found.sort(key=lambda item: (getattr(item[1], "order", 99), item[0]))
    return found


def _run_child(args: "list[str]", timeout: float) -> "tuple[Any, str | None]":
    """Runs `python harness.py ARGS`; returns (result, None) or (None, why)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):]), None
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return None, tail[:300]


def _attempt(
    in_process: bool, call: Callable[[], Any], child_args: "list[str]", timeout: float
) -> "tuple[Any, str | None]":
    """Runs `call()` here, or the same thing as `python harness.py CHILD_ARGS`;
    returns (result, None) or (None, why it failed)."""
    if not in_process:
        return _run_child(child_args, timeout)
    try:
        return call(), None
    except Exception as exc:  # noqa: BLE001 - a failing variant is reported
        return None, f"{type(exc).__name__}: {exc}"[:300]


def run_suite(
    module: str,
    suite: Suite,
    *,
    variants: "Iterable[str]",
    runs: int,
    quick: bool = False,
    cases: "Iterable[str] | None" = None,
    n_override: "int | None" = None,
    in_process: bool = False,
    timeout: float = 600.0,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> "dict[str, Any]":
    """Runs the suite's cases (all, or those named in `cases`) and returns the results
    document (see `results_document`). `in_process` runs everything in this
    interpreter, which only tests use: the numbers are then not independent."""
    machine_at_start = machine_info()
    variants = list(variants)
    selected = [c for c in suite.cases if cases is None or c.name in set(cases)]

    available: dict[str, dict[str, Any]] = {}
    for variant in variants:
        version, why = _attempt(
            in_process, lambda: suite.probe(variant), ["probe", module, variant], timeout=120
        )
        available[variant] = (
            {"available": True, "version": version}
            if why is None
            else {"available": False, "error": why}
        )
        log(f"[{suite.name}] {variant}: " + (version if why is None else f"unavailable ({why})"))
    ready = [v for v in variants if available[v]["available"]]

    case_docs = []
    for case in selected:
        n = n_override or (case.quick_n if quick else case.n)
        measured: dict[str, list[Measurement]] = {v: [] for v in ready}
        errors: dict[str, str] = {}
        for round_no in range(runs):
            shift = round_no % len(ready) if ready else 0
            for variant in ready[shift:] + ready[:shift]:
                if variant in errors:
                    continue
                value, why = _attempt(
                    in_process, lambda: case.measure(variant, n),
                    ["worker", module, case.name, variant, str(n)], timeout,
                )
                if why is not None:
                    errors[variant] = why
                    measured.pop(variant, None)
                    log(f"[{suite.name}] {case.name} {variant}: failed ({why})")
                    continue
                measured[variant].append(value)
                log(f"[{suite.name}] {case.name} {variant} run {round_no + 1}/{runs}: "
                    f"{primary(value):.4g} {case.unit}")
        summary = summarise_case(
            measured, errors, baseline=suite.baseline, subject=suite.subject,
            better=case.better, n=n,
        )
        if case.target is not None:
            summary["target"] = check_target(
                summary["results"], suite.subject, case.target, case.better
            )
        case_docs.append({
            "name": case.name,
            "description": case.description,
            "n": n,
            "unit": case.unit,
            "better": case.better,
            **summary,
        })
    doc = results_document(suite, variants=available, cases=case_docs, runs=runs, quick=quick)
    doc["machine"]["loadavg_at_start"] = machine_at_start["loadavg"]
    return doc


# --------------------------------------------------------------------------- results files


def machine_info() -> "dict[str, Any]":
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    return {
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "system": f"{platform.system()} {platform.release()}",
        # Other work on the machine skews the numbers; the report shows this.
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def checkout_info() -> "dict[str, Any]":
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except OSError:
        return {"commit": None, "dirty": None}


def results_document(
    suite: Suite,
    *,
    variants: "dict[str, dict[str, Any]]",
    cases: "list[dict[str, Any]]",
    runs: int,
    quick: bool,
) -> "dict[str, Any]":
    """The JSON written to benches/results/<suite>.json; a standalone benchmark script
    can build the same document (see benches/README.md) and the report will merge it."""
    return {
        "schema": SCHEMA,
        "suite": suite.name,
        "title": suite.title,
        "description": suite.description,
        "order": suite.order,
        "figures": dict(suite.figures),
        "baseline": suite.baseline,
        "subject": suite.subject,
        "command": os.environ.get("INTERLOOP_BENCH_COMMAND")
        or " ".join(["benches/run.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.replace("\n", " "),
        "machine": machine_info(),
        "checkout": checkout_info(),
        "runs": runs,
        "quick": quick,
        "variants": variants,
        "cases": cases,
    }


def write_results(doc: "dict[str, Any]", directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{doc['suite']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- subprocess side


def _child_main(argv: "list[str]") -> int:
    role, module, *rest = argv
    suite = load_suite(module)
    if role == "probe":
        (variant,) = rest
        result: Any = suite.probe(variant)
    elif role == "worker":
        case_name, variant, n = rest
        result = suite.case(case_name).measure(variant, int(n))
    else:
        raise SystemExit(f"unknown role {role!r}")
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # Import ourselves under our module name, so that the suites' `Suite` objects and
    # this one are the same class (running as __main__ would make a second copy).
    sys.path.insert(0, str(BENCHES))
    import harness

    sys.exit(harness._child_main(sys.argv[1:]))
