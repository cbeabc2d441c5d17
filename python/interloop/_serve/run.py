"""Starting, supervising and stopping a server (``interloop.serve``).

The supervisor (the calling program's main interpreter, on interloop's loop) binds
the listening socket, makes the group (``src/serve/group.rs``: the stop flag and
the per-worker counters shared by every interpreter) and starts the workers:

- ``--workers 1``: one server in this interpreter, on this loop;
- ``--worker-kind interpreter`` (default): a ``Pool`` of own-GIL sub-interpreters
  with ``concurrency=1``, so each worker takes exactly one ``worker_main`` job, which
  imports the app, runs its lifespan and serves until the group stops;
- ``--worker-kind process``: child processes, each a ``--workers 1`` server on the
  inherited listening socket (for apps that cannot load in a sub-interpreter).

Workers report ``("ready", i, None)`` or ``("error", i, message)`` on a channel.
SIGINT/SIGTERM stop the group: every worker stops accepting, lets its requests in
flight finish (``--timeout-graceful-shutdown``), runs lifespan shutdown and returns.
"""
import asyncio
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from . import protocol
from .protocol import _n, logger

DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8000,
    "uds": None,
    "fd": None,
    "workers": None,
    "worker_kind": "interpreter",
    "listener": "reuseport",
    "backlog": 2048,
    "limit_concurrency": None,
    "limit_request_body": 0,
    "limit_request_head": 65536,
    "timeout_keep_alive": 5.0,
    "timeout_graceful_shutdown": 30.0,
    "timeout_slow_client": 30.0,
    "timeout_worker_start": 60.0,
    "ws_max_size": 16 * 1024 * 1024,
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
    "metrics_port": None,
    # Internal (--worker-kind process): the child's end of the supervisor's
    # socketpair on which it answers requests for its counters.
    "stats_fd": None,
    "root_path": "",
    "lifespan": "auto",
    "access_log": True,
    "log_level": "info",
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_ca_certs": None,
    "ssl_cert_reqs": 0,
    "app_dir": ".",
    "factory": False,
    "proxy_headers": True,
    "forwarded_allow_ips": None,
}

_HINT = ("some extension modules cannot load in own-GIL sub-interpreters yet (PyO3 "
         "modules such as pydantic-core or orjson, httptools, uvloop...): serve this "
         "app with --worker-kind process (worker processes), or with --workers 1 "
         "(the main interpreter)")


class AppLoadError(Exception):
    """The app named by the import string could not be loaded."""


def make_config(app, options):
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown serve option(s): {', '.join(sorted(unknown))}")
    cfg = dict(DEFAULTS)
    cfg.update(options)
    cfg["app"] = app
    if not isinstance(app, str) or ":" not in app:
        raise ValueError(f'the app must be an import string "<module>:<attribute>", got {app!r}')
    if cfg["lifespan"] not in ("auto", "on", "off"):
        raise ValueError("lifespan must be 'auto', 'on' or 'off'")
    if cfg["worker_kind"] not in ("interpreter", "process"):
        raise ValueError("worker_kind must be 'interpreter' or 'process'")
    if cfg["listener"] not in ("reuseport", "shared"):
        raise ValueError("listener must be 'reuseport' or 'shared'")
    for k in ("ws_ping_interval", "ws_ping_timeout"):
        if cfg[k] is not None and float(cfg[k]) < 0:
            raise ValueError(f"--{k.replace('_', '-')} must be a number of seconds >= 0 (0: off)")
    if cfg["workers"] is not None and int(cfg["workers"]) < 1:
        raise ValueError("workers must be at least 1")
    cfg["workers"] = int(cfg["workers"] or os.cpu_count() or 1)
    if bool(cfg["ssl_certfile"]) != bool(cfg["ssl_keyfile"]):
        raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
    return cfg


def setup_logging(cfg):
    level = cfg["log_level"]
    level = getattr(logging, level.upper(), None) if isinstance(level, str) else level
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {cfg['log_level']!r}")
    log = logging.getLogger("interloop.serve")
    log.setLevel(level)
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(h)
        log.propagate = False


