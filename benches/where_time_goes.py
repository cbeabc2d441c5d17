"""Where the time of a benchmark goes, split between the loop and everything else.

The speed goals of issues 2 and 3 are ratios of wall time. On this shared VM wall time
moves by ±25% from run to run, so this tool measures what does not move: instructions
per operation (valgrind's callgrind, at two sizes, the difference divided by the
difference in operations) and, for TCP, the CPU time per message of each process, with
the user/kernel split. It then says how far the loop's own share could move the ratio:
the *ceiling* is the peer's cost divided by ours without the loop's own share, that is
the ratio a loop that cost nothing at all would reach.

    python benches/where_time_goes.py loop sleep_zero [VARIANT ...]
    python benches/where_time_goes.py http [VARIANT ...]
    python benches/where_time_goes.py tcp protocol|streams [VARIANT ...]

`loop` and `http` need valgrind (and `http` needs wrk); run them in the bench venv
(`.venv-bench-3.13/bin/python`), which has the peers. "Loop" in the instruction split
means the code in the variant's own native module (for interloop `_interloop*.so`);
what the loop makes CPython do (allocate its handles, run its Python methods) is
counted with CPython, so the loop's share is, if anything, understated and the ceiling
overstated.
"""
from __future__ import annotations

import collections
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# The native module of each loop: the object files callgrind counts as "the loop".
LOOP_OBJECTS = {
    "interloop": re.compile(r"_interloop\."),
    "rloop": re.compile(r"_rloop\."),
    "uvloop": re.compile(r"uvloop/loop\."),
    "asyncio": re.compile(r"_asyncio\.|_selectors|select\."),
}
# The goals of issues 2 and 3, as the peer each case is compared with.
PEER = {"loop": "rloop", "http": "uvloop", "tcp": "uvloop"}


# --------------------------------------------------------------------------- callgrind


def self_cost_by_object(path: str) -> "collections.Counter[str]":
    """Self cost (instructions) of each object file in a callgrind output file.

    In the format, a cost line belongs to the current `ob=`/`fn=` context, except the
    line right after `calls=`, which is the inclusive cost of a call (skipped here).
    Object names are compressed: `ob=(3) /path` defines id 3, and later `ob=(3)` or
    `cob=(3)` refer to it; `ob=` and `cob=` share the ids.
    """
    names: dict[str, str] = {}
    cost: collections.Counter[str] = collections.Counter()
    current = "?"
    after_calls = False

    def name_of(field: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?$", field)
        if not m:
            return field
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    with open(path) as f:
        for line in f:
            if line.startswith("ob="):
                current = name_of(line[3:].strip())
            elif line.startswith("cob="):
                name_of(line[4:].strip())  # may define a name used by a later ob=
            elif line.startswith("calls="):
                after_calls = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    cost[current] += int(parts[1])
    return cost


def callgrind(argv: "list[str]", out: str, **popen) -> subprocess.Popen:
    # A fixed hash seed: string hashes decide dict probing, which otherwise moves
    # the counts by a few tens of instructions from run to run.
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        stderr=subprocess.DEVNULL, env=env, **popen,
    )


def per_op(small: str, large: str, ops: float, variant: str) -> "dict[str, float]":
    """Instructions per operation between two runs, split into the loop's own native
    module and the rest."""
    a, b = self_cost_by_object(small), self_cost_by_object(large)
    mine = LOOP_OBJECTS[variant]
    loop = sum(b[k] - a[k] for k in set(a) | set(b) if mine.search(k))
    total = sum(b.values()) - sum(a.values())
    return {"total": total / ops, "loop": loop / ops, "rest": (total - loop) / ops}


def report(rows: "dict[str, dict[str, float]]", peer: str, unit: str) -> None:
    print(f"{'variant':10} {'total':>9} {'loop':>8} {'rest':>9}   instructions per {unit}")
    for v, r in rows.items():
        print(f"{v:10} {r['total']:9.0f} {r['loop']:8.0f} {r['rest']:9.0f}")
    if "interloop" in rows and peer in rows:
        mine, theirs = rows["interloop"], rows[peer]["total"]
        print(f"interloop vs {peer} by instructions: {theirs / mine['total']:.3f}x; "
              f"ceiling (interloop's loop share at zero): {theirs / mine['rest']:.3f}x")


