"""Functions the DaskPool tests send to Dask workers (imported there by name: the
worker processes of a LocalCluster inherit this process's sys.path)."""
import asyncio
import os
import sys
import threading

import interloop


async def where_async():
    """Where an async job runs: the worker's pid, thread and event loop."""
    import distributed
    loop = asyncio.get_running_loop()
    return {"pid": os.getpid(), "tid": threading.get_ident(), "loop": id(loop),
            "worker_loop": loop is distributed.get_worker().loop.asyncio_loop,
            "main_thread": threading.current_thread() is threading.main_thread()}


def where_plain():
    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    return {"pid": os.getpid(), "tid": threading.get_ident(), "running_loop": running,
            "main_thread": threading.current_thread() is threading.main_thread()}


def write(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


async def wait_to_be_cancelled(path):
    write(path, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        write(path, "cancelled")
        raise
    write(path, "finished")


def exit_worker():
    """Ends the Dask worker process mid-job."""
    os._exit(13)


def exit_worker_once(path):
    """Ends the worker process the first time; returns the second time."""
    if "exited" not in lines(path):
        write(path, "exited")
        sys.stdout.flush()
        os._exit(13)
    return "second run"


def fail_once(path):
    if "failed" not in lines(path):
        write(path, "failed")
        raise RuntimeError("first run fails")
    return "second run"


def is_imported(name):
    return name in sys.modules


def raise_system_exit():
    raise SystemExit(5)


async def spawn_inside(n):
    """An async job that fans out to the Dask worker machine's own interloop Pool."""
    from poolfuncs import worker_env
    envs = await asyncio.gather(*(interloop.spawn(worker_env) for _ in range(n)))
    return {"pid": os.getpid(), "tid": threading.get_ident(), "envs": envs}