def load_app(cfg):
    app_dir = os.path.abspath(cfg["app_dir"] or ".")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    module_name, _, attrs = cfg["app"].partition(":")
    if not module_name or not attrs:
        raise AppLoadError(f'import string {cfg["app"]!r} must be "<module>:<attribute>"')
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        if e.name == module_name:
            raise AppLoadError(f"could not import module {module_name!r}") from e
        raise
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f"attribute {attrs!r} not found in module {module_name!r}") from None
    if cfg["factory"]:
        obj = obj()
    if not callable(obj):
        raise AppLoadError(f"{cfg['app']} is not callable (an ASGI app is)")
    return obj


def describe_load_error(cfg, exc, where):
    """The message for an app that failed to load; names the module."""
    if isinstance(exc, AppLoadError):
        cause = exc.__cause__
        return f"{exc}{f': {cause}' if cause else ''}"
    msg = f"cannot load the app {cfg['app']!r} in {where}: {type(exc).__name__}: {exc}"
    name = getattr(exc, "name", None)
    if name and name not in str(exc):
        msg += f" (module {name!r})"
    if where != "the main interpreter" and isinstance(exc, ImportError):
        msg += f"\n{_HINT}"
    return msg


def _listen_socket(family, addr, backlog, reuseport):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(addr)
        if backlog is not None:
            s.listen(backlog)
    except BaseException:
        s.close()
        raise
    return s


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_listeners(listen):
    """``(sockets to close after the server dup'ed them, [(fd, is_unix)])``."""
    if listen[0] == "fds":
        return [], listen[1]
    _, family, host, port, backlog = listen
    s = _listen_socket(family, (host, port), backlog, True)
    return [s], [(s.fileno(), False)]


class _Ready:
    """What a server reports its start on, in the supervisor's own interpreter."""

    def __init__(self, loop):
        self.fut = loop.create_future()

    def send_nowait(self, msg):
        if not self.fut.done():
            self.fut.set_result(msg)


async def run_server(app, cfg, index, gid, listen, ready):
    """Serves in this interpreter until the group stops (then shuts down
    gracefully); reports its start on ``ready``."""
    loop = asyncio.get_running_loop()
    state = {}
    life = protocol.Lifespan(app, cfg["lifespan"], state, loop)
    err = await life.startup()
    if err is not None:
        ready.send_nowait(("error", index, f"lifespan startup failed: {err}"))
        return
    socks, fds = open_listeners(listen)
    try:
        server = protocol.Server(app, cfg, gid, index, fds, state, loop)
    finally:
        for s in socks:
            s.close()
    server.start()
    ready.send_nowait(("ready", index, None))
    try:
        await server.stopped
    finally:
        await server.shutdown(cfg["timeout_graceful_shutdown"])
        await life.shutdown()


async def worker_main(cfg, index, gid, listen, ready):
    """A pool worker's job: load the app in this sub-interpreter and serve."""
    try:
        setup_logging(cfg)
        app = load_app(cfg)
    except BaseException as e:  # noqa: BLE001 - reported to the supervisor
        ready.send_nowait(("error", index, describe_load_error(
            cfg, e, f"sub-interpreter worker {index}")))
        return
    try:
        await run_server(app, cfg, index, gid, listen, ready)
    except BaseException as e:
        ready.send_nowait(("error", index, f"worker {index} failed: {type(e).__name__}: {e}"))
        raise


def _bind(cfg):
    """``(sockets the supervisor keeps open while serving, listen spec for
    workers, url)``."""
    backlog = int(cfg["backlog"])
    if cfg["fd"] is not None:
        s = socket.socket(fileno=os.dup(int(cfg["fd"])))
        is_unix = s.family == socket.AF_UNIX
        return [s], ("fds", [(s.fileno(), is_unix)]), f"fd {cfg['fd']}"
    if cfg["uds"]:
        path = cfg["uds"]
        if os.path.exists(path):
            os.unlink(path)
        s = _listen_socket(socket.AF_UNIX, path, backlog, False)
        return [s], ("fds", [(s.fileno(), True)]), f"unix:{path}"
    host, port = cfg["host"], int(cfg["port"])
    family = _family(host)
    if cfg["workers"] > 1 and cfg["worker_kind"] == "interpreter" \
            and cfg["listener"] == "reuseport":
        # Each worker binds its own SO_REUSEPORT socket; this one (bound, not
        # listening: the kernel gives it no connections) only holds the port.
        s = _listen_socket(family, (host, port), None, True)
        port = s.getsockname()[1]
        return [s], ("reuseport", family, host, port, backlog), f"{_scheme(cfg)}://{_fmt(host)}:{port}"
    s = _listen_socket(family, (host, port), backlog, False)
    port = s.getsockname()[1]
    return [s], ("fds", [(s.fileno(), False)]), f"{_scheme(cfg)}://{_fmt(host)}:{port}"


