"""Benchmarks of interloop's parallel engine against its peers.

    python benches/bench_pool.py [--quick] [--runs N]

Needs, in the same environment: interloop, and for the peers
``pip install interpreters-pep-734 aiomultiprocess`` (missing peers are skipped).
Prints a markdown table and writes ``benches/results/pool.json``. Every number is
the median of several runs, all measured in the same process run.
"""
import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import interloop  # noqa: E402
import pool_jobs  # noqa: E402
import standalone  # noqa: E402

CPU_JOBS = 16
WORKERS = 2
# The caller's event loop for the interloop rows of the tiny-job and round-trip
# sections: asyncio's own (completions through an eventfd and add_reader), and
# interloop's (completions drained natively by the loop).
LOOPS = (("", None), (" [interloop loop]", interloop.new_event_loop))


def median_of(runs, fn):
    vals = [fn() for _ in range(runs)]
    return statistics.median(vals), vals


def try_import(name):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:
        return None


def interpreter_pool_executor():
    """InterpreterPoolExecutor: stdlib (3.14+) or the interpreters-pep-734 backport."""
    for mod in ("concurrent.futures", "interpreters_backport.concurrent.futures"):
        m = try_import(mod)
        if m is not None and hasattr(m, "InterpreterPoolExecutor"):
            return m.InterpreterPoolExecutor
    return None


# -- 16 CPU jobs on 2 workers -----------------------------------------------------------

def cpu_section(runs, n):
    res = {}

    def serial():
        t = time.perf_counter()
        for _ in range(CPU_JOBS):
            pool_jobs.cpu(n)
        return time.perf_counter() - t
    res["serial"] = median_of(runs, serial)[0]

    def with_executor(ex, fn=pool_jobs.cpu):
        async def main():
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(ex, fn, 1000) for _ in range(WORKERS)))  # warm
            t = time.perf_counter()
            await asyncio.gather(*(loop.run_in_executor(ex, fn, n) for _ in range(CPU_JOBS)))
            return time.perf_counter() - t
        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        res["threads"] = median_of(runs, lambda: with_executor(ex))[0]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=ctx) as ex:
        res["ProcessPoolExecutor"] = median_of(runs, lambda: with_executor(ex))[0]
    IPE = interpreter_pool_executor()
    if IPE is not None:
        with IPE(WORKERS) as ex:
            res["InterpreterPoolExecutor"] = median_of(runs, lambda: with_executor(ex))[0]
    amp = try_import("aiomultiprocess")
    if amp is not None:
        for label, kw in (("aiomultiprocess (default)", {}),
                          ("aiomultiprocess (childconcurrency=1)", {"childconcurrency": 1})):
            async def main(kw=kw):
                async with amp.Pool(processes=WORKERS, **kw) as pool:
                    await pool.map(pool_jobs.acpu, [1000] * WORKERS)
                    t = time.perf_counter()
                    await pool.map(pool_jobs.acpu, [n] * CPU_JOBS)
                    return time.perf_counter() - t
            res[label] = median_of(runs, lambda: asyncio.run(main()))[0]
    if try_import("_interpreters") is not None:
        res["raw _interpreters, 2 threads"] = median_of(runs, lambda: raw_interpreters(n))[0]

    for label, fn in (("interloop Pool (plain def)", pool_jobs.cpu),
                      ("interloop Pool (async def)", pool_jobs.acpu)):
        async def main(fn=fn):
            async with interloop.Pool(WORKERS) as pool:
                await asyncio.gather(*(pool.run(fn, 1000) for _ in range(WORKERS)))
                t = time.perf_counter()
                await asyncio.gather(*(pool.run(fn, n) for _ in range(CPU_JOBS)))
                return time.perf_counter() - t
        res[label] = median_of(runs, lambda: asyncio.run(main()))[0]
    return res


def raw_interpreters(n):
    import _interpreters
    ids = [_interpreters.create() for _ in range(WORKERS)]
    try:
        for i in ids:
            _interpreters.exec(i, f"import sys; sys.path.insert(0, {HERE!r}); import pool_jobs")
        per = CPU_JOBS // WORKERS

        def work(i):
            for _ in range(per):
                _interpreters.exec(i, f"pool_jobs.cpu({n})")
        ts = [threading.Thread(target=work, args=(i,)) for i in ids]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        return time.perf_counter() - t
    finally:
        for i in ids:
            _interpreters.destroy(i)


# -- tiny jobs, round trip -------------------------------------------------------------------

