"""ASGI servers (issue 13): a Starlette "Hello, world!" app under `wrk -t1 -c50`.

    .venv-3.13/bin/python benches/bench_serve.py [--duration 8] [--rounds 3] [--only a,b]
    .venv-3.13/bin/python benches/bench_serve.py --tls    # HTTPS: the pinned servers over TLS

Servers run with the bench virtualenv's python (`.venv-bench-X.Y`, made by
benches/run.py with benches/requirements.txt: uvicorn, uvloop, httptools, granian;
interloop from this checkout). Each round runs every server once, in turn, so that
the servers of one round share the machine's state; the table gives medians over
rounds. A "pinned" server runs on CPU 0 (taskset) with wrk on CPU 1; otherwise both
float over every CPU. Per server: requests per second (wrk), requests per server
CPU-second (user + system time of the whole process tree during the load, from
/proc), and the RSS of the whole process tree at the end of the load. Loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import ssl
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

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

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


PLAIN_REF = "interloop serve --workers 1, plain HTTP (reference), pinned"


def servers(py: str, port: int, tls: "tuple[str, str] | None" = None) -> dict[str, tuple[list[str], bool]]:
    """name -> (command, pinned); with ``tls`` (cert, key files), the pinned
    servers serving HTTPS (uvicorn through Python's ssl, granian through rustls,
    interloop serve through rustls)."""
    uv = [py, "-m", "uvicorn", "app:app", "--port", str(port), "--no-access-log",
          "--log-level", "warning", "--http", "httptools"]
    gr = [py, "-m", "granian", "--interface", "asgi", "--port", str(port),
          "--log-level", "warning", "app:app"]
    il = [py, "-m", "interloop", "serve", "app:app", "--port", str(port), "--no-access-log",
          "--log-level", "warning"]
    if tls:
        cert, key = tls
        return {
            "uvicorn+uvloop+httptools+ssl, pinned": (
                uv + ["--loop", "uvloop", "--ssl-certfile", cert, "--ssl-keyfile", key], True),
            "granian 1 worker, TLS, pinned": (
                gr + ["--workers", "1", "--ssl-certificate", cert, "--ssl-keyfile", key], True),
            "interloop serve --workers 1, TLS, pinned": (
                il + ["--workers", "1", "--ssl-certfile", cert, "--ssl-keyfile", key], True),
            # The same server without TLS in the same run: what TLS costs.
            PLAIN_REF: (il + ["--workers", "1"], True),
        }
    return {
        "uvicorn+uvloop+httptools, pinned": (uv + ["--loop", "uvloop"], True),
        "uvicorn+interloop loop+httptools, pinned": (uv + ["--loop", "interloop:new_event_loop"], True),
        "granian 1 worker, pinned": (gr + ["--workers", "1"], True),
        "interloop serve --workers 1, pinned": (il + ["--workers", "1"], True),
        "uvicorn --workers 2": (uv + ["--loop", "uvloop", "--workers", "2"], False),
        "granian 1 worker": (gr + ["--workers", "1"], False),
        "granian --workers 2": (gr + ["--workers", "2"], False),
        "interloop serve --workers 1": (il + ["--workers", "1"], False),
        "interloop serve --workers 2": (il + ["--workers", "2"], False),
        "interloop serve --workers 2 --listener shared": (il + ["--workers", "2", "--listener", "shared"], False),
        "interloop serve --workers 2 --worker-kind process": (il + ["--workers", "2", "--worker-kind", "process"], False),
    }


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(d: str) -> "tuple[str, str]":
    """A self-signed certificate for 127.0.0.1 (the openssl command; P-256 key)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 30.0, tls: bool = False) -> None:
    deadline = time.monotonic() + timeout
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s0:
                s = ctx.wrap_socket(s0) if tls else s0
                s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not answer")


def run_one(cmd: list[str], pinned: bool, port: int, duration: float, cwd: str,
            tls: bool = False) -> dict:
    pin = ["taskset", "-c", "0"] if pinned and shutil.which("taskset") else []
    proc = subprocess.Popen(pin + cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    try:
        wait_up(port, proc, tls=tls)
        time.sleep(0.5)  # workers that start late (process kinds) are up
        # A short warm-up, then the measured load.
        subprocess.run(["wrk", "-t1", "-c50", "-d1s", url],
                       capture_output=True, check=True)
        pids = tree(proc.pid)
        cpu0 = cpu_seconds(pids)
        wpin = ["taskset", "-c", "1"] if pinned and shutil.which("taskset") else []
        out = subprocess.run(wpin + ["wrk", "-t1", "-c50", f"-d{duration:g}s", url],
                             capture_output=True, text=True, check=True).stdout
        pids = tree(proc.pid)
        cpu = cpu_seconds(pids) - cpu0
        rss = rss_bytes(pids)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
        total = float(re.search(r"(\d+) requests in", out).group(1))
        return {"rps": rps, "per_cpu_s": total / cpu if cpu > 0 else 0.0,
                "cpu_s": cpu, "rss_mb": rss / 1e6, "errors": errors.group(0) if errors else ""}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.5)