def _scheme(cfg):
    return "https" if cfg["ssl_certfile"] else "http"


def _set_tls(cfg, gid):
    """Loads the certificate and key into the group (every worker's connections
    then speak TLS); a ValueError names the file at fault."""
    if cfg["ssl_certfile"]:
        ca = cfg["ssl_ca_certs"]
        _n.group_set_tls(gid, os.fspath(cfg["ssl_certfile"]), os.fspath(cfg["ssl_keyfile"]),
                         None if ca is None else os.fspath(ca), int(cfg["ssl_cert_reqs"] or 0))


def _fmt(host):
    return f"[{host}]" if ":" in host else host


async def _wait_ready(ch, jobs, n, timeout):
    """Waits for ``n`` workers to report; returns None or the first error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = 0
    recv = None
    try:
        while started < n:
            recv = recv or asyncio.ensure_future(ch.recv())
            left = deadline - loop.time()
            done, _ = await asyncio.wait([recv, *jobs], timeout=max(left, 0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if recv in done:
                kind, index, msg = recv.result()
                recv = None
                if kind == "error":
                    return msg
                started += 1
                continue
            for j in jobs:
                if j in done:
                    exc = j.exception() if not j.cancelled() else None
                    return f"a worker ended during start-up: {exc!r}"
            if not done:
                return f"workers did not start within {timeout:g} s"
        return None
    finally:
        if recv is not None:
            recv.cancel()


async def _supervise(cfg):
    from .._channel import Channel
    from .._pool import Pool

    loop = asyncio.get_running_loop()
    n = cfg["workers"]
    gid = _n.group_new(n)
    try:
        _set_tls(cfg, gid)
    except BaseException:
        _n.group_remove(gid)
        raise

    def on_signal(sig):
        logger.info("shutting down (%s): finishing requests in flight", sig.name)
        _n.group_stop(gid)

    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, on_signal, sig)
    socks = []
    metrics = None
    try:
        if cfg["metrics_port"] is not None:
            metrics = await _start_metrics(cfg, gid)
        socks, listen, url = _bind(cfg)
        if n == 1:
            try:
                app = load_app(cfg)
            except Exception as e:  # noqa: BLE001
                logger.error("%s", describe_load_error(cfg, e, "the main interpreter"),
                             exc_info=not isinstance(e, AppLoadError))
                return 1
            link = None
            if cfg["stats_fd"] is not None:
                link = _answer_stats(loop, int(cfg["stats_fd"]), gid)
            try:
                ready = _Ready(loop)
                task = loop.create_task(run_server(app, cfg, 0, gid, listen, ready))
                await asyncio.wait([ready.fut, task], return_when=asyncio.FIRST_COMPLETED)
                if not ready.fut.done():
                    await task  # raises what failed
                kind, _, msg = ready.fut.result()
                if kind == "error":
                    logger.error("%s", msg)
                    await task
                    return 1
                logger.info("interloop serve: listening on %s (1 worker, main interpreter)", url)
                await task
            finally:
                if link is not None:
                    loop.remove_reader(link)
                    link.close()
        else:
            ch = Channel()
            async with Pool(n, concurrency=1) as pool:
                jobs = [asyncio.ensure_future(pool.run(worker_main, cfg, i, gid, listen, ch))
                        for i in range(n)]
                err = await _wait_ready(ch, jobs, n, float(cfg["timeout_worker_start"]))
                if err is not None:
                    logger.error("%s", err)
                    _n.group_stop(gid)
                    await asyncio.wait(jobs, timeout=float(cfg["timeout_graceful_shutdown"]) + 5)
                    for j in jobs:
                        j.cancel()
                    _end_process_if_asked(cfg, 1)
                    return 1
                if listen[0] == "reuseport":
                    for s in socks:
                        s.close()
                    socks = []
                logger.info("interloop serve: listening on %s (%d workers, own-GIL "
                            "sub-interpreters)", url, n)
                results = await asyncio.gather(*jobs, return_exceptions=True)
                for i, r in enumerate(results):
                    if isinstance(r, BaseException):
                        logger.error("worker %d ended with %r", i, r)
                _log_stats(gid)
                _end_process_if_asked(cfg, 0)
                return 0
        _log_stats(gid)
        return 0
    finally:
        if metrics is not None:
            metrics.close()
        for sig in sigs:
            loop.remove_signal_handler(sig)
        for s in socks:
            s.close()
        _remove_uds(cfg)
        _n.group_remove(gid)


def stats(gid):
    """Per-worker counters of a running server group, shaped like ``Pool.stats()``:
    ``workers``, ``requests``, ``failed``, ``inflight``, ``connections`` (lists, one
    entry per worker) and ``latency`` (per worker: count, mean, p50, p90, p99 and max
    in microseconds, from request head parsed to response written; log2 buckets)."""
    return _stats_of_rows(_n.group_stats(gid))


def _stats_of_rows(rows):
    keys = ("count", "mean", "p50", "p90", "p99", "max")
    return {
        "workers": len(rows),
        "requests": [r[0] for r in rows],
        "failed": [r[1] for r in rows],
        "inflight": [r[2] for r in rows],
        "connections": [r[3] for r in rows],
        "latency": [dict(zip(keys, r[4])) for r in rows],
    }


def prometheus_text(gid):
    """The group's counters in the Prometheus text format."""
    return _prometheus_text_of(stats(gid))