def tiny_section(runs, jobs):
    res = {}

    def executor_tiny(ex, count):
        async def main():
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(ex, pool_jobs.noop) for _ in range(20)))
            t = time.perf_counter()
            await asyncio.gather(*(loop.run_in_executor(ex, pool_jobs.noop) for _ in range(count)))
            return (time.perf_counter() - t) / count
        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        res["threads"] = median_of(runs, lambda: executor_tiny(ex, jobs))[0]
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as ex:
        res["ProcessPoolExecutor"] = median_of(runs, lambda: executor_tiny(ex, jobs))[0]
    IPE = interpreter_pool_executor()
    if IPE is not None:
        with IPE(WORKERS) as ex:
            res["InterpreterPoolExecutor"] = median_of(runs, lambda: executor_tiny(ex, jobs))[0]
    if try_import("_interpreters") is not None:
        import _interpreters

        def raw():
            i = _interpreters.create()
            try:
                t = time.perf_counter()
                for _ in range(jobs):
                    _interpreters.exec(i, "None")
                return (time.perf_counter() - t) / jobs
            finally:
                _interpreters.destroy(i)
        res["raw _interpreters (exec, 1 interp)"] = median_of(runs, raw)[0]

    async def il(count, fn, how):
        async with interloop.Pool(WORKERS) as pool:
            await asyncio.gather(*(pool.run(pool_jobs.noop) for _ in range(20)))
            t = time.perf_counter()
            if how == "submit":
                await asyncio.gather(*(pool.submit(fn) for _ in range(count)))
            elif how == "run":
                await asyncio.gather(*(pool.run(fn) for _ in range(count)))
            else:
                async for _ in pool.map(pool_jobs.cpu, [0] * count, ordered=False, window=4096):
                    pass
            return (time.perf_counter() - t) / count
    big = 20_000
    for suffix, factory in LOOPS:
        def arun(coro, factory=factory):
            return asyncio.run(coro, loop_factory=factory)
        res["interloop Pool.submit (gather of futures)" + suffix] = median_of(runs, lambda: arun(il(jobs, pool_jobs.noop, "submit")))[0]
        res["interloop Pool.run (gather of coroutines)" + suffix] = median_of(runs, lambda: arun(il(jobs, pool_jobs.noop, "run")))[0]
        res[f"interloop Pool.submit, {big} jobs" + suffix] = median_of(runs, lambda: arun(il(big, pool_jobs.noop, "submit")))[0]
        res[f"interloop Pool.map, {big} jobs" + suffix] = median_of(runs, lambda: arun(il(big, None, "map")))[0]
    return res


