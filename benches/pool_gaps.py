"""The parallel engine's two gaps, measured with their competitors in the same
minute, round by round (rounds interleave the runners, so a burst of load from
elsewhere hits all of them alike):

    python benches/pool_gaps.py [ROUNDS] [N] [--out benches/results/pool_gaps.json]

1. 16 CPU-bound jobs (``pool_jobs.cpu(N)``) on 2 workers: speed-up over serial of
   interloop.Pool (async def and plain def), ProcessPoolExecutor (spawn; one made
   once and reused every round, as before, and one made fresh each round, warmed up
   like interloop's fresh pool, so that its processes' memory layout is drawn anew
   each round as interloop's is) and raw ``_interpreters`` on 2 threads; and interloop's time over the process pool's,
   paired by round. Each job reports its own thread CPU time and start/end
   (``pool_jobs.cpu_timed``), so each runner's wall time splits, per worker, into
   the jobs' CPU, the time its jobs were runnable but preempted (job wall - job CPU),
   and the time the worker had no job (start, gaps between jobs, end): a gap in CPU
   per job is the interpreter's or the machine's, a gap in idle time is scheduling.
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import interloop  # noqa: E402
import pool_jobs  # noqa: E402
from bench_pool import first_result, startup_floor  # noqa: E402

JOBS, WORKERS = 16, 2


# Each runner returns (t0, t1, [pool_jobs.cpu_timed(n) result per job]).
def serial(n):
    t = time.perf_counter()
    res = [pool_jobs.cpu_timed(n) for _ in range(JOBS)]
    return t, time.perf_counter(), res


def ppe(ex, n):
    async def main():
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        res = await asyncio.gather(*(loop.run_in_executor(ex, pool_jobs.cpu_timed, n)
                                     for _ in range(JOBS)))
        return t, time.perf_counter(), res
    return asyncio.run(main())


def il_cpu(fn, n):
    async def main():
        async with interloop.Pool(WORKERS) as pool:
            await asyncio.gather(*(pool.run(fn, 1000) for _ in range(WORKERS)))
            t = time.perf_counter()
            res = await asyncio.gather(*(pool.run(fn, n) for _ in range(JOBS)))
            return t, time.perf_counter(), res
    return interloop.run(main())


def raw_timed(n):
    """bench_pool.raw_interpreters with timed jobs: two own-GIL interpreters, each
    driven by a thread of its own running JOBS / 2 jobs; results come back marshalled
    through a temporary file (``_interpreters.exec`` returns nothing)."""
    import _interpreters
    import marshal
    import tempfile
    ids = [_interpreters.create() for _ in range(WORKERS)]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i in ids:
                _interpreters.exec(i, f"import sys; sys.path.insert(0, {HERE!r}); import pool_jobs; R = []")

            def work(i):
                for _ in range(JOBS // WORKERS):
                    _interpreters.exec(i, f"R.append(pool_jobs.cpu_timed({n}))")
            ts = [threading.Thread(target=work, args=(i,)) for i in ids]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            t1 = time.perf_counter()
            res = []
            for i in ids:
                path = os.path.join(tmp, f"{i}.marshal")
                _interpreters.exec(i, f"import marshal; open({path!r}, 'wb').write(marshal.dumps(R))")
                with open(path, "rb") as f:
                    res += marshal.load(f)
            return t, t1, res
        finally:
            for i in ids:
                _interpreters.destroy(i)


def split(run):
    """Wall seconds, and its split per worker (means over the workers): the jobs'
    CPU, preempted (job wall - job CPU) and idle (no job running)."""
    t0, t1, res = run
    wall = t1 - t0
    by = {}
    for c, a, b, tid in res:
        by.setdefault(tid, []).append((c, a, b))
    k = len(by)
    cpu = sum(c for c, _, _, _ in res) / k
    preempted = sum((b - a) - c for c, a, b, _ in res) / k
    idle = sum(wall - sum(b - a for _, a, b in jobs) for jobs in by.values()) / k
    return {"wall": wall, "job_cpu_median": statistics.median(c for c, _, _, _ in res),
            "cpu": cpu, "preempted": preempted, "idle": idle, "threads": k}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--out")]
    out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out=")), None)
    rounds = int(args[0]) if args else 5
    n = int(args[1]) if len(args) > 1 else 1_500_000
    load0 = os.getloadavg()
    r = {k: [] for k in ("serial", "ProcessPoolExecutor", "ProcessPoolExecutor (fresh)",
                         "interloop async def",
                         "interloop plain def", "raw _interpreters",
                         "floor", "interloop Pool(2) first", "interloop Pool(1) first")}
    cpu_runners = ("serial", "ProcessPoolExecutor", "ProcessPoolExecutor (fresh)",
                   "interloop async def", "interloop plain def",
                   "raw _interpreters")
    splits = {k: [] for k in cpu_runners}

    def record(k, run):
        sp = split(run)
        splits[k].append(sp)
        r[k].append(sp["wall"])
    with concurrent.futures.ProcessPoolExecutor(
            WORKERS, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(pool_jobs.cpu, [1000] * WORKERS))
        for _ in range(rounds):
            record("serial", serial(n))
            record("ProcessPoolExecutor", ppe(ex, n))
            with concurrent.futures.ProcessPoolExecutor(
                    WORKERS, mp_context=multiprocessing.get_context("spawn")) as fresh:
                list(fresh.map(pool_jobs.cpu, [1000] * WORKERS))
                record("ProcessPoolExecutor (fresh)", ppe(fresh, n))
            record("interloop async def", il_cpu(pool_jobs.acpu_timed, n))
            record("interloop plain def", il_cpu(pool_jobs.cpu_timed, n))
            record("raw _interpreters", raw_timed(n))
            r["floor"].append(startup_floor())
            r["interloop Pool(2) first"].append(interloop.run(first_result(2)))
            r["interloop Pool(1) first"].append(interloop.run(first_result(1)))
    med = {k: statistics.median(v) for k, v in r.items()}
    lines = [f"# The parallel engine's two gaps (CPython {sys.version.split()[0]}, "
             f"{os.cpu_count()} cores, {rounds} interleaved rounds)", "",
             f"## 16 CPU jobs (`pool_jobs.cpu({n})`) on 2 workers", "",
             "| runner | seconds (median) | speed-up vs serial | job CPU, ms (median) "
             "| per worker: jobs' CPU / preempted / idle, ms (medians) |",
             "|---|---:|---:|---:|---:|"]
    smed = {k: {m: statistics.median(sp[m] for sp in v) for m in ("job_cpu_median", "cpu", "preempted", "idle")}
            for k, v in splits.items()}
    for k in cpu_runners:
        m = smed[k]
        lines.append(f"| {k} | {med[k]:.3f} | {med['serial'] / med[k]:.2f}x | "
                     f"{m['job_cpu_median'] * 1e3:.1f} | {m['cpu'] * 1e3:.0f} / "
                     f"{m['preempted'] * 1e3:.0f} / {m['idle'] * 1e3:.1f} |")
    paired = [a / p for a, p in zip(r["interloop async def"], r["ProcessPoolExecutor"])]
    paired_fresh = [a / p for a, p in zip(r["interloop async def"], r["ProcessPoolExecutor (fresh)"])]
    paired_cpu = [a["job_cpu_median"] / p["job_cpu_median"]
                  for a, p in zip(splits["interloop async def"], splits["ProcessPoolExecutor"])]
    lines += ["", f"interloop (async def) time / ProcessPoolExecutor time, paired by round: "
              f"median {statistics.median(paired):.3f} "
              f"(rounds: {', '.join(f'{x:.3f}' for x in paired)}); against the fresh "
              f"process pool: {statistics.median(paired_fresh):.3f} "
              f"(rounds: {', '.join(f'{x:.3f}' for x in paired_fresh)}). "
              f"The same for the CPU time of a job (median job of each round): "
              f"{statistics.median(paired_cpu):.3f} "
              f"(rounds: {', '.join(f'{x:.3f}' for x in paired_cpu)}).", "",
              "Per worker, the wall time is the jobs' CPU + preempted + idle (means over "
              "the two workers; serial has one). Preempted: a job's wall time minus its "
              "thread CPU time (another thread or process had the core). Idle: the "
              "worker had no job (before its first, between jobs, after its last).", "",
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
                       "medians_s": med, "rounds_s": r, "splits_s": splits,
                       "loadavg": [load0, load1]}, f, indent=1)


if __name__ == "__main__":
    main()
