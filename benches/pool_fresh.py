"""16 CPU-bound jobs on 2 workers, every runner in a fresh process each round:

    python benches/pool_fresh.py [ROUNDS] [N] [--out benches/results/pool_fresh.json]

`pool_gaps.py` measures its runners inside one benchmark process, so the serial
baseline and the warm ProcessPoolExecutor keep one memory layout for the whole run,
while interloop's pools are made anew each round. The same job's CPU time moves by up
to 10-15% with layout alone (same instruction count under callgrind), so one run of
`pool_gaps.py` can favour either side. Here each round starts every runner in its own
fresh `python` process (runners interleaved, in a rotating order), which draws the
layout anew for all of them alike; each process starts its workers, warms them with
one small job per worker (process spawn and interpreter start-up are not timed), then
times the batch of `2 * 8` jobs of ``pool_jobs.cpu(N)``.

Reported: median batch wall time and speed-up over the serial median, the median of
the jobs' own thread CPU time, and interloop's time over the process pool's paired by
round. With ``--out``, a results file that benches/report.py puts into
docs/benchmarks.md.
"""
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS, PER_WORKER = 2, 8
RUNNERS = ("serial", "ProcessPoolExecutor", "interloop async def", "interloop plain def")

CHILD = r"""
import asyncio, concurrent.futures, json, sys, time
sys.path.insert(0, {here!r})
import pool_jobs
runner, n, jobs, workers = {runner!r}, {n}, {jobs}, {workers}

def serial():
    t = time.perf_counter()
    r = [pool_jobs.cpu_timed(n) for _ in range(jobs)]
    return time.perf_counter() - t, r

def ppe():
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        list(ex.map(pool_jobs.cpu_timed, [1000] * workers))
        t = time.perf_counter()
        r = list(ex.map(pool_jobs.cpu_timed, [n] * jobs))
        return time.perf_counter() - t, r

def il(fn):
    import interloop
    async def main():
        async with interloop.Pool(workers) as p:
            await asyncio.gather(*[p.run(fn, 1000) for _ in range(workers)])
            t = time.perf_counter()
            r = await asyncio.gather(*[p.run(fn, n) for _ in range(jobs)])
            return time.perf_counter() - t, r
    return interloop.run(main())

if __name__ == "__main__":
    wall, r = {{"serial": serial, "ProcessPoolExecutor": ppe,
               "interloop async def": lambda: il(pool_jobs.acpu_timed),
               "interloop plain def": lambda: il(pool_jobs.cpu_timed)}}[runner]()
    print(json.dumps({{"wall": wall, "cpu": [x[0] for x in r]}}))
"""


def run_one(runner, n):
    code = CHILD.format(here=HERE, runner=runner, n=n, jobs=WORKERS * PER_WORKER, workers=WORKERS)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"{runner} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--out")]
    out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out=")), None)
    rounds = int(args[0]) if args else 10
    n = int(args[1]) if len(args) > 1 else 1_500_000
    load0 = os.getloadavg()
    res = {k: [] for k in RUNNERS}
    for i in range(rounds):
        order = RUNNERS[i % len(RUNNERS):] + RUNNERS[:i % len(RUNNERS)]
        for k in order:
            res[k].append(run_one(k, n))
    load1 = os.getloadavg()
    wall = {k: statistics.median(r["wall"] for r in v) for k, v in res.items()}
    cpu = {k: statistics.median(statistics.median(r["cpu"]) for r in v) for k, v in res.items()}
    lines = [
        "# 16 CPU jobs on 2 workers, each runner in a fresh process each round",
        "",
        f"`pool_jobs.cpu({n})`, {rounds} rounds; every runner starts in its own fresh "
        "process each round (interleaved, rotating order), warms its workers with one "
        "small job each, then times the batch: start-up is not timed, and every runner's "
        "memory layout is drawn anew each round (see the docstring of "
        "`benches/pool_fresh.py`).",
        "",
        "| runner | batch seconds (median) | speed-up vs serial | a job's thread CPU, ms (median) |",
        "|---|---:|---:|---:|",
    ]
    for k in RUNNERS:
        lines.append(f"| {k} | {wall[k]:.3f} | {wall['serial'] / wall[k]:.2f}x | {cpu[k] * 1e3:.1f} |")
    for k in ("interloop async def", "interloop plain def"):
        paired = [a["wall"] / b["wall"] for a, b in zip(res[k], res["ProcessPoolExecutor"])]
        lines += ["", f"{k} time / ProcessPoolExecutor time, paired by round: median "
                  f"{statistics.median(paired):.3f} (rounds: "
                  + ", ".join(f"{x:.3f}" for x in paired) + ")."]
    lines += ["", f"Load average at start {tuple(round(x, 2) for x in load0)}, at end "
              f"{tuple(round(x, 2) for x in load1)}."]
    text = "\n".join(lines)
    print(text)
    if out:
        cmd = "python benches/pool_fresh.py " + " ".join(args) + f" --out={out}"
        with open(out, "w") as f:
            json.dump({"markdown": text, "order": 42, "command": cmd.strip(),
                       "rounds": {k: v for k, v in res.items()}, "n": n}, f, indent=1)


if __name__ == "__main__":
    main()
