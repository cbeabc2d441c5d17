"""Benchmarks of interloop.Channel against the stdlib's cross-interpreter queue.

    python benches/bench_channel.py [--quick] [--runs N]

Prints a markdown table and writes ``benches/results/channel.json``. Every number is
the median of several runs, all measured in the same process run. The peer is
CPython 3.13's ``_interpqueues`` through ``test.support.interpreters.queues`` (or
the ``interpreters-pep-734`` backport / 3.14's ``concurrent.interpreters``), skipped
when none is available.
"""
import argparse
import asyncio
import os
import platform
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import interloop  # noqa: E402
import chan_jobs  # noqa: E402
import standalone  # noqa: E402

MSG = b"x" * 100


def median_of(runs, fn):
    return statistics.median(fn() for _ in range(runs))


def loop_factories():
    return (("asyncio loop", asyncio.new_event_loop), ("interloop loop", interloop.new_event_loop))


# -- interloop ----------------------------------------------------------------------

def il_throughput(factory, count, worker_fn, maxsize=1024):
    """Caller -> worker: messages per second, first send to the worker's last recv."""
    async def main():
        async with interloop.Pool(1) as pool:
            warm = interloop.Channel(maxsize)
            job = asyncio.ensure_future(pool.run(worker_fn, warm))
            for _ in range(100):
                await warm.send(MSG)
            warm.close()
            await job
            ch = interloop.Channel(maxsize)
            job = asyncio.ensure_future(pool.run(worker_fn, ch))
            await asyncio.sleep(0.01)  # the worker waits in recv
            t = time.perf_counter()
            send_nowait, send = ch.send_nowait, ch.send
            for _ in range(count):
                try:
                    send_nowait(MSG)
                except interloop.ChannelFull:
                    await send(MSG)
            ch.close()
            n = await job
            dt = time.perf_counter() - t
            assert n == count, (n, count)
            return count / dt
    return asyncio.run(main(), loop_factory=factory)


def il_throughput_back(factory, count, maxsize=1024):
    """Worker -> caller: messages per second."""
    async def main():
        async with interloop.Pool(1) as pool:
            ch = interloop.Channel(maxsize)
            t = time.perf_counter()
            job = asyncio.ensure_future(pool.run(chan_jobs.produce, ch, count, len(MSG)))
            n = 0
            async for _ in ch:
                n += 1
            dt = time.perf_counter() - t
            assert n == count and await job == count
            return count / dt
    return asyncio.run(main(), loop_factory=factory)


def il_roundtrip(factory, count):
    """Caller -> worker -> caller, one message at a time: median seconds."""
    async def main():
        async with interloop.Pool(1) as pool:
            inp, out = interloop.Channel(), interloop.Channel()
            job = asyncio.ensure_future(pool.run(chan_jobs.echo, inp, out))
            for _ in range(50):
                await inp.send(MSG)
                await out.recv()
            vals = []
            for _ in range(count):
                t = time.perf_counter()
                await inp.send(MSG)
                await out.recv()
                vals.append(time.perf_counter() - t)
            inp.close()
            await job
            return statistics.median(vals)
    return asyncio.run(main(), loop_factory=factory)


def il_many_producers(factory, total, senders=4, maxsize=1024):
    """``senders`` worker jobs send ``(sender, i)`` to the caller; checks that each
    sender's messages arrive once each and in order. Messages per second."""
    async def main():
        async with interloop.Pool(2, concurrency=senders) as pool:
            ch = interloop.Channel(maxsize)
            per = total // senders
            t = time.perf_counter()
            jobs = [asyncio.ensure_future(pool.run(chan_jobs.produce_seq, ch, s, per))
                    for s in range(senders)]
            nexts = [0] * senders
            recv_nowait = ch.recv_nowait
            for _ in range(per * senders):
                try:
                    s, i = recv_nowait()
                except interloop.ChannelEmpty:
                    s, i = await ch.recv()
                if i != nexts[s]:
                    raise AssertionError(f"sender {s}: got {i}, expected {nexts[s]}")
                nexts[s] += 1
            dt = time.perf_counter() - t
            assert await asyncio.gather(*jobs) == [per] * senders and ch.qsize() == 0
            return per * senders / dt
    return asyncio.run(main(), loop_factory=factory)


