"""HTTP: a Starlette app on uvicorn (httptools), loaded by `wrk`.

uvicorn runs in its own process pinned to CPU 0 with `--loop` set to the variant
(`interloop:new_event_loop`, `rloop:new_event_loop`, or uvicorn's own names); `wrk`
(Debian package) runs pinned to CPU 1 with 50 keep-alive connections for the run's
duration. The figure is requests per second, with wrk's latency percentiles.
Loopback only.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from harness import Case, Suite

from bench_loop import LOOPS, probe_loop

CONNECTIONS = 50

APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):
        return PlainTextResponse("Hello, world!")

    app = Starlette(routes=[Route("/", hello)])
    """
)

LOOP_OPTION = {
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "rloop": "rloop:new_event_loop",
    "interloop": "interloop:new_event_loop",
}


def _probe(variant: str) -> str:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401

    return probe_loop(variant)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("uvicorn did not start listening")


def _taskset(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _latency_us(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def hello(variant: str, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "app.py"), "w") as f:
            f.write(APP)
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=tmp + os.pathsep + os.environ.get("PYTHONPATH", ""))
        server = subprocess.Popen(
            _taskset(0) + [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                           "--port", str(port), "--loop", LOOP_OPTION[variant],
                           "--http", "httptools", "--log-level", "warning", "--no-access-log"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            _wait_listening(port, server)
            out = subprocess.run(
                _taskset(1) + ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
                               f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True, check=True,
            ).stdout
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return {"value": float(m.group(1)), "p50_us": _latency_us(out, "50"),
            "p99_us": _latency_us(out, "99")}


SUITE = Suite(
    name="http",
    title="HTTP: Starlette on uvicorn",
    description=(
        f"Starlette 'Hello, world!' on uvicorn with httptools; wrk, {CONNECTIONS} keep-alive "
        "connections; server and wrk pinned to different CPUs. n is the duration in seconds."
    ),
    variants=LOOPS,
    baseline="asyncio",
    subject="interloop",
    probe=_probe,
    order=30,
    cases=(
        Case("starlette_hello", "GET / returning a short text", hello, n=10, quick_n=2,
             unit="req/s", better="higher", target=("uvloop", 1.15)),
    ),
    figures={"p50_us": "median latency (µs)", "p99_us": "99th percentile latency (µs)"},
)