def _prometheus_text_of(s, ids=None):
    """``stats()``'s dict in the Prometheus text format; ``ids`` are the workers'
    numbers (default 0, 1, ...)."""
    ids = list(range(s["workers"])) if ids is None else ids
    out = []
    for name, kind, key, help_ in (
            ("requests_total", "counter", "requests", "Responses completed."),
            ("server_errors_total", "counter", "failed", "Responses with a 5xx status."),
            ("requests_in_flight", "gauge", "inflight", "Requests being served."),
            ("connections", "gauge", "connections", "Open connections.")):
        out += [f"# HELP interloop_serve_{name} {help_}", f"# TYPE interloop_serve_{name} {kind}"]
        out += [f'interloop_serve_{name}{{worker="{i}"}} {v}' for i, v in zip(ids, s[key])]
    out += ["# HELP interloop_serve_latency_us Request latency (head parsed to response "
            "written), microseconds; quantiles are log2 bucket bounds.",
            "# TYPE interloop_serve_latency_us summary"]
    for i, lat in zip(ids, s["latency"]):
        for q in ("p50", "p90", "p99"):
            out.append(f'interloop_serve_latency_us{{worker="{i}",quantile="0.{q[1:]}"}} {lat[q]:g}')
        out.append(f'interloop_serve_latency_us_sum{{worker="{i}"}} {lat["mean"] * lat["count"]:g}')
        out.append(f'interloop_serve_latency_us_count{{worker="{i}"}} {lat["count"]}')
    return "\n".join(out) + "\n"


async def _start_metrics(cfg, gid):
    """``--metrics-port``: serves ``prometheus_text`` on GET (any path)."""
    return await _start_metrics_server(cfg, lambda: prometheus_text(gid))