def il_big_throughput(factory, count, size, back=False, maxsize=64):
    """1 MiB buffers, caller -> worker (or worker -> caller): bytes per second."""
    async def main():
        async with interloop.Pool(1) as pool:
            await pool.run(chan_jobs.make_mb, 0)  # started
            ch = interloop.Channel(maxsize)
            t = time.perf_counter()
            if back:
                job = asyncio.ensure_future(pool.run(chan_jobs.produce_big, ch, count, size))
                total = 0
                async for mv in ch:
                    total += len(mv)
                    mv[-1]
                await job
            else:
                job = asyncio.ensure_future(pool.run(chan_jobs.count_bytes, ch))
                data = b"\x01" * size
                for _ in range(count):
                    await ch.send(data)
                ch.close()
                total = await job
            dt = time.perf_counter() - t
            assert total == count * size, (total, count * size)
            return total / dt
    return asyncio.run(main(), loop_factory=factory)


def big_results(kind, jobs=200):
    """``jobs`` jobs each returning 1 MB, on 2 workers: seconds, from the first
    submission to the last result (pools started and warm beforehand)."""
    import concurrent.futures as cf

    async def via_executor(ex):
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(ex, chan_jobs.make_mb, i) for i in range(4)))
        t = time.perf_counter()
        rs = await asyncio.gather(*(loop.run_in_executor(ex, chan_jobs.make_mb, i) for i in range(jobs)))
        dt = time.perf_counter() - t
        assert all(len(r) == 1_000_000 for r in rs)
        return dt

    async def via_pool(fn):
        async with interloop.Pool(2) as pool:
            await asyncio.gather(*(pool.run(fn, i) for i in range(4)))
            t = time.perf_counter()
            rs = await asyncio.gather(*(pool.run(fn, i) for i in range(jobs)))
            dt = time.perf_counter() - t
            assert all(len(r) == 1_000_000 and r[0] == i & 0xFF for i, r in enumerate(rs))
            return dt

    if kind == "threads":
        with cf.ThreadPoolExecutor(2) as ex:
            return asyncio.run(via_executor(ex))
    if kind == "processes":
        import multiprocessing as mp
        with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
            return asyncio.run(via_executor(ex))
    if kind == "InterpreterPoolExecutor":
        ipe = interpreter_pool_executor()
        with ipe(2) as ex:
            return asyncio.run(via_executor(ex))
    factory = asyncio.new_event_loop if "asyncio loop" in kind else interloop.new_event_loop
    fn = chan_jobs.make_mb_view if "memoryview" in kind else chan_jobs.make_mb
    return asyncio.run(via_pool(fn), loop_factory=factory)


def interpreter_pool_executor():
    for name in ("concurrent.futures", "interpreters_backport.concurrent.futures"):
        try:
            mod = __import__(name, fromlist=["InterpreterPoolExecutor"])
            return mod.InterpreterPoolExecutor
        except (ImportError, AttributeError):
            continue
    return None


# -- the stdlib's cross-interpreter queue ----------------------------------------------

def stdlib_interpreters():
    for name in ("concurrent.interpreters", "test.support.interpreters",
                 "interpreters_backport.interpreters"):
        try:
            mod = __import__(name, fromlist=["queues"])
            queues = getattr(mod, "queues", None) or __import__(name + ".queues", fromlist=["_"])
            return name, mod, queues
        except Exception:  # noqa: BLE001
            continue
    return None


ECHO = """
while True:
    x = qin.get()
    if x is None:
        break
    qout.put(x)
"""

COUNT = """
n = 0
while True:
    x = qin.get()
    if x is None:
        break
    n += 1
qout.put(n)
"""


def stdlib_run(peer, code, body):
    name, mod, queues = peer
    interp = mod.create()
    try:
        qin, qout = queues.create(), queues.create()
        setup = (f"from {name} import queues\n"
                 f"qin, qout = queues.Queue({qin.id}), queues.Queue({qout.id})\n")
        t = threading.Thread(target=interp.exec, args=(setup + code,))
        t.start()
        try:
            return body(qin, qout)
        finally:
            qin.put(None)
            t.join()
    finally:
        interp.close()


def stdlib_throughput(peer, count):
    def body(qin, qout):
        t = time.perf_counter()
        for _ in range(count):
            qin.put(MSG)
        qin.put(None)
        n = qout.get()
        dt = time.perf_counter() - t
        assert n == count
        return count / dt
    return stdlib_run(peer, COUNT, body)