# --------------------------------------------------------------------------- suites


def loop_case(case: str, variants: "list[str]") -> None:
    import bench_loop

    if not hasattr(bench_loop, case):
        names = ("call_soon_chain", "call_soon_batch", "create_task_await", "gather_tasks",
                 "sleep_zero", "future_ping_pong")
        raise SystemExit(f"unknown loop case {case!r}; one of {', '.join(names)}")
    sizes = (10_000, 30_000)
    code = (
        "import sys; sys.path.insert(0, {here!r}); import bench_loop as b\n"
        "loop = b.loop_factory({v!r})(); fn = b.{case}; fn(loop, 2000); fn(loop, {n}); loop.close()"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            outs = []
            for n in sizes:
                out = os.path.join(tmp, f"{v}.{n}")
                p = callgrind([sys.executable, "-c", code.format(here=HERE, v=v, case=case, n=n)],
                              out, stdout=subprocess.DEVNULL)
                if p.wait() != 0:
                    raise SystemExit(f"{v}: the workload failed under valgrind")
                outs.append(out)
            rows[v] = per_op(outs[0], outs[1], sizes[1] - sizes[0], v)
    report(rows, PEER["loop"], f"operation of {case}")


def http(variants: "list[str]") -> None:
    import bench_http

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "app.py"), "w") as f:
            f.write(bench_http.APP)
        for v in variants:
            points = []
            for seconds in (4, 14):
                port = bench_http._free_port()
                out = os.path.join(tmp, f"{v}.{seconds}")
                server = callgrind(
                    [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                     "--port", str(port), "--loop", bench_http.LOOP_OPTION[v],
                     "--http", "httptools", "--log-level", "warning", "--no-access-log"],
                    out, cwd=tmp, stdout=subprocess.DEVNULL,
                )
                try:
                    bench_http._wait_listening(port, server, timeout=120)
                    text = subprocess.run(
                        ["wrk", "-t1", f"-c{bench_http.CONNECTIONS}", f"-d{seconds}s",
                         f"http://127.0.0.1:{port}/"],
                        capture_output=True, text=True, check=True,
                    ).stdout
                finally:
                    server.terminate()
                    server.wait(timeout=120)
                points.append((out, int(re.search(r"(\d+) requests in", text).group(1))))
            (small, n1), (large, n2) = points
            rows[v] = per_op(small, large, n2 - n1, v)
    report(rows, PEER["http"], "request (Starlette on uvicorn, httptools)")


