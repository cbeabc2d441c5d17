"""Quick numbers for the issue-4 targets, for A/B runs of two builds in the same minutes:

    RUNS=3 python benches/pool_quick.py {tiny,rt,cpu,all} {asyncio,interloop}

Prints µs per job (tiny: 200/20000 submitted, 20000 mapped, 200 run in a gather),
median round trips (plain def, async def, a 2-thread pool for reference), and the
16-CPU-jobs speed-up over serial. Each value is the median of RUNS runs.
"""
import asyncio, sys, time, statistics, concurrent.futures, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interloop, pool_jobs
W = 2
which = sys.argv[1] if len(sys.argv) > 1 else "all"
loopname = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
runs = int(os.environ.get("RUNS", "5"))
def arun(c):
    if loopname == "interloop":
        return asyncio.run(c, loop_factory=interloop.new_event_loop)
    return asyncio.run(c)
async def tiny(count, how):
    async with interloop.Pool(W) as pool:
        await asyncio.gather(*(pool.run(pool_jobs.noop) for _ in range(20)))
        t = time.perf_counter()
        if how == "submit":
            await asyncio.gather(*(pool.submit(pool_jobs.noop) for _ in range(count)))
        elif how == "run":
            await asyncio.gather(*(pool.run(pool_jobs.noop) for _ in range(count)))
        else:
            async for _ in pool.map(pool_jobs.cpu, [0] * count, ordered=False, window=4096):
                pass
        return (time.perf_counter() - t) / count
async def rt(fn, count=1000):
    async with interloop.Pool(W) as pool:
        for _ in range(10):
            await pool.run(fn)
        vals = []
        for _ in range(count):
            t = time.perf_counter()
            await pool.run(fn)
            vals.append(time.perf_counter() - t)
        return statistics.median(vals)
def thr_rt():
    with concurrent.futures.ThreadPoolExecutor(W) as ex:
        async def main():
            loop = asyncio.get_running_loop()
            for _ in range(10): await loop.run_in_executor(ex, pool_jobs.noop)
            vals = []
            for _ in range(1000):
                t = time.perf_counter(); await loop.run_in_executor(ex, pool_jobs.noop); vals.append(time.perf_counter() - t)
            return statistics.median(vals)
        return arun(main())
async def cpu(n=300_000):
    async with interloop.Pool(W) as pool:
        await asyncio.gather(*(pool.run(pool_jobs.cpu, 1000) for _ in range(W)))
        t = time.perf_counter()
        await asyncio.gather(*(pool.run(pool_jobs.cpu, n) for _ in range(16)))
        return time.perf_counter() - t
def med(f):
    return statistics.median(f() for _ in range(runs))
out = {}
if which in ("all", "tiny"):
    out["submit200"] = med(lambda: arun(tiny(200, "submit"))) * 1e6
    out["submit20k"] = med(lambda: arun(tiny(20000, "submit"))) * 1e6
    out["map20k"] = med(lambda: arun(tiny(20000, "map"))) * 1e6
    out["run200"] = med(lambda: arun(tiny(200, "run"))) * 1e6
if which in ("all", "rt"):
    out["rt_plain"] = med(lambda: arun(rt(pool_jobs.noop))) * 1e6
    out["rt_async"] = med(lambda: arun(rt(pool_jobs.anoop))) * 1e6
    out["rt_threads"] = med(thr_rt) * 1e6
if which in ("all", "cpu"):
    def serial():
        t = time.perf_counter()
        for _ in range(16): pool_jobs.cpu(300_000)
        return time.perf_counter() - t
    s = med(serial)
    p = med(lambda: arun(cpu()))
    out["cpu_speedup"] = s / p
print(loopname, os.getloadavg()[0], {k: round(v, 2) for k, v in out.items()})