TARGET_NOTE = (
    "Targets (issue 13): requests per server CPU-second at least 1.2x granian's (pinned, "
    "one core); with the default worker count (one per core) req/s at least 1.2x the best "
    "of granian (1 or 2 workers) and `uvicorn --workers 2`; RSS with 2 workers at most "
    "0.6x that of `uvicorn --workers 2`.")


def table(t: dict) -> list[str]:
    """The Markdown table of a run's medians, one server a row."""
    rows = ["| server | req/s | req/s per server CPU-second | RSS of the whole server |",
            "|---|---:|---:|---:|"]
    for name, m in t.items():
        if "error" in m:
            rows.append(f"| {name} | failed: {m['error']} | | |")
        else:
            rows.append(f"| {name} | {m['rps'] / 1000:.1f}k | {m['per_cpu_s'] / 1000:.1f}k | "
                        f"{m['rss_mb']:.0f} MB |")
    return rows


def render_tls(doc: dict) -> str:
    t = doc["medians"]
    lines = [
        "# ASGI servers over TLS: interloop serve against uvicorn and granian",
        "",
        "The same Starlette \"Hello, world!\" app over HTTPS (a self-signed P-256 "
        f"certificate; TLS 1.3) under `wrk -t1 -c50` for {doc['duration']:g} s per run, "
        f"{doc['rounds']} rounds, medians; each server pinned to CPU 0 and wrk to CPU 1. "
        "wrk keeps its 50 connections open, so this is the cost of encrypting and "
        "decrypting requests, not of handshakes. uvicorn uses Python's ssl module "
        "(OpenSSL, through asyncio's SSL protocol), granian and interloop serve rustls.",
        "",
        *table(t),
    ]
    il = t.get("interloop serve --workers 1, TLS, pinned", {}).get("per_cpu_s")
    ratios = []
    for peer in ("granian 1 worker, TLS, pinned", "uvicorn+uvloop+httptools+ssl, pinned"):
        p = t.get(peer, {}).get("per_cpu_s")
        if il and p:
            ratios.append(f"- Per core (req/s per server CPU-second): {il / p:.2f}x {peer}")
    plain = t.get(PLAIN_REF, {}).get("per_cpu_s")
    if il and plain:
        ratios.append(f"- interloop serve, CPU per request with TLS minus without: "
                      f"{1e6 / il - 1e6 / plain:+.1f} µs (TLS at {il / plain:.2f}x the plain-HTTP "
                      "requests per CPU-second, same run)")
    lines += ["", *ratios, "",
              f"- Date: {doc.get('date', '?')}; Python: {doc.get('python', '?')}; peers: "
              f"{doc.get('versions', '?')}",
              f"- Machine: {doc['machine_cpus']} CPUs, shared with other jobs: load average "
              f"(1 min) {doc.get('load_start', '?')} at start, {doc.get('load_end', '?')} at end."]
    return "\n".join(lines)