def tcp(mode: str, variants: "list[str]", n: int = 50_000, runs: int = 3) -> None:
    """CPU per message of the echo server and of the client, user and kernel, from
    /proc (server) and getrusage (client, this process)."""
    import bench_tcp
    from bench_loop import loop_factory

    tick = os.sysconf("SC_CLK_TCK")

    def proc_cpu(pid: int) -> "tuple[float, float]":
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / tick, int(fields[12]) / tick

    results: dict[str, list[list[float]]] = {v: [] for v in variants}
    for _ in range(runs):
        for v in variants:
            script = os.path.join(HERE, "bench_tcp.py")
            with bench_tcp.echo_server(script, [mode], v) as (server, port):
                bench_tcp.pin(1)
                loop = loop_factory(v)()
                try:
                    loop.run_until_complete(bench_tcp._client(mode, port, 2000))  # warm-up
                    s0, c0 = proc_cpu(server.pid), resource.getrusage(resource.RUSAGE_SELF)
                    rate = loop.run_until_complete(bench_tcp._client(mode, port, n))["value"]
                    s1, c1 = proc_cpu(server.pid), resource.getrusage(resource.RUSAGE_SELF)
                finally:
                    loop.close()
            us = 1e6 / n
            results[v].append([
                rate, (s1[0] - s0[0]) * us, (s1[1] - s0[1]) * us,
                (c1.ru_utime - c0.ru_utime) * us, (c1.ru_stime - c0.ru_stime) * us,
            ])
    split = tcp_instructions(mode, variants) if shutil.which("valgrind") else {}
    print(f"TCP echo, {mode}: medians of {runs} runs of {n} messages; CPU in µs per message")
    print(f"{'variant':10} {'msg/s':>8} {'server user':>12} {'kernel':>7} {'client user':>12} {'kernel':>7}")
    med = {v: [statistics.median(r[i] for r in rows) for i in range(5)] for v, rows in results.items()}
    for v, m in med.items():
        print(f"{v:10} {m[0]:8.0f} {m[1]:12.2f} {m[2]:7.2f} {m[3]:12.2f} {m[4]:7.2f}")
    for v, sides in split.items():
        for side, r in sides.items():
            print(f"{v:10} {side:6} {r['total']:8.0f} instructions per message, of which the "
                  f"loop's own {r['loop']:6.0f} ({r['loop'] / r['total']:.0%})")
    peer = PEER["tcp"]
    if "interloop" in med and peer in med:
        mine, theirs = med["interloop"], med[peer]
        busiest = max(theirs[1] + theirs[2], theirs[3] + theirs[4])
        # The busier process bounds the rate. Without the loop's own user time (its
        # share of the instructions, if measured), each side keeps its kernel time and
        # the rest of its user time.
        def rest(side: str, user: float) -> float:
            r = split.get("interloop", {}).get(side)
            return user * (r["rest"] / r["total"]) if r else 0.0
        floor = max(mine[2] + rest("server", mine[1]), mine[4] + rest("client", mine[3]))
        what = "the loop's own user time" if split.get("interloop") else "any user time"
        print(f"interloop vs {peer}: {mine[0] / theirs[0]:.3f}x msg/s; ceiling without "
              f"{what} in interloop's processes: {busiest / floor:.3f}x")


def tcp_instructions(mode: str, variants: "list[str]") -> "dict[str, dict[str, dict[str, float]]]":
    """Instructions per message of the echo server and of the client, each measured
    under callgrind (the other side running normally), split as in `per_op`."""
    client_code = (
        "import sys, asyncio; sys.path.insert(0, {here!r}); import bench_tcp\n"
        "from bench_loop import loop_factory\n"
        "loop = loop_factory({v!r})(); loop.run_until_complete(bench_tcp._client({mode!r}, {port}, {n})); loop.close()"
    )
    sizes = (2000, 6000)
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            files: dict[str, list[str]] = {"server": [], "client": []}
            for n in sizes:
                for side in ("server", "client"):
                    path = os.path.join(tmp, f"{v}.{side}.{n}")
                    serve = [sys.executable, os.path.join(HERE, "bench_tcp.py"), "--serve", v, mode]
                    if side == "server":
                        server = callgrind(serve, path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
                    else:
                        server = subprocess.Popen(serve, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
                    try:
                        port = int(server.stdout.readline())
                        code = client_code.format(here=HERE, v=v, mode=mode, port=port, n=n)
                        if side == "client":
                            client = callgrind([sys.executable, "-c", code], path, stdout=subprocess.DEVNULL)
                        else:
                            client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
                        if client.wait(timeout=600) != 0:
                            raise SystemExit(f"{v}: the TCP client failed")
                    finally:
                        server.stdin.close()
                        server.wait(timeout=600)
                    files[side].append(path)
            out[v] = {side: per_op(f[0], f[1], sizes[1] - sizes[0], v) for side, f in files.items()}
    return out


def main(argv: "list[str]") -> None:
    if not argv or argv[0] not in ("loop", "http", "tcp"):
        raise SystemExit(__doc__)
    kind, rest = argv[0], argv[1:]
    if kind in ("loop", "tcp"):
        if not rest:
            raise SystemExit(__doc__)
        what, rest = rest[0], rest[1:]
    variants = rest or ["interloop", PEER[kind]]
    if kind == "loop":
        loop_case(what, variants)
    elif kind == "http":
        http(variants)
    else:
        if what not in ("protocol", "streams"):
            raise SystemExit("tcp mode: protocol or streams")
        tcp(what, variants)


if __name__ == "__main__":
    started = time.monotonic()
    main(sys.argv[1:])
    sys.stdout.flush()
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
