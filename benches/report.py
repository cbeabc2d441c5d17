"""Builds docs/benchmarks.md and docs/benchmarks.png from every results JSON.

    python benches/report.py [RESULTS_DIR] [--md PATH] [--png PATH]

Every `*.json` in the results directory with `"schema": 1` becomes one section, in the
order of its "order" field; the format is described in benches/README.md. The chart
shows each variant's ratio against the suite's baseline (log scale; > 1 is better).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
sys.path.insert(0, str(BENCHES))

import harness  # noqa: E402


def load_results(directory: Path) -> "list[dict[str, Any]]":
    docs = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            print(f"report: skipping {path}: {exc}", file=sys.stderr)
            continue
        if isinstance(doc, dict) and doc.get("schema") == 1:
            docs.append(doc)
    docs.sort(key=lambda d: (d.get("order", 50), d["suite"]))
    return docs


def load_markdown_sections(directory: Path) -> "list[tuple[int, str]]":
    """Results of standalone scripts (e.g. bench_pool.py) that render their own
    Markdown: a JSON with a "markdown" key, placed by its "order"."""
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("schema") != 1 and isinstance(doc.get("markdown"), str):
            # One level down: the script's title becomes a section of this report.
            text = "\n" + doc["markdown"]
            text = text.replace("\n## ", "\n### ").replace("\n# ", "\n## ").lstrip("\n")
            if doc.get("command"):
                text += f"\n\n- Command: `{doc['command']}`"
            out.append((doc.get("order", 60), text))
    return out


# --------------------------------------------------------------------------- formatting


def format_value(value: "float | None", unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        for scale, name in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if value >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value / 1e-9:.3g} ns"
    if abs(value) >= 1e4:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def format_ratio(value: "float | None") -> str:
    return "—" if value is None else f"{value:.2f}×"


def _spread(entry: "dict[str, Any]") -> str:
    """Half the range of the runs, relative to the median."""
    if not entry.get("median") or len(entry.get("runs", ())) < 2:
        return ""
    return f"±{(entry['max'] - entry['min']) / 2 / entry['median'] * 100:.0f}%"


def _cell(entry: "dict[str, Any]", unit: str) -> str:
    if "error" in entry:
        return "failed"
    text = format_value(entry.get("median"), unit)
    notes = [f"{entry['per_op_ns']:.0f} ns/op"] if "per_op_ns" in entry else []
    if _spread(entry):
        notes.append(_spread(entry))
    return text + (f" ({', '.join(notes)})" if notes else "")


def _vs_best(ratio: "float | None", best: "str | None") -> str:
    return f"{format_ratio(ratio)} ({best})" if ratio is not None else f"— (best peer: {best or '—'})"


_DURATION_SCALE = {"_ns": 1e-9, "_us": 1e-6, "_ms": 1e-3, "_s": 1.0}


def _duration_seconds(figure: str, value: float) -> float:
    for suffix, scale in _DURATION_SCALE.items():
        if figure.endswith(suffix):
            return value * scale
    return value


def _extra_tables(doc: "dict[str, Any]", ready: "list[str]") -> "list[str]":
    """One table per extra figure: medians, and for durations their ratio against the
    baseline and the subject's against its best peer."""
    figures = sorted({k for c in doc["cases"] for e in c["results"].values() for k in e.get("extra", {})})
    lines: list[str] = []
    for figure in figures:
        duration = harness.is_duration(figure)
        head = [*ready, f"{doc['subject']} vs best peer"] if duration else ready
        meaning = doc.get("figures", {}).get(figure)
        lines += [
            f"`{figure}`" + (f", {meaning}" if meaning else "")
            + " (medians" + (f"; × {doc['baseline']}" if duration else "") + "):",
            "",
            "| case | " + " | ".join(head) + " |",
            "| --- | " + " | ".join("---:" for _ in head) + " |",
        ]
        for case in doc["cases"]:
            ratios = case.get("extra_ratios", {}).get(figure, {})
            cells = []
            for v in ready:
                value = case["results"].get(v, {}).get("extra", {}).get(figure)
                if value is None:
                    cells.append("—")
                elif duration:
                    r = ratios.get("vs_baseline", {}).get(v)
                    cells.append(f"{format_value(_duration_seconds(figure, value), 's')} ({format_ratio(r)})")
                else:
                    cells.append(f"{value:.4g}")
            if duration:
                cells.append(_vs_best(ratios.get("subject_vs_best_peer"), ratios.get("best_peer")))
            lines.append(f"| {case['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _target_lines(doc: "dict[str, Any]") -> "list[str]":
    """The issue's goals, each with whether the medians of this run reach it."""
    rows = []
    for case in doc["cases"]:
        t = case.get("target")
        if not t:
            continue
        verdict = {True: "met", False: "not met", None: "not measured"}[t["met"]]
        rows.append(
            f"| {case['name']} | {doc['subject']} ≥ {t['ratio']:.2f}× {t['peer']} "
            f"| {format_ratio(t['measured'])} | {format_ratio(t.get('paired'))} | {verdict} |"
        )
    if not rows:
        return []
    return [
        "Goals (judged on the medians; *paired* is the median of the ratios within each "
        "round, where both ran minutes apart at most):",
        "", "| case | goal | measured | paired | |", "| --- | --- | ---: | ---: | --- |", *rows, "",
    ]


def render_section(doc: "dict[str, Any]") -> str:
    variants = list(doc["variants"])
    baseline, subject = doc["baseline"], doc["subject"]
    m = doc["machine"]
    checkout = doc.get("checkout") or {}
    commit = (checkout.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if checkout.get("dirty") else "")
    lines = [f"## {doc['title']}", ""]
    if doc.get("description"):
        lines += [doc["description"], ""]
    lines += [
        f"- Command: `{doc['command']}`",
        f"- Date: {doc['date']}",
        f"- Python: {doc['python']}",
        f"- Machine: {m['nproc']} CPUs (nproc), {m['cpu_model']}, {m['system']}"
        + _load(m),
        f"- Checkout: {commit}",
        f"- Method: {doc['runs']} runs per variant and case, each in a fresh process, "
        "variants interleaved; the figure is the median, ± half the range of the runs"
        + (" — **quick run (small N): not representative**" if doc.get("quick") else ""),
        "",
        "| variant | version |",
        "| --- | --- |",
    ]
    for v in variants:
        info = doc["variants"][v]
        lines.append(f"| {v} | {info['version'] if info['available'] else 'unavailable: ' + _escape(info.get('error', '?'))} |")
    lines.append("")

    ready = [v for v in variants if doc["variants"][v]["available"]]
    lines += [
        "| case | n | " + " | ".join(ready) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in ready) + " |",
    ]
    for case in doc["cases"]:
        cells = [_cell(case["results"].get(v, {"error": "not run"}), case["unit"]) for v in ready]
        lines.append(f"| {case['name']} | {case['n']:,} | " + " | ".join(cells) + " |")
    lines.append("")

    others = [v for v in ready if v != baseline]
    if others:
        head = [f"{v} vs {baseline}" for v in others]
        lines += [
            "Ratios (> 1: better than the other side):",
            "",
            "| case | " + " | ".join(head) + f" | {subject} vs best peer |",
            "| --- | " + " | ".join("---:" for _ in head) + " | ---: |",
        ]
        for case in doc["cases"]:
            cells = [format_ratio(case["results"].get(v, {}).get("vs_baseline")) for v in others]
            cells.append(_vs_best(case.get("subject_vs_best_peer"), case.get("best_peer")))
            lines.append(f"| {case['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _target_lines(doc)

    lines += _extra_tables(doc, ready)
    failed = [
        f"- {case['name']} on {v}: {_escape(e['error'])}"
        for case in doc["cases"] for v, e in case["results"].items() if "error" in e
    ]
    if failed:
        lines += ["Failed runs:", "", *failed, ""]
    descriptions = [f"- `{c['name']}`: {c['description']}" for c in doc["cases"]]
    lines += ["Cases:", "", *descriptions, ""]
    return "\n".join(lines)


def _load(machine: "dict[str, Any]") -> str:
    start, end = machine.get("loadavg_at_start"), machine.get("loadavg")
    if not end:
        return ""
    shown = f"{start[0]:.2f} at start, {end[0]:.2f} at end" if start else f"{end[0]:.2f} at end"
    return f"; load average (1 min) {shown}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(docs: "list[dict[str, Any]]", chart: "Path | None", chart_error: "str | None") -> str:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `bash scripts/dev bench` (`benches/run.py`, then `benches/report.py`) "
        "from `benches/results/*.json`; do not edit by hand. How to run and extend: "
        "[benches/README.md](../benches/README.md).",
        "",
    ]
    if chart is not None:
        parts += [f"![ratios against the baseline]({chart.name})", ""]
    elif chart_error:
        parts += [f"(No chart: {chart_error}.)", ""]
    if not docs:
        parts += ["No results yet.", ""]
    parts += [render_section(doc) for doc in docs]
    extra = load_markdown_sections(MARKDOWN_DIR) if MARKDOWN_DIR is not None else []
    parts += [text + "\n" for _, text in sorted(extra, key=lambda t: t[0])]
    return "\n".join(parts).rstrip() + "\n"


