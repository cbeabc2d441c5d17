"""interloop.DaskPool against the plain Dask client, and a cluster against Pool.

    python benches/bench_dask.py [--quick] [--runs N]

Needs ``distributed`` (``pip install 'interloop[dask]'``). Starts a Dask scheduler and
workers on 127.0.0.1 with Dask's own command line (``python -m dask scheduler``,
``python -m dask worker``), as a user would on a cluster, and measures, in the same
run and on the same client:

- the round trip of one awaited job: ``await pool.run(f)`` against
  ``await client.submit(f, pure=False)``;
- jobs per second for a burst of tiny jobs: ``pool.submit`` gathered with
  ``asyncio.gather`` against ``client.submit`` gathered with ``client.gather`` and
  against awaiting each of those Dask futures;
- a CPU-bound fan-out (16 pure-Python jobs) on the local cluster (2 worker processes,
  1 thread each) against ``interloop.Pool(2)`` and against running them serially,
  so users see what a cluster costs on one machine.

Each figure is the median of ``--runs`` rounds, DaskPool and the plain client
interleaved round by round. Prints Markdown and writes ``benches/results/dask.json``.
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import interloop  # noqa: E402
import pool_jobs  # noqa: E402
import standalone  # noqa: E402

CPU_JOBS = 16
WORKERS = 2
LOOPS = (("asyncio loop", asyncio.new_event_loop), ("interloop loop", interloop.new_event_loop))


class LocalDask:
    """A scheduler and ``WORKERS`` single-threaded worker processes, started with
    Dask's command line; ``address`` is the scheduler's."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="bench-dask-")
        sfile = os.path.join(self.dir.name, "scheduler.json")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, *sys.path]))
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", sfile], **quiet)]
        deadline = time.monotonic() + 60
        while not os.path.exists(sfile):
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                self.close()
                raise RuntimeError("the Dask scheduler did not start")
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written in one go, but let it land
        with open(sfile) as f:
            self.address = json.load(f)["address"]
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", self.address, "--nworkers", str(WORKERS),
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], **quiet))

    async def wait(self, client):
        await client.wait_for_workers(WORKERS, timeout=120)

    def close(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.dir.cleanup()


def med(xs):
    return statistics.median(xs)


async def dask_vs_plain(address, runs, n_rt, n_burst):
    """Round trip and burst, DaskPool and plain client interleaved per round."""
    import distributed
    out = {"rt_pool": [], "rt_plain": [], "burst_pool": [], "burst_plain": [],
           "burst_awaits": []}
    async with distributed.Client(address, asynchronous=True) as client:
        async with interloop.DaskPool(client) as pool:
            # warm-up: workers import the functions and interloop._dask
            await pool.run(pool_jobs.noop)
            await client.submit(pool_jobs.noop, pure=False)
            for _ in range(runs):
                t = []
                for _ in range(n_rt):
                    t0 = time.perf_counter()
                    await client.submit(pool_jobs.noop, pure=False)
                    t.append(time.perf_counter() - t0)
                out["rt_plain"].append(med(t))
                t = []
                for _ in range(n_rt):
                    t0 = time.perf_counter()
                    await pool.run(pool_jobs.noop)
                    t.append(time.perf_counter() - t0)
                out["rt_pool"].append(med(t))

                t0 = time.perf_counter()
                await client.gather([client.submit(pool_jobs.noop, pure=False)
                                     for _ in range(n_burst)])
                out["burst_plain"].append(n_burst / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                await asyncio.gather(*(client.submit(pool_jobs.noop, pure=False)
                                       for _ in range(n_burst)))
                out["burst_awaits"].append(n_burst / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                await asyncio.gather(*(pool.submit(pool_jobs.noop) for _ in range(n_burst)))
                out["burst_pool"].append(n_burst / (time.perf_counter() - t0))
    return {k: med(v) for k, v in out.items()}


async def fan_out_dask(address, n):
    async with interloop.DaskPool(address) as pool:
        await asyncio.gather(*(pool.run(pool_jobs.cpu, 1000) for _ in range(WORKERS)))
        t0 = time.perf_counter()
        await asyncio.gather(*(pool.run(pool_jobs.cpu, n) for _ in range(CPU_JOBS)))
        return time.perf_counter() - t0


def fan_out_pool(n):
    """In a process of its own: no Dask client threads next to the pool. The pool's
    start is not timed."""
    code = (
        "import asyncio, sys, time\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import interloop, pool_jobs\n"
        "async def main():\n"
        f"    async with interloop.Pool({WORKERS}) as pool:\n"
        f"        await asyncio.gather(*(pool.run(pool_jobs.acpu, 1000) for _ in range({WORKERS})))\n"
        "        t0 = time.perf_counter()\n"
        f"        await asyncio.gather(*(pool.run(pool_jobs.acpu, {n}) for _ in range({CPU_JOBS})))\n"
        "        print(time.perf_counter() - t0)\n"
        "interloop.run(main())\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"the Pool fan-out failed: {p.stderr[-2000:]}")
    return float(p.stdout.split()[-1])


def serial(n):
    t0 = time.perf_counter()
    for _ in range(CPU_JOBS):
        pool_jobs.cpu(n)
    return time.perf_counter() - t0


def fan_out(address, runs, n):
    """The three runners interleaved round by round (the machine's load drifts)."""
    rounds = {"serial": [], "interloop.Pool(2), async def": [],
              "DaskPool, 2 local worker processes": []}
    for _ in range(runs):
        rounds["serial"].append(serial(n))
        rounds["interloop.Pool(2), async def"].append(fan_out_pool(n))
        rounds["DaskPool, 2 local worker processes"].append(
            asyncio.run(fan_out_dask(address, n), loop_factory=interloop.new_event_loop))
    return {k: med(v) for k, v in rounds.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer, smaller jobs; 3 runs")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dask.json"))
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    n_rt, n_burst = (50, 200) if args.quick else (200, 1000)
    n_cpu = 300_000 if args.quick else 1_500_000
    print, lines = standalone.markdown_printer()  # noqa: A001 - also keeps the markdown
    import distributed

    report = {"python": platform.python_version(), "cpus": os.cpu_count(), "runs": runs,
              "distributed": distributed.__version__, "loadavg_at_start": os.getloadavg(),
              "workers": WORKERS, "cpu_jobs": CPU_JOBS, "cpu_job_n": n_cpu}
    print(f"# interloop DaskPool benchmarks (CPython {report['python']}, distributed "
          f"{report['distributed']}, {os.cpu_count()} cores, median of {runs})\n")
    print(f"A scheduler and {WORKERS} worker processes (1 thread each) on 127.0.0.1, "
          "started with `dask scheduler` / `dask worker`, the caller in a third process.\n")

    cluster = LocalDask()
    try:
        async def ready():
            async with distributed.Client(cluster.address, asynchronous=True) as c:
                await cluster.wait(c)
        asyncio.run(ready())

        rows = {}
        for name, factory in LOOPS:
            rows[name] = asyncio.run(dask_vs_plain(cluster.address, runs, n_rt, n_burst),
                                     loop_factory=factory)
        report["vs_plain"] = rows
        print("## DaskPool against the plain Dask client (same client, same run)\n")
        print(f"Round trip: one awaited no-op job, median of {n_rt} per round. Burst: "
              f"{n_burst} no-op jobs submitted at once and gathered.\n")
        print("| caller's loop | round trip: client.submit | DaskPool.run | overhead "
              "| jobs/s: client.gather | await each | DaskPool.submit | overhead vs gather |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in rows.items():
            rt = r["rt_pool"] / r["rt_plain"] - 1
            burst = r["burst_plain"] / r["burst_pool"] - 1
            print(f"| {name} | {r['rt_plain'] * 1e3:.2f} ms | {r['rt_pool'] * 1e3:.2f} ms | "
                  f"{rt:+.1%} | {r['burst_plain']:,.0f} | {r['burst_awaits']:,.0f} | "
                  f"{r['burst_pool']:,.0f} | {burst:+.1%} |")
        print("\n`client.gather` fetches all results once all jobs are done; `await each` "
              "awaits every Dask future on its own; DaskPool resolves each job's future as "
              "it finishes, fetching the results that finish together in one gather.\n")

        fan = fan_out(cluster.address, runs, n_cpu)
        report["fan_out"] = {k: {"seconds": v, "speedup": fan["serial"] / v} for k, v in fan.items()}
        print(f"## {CPU_JOBS} pure-Python CPU jobs, one machine\n")
        print("| runner | seconds | speed-up vs serial |\n|---|---:|---:|")
        for k, v in fan.items():
            print(f"| {k} | {v:.3f} | {fan['serial'] / v:.2f}x |")
        print()
    finally:
        cluster.close()
    report["loadavg_at_end"] = os.getloadavg()
    print(f"load average at start {report['loadavg_at_start']}, at end {report['loadavg_at_end']} "
          "(the machine is shared: CPU numbers need an idle machine)")
    standalone.write_report(report, lines, args.out, 45, "bench_dask.py")


if __name__ == "__main__":
    main()