async def _start_metrics_server(cfg, text):

    async def handle(reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            if line.startswith(b"GET "):
                body, status = text().encode(), b"200 OK"
            else:
                body, status = b"only GET\n", b"405 Method Not Allowed"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; version=0.0.4"
                         b"\r\ncontent-length: " + str(len(body)).encode() +
                         b"\r\nconnection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    host = cfg["host"] if not (cfg["uds"] or cfg["fd"] is not None) else "127.0.0.1"
    srv = await asyncio.start_server(handle, host, int(cfg["metrics_port"]))
    port = srv.sockets[0].getsockname()[1]
    logger.info("interloop serve: metrics on http://%s:%d/metrics", _fmt(host), port)
    return srv


def _answer_stats(loop, fd, gid):
    """A worker process's side of ``--metrics-port``: every byte the supervisor
    sends on the socket ``fd`` asks for this process's counters, answered as one
    JSON line (``group_stats``' rows). Returns the socket (the caller closes it)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)

    def on_request():
        try:
            data = sock.recv(256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the supervisor is gone
            loop.remove_reader(sock)
            return
        reply = (json.dumps(_n.group_stats(gid)) + "\n").encode()
        try:
            for _ in data:
                sock.sendall(reply)
        except OSError:
            loop.remove_reader(sock)

    loop.add_reader(sock, on_request)
    return sock


class _ProcessStats:
    """The supervisor's side for ``--worker-kind process``: asks each worker
    process for its counters on its socketpair, in turn, when a scrape comes. A
    worker that does not answer within ``TIMEOUT`` (busy starting up, say) is left
    out of that scrape; its late answer is skipped at the next one."""

    TIMEOUT = 2.0

    def __init__(self, links):
        self.links = list(links)  # one socket per worker process (None: gone)
        self.owed = [0] * len(self.links)  # answers still to come, to skip
        self.bufs = [b""] * len(self.links)
        self.lock = threading.Lock()

    def add(self, sock):
        with self.lock:
            self.links.append(sock)
            self.owed.append(0)
            self.bufs.append(b"")

    def _ask(self, i):
        s = self.links[i]
        if s is None:
            return None
        try:
            s.settimeout(self.TIMEOUT)
            s.sendall(b"?")
            self.owed[i] += 1
            while True:
                line, sep, rest = self.bufs[i].partition(b"\n")
                if sep:
                    self.bufs[i] = rest
                    self.owed[i] -= 1
                    if self.owed[i] == 0:
                        return json.loads(line)[0]
                    continue
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("worker process closed its stats link")
                self.bufs[i] += chunk
        except (TimeoutError, socket.timeout):
            return None
        except (OSError, ValueError, IndexError):
            s.close()  # gone: left out from now on
            self.links[i] = None
            return None

    def text(self):
        with self.lock:
            rows = [(i, self._ask(i)) for i in range(len(self.links))]
        rows = [(i, r) for i, r in rows if r is not None]
        return _prometheus_text_of(_stats_of_rows([r for _, r in rows]), [i for i, _ in rows])

    def close(self):
        with self.lock:
            for s in self.links:
                if s is not None:
                    s.close()
            self.links = [None] * len(self.links)


class _MetricsThread:
    """``--metrics-port`` for the process supervisor (which has no event loop of
    its own): the same metrics server on an asyncio loop in a thread."""

    def __init__(self, cfg, text):
        self.loop = self.stop = self.error = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(cfg, text),),
                                       name="interloop-serve-metrics", daemon=True)
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error

    async def _main(self, cfg, text):
        self.loop = asyncio.get_running_loop()
        self.stop = self.loop.create_future()
        try:
            srv = await _start_metrics_server(cfg, text)
        except BaseException as e:  # noqa: BLE001 - raised in the supervisor
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            await self.stop
        finally:
            srv.close()

    def close(self):
        if self.loop is not None and self.error is None:
            def done():
                if not self.stop.done():
                    self.stop.set_result(None)
            try:
                self.loop.call_soon_threadsafe(done)
            except RuntimeError:  # its loop already ended
                pass
            self.thread.join(5)


def _log_stats(gid):
    for i, w in enumerate(_n.group_stats(gid)):
        logger.info("worker %d served %d requests (%d failed)", i, w[0], w[1])


# Set by the command line: once the workers have stopped (requests finished,
# lifespan shutdown run), the process ends without finalizing the workers'
# interpreters. CPython 3.13.0 can crash while finalizing a sub-interpreter that
# imported _datetime, which nearly every web app does.
exit_when_stopped = False


def _remove_uds(cfg):
    if cfg["uds"]:
        try:
            os.unlink(cfg["uds"])
        except OSError:
            pass


def _end_process_if_asked(cfg, code):
    if exit_when_stopped:
        _remove_uds(cfg)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve_processes(cfg):
    """``--worker-kind process``: each child serves the app in its main
    interpreter, on interloop's loop, from the inherited listening socket."""
    cfg = dict(cfg)
    gid = _n.group_new(1)
    try:
        _set_tls(cfg, gid)  # checked here once: a bad file stops start-up, not each child
    finally:
        _n.group_remove(gid)
    socks, listen, url = _bind(dict(cfg, workers=1))
    s = socks[0]
    args = [sys.executable, "-m", "interloop", "serve", cfg["app"], "--workers", "1",
            "--fd", str(s.fileno()), "--app-dir", cfg["app_dir"] or ".",
            "--lifespan", cfg["lifespan"], "--log-level", str(cfg["log_level"]),
            "--timeout-keep-alive", str(cfg["timeout_keep_alive"]),
            "--timeout-graceful-shutdown", str(cfg["timeout_graceful_shutdown"]),
            "--timeout-slow-client", str(cfg["timeout_slow_client"]),
            "--limit-request-body", str(cfg["limit_request_body"] or 0),
            "--limit-request-head", str(cfg["limit_request_head"]),
            "--root-path", cfg["root_path"] or "", "--ws-max-size", str(cfg["ws_max_size"]),
            "--ws-ping-interval", str(cfg["ws_ping_interval"] or 0),
            "--ws-ping-timeout", str(cfg["ws_ping_timeout"] or 0)]
    if cfg["limit_concurrency"]:
        args += ["--limit-concurrency", str(cfg["limit_concurrency"])]
    if not cfg["access_log"]:
        args.append("--no-access-log")
    if cfg["factory"]:
        args.append("--factory")
    if not cfg["proxy_headers"]:
        args.append("--no-proxy-headers")
    if cfg["forwarded_allow_ips"] is not None:
        args += ["--forwarded-allow-ips", cfg["forwarded_allow_ips"]]
    if cfg["ssl_certfile"]:
        args += ["--ssl-certfile", os.path.abspath(cfg["ssl_certfile"]),
                 "--ssl-keyfile", os.path.abspath(cfg["ssl_keyfile"]),
                 "--ssl-cert-reqs", str(int(cfg["ssl_cert_reqs"] or 0))]
        if cfg["ssl_ca_certs"]:
            args += ["--ssl-ca-certs", os.path.abspath(cfg["ssl_ca_certs"])]
    children = []
    stopping = False
    forwarded = set()  # the signals passed on to the children
    metrics = None

    def forward(sig, _frame):
        nonlocal stopping
        stopping = True
        forwarded.add(-int(sig))
        for p in children:
            if p.poll() is None:
                p.send_signal(sig)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cfg["metrics_port"] is not None:
            stats_ = _ProcessStats([])
            metrics = _MetricsThread(cfg, stats_.text)  # a busy port fails before any child
            metrics.stats = stats_
        for _ in range(cfg["workers"]):
            if metrics is None:
                children.append(subprocess.Popen(args, pass_fds=(s.fileno(),)))
                continue
            ours, theirs = socket.socketpair()
            try:
                children.append(subprocess.Popen(args + ["--stats-fd", str(theirs.fileno())],
                                                 pass_fds=(s.fileno(), theirs.fileno())))
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            metrics.stats.add(ours)
        logger.info("interloop serve: listening on %s (%d worker processes)", url, len(children))
        code = 0
        while children:
            for p in list(children):
                try:
                    rc = p.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                children.remove(p)
                # A child still starting when the stop came has no handler yet and
                # dies of the signal itself: it served nothing, so that is a clean stop.
                if rc != 0 and not (stopping and rc in forwarded):
                    code = 1
                    if not stopping:
                        logger.error("a worker process exited with status %d: stopping", rc)
                        forward(signal.SIGTERM, None)
        return code
    finally:
        if metrics is not None:
            metrics.close()
            metrics.stats.close()
        for sig, h in old.items():
            signal.signal(sig, h)
        s.close()


def serve(app, **options):
    """Serves the ASGI app named by ``app`` (``"module:attribute"``) until SIGINT
    or SIGTERM; returns the exit status (0 after a graceful shutdown). Options are
    uvicorn's (``host``, ``port``, ``workers``...; see ``interloop serve --help``)."""
    cfg = make_config(app, options)
    setup_logging(cfg)
    if cfg["worker_kind"] == "process" and cfg["workers"] > 1:
        return _serve_processes(cfg)
    if cfg["workers"] > 1:
        from .._pool import check_version
        try:
            check_version()
        except RuntimeError as e:
            logger.error("%s; use --workers 1 or --worker-kind process", e)
            return 1
    from .._loop import run
    return run(_supervise(cfg))
