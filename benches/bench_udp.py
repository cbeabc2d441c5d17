"""UDP echo: 256-byte datagrams, 10 concurrent endpoints ping-ponging.

The server (one unconnected endpoint answering with `sendto(data, addr)`) runs in its
own process pinned to CPU 0; the client (10 connected endpoints, `sendto(data)`) in the
measuring process pinned to CPU 1 (when the machine has two), both on the variant's
loop. Each endpoint sends a datagram, waits for the echo, and repeats; the figure is
datagrams per second, with the 50th and 99th percentile round trip. Loopback only:
with one datagram in flight per endpoint nothing is dropped, but a lost datagram is
sent again after a second rather than hanging the run (and counted in `resent`).
"""
from __future__ import annotations

import asyncio
import sys
import time

from harness import Case, Suite

from bench_loop import LOOPS, loop_factory, probe_loop
from bench_tcp import against_server, pin

ENDPOINTS = 10
DATAGRAM = 256
RESEND_AFTER = 1.0


class _EchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_EchoProtocol, local_addr=("127.0.0.1", 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    # Serve until the client closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    transport.close()


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, n: int, done: asyncio.Future, rtts: list, stats: dict):
        self.n = n
        self.done = done
        self.rtts = rtts
        self.stats = stats
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self._send()

    def _send(self):
        self.t0 = time.perf_counter()
        self.transport.sendto(b"u" * DATAGRAM)
        self.timer = self.loop.call_later(RESEND_AFTER, self._resend)

    def _resend(self):
        self.stats["resent"] += 1
        self._send()

    def datagram_received(self, data, addr):
        self.timer.cancel()
        self.rtts.append(time.perf_counter() - self.t0)
        self.n -= 1
        if self.n:
            self._send()
        else:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)

    def error_received(self, exc):
        self.stats["errors"] += 1


async def _client(port: int, n: int) -> dict:
    loop = asyncio.get_running_loop()
    per_endpoint = max(1, n // ENDPOINTS)
    rtts: list[float] = []
    stats = {"resent": 0, "errors": 0}

    async def endpoint():
        done = loop.create_future()
        await loop.create_datagram_endpoint(
            lambda: _ClientProtocol(per_endpoint, done, rtts, stats),
            remote_addr=("127.0.0.1", port),
        )
        await done

    t0 = time.perf_counter()
    await asyncio.gather(*(endpoint() for _ in range(ENDPOINTS)))
    elapsed = time.perf_counter() - t0
    rtts.sort()
    return {
        "value": len(rtts) / elapsed,
        "p50_us": rtts[len(rtts) // 2] * 1e6,
        "p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1e6,
        "resent": stats["resent"],
    }


def _measure(variant: str, n: int) -> dict:
    return against_server(__file__, [], variant, lambda port: _client(port, n))


_measure.__name__ = "echo_datagram"

SUITE = Suite(
    name="udp",
    title="UDP echo",
    description=(
        f"{DATAGRAM}-byte datagrams, {ENDPOINTS} concurrent ping-pong endpoints over "
        "127.0.0.1; server and client in separate processes pinned to different CPUs, "
        "both on the variant's loop."
    ),
    variants=LOOPS,
    baseline="asyncio",
    subject="interloop",
    probe=probe_loop,
    order=25,
    cases=(
        Case("echo_datagram", "datagram endpoints (create_datagram_endpoint)",
             _measure, n=100_000, quick_n=2_000, unit="msg/s", better="higher",
             target=("uvloop", 1.0)),
    ),
    figures={"p50_us": "median round trip (µs)", "p99_us": "99th percentile round trip (µs)"},
)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--serve":
    pin(0)
    asyncio.run(_serve(), loop_factory=loop_factory(sys.argv[2]))