def roundtrip_section(runs, count):
    res = {}

    def executor_rt(ex, count, fn=pool_jobs.noop):
        async def main():
            loop = asyncio.get_running_loop()
            for _ in range(10):
                await loop.run_in_executor(ex, fn)
            vals = []
            for _ in range(count):
                t = time.perf_counter()
                await loop.run_in_executor(ex, fn)
                vals.append(time.perf_counter() - t)
            return statistics.median(vals)
        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        res["threads"] = median_of(runs, lambda: executor_rt(ex, count))[0]
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as ex:
        res["ProcessPoolExecutor"] = median_of(runs, lambda: executor_rt(ex, count))[0]
    IPE = interpreter_pool_executor()
    if IPE is not None:
        with IPE(WORKERS) as ex:
            res["InterpreterPoolExecutor"] = median_of(runs, lambda: executor_rt(ex, count))[0]
    amp = try_import("aiomultiprocess")
    if amp is not None:
        async def main():
            async with amp.Pool(processes=WORKERS) as pool:
                await pool.apply(pool_jobs.anoop)
                vals = []
                for _ in range(max(5, count // 50)):
                    t = time.perf_counter()
                    await pool.apply(pool_jobs.anoop)
                    vals.append(time.perf_counter() - t)
                return statistics.median(vals)
        res["aiomultiprocess"] = median_of(runs, lambda: asyncio.run(main()))[0]

    for (label, fn), (suffix, factory) in ((a, b) for b in LOOPS for a in (
            ("interloop Pool.run (plain def)", pool_jobs.noop),
            ("interloop Pool.run (async def)", pool_jobs.anoop))):
        label += suffix

        async def main(fn=fn):
            async with interloop.Pool(WORKERS) as pool:
                for _ in range(10):
                    await pool.run(fn)
                vals = []
                for _ in range(count):
                    t = time.perf_counter()
                    await pool.run(fn)
                    vals.append(time.perf_counter() - t)
                return statistics.median(vals)
        res[label] = median_of(runs, lambda: asyncio.run(main(), loop_factory=factory))[0]
    return res


# -- fresh pool to first result, memory --------------------------------------------------------

def startup_floor():
    """Seconds to create one own-GIL interpreter and import asyncio in it."""
    import _interpreters
    t = time.perf_counter()
    i = _interpreters.create()
    _interpreters.exec(i, "import asyncio")
    dt = time.perf_counter() - t
    _interpreters.destroy(i)
    return dt


async def first_result(workers=WORKERS):
    """Seconds from making a Pool to its first ``async def`` result."""
    t = time.perf_counter()
    pool = interloop.Pool(workers)
    await pool.run(pool_jobs.anoop)
    dt = time.perf_counter() - t
    await pool.close()
    return dt


def startup_section(runs):
    res = {}
    if try_import("_interpreters") is not None:
        res["floor: one own-GIL interpreter + import asyncio"] = median_of(runs, startup_floor)[0]
    res["interloop Pool(2), first async def result"] = median_of(
        runs, lambda: asyncio.run(first_result()))[0]

    def ppe():
        t = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as ex:
            ex.submit(pool_jobs.noop).result()
            return time.perf_counter() - t
    res["ProcessPoolExecutor (spawn)"] = median_of(runs, ppe)[0]
    IPE = interpreter_pool_executor()
    if IPE is not None:
        def ipe():
            t = time.perf_counter()
            with IPE(WORKERS) as ex:
                ex.submit(pool_jobs.noop).result()
                return time.perf_counter() - t
        res["InterpreterPoolExecutor"] = median_of(runs, ipe)[0]
    amp = try_import("aiomultiprocess")
    if amp is not None:
        async def ap():
            t = time.perf_counter()
            async with amp.Pool(processes=WORKERS) as pool:
                await pool.apply(pool_jobs.anoop)
                return time.perf_counter() - t
        res["aiomultiprocess"] = median_of(runs, lambda: asyncio.run(ap()))[0]
    return res


RSS_PROBE = r"""
import asyncio, sys, interloop
sys.path.insert(0, {here!r})
import pool_jobs
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
async def main():
    base = rss()
    async with interloop.Pool({n}) as pool:
        await asyncio.gather(*(pool.run(pool_jobs.anoop) for _ in range(4 * {n})))
        print((rss() - base) / {n})
asyncio.run(main())
"""


def rss_per_worker(runs, n=4):
    def probe():
        out = subprocess.run([sys.executable, "-c", RSS_PROBE.format(here=HERE, n=n)],
                             capture_output=True, text=True, check=True).stdout
        return float(out.strip().splitlines()[-1])
    return median_of(runs, probe)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller jobs, 3 runs")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "pool.json"))
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    print, lines = standalone.markdown_printer()  # noqa: A001 - also keeps the markdown

    n = 300_000 if args.quick else 1_500_000

    report = {"python": platform.python_version(), "cpus": os.cpu_count(), "runs": runs,
              "loadavg_at_start": os.getloadavg(),
              "workers": WORKERS, "cpu_jobs": CPU_JOBS, "cpu_job_n": n}
    print(f"# interloop pool benchmarks (CPython {report['python']}, {os.cpu_count()} cores, "
          f"median of {runs})\n", flush=True)

    cpu = cpu_section(runs, n)
    report["cpu"] = {k: {"seconds": v, "speedup": cpu["serial"] / v} for k, v in cpu.items()}
    print(f"## {CPU_JOBS} pure-Python CPU jobs on {WORKERS} workers\n")
    print("| runner | seconds | speed-up vs serial |\n|---|---:|---:|")
    for k, v in cpu.items():
        print(f"| {k} | {v:.3f} | {cpu['serial'] / v:.2f}x |")
    print(flush=True)

    tiny = tiny_section(runs, 200)
    report["tiny"] = {k: {"us_per_job": v * 1e6, "jobs_per_s": 1 / v} for k, v in tiny.items()}
    print("## Tiny jobs (200 empty jobs unless noted), amortized cost\n")
    print("| runner | µs per job | jobs/s |\n|---|---:|---:|")
    for k, v in tiny.items():
        print(f"| {k} | {v * 1e6:.1f} | {1 / v:,.0f} |")
    print(flush=True)

    rt = roundtrip_section(runs, 1000)
    report["roundtrip"] = {k: {"us": v * 1e6} for k, v in rt.items()}
    print("## One awaited job, round trip (median)\n")
    print("| runner | µs |\n|---|---:|")
    for k, v in rt.items():
        print(f"| {k} | {v * 1e6:.1f} |")
    print(flush=True)

    st = startup_section(runs)
    report["startup"] = {k: {"ms": v * 1e3} for k, v in st.items()}
    print("## Fresh pool to first result\n")
    print("| runner | ms |\n|---|---:|")
    for k, v in st.items():
        print(f"| {k} | {v * 1e3:.1f} |")
    print(flush=True)

    rss = rss_per_worker(runs)
    report["rss_per_worker_mib"] = rss / 2**20
    print(f"## Memory\n\nRSS per interloop worker (4 workers, asyncio loaded): {rss / 2**20:.1f} MiB\n")

    report["loadavg_at_end"] = os.getloadavg()
    print(f"load average at start {report['loadavg_at_start']}, at end {report['loadavg_at_end']} "
          "(the machine is shared: CPU numbers need an idle machine)")
    standalone.write_report(report, lines, args.out, 40, "bench_pool.py")


if __name__ == "__main__":
    main()
