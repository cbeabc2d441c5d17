"""``sys._current_frames()`` while own-GIL workers run.

CPython 3.12/3.13's version builds frame objects for the threads of every
interpreter without their GILs, which corrupts the heap while pool workers run
(a profiler's or a stack dump's call aborted the process with "double free or
corruption"). While any pool has workers, the pool puts a version in its place
that reports only the calling interpreter's threads (docs/design-pool.md)."""
import os
import subprocess
import sys
import textwrap

import pytest

import test_pool

needs_workers = test_pool.pytestmark[0]  # CPython >= 3.12.4

HERE = os.path.dirname(os.path.abspath(__file__))


def run_script(tmp_path, name, text, timeout=120):
    """Runs `text` as a script in a fresh interpreter (it may abort: that is the bug
    these tests guard against); returns the finished process."""
    script = tmp_path / name
    script.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(tmp_path), env=env)

# CPU jobs on two workers while the main thread calls sys._current_frames() in a
# loop, and three threads of the main interpreter wait in Python code.
REPRO = textwrap.dedent("""
    import asyncio, sys, threading
    import interloop
    import poolfuncs as pf

    original = sys._current_frames
    release = threading.Event()

    def parked_in_python():
        release.wait()

    async def main():
        helpers = [threading.Thread(target=parked_in_python, name=f"helper{i}", daemon=True) for i in range(3)]
        for t in helpers:
            t.start()
        async with interloop.Pool(2) as pool:
            assert sys._current_frames is not original
            futs = [pool.submit(pf.crunch, 30_000) for _ in range(40)]
            calls = 0
            while not all(f.done() for f in futs) or calls < 200:
                frames = sys._current_frames()
                calls += 1
                ours = {t.ident for t in threading.enumerate()}
                assert set(frames) == ours, (sorted(frames), sorted(ours))
                assert frames[threading.get_ident()].f_code.co_name == "main"
                for t in helpers:
                    names = []
                    f = frames[t.ident]
                    while f is not None:
                        names.append(f.f_code.co_name)
                        f = f.f_back
                    assert "parked_in_python" in names, names
                await asyncio.sleep(0)
            await asyncio.gather(*futs)
        assert sys._current_frames is original
        release.set()
        for t in helpers:
            t.join()
        print("ok", calls)

    if __name__ == "__main__":
        interloop.run(main())
""")


@needs_workers
def test_current_frames_while_workers_run_reports_this_interpreters_threads(tmp_path):
    for _ in range(3):  # unguarded, this aborted every time on 3.13.0
        p = run_script(tmp_path, "frames.py", REPRO)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.startswith("ok "), p.stdout + p.stderr


def test_the_native_walk_matches_cpythons_without_workers():
    import threading

    import interloop._interloop as native

    release = threading.Event()
    t = threading.Thread(target=release.wait)
    t.start()
    try:
        assert native._own_frames_layout_ok()
        mine, cpython = native.current_frames_here(), sys._current_frames()
        assert set(mine) == set(cpython) == {x.ident for x in threading.enumerate()}
        for ident, frame in mine.items():
            assert frame is cpython[ident]
    finally:
        release.set()
        t.join()


def test_the_replacement_raises_the_audit_event():
    code = textwrap.dedent("""
        import sys
        import interloop._interloop as native
        seen = []
        sys.addaudithook(lambda event, args: event == "sys._current_frames" and seen.append(event))
        native.current_frames_here()
        print(len(seen))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "1", p.stdout + p.stderr



# An in-process Dask cluster whose profiler samples every 1 ms, beside a Pool running
# CPU jobs: without the replacement this aborted in 4 runs out of 4.
DASK = textwrap.dedent("""
    import asyncio
    import dask
    dask.config.set({"distributed.worker.profile.interval": "1ms",
                     "distributed.worker.profile.cycle": "100ms"})
    from distributed import Client, LocalCluster
    import interloop
    import poolfuncs as pf

    async def main():
        async with LocalCluster(n_workers=1, processes=False, asynchronous=True,
                                dashboard_address=None) as cluster:
            async with Client(cluster, asynchronous=True) as client:
                async with interloop.Pool(2) as pool:
                    got = await asyncio.gather(*(pool.run(pf.crunch, 50_000) for _ in range(60)))
                    assert len(set(got)) == 1
                assert await client.submit(sum, [1, 2]) == 3
        print("ok")

    if __name__ == "__main__":
        asyncio.run(main())
""")


@needs_workers
def test_dask_profiler_beside_a_pool(tmp_path):
    pytest.importorskip("distributed")
    for _ in range(2):
        p = run_script(tmp_path, "dask_frames.py", DASK, timeout=180)
        assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout + p.stderr


# A job calling sys._current_frames() in a loop in one worker while the other worker
# and the main thread run Python code: CPython's version would walk their threads too.
IN_WORKER = textwrap.dedent("""
    import asyncio, sys
    import interloop
    import poolfuncs as pf

    async def main():
        async with interloop.Pool(2) as pool:
            busy = [pool.submit(pf.crunch, 40_000) for _ in range(30)]
            seen, me, name = await pool.run(pf.frames_seen_in_worker, 20_000)
            assert seen == [me], (seen, me)
            assert name == "current_frames", name
            await asyncio.gather(*busy)
        print("ok")

    if __name__ == "__main__":
        interloop.run(main())
""")


@needs_workers
def test_current_frames_inside_a_worker_reports_only_its_threads(tmp_path):
    for _ in range(3):
        p = run_script(tmp_path, "worker_frames.py", IN_WORKER)
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr


# Threads of the main interpreter starting and ending all the time while the main
# thread walks: the walk must not trip on a thread state being linked or unlinked.
CHURN = textwrap.dedent("""
    import asyncio, sys, threading, time
    import interloop
    import poolfuncs as pf

    def churn(stop):
        while not stop.is_set():
            ts = [threading.Thread(target=sum, args=(range(50),)) for _ in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

    async def main():
        async with interloop.Pool(2) as pool:
            stop = threading.Event()
            churners = [threading.Thread(target=churn, args=(stop,)) for _ in range(2)]
            for t in churners:
                t.start()
            futs = [pool.submit(pf.crunch, 30_000) for _ in range(40)]
            calls, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < 2:
                frames = sys._current_frames()
                assert threading.get_ident() in frames
                calls += 1
                if calls % 50 == 0:
                    await asyncio.sleep(0)
            stop.set()
            for t in churners:
                t.join()
            await asyncio.gather(*futs)
        print("ok")

    if __name__ == "__main__":
        interloop.run(main())
""")


@needs_workers
def test_current_frames_while_threads_come_and_go(tmp_path):
    p = run_script(tmp_path, "churn_frames.py", CHURN)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