def stdlib_roundtrip(peer, count):
    def body(qin, qout):
        vals = []
        for _ in range(count):
            t = time.perf_counter()
            qin.put(MSG)
            qout.get()
            vals.append(time.perf_counter() - t)
        return statistics.median(vals)
    return stdlib_run(peer, ECHO, body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer messages, 3 runs")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "channel.json"))
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    count = 50_000 if args.quick else 200_000
    rt_count = 300 if args.quick else 2000
    many = 200_000 if args.quick else 1_000_000
    print, lines = standalone.markdown_printer()  # noqa: A001 - also keeps the markdown

    report = {"python": platform.python_version(), "cpus": os.cpu_count(), "runs": runs,
              "loadavg_at_start": os.getloadavg(), "messages": count, "message_bytes": len(MSG)}
    print(f"# interloop channel benchmarks (CPython {report['python']}, {os.cpu_count()} cores, "
          f"median of {runs})\n", flush=True)

    peer = stdlib_interpreters()
    tp, rt = {}, {}
    for label, factory in loop_factories():
        tp[f"interloop Channel, caller ({label}) -> worker, async for"] = median_of(
            runs, lambda: il_throughput(factory, count, chan_jobs.count))
        tp[f"interloop Channel, caller ({label}) -> worker, recv_nowait first"] = median_of(
            runs, lambda: il_throughput(factory, count, chan_jobs.count_fast))
        tp[f"interloop Channel, worker -> caller ({label}), async for"] = median_of(
            runs, lambda: il_throughput_back(factory, count))
        tp[f"interloop Channel, 4 worker producers -> caller ({label}), pickled tuples, "
           f"order checked ({many:,} messages)"] = median_of(
            runs, lambda: il_many_producers(factory, many))
        rt[f"interloop Channel, {label}"] = median_of(runs, lambda: il_roundtrip(factory, rt_count))
    if peer is not None:
        tp[f"stdlib queue ({peer[0]}), main -> sub-interpreter thread"] = median_of(
            runs, lambda: stdlib_throughput(peer, count))
        rt[f"stdlib queue ({peer[0]}), polling get()"] = median_of(
            runs, lambda: stdlib_roundtrip(peer, 50))

    big_count = 500 if args.quick else 2000
    gbps = {}
    for label, factory in loop_factories():
        gbps[f"caller ({label}) -> worker"] = median_of(
            runs, lambda: il_big_throughput(factory, big_count, 1 << 20))
        gbps[f"worker -> caller ({label})"] = median_of(
            runs, lambda: il_big_throughput(factory, big_count, 1 << 20, back=True))
    kinds = ["threads", "processes"]
    if interpreter_pool_executor() is not None:
        kinds.append("InterpreterPoolExecutor")
    kinds += ["interloop Pool, asyncio loop", "interloop Pool, interloop loop",
              "interloop Pool, interloop loop, memoryview results"]
    results = {k: median_of(runs, lambda: big_results(k)) for k in kinds}
    report["big_buffers"] = {k: {"bytes_per_s": v} for k, v in gbps.items()}
    report["big_results"] = {k: {"s": v} for k, v in results.items()}
    report["throughput"] = {k: {"msgs_per_s": v} for k, v in tp.items()}
    report["roundtrip"] = {k: {"us": v * 1e6} for k, v in rt.items()}
    print(f"## {len(MSG)}-byte `bytes` messages, {count:,} of them unless noted, one direction\n")
    print("| path | messages/s |\n|---|---:|")
    for k, v in tp.items():
        print(f"| {k} | {v:,.0f} |")
    print()
    print("## Round trip caller -> worker -> caller, one message at a time (median)\n")
    print("| path | µs |\n|---|---:|")
    for k, v in rt.items():
        print(f"| {k} | {v * 1e6:,.1f} |")
    print()
    print(f"## 1 MiB buffers through a channel ({big_count:,} sends of one `bytes` object; "
          "they travel by reference)\n")
    print("| path | GiB/s |\n|---|---:|")
    for k, v in gbps.items():
        print(f"| {k} | {v / 2**30:,.1f} |")
    print()
    print("## 200 jobs each returning 1 MB, 2 workers, driven from an asyncio program\n")
    print("A `bytes` result stays a `bytes` object: its buffer travels by reference and is "
          "copied once into the caller's new `bytes`, by copier threads, not by the loop thread "
          "(src/bridge/fill.rs). A job that returns a `memoryview` "
          "(or `pickle.PickleBuffer`) hands over the worker's memory itself: no copy.\n")
    base = results["threads"]
    print("| runner | seconds | vs threads |\n|---|---:|---:|")
    for k, v in results.items():
        print(f"| {k} | {v:.3f} | {base / v:.2f}x |")
    print()
    report["loadavg_at_end"] = os.getloadavg()
    print(f"Targets (issue 5): >= 500,000 messages/s caller -> worker; round trip <= 20 µs; "
          "1 MiB messages >= 5 GiB/s; 200 x 1 MB results no slower than threads. "
          f"Load average at start {report['loadavg_at_start']}, at end {report['loadavg_at_end']} "
          "(the machine is shared).")
    standalone.write_report(report, lines, args.out, 45, "bench_channel.py")


if __name__ == "__main__":
    main()