# Where render_markdown looks for standalone Markdown sections (set by write_report).
MARKDOWN_DIR: "Path | None" = None


def render_console(docs: "list[dict[str, Any]]") -> str:
    out = []
    for doc in docs:
        out.append(f"{doc['title']} (ratio vs {doc['baseline']}; > 1 is better)")
        for case in doc["cases"]:
            cells = []
            for v, e in case["results"].items():
                if "error" in e:
                    cells.append(f"{v} failed")
                else:
                    cells.append(f"{v} {format_value(e['median'], case['unit'])} {format_ratio(e.get('vs_baseline'))}")
            if case.get("subject_vs_best_peer") is not None:
                cells.append(f"{doc['subject']} vs {case['best_peer']} {format_ratio(case['subject_vs_best_peer'])}")
            if case.get("target") and case["target"]["met"] is not None:
                t = case["target"]
                cells.append(f"goal ≥ {t['ratio']:.2f}× {t['peer']}: {'met' if t['met'] else 'not met'}")
            out.append(f"  {case['name']:<20} " + " | ".join(cells))
    return "\n".join(out)


# --------------------------------------------------------------------------- chart


def _chart_panels(doc: "dict[str, Any]") -> "list[tuple[str, Any]]":
    """(title, ratio(case, variant)) for the main figure, then each extra duration."""
    panels = [(
        f"{doc['title']}: median of {doc['runs']} runs"
        + (" — quick run" if doc.get("quick") else ""),
        lambda case, v: case["results"].get(v, {}).get("vs_baseline"),
    )]
    figures = sorted({f for c in doc["cases"] for f in c.get("extra_ratios", {})})
    for figure in figures:
        panels.append((
            f"{doc['title']}: {figure}, median of {doc['runs']} runs",
            lambda case, v, f=figure: case.get("extra_ratios", {}).get(f, {}).get("vs_baseline", {}).get(v),
        ))
    return panels


