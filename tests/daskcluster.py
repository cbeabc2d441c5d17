"""A Dask LocalCluster in a process of its own, for tests/test_dask.py.

    python daskcluster.py ALLOWED_FAILURES

prints the scheduler's address on one line, then reads commands on stdin:
``scale N`` (answers ``ok`` once N workers are up); end of input closes the cluster.
Dask's statistical profiler is on, sampling every 1 ms: it calls
``sys._current_frames()``, which CPython 3.13 implements by walking the threads of
every interpreter without their GILs, and the workers run interloop.Pool workers
(``interloop.spawn`` inside a job); interloop's replacement of that function while
pools run makes that safe (docs/design-dask.md, "spawn inside a Dask worker";
tests/test_pool_frames.py has the case that crashed without it). The cluster runs apart from the test process, which holds only clients.
"""
import sys

import dask
import distributed


def main():
    allowed_failures = int(sys.argv[1])
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures,
                          "distributed.worker.profile.enabled": True,
                          "distributed.worker.profile.interval": "1ms"}):
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=2, host="127.0.0.1",
            dashboard_address=None, worker_dashboard_address=None)
        with distributed.Client(cluster, timeout=60) as client:
            print(cluster.scheduler_address, flush=True)
            for line in sys.stdin:
                cmd = line.split()
                if cmd and cmd[0] == "scale":
                    n = int(cmd[1])
                    cluster.scale(n)
                    client.wait_for_workers(n, timeout=60)
                    print("ok", flush=True)
        cluster.close(timeout=30)


if __name__ == "__main__":
    main()
