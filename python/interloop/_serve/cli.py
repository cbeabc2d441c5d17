"""The ``interloop`` command line: ``interloop serve module:app [options]``.

Options are named as uvicorn names them; ``--worker-kind``, ``--listener``,
``--limit-request-body``, ``--limit-request-head`` and ``--timeout-slow-client``
are interloop's own.
"""
import argparse
import sys

from .run import DEFAULTS


def _parser():
    p = argparse.ArgumentParser(prog="interloop", description="interloop command line")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve an ASGI app on every core from one process",
                       description="Serve an ASGI app: HTTP/1.1 in Rust, the app in own-GIL "
                                   "sub-interpreters (one worker per core by default).")
    s.add_argument("app", help='the app\'s import string, "module:attribute"')
    d = DEFAULTS
    s.add_argument("--host", default=d["host"], help="bind address (default %(default)s)")
    s.add_argument("--port", type=int, default=d["port"], help="bind port (default %(default)s; 0: any)")
    s.add_argument("--uds", default=None, help="bind to this Unix domain socket")
    s.add_argument("--fd", type=int, default=None, help="serve on this listening file descriptor")
    s.add_argument("--workers", type=int, default=None,
                   help="worker count (default: one per core); 1 serves from the main "
                        "interpreter on interloop's loop")
    s.add_argument("--worker-kind", choices=("interpreter", "process"), default=d["worker_kind"],
                   help="own-GIL sub-interpreters of this process (default), or worker "
                        "processes for apps that cannot load in a sub-interpreter")
    s.add_argument("--listener", choices=("reuseport", "shared"), default=d["listener"],
                   help="one SO_REUSEPORT listening socket per worker (default), or one "
                        "socket shared by all workers")
    s.add_argument("--backlog", type=int, default=d["backlog"])
    s.add_argument("--limit-concurrency", type=int, default=None,
                   help="requests in flight per worker before new ones get 503")
    s.add_argument("--limit-request-body", type=int, default=0,
                   help="largest request body in bytes (413 above it; 0: no limit)")
    s.add_argument("--limit-request-head", type=int, default=d["limit_request_head"],
                   help="largest request head in bytes (431 above it)")
    s.add_argument("--timeout-keep-alive", type=float, default=d["timeout_keep_alive"])
    s.add_argument("--timeout-graceful-shutdown", type=float, default=d["timeout_graceful_shutdown"])
    s.add_argument("--timeout-slow-client", type=float, default=d["timeout_slow_client"],
                   help="close a client whose request head, awaited body or unread "
                        "response makes no progress for this many seconds")
    s.add_argument("--root-path", default="")
    s.add_argument("--metrics-port", type=int, default=None,
                   help="serve per-worker counters in the Prometheus text format on this port")
    s.add_argument("--stats-fd", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--ws-max-size", type=int, default=d["ws_max_size"],
                   help="largest websocket message in bytes (closed with 1009 above it)")
    s.add_argument("--ws-ping-interval", type=float, default=d["ws_ping_interval"],
                   help="ping websocket clients this often, in seconds (0: never)")
    s.add_argument("--ws-ping-timeout", type=float, default=d["ws_ping_timeout"],
                   help="close a websocket with 1011 when its pong does not come within "
                        "this many seconds (0: no limit)")
    s.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto")
    s.add_argument("--access-log", dest="access_log", action="store_true", default=True)
    s.add_argument("--no-access-log", dest="access_log", action="store_false")
    s.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug", "trace"))
    s.add_argument("--ssl-certfile", default=None,
                   help="serve HTTPS (TLS 1.2/1.3, rustls): the PEM certificate chain")
    s.add_argument("--ssl-keyfile", default=None,
                   help="the PEM private key of --ssl-certfile (unencrypted)")
    s.add_argument("--ssl-ca-certs", default=None,
                   help="PEM file of the CAs whose client certificates are accepted")
    s.add_argument("--ssl-cert-reqs", type=int, choices=(0, 1, 2), default=0,
                   help="client certificates: 0 not asked for (default), 1 optional, "
                        "2 required (ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED)")
    s.add_argument("--app-dir", default=".", help="look for the app's module here first")
    s.add_argument("--factory", action="store_true",
                   help="the import string names a factory returning the app")
    s.add_argument("--proxy-headers", dest="proxy_headers", action="store_true", default=True)
    s.add_argument("--no-proxy-headers", dest="proxy_headers", action="store_false")
    s.add_argument("--forwarded-allow-ips", default=None)
    return p


def main(argv=None):
    args = vars(_parser().parse_args(argv))
    args.pop("command")
    app = args.pop("app")
    if args["log_level"] == "trace":
        args["log_level"] = "debug"
    from . import run
    run.exit_when_stopped = True
    try:
        return run.serve(app, **args)
    except (ValueError, NotImplementedError) as e:
        print(f"interloop serve: error: {e}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
