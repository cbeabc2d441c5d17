"""TCP echo: 1 KiB messages over 10 concurrent connections.

The server runs in its own process pinned to CPU 0, the client in the measuring
process pinned to CPU 1 (when the machine has two), both on the variant's loop: what
an application gets when it switches loops. Each connection sends a message, waits
for the echo, and repeats; the figure is messages per second, with the 50th and 99th
percentile round trip. Two API flavours: protocols (`create_server`/
`create_connection`) and streams (`start_server`/`open_connection`). Loopback only.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time

from harness import Case, Suite

from bench_loop import LOOPS, loop_factory, probe_loop

CONNECTIONS = 10
MESSAGE = 1024


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def echo_server(script: str, server_args: "list[str]", variant: str):
    """Runs ``script --serve variant *server_args`` (an echo server that prints its
    port, pinned to CPU 0 and serving until its stdin closes) for the ``with`` block;
    yields ``(process, port)``."""
    server = subprocess.Popen(
        [sys.executable, script, "--serve", variant, *server_args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    try:
        yield server, int(server.stdout.readline())
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def against_server(script: str, server_args: "list[str]", variant: str, client) -> dict:
    """Runs ``client(port)`` on the variant's loop, pinned to CPU 1, against
    `echo_server`. Shared with bench_udp.py."""
    with echo_server(script, server_args, variant) as (_, port):
        pin(1)
        loop = loop_factory(variant)()
        try:
            return loop.run_until_complete(client(port))
        finally:
            loop.close()


class _EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def _serve(mode: str) -> None:
    loop = asyncio.get_running_loop()
    if mode == "protocol":
        server = await loop.create_server(_EchoProtocol, "127.0.0.1", 0)
    else:
        async def handle(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Serve until the client closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, n: int, done: asyncio.Future, rtts: list):
        self.n = n
        self.done = done
        self.rtts = rtts
        self.pending = 0

    def connection_made(self, transport):
        self.transport = transport
        self._send()

    def _send(self):
        self.pending = MESSAGE
        self.t0 = time.perf_counter()
        self.transport.write(b"x" * MESSAGE)

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending > 0:
            return
        self.rtts.append(time.perf_counter() - self.t0)
        self.n -= 1
        if self.n:
            self._send()
        else:
            self.transport.close()
            self.done.set_result(None)


async def _client(mode: str, port: int, n: int) -> dict:
    loop = asyncio.get_running_loop()
    per_conn = max(1, n // CONNECTIONS)
    rtts: list[float] = []

    async def proto_conn():
        done = loop.create_future()
        await loop.create_connection(lambda: _ClientProtocol(per_conn, done, rtts), "127.0.0.1", port)
        await done

    async def stream_conn():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        msg = b"x" * MESSAGE
        for _ in range(per_conn):
            t0 = time.perf_counter()
            writer.write(msg)
            await reader.readexactly(MESSAGE)
            rtts.append(time.perf_counter() - t0)
        writer.close()
        await writer.wait_closed()

    conn = proto_conn if mode == "protocol" else stream_conn
    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - t0
    rtts.sort()
    return {
        "value": len(rtts) / elapsed,
        "p50_us": rtts[len(rtts) // 2] * 1e6,
        "p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1e6,
    }


def _measure(mode: str):
    def measure(variant: str, n: int) -> dict:
        return against_server(__file__, [mode], variant, lambda port: _client(mode, port, n))

    measure.__name__ = f"echo_{mode}"
    return measure


SUITE = Suite(
    name="tcp",
    title="TCP echo",
    description=(
        f"1 KiB messages, {CONNECTIONS} concurrent ping-pong connections over 127.0.0.1; "
        "server and client in separate processes pinned to different CPUs, both on the "
        "variant's loop."
    ),
    variants=LOOPS,
    baseline="asyncio",
    subject="interloop",
    probe=probe_loop,
    order=20,
    cases=(
        Case("echo_protocol", "protocols (create_server / create_connection)",
             _measure("protocol"), n=100_000, quick_n=2_000, unit="msg/s",
             better="higher", target=("uvloop", 1.2)),
        Case("echo_streams", "streams (start_server / open_connection)",
             _measure("streams"), n=100_000, quick_n=2_000, unit="msg/s",
             better="higher", target=("uvloop", 1.2)),
    ),
    figures={"p50_us": "median round trip (µs)", "p99_us": "99th percentile round trip (µs)"},
)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--serve":
    pin(0)
    asyncio.run(_serve(sys.argv[3]), loop_factory=loop_factory(sys.argv[2]))
