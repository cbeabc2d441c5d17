"""The parallel engine's two gaps, measured with their competitors in the same
minute, round by round (rounds interleave the runners, so a burst of load from
elsewhere hits all of them alike):

    python benches/pool_gaps.py [ROUNDS] [N] [--out benches/results/pool_gaps.json]

1. 16 CPU-bound jobs (``pool_jobs.cpu(N)``) on 2 workers: speed-up over serial of
   interloop.Pool (async def and plain def), ProcessPoolExecutor (spawn, warm) and
   raw ``_interpreters`` on 2 threads; and interloop's time over the process pool's,
   paired by round.
2. A fresh pool to its first result: interloop.Pool(2) and Pool(1) running an
   ``async def``, against the floor (one own-GIL interpreter created and
   ``import asyncio`` run in it).

Prints medians over the rounds, and the load average (the machine may be shared);
with ``--out``, also writes them as a results file that benches/report.py places in
docs/benchmarks.md.
"""
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import interloop  # noqa: E402
import pool_jobs  # noqa: E402
from bench_pool import first_result, raw_interpreters, startup_floor  # noqa: E402

JOBS, WORKERS = 16, 2


def serial(n):
    t = time.perf_counter()
    for _ in range(JOBS):
        pool_jobs.cpu(n)
    return time.perf_counter() - t


def ppe(ex, n):
    async def main():
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        await asyncio.gather(*(loop.run_in_executor(ex, pool_jobs.cpu, n) for _ in range(JOBS)))
        return time.perf_counter() - t
    return asyncio.run(main())


def il_cpu(fn, n):
    async def main():
        async with interloop.Pool(WORKERS) as pool:
            await asyncio.gather(*(pool.run(fn, 1000) for _ in range(WORKERS)))
            t = time.perf_counter()
            await asyncio.gather(*(pool.run(fn, n) for _ in range(JOBS)))
            return time.perf_counter() - t
    return interloop.run(main())


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--out")]
    out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out=")), None)
    rounds = int(args[0]) if args else 5
    n = int(args[1]) if len(args) > 1 else 1_500_000
    load0 = os.getloadavg()
    r = {k: [] for k in ("serial", "ProcessPoolExecutor", "interloop async def",
                         "interloop plain def", "raw _interpreters",
                         "floor", "interloop Pool(2) first", "interloop Pool(1) first")}
    with concurrent.futures.ProcessPoolExecutor(
            WORKERS, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(pool_jobs.cpu, [1000] * WORKERS))
        for _ in range(rounds):
            r["serial"].append(serial(n))
            r["ProcessPoolExecutor"].append(ppe(ex, n))
            r["interloop async def"].append(il_cpu(pool_jobs.acpu, n))
            r["interloop plain def"].append(il_cpu(pool_jobs.cpu, n))
            r["raw _interpreters"].append(raw_interpreters(n))
            r["floor"].append(startup_floor())
            r["interloop Pool(2) first"].append(interloop.run(first_result(2)))
            r["interloop Pool(1) first"].append(interloop.run(first_result(1)))
    med = {k: statistics.median(v) for k, v in r.items()}
    lines = [f"# The parallel engine's two gaps (CPython {sys.version.split()[0]}, "
             f"{os.cpu_count()} cores, {rounds} interleaved rounds)", "",
             f"## 16 CPU jobs (`pool_jobs.cpu({n})`) on 2 workers", "",
             "| runner | seconds (median) | speed-up vs serial |", "|---|---:|---:|"]
    for k in ("serial", "ProcessPoolExecutor", "interloop async def", "interloop plain def",
              "raw _interpreters"):
        lines.append(f"| {k} | {med[k]:.3f} | {med['serial'] / med[k]:.2f}x |")
    paired = [a / p for a, p in zip(r["interloop async def"], r["ProcessPoolExecutor"])]
    lines += ["", f"interloop (async def) time / ProcessPoolExecutor time, paired by round: "
              f"median {statistics.median(paired):.3f} "
              f"(rounds: {', '.join(f'{x:.3f}' for x in paired)}).", "",
              "## Fresh pool to its first `async def` result", "",
              "| runner | ms (median) | over the floor |", "|---|---:|---:|"]
    for k in ("floor", "interloop Pool(2) first", "interloop Pool(1) first"):
        lines.append(f"| {k} | {med[k] * 1e3:.1f} | {(med[k] - med['floor']) * 1e3:+.1f} |")
    load1 = os.getloadavg()
    lines += ["", "The floor: one own-GIL interpreter created and `import asyncio` run in it. "
              f"Load average at start {tuple(round(x, 2) for x in load0)}, at end "
              f"{tuple(round(x, 2) for x in load1)} (the machine is shared: CPU figures "
              "need an idle machine)."]
    text = "\n".join(lines)
    print(text)
    if out:
        cmd = f"python benches/pool_gaps.py {rounds} {n} --out={os.path.relpath(out, os.path.dirname(HERE))}"
        with open(out, "w") as f:
            json.dump({"markdown": text, "order": 41, "command": cmd,
                       "medians_s": med, "rounds_s": r, "loadavg": [load0, load1]}, f, indent=1)


if __name__ == "__main__":
    main()
