"""What the standalone benchmarks (bench_pool.py, bench_channel.py) share: they print
Markdown tables as they go, and write one JSON file whose ``markdown`` field
benches/report.py merges into docs/benchmarks.md."""
import builtins
import json
import os


def markdown_printer():
    """``(print, lines)``: a ``print`` that also keeps each line for the report."""
    lines = []

    def print_(*parts, flush=False):  # noqa: ARG001 - always flushed
        text = " ".join(str(p) for p in parts)
        builtins.print(text, flush=True)
        lines.append(text)
    return print_, lines


def write_report(report, lines, out, order, script):
    """Writes ``report`` (a dict) with the printed Markdown to ``out`` (JSON)."""
    report["markdown"] = "\n".join(lines)
    report["order"] = order
    report["command"] = os.environ.get("INTERLOOP_BENCH_COMMAND", f"python benches/{script}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    builtins.print(f"(written to {os.path.relpath(out)})")