def write_chart(docs: "list[dict[str, Any]]", path: Path) -> None:
    """Horizontal bars of each variant's ratio against the baseline: one row per suite,
    one panel for the main figure and one per extra duration (CPU time, say)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [d for d in docs if d["cases"]]
    panels = [_chart_panels(d) for d in docs]
    columns = max(len(p) for p in panels)
    heights = [1.2 + 0.45 * len(d["cases"]) * max(1, len(d["variants"])) / 2 for d in docs]
    fig, axes = plt.subplots(len(docs), columns, figsize=(6.5 * columns + 1.5, sum(heights) + 0.5),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    colours = plt.get_cmap("tab10")
    for row, doc in enumerate(docs):
        variants = [v for v in doc["variants"] if doc["variants"][v]["available"]]
        cases = doc["cases"]
        width = 0.8 / max(1, len(variants))
        for col in range(columns):
            ax = axes[row, col]
            if col >= len(panels[row]):
                ax.set_visible(False)
                continue
            title, ratio_of = panels[row][col]
            for i, v in enumerate(variants):
                ys, xs = [], []
                for j, case in enumerate(cases):
                    r = ratio_of(case, v)
                    if r:
                        ys.append(j + (i - (len(variants) - 1) / 2) * width)
                        xs.append(r)
                bars = ax.barh(ys, xs, height=width, color=colours(i), label=v)
                ax.bar_label(bars, labels=[f"{x:.2f}×" for x in xs], fontsize=7, padding=2)
            ax.set_xscale("log")
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_yticks(range(len(cases)), [c["name"] for c in cases] if col == 0 else [])
            ax.invert_yaxis()
            ax.set_xlabel(f"× {doc['baseline']} (log scale; > 1 is better)")
            ax.set_title(title, fontsize=10)
            lo, hi = ax.get_xlim()
            ax.set_xlim(min(lo, 0.5), hi * 1.6)
        axes[row, len(panels[row]) - 1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results_dir: Path, md_path: Path, png_path: "Path | None") -> "tuple[Path, Path | None]":
    global MARKDOWN_DIR
    MARKDOWN_DIR = results_dir
    docs = load_results(results_dir)
    chart, chart_error = None, None
    if png_path is not None and docs:
        try:
            write_chart(docs, png_path)
            chart = png_path
        except ImportError:
            chart_error = "matplotlib is not installed"
        except Exception as exc:  # noqa: BLE001 - the tables still get written
            chart_error = f"the chart failed: {type(exc).__name__}: {exc}"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render_markdown(docs, chart and Path(png_path.name), chart_error))
    return md_path, chart


def main(argv: "list[str]") -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", type=Path, default=BENCHES / "results")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "benchmarks.png")
    args = p.parse_args(argv)
    md, png = write_report(args.results, args.md, args.png)
    print(f"report: wrote {md}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