def render(doc: dict) -> str:
    if doc.get("tls"):
        return render_tls(doc)
    t = doc["medians"]
    lines = [
        "# ASGI servers: interloop serve against uvicorn and granian"
        + (f" (only: {doc['only']})" if doc.get("only") else ""),
        "",
        "A Starlette \"Hello, world!\" app under `wrk -t1 -c50` for "
        f"{doc['duration']:g} s per run, {doc['rounds']} rounds (each round runs every "
        "server once, in turn); medians. \"Pinned\": the server on CPU 0 and wrk on CPU 1 "
        "(taskset); otherwise both float over both CPUs. CPU-seconds are the user + system "
        "time of the server's whole process tree during the load; RSS is the whole tree's "
        "at the end of the load. Access logs off everywhere.",
        "",
        *table(t),
    ]

    def get(name, key):
        return t.get(name, {}).get(key)

    def spread(key):
        """Largest max/min ratio of ``key`` over the rounds of one server."""
        out = 1.0
        for rs in doc["results"].values():
            v = [r[key] for r in rs if r.get(key)]
            if v:
                out = max(out, max(v) / min(v))
        return out

    ratios = []
    a, b = get("interloop serve --workers 1, pinned", "per_cpu_s"), get("granian 1 worker, pinned", "per_cpu_s")
    if a and b:
        ratios.append(f"- Per core (req/s per server CPU-second, pinned): {a / b:.2f}x granian")
    best = max((get(n, "rps") or 0) for n in ("granian 1 worker", "granian --workers 2", "uvicorn --workers 2"))
    a = get("interloop serve --workers 2", "rps")
    if a and best:
        ratios.append(f"- All cores (req/s, `--workers 2` = one per core): {a / best:.2f}x the best of "
                      "granian 1 or 2 workers and `uvicorn --workers 2`")
    a, b = get("interloop serve --workers 2", "rss_mb"), get("uvicorn --workers 2", "rss_mb")
    if a and b:
        ratios.append(f"- Memory (RSS, 2 workers): {a / b:.2f}x `uvicorn --workers 2`")
    lines += ["", *ratios, "", TARGET_NOTE, "",
              f"- Date: {doc.get('date', '?')}; Python: {doc.get('python', '?')}; peers: "
              f"{doc.get('versions', '?')}",
              f"- Machine: {doc['machine_cpus']} CPUs, shared with other jobs: load average "
              f"(1 min) {doc.get('load_start', '?')} at start, {doc.get('load_end', '?')} at end. "
              "On a machine that busy a server's req/s follows the CPU time it gets (the "
              "cpu_s of each run in the JSON), which moved req/s by up to "
              f"{spread('rps'):.2f}x between rounds of the same server, and requests per "
              f"CPU-second by up to {spread('per_cpu_s'):.2f}x: the latter are the figures "
              "to compare. The all-cores ratio is the one "
              "the load distorts most: " + "; ".join(
                  f"{n} got {min(c):g}-{max(c):g} CPU-seconds per {doc['duration']:g} s run"
                  for n in ("granian --workers 2", "interloop serve --workers 2")
                  if (c := [r["cpu_s"] for r in doc["results"].get(n, []) if "cpu_s" in r])) + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated substrings of server names")
    ap.add_argument("--python", default=None, help="python with the peers (default: the bench venv)")
    ap.add_argument("--tls", action="store_true",
                    help="the pinned servers over HTTPS (results/serve-tls.json)")
    ap.add_argument("--json", default=None,
                    help="result file (default results/serve.json, or serve-tls.json with --tls)")
    ap.add_argument("--render", action="store_true",
                    help="only re-render the Markdown of an existing --json file")
    args = ap.parse_args()
    if args.json is None:
        args.json = str(HERE / "results" / ("serve-tls.json" if args.tls else "serve.json"))
    if args.render:
        doc = json.loads(Path(args.json).read_text())
        doc["markdown"] = render(doc)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(doc["markdown"])
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    py = args.python
    if py is None:
        import run
        py = str(run.ensure_bench_venv())
    results: dict[str, list[dict]] = {}
    load_start = round(os.getloadavg()[0], 2)
    versions = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' "
                   "for p in ('uvicorn', 'uvloop', 'httptools', 'granian', 'starlette')))"],
        capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        Path(d, "app.py").write_text(APP)
        tls = make_cert(d) if args.tls else None
        for rnd in range(args.rounds):
            port = free_port()
            for name, (cmd, pinned) in servers(py, port, tls).items():
                if args.only and not any(o in name for o in args.only.split(",")):
                    continue
                try:
                    r = run_one(cmd, pinned, port, args.duration, d,
                                tls=bool(tls) and name != PLAIN_REF)
                except Exception as e:  # noqa: BLE001 - one server failing is reported
                    r = {"error": repr(e)}
                print(f"round {rnd + 1} {name}: {r}", file=sys.stderr)
                results.setdefault(name, []).append(r)
    table = {}
    for name, rs in results.items():
        ok = [r for r in rs if "rps" in r]
        if not ok:
            table[name] = {"error": rs[-1].get("error")}
            continue
        table[name] = {k: statistics.median(r[k] for r in ok)
                       for k in ("rps", "per_cpu_s", "cpu_s", "rss_mb")}
        table[name]["runs"] = len(ok)
    doc = {"duration": args.duration, "rounds": args.rounds, "machine_cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "python": sys.version.split()[0], "versions": versions,
           "load_start": load_start, "load_end": round(os.getloadavg()[0], 2),
           "command": "python benches/bench_serve.py " + shlex.join(sys.argv[1:]),
           "order": 72 if args.tls else 70 if not args.only else 71, "only": args.only,
           "tls": args.tls,
           "results": results, "medians": table}
    doc["markdown"] = render(doc)
    print(doc["markdown"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
