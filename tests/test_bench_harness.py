"""Keeps the benchmark harness (benches/) from rotting: it runs, on asyncio's loop only,
with tiny N, and its arithmetic is right. Never asserts timings."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"
sys.path.insert(0, str(BENCHES))

import harness  # noqa: E402
import report  # noqa: E402


@pytest.fixture(scope="module")
def loop_suite() -> harness.Suite:
    return harness.load_suite("bench_loop")


@pytest.fixture(scope="module")
def asyncio_doc(loop_suite):
    return harness.run_suite(
        "bench_loop", loop_suite, variants=["asyncio", "no_such_loop"], runs=3,
        n_override=20, in_process=True, log=lambda msg: None,
    )


def test_summary_of_known_durations():
    summary = harness.summarise_case(
        {
            "asyncio": [3.0, 1.0, 2.0],
            "uvloop": [1.0, 4.0, 1.0],
            "rloop": [0.5, 0.6, 0.5],
            "interloop": [0.25, 0.3, 0.2],
        },
        {},
        baseline="asyncio", subject="interloop", better="lower", n=1000,
    )
    results = summary["results"]
    assert [results[v]["median"] for v in ("asyncio", "uvloop", "rloop", "interloop")] == [2.0, 1.0, 0.5, 0.25]
    assert [results[v]["vs_baseline"] for v in ("asyncio", "uvloop", "rloop", "interloop")] == [1.0, 2.0, 4.0, 8.0]
    assert results["rloop"]["per_op_ns"] == pytest.approx(500_000)
    assert summary["best_peer"] == "rloop"
    assert summary["subject_vs_best_peer"] == pytest.approx(2.0)


def test_summary_of_known_rates_and_extras():
    summary = harness.summarise_case(
        {
            "asyncio": [{"value": 100.0, "p99_us": 9.0}, {"value": 110.0, "p99_us": 7.0}, {"value": 90.0, "p99_us": 8.0}],
            "uvloop": [120.0, 130.0, 125.0],
            "interloop": [60.0, 50.0, 55.0],
        },
        {},
        baseline="asyncio", subject="interloop", better="higher", n=1000,
    )
    results = summary["results"]
    assert results["uvloop"]["vs_baseline"] == pytest.approx(1.25)
    assert results["interloop"]["vs_baseline"] == pytest.approx(0.55)
    assert results["asyncio"]["extra"] == {"p99_us": 8.0}
    assert "per_op_ns" not in results["uvloop"]  # only for durations
    assert summary["best_peer"] == "uvloop"
    assert summary["subject_vs_best_peer"] == pytest.approx(55.0 / 125.0)


def test_extra_durations_get_their_own_ratios():
    summary = harness.summarise_case(
        {
            "asyncio": [{"value": 9.0, "cpu_s": 4.0, "count": 1.0}],
            "rloop": [{"value": 1.0, "cpu_s": 1.0, "count": 2.0}],
            "interloop": [{"value": 3.0, "cpu_s": 0.5, "count": 3.0}],
        },
        {},
        baseline="asyncio", subject="interloop", better="lower", n=1,
    )
    assert summary["subject_vs_best_peer"] == pytest.approx(1 / 3)
    assert set(summary["extra_ratios"]) == {"cpu_s"}  # "count" is not a duration
    cpu = summary["extra_ratios"]["cpu_s"]
    assert cpu["vs_baseline"] == {"asyncio": 1.0, "rloop": 4.0, "interloop": 8.0}
    assert cpu["best_peer"] == "rloop"
    assert cpu["subject_vs_best_peer"] == pytest.approx(2.0)


def test_targets_are_checked_on_medians():
    results = harness.summarise_case(
        {"rloop": [1.0, 1.2, 1.1], "interloop": [1.0, 0.9, 0.95]}, {},
        baseline="rloop", subject="interloop", better="lower", n=1,
    )["results"]
    met = harness.check_target(results, "interloop", ("rloop", 1.1), "lower")
    assert met["measured"] == pytest.approx(1.1 / 0.95) and met["met"] is True
    # Round by round: 1.0/1.0, 1.2/0.9, 1.1/0.95 -> median 1.1/0.95.
    assert met["paired"] == pytest.approx(1.1 / 0.95)
    assert harness.check_target(results, "interloop", ("rloop", 1.2), "lower")["met"] is False
    assert harness.check_target(results, "interloop", ("uvloop", 1.2), "lower")["met"] is None


def test_summary_when_the_subject_or_baseline_failed():
    summary = harness.summarise_case(
        {"uvloop": [1.0]}, {"asyncio": "boom", "interloop": "crashed"},
        baseline="asyncio", subject="interloop", better="lower", n=10,
    )
    assert summary["results"]["asyncio"] == {"error": "boom"}
    assert summary["results"]["uvloop"]["vs_baseline"] is None
    assert summary["best_peer"] == "uvloop"
    assert summary["subject_vs_best_peer"] is None


def test_every_loop_case_runs_on_asyncio(loop_suite, asyncio_doc):
    assert asyncio_doc["suite"] == "loop"
    assert [c["name"] for c in asyncio_doc["cases"]] == [c.name for c in loop_suite.cases]
    for case in asyncio_doc["cases"]:
        entry = case["results"]["asyncio"]
        assert len(entry["runs"]) == 3 and all(r > 0 for r in entry["runs"])
        assert entry["median"] == statistics.median(entry["runs"])
        assert entry["vs_baseline"] == 1.0
        assert entry["extra"]["cpu_s"] > 0
        assert case["extra_ratios"]["cpu_s"]["vs_baseline"] == {"asyncio": 1.0}
        assert case["n"] == 20
        assert case["best_peer"] == "asyncio"
        assert case["subject_vs_best_peer"] is None  # interloop was not asked for


def test_an_unknown_loop_is_reported_not_raised(asyncio_doc):
    info = asyncio_doc["variants"]["no_such_loop"]
    assert info["available"] is False and "no_such_loop" in info["error"]
    assert asyncio_doc["variants"]["asyncio"]["available"] is True


def test_measurement_in_a_subprocess():
    value, why = harness._run_child(["worker", "bench_loop", "sleep_zero", "asyncio", "10"], timeout=60)
    assert why is None and set(value) == {"value", "cpu_s"}
    value, why = harness._run_child(["worker", "bench_loop", "sleep_zero", "no_such_loop", "10"], timeout=60)
    assert value is None and "no_such_loop" in why


def test_report_from_results(asyncio_doc, tmp_path):
    harness.write_results(asyncio_doc, tmp_path)
    (tmp_path / "not-ours.json").write_text('{"something": "else"}')
    md, png = report.write_report(tmp_path, tmp_path / "benchmarks.md", None)
    text = md.read_text()
    assert png is None
    assert "## Loop overhead" in text
    for case in asyncio_doc["cases"]:
        assert f"| {case['name']} | 20 |" in text
    assert "no_such_loop | unavailable" in text
    assert "| call_soon_chain | interloop ≥ 1.20× rloop | — | — | not measured |" in text
