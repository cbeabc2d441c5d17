"""Instructions per TCP echo round trip on interloop's loop, under callgrind.

A client and an echo server (plain `asyncio.Protocol`s, 64-byte messages) in one
process on 127.0.0.1, one message in flight: each round trip is two socket reads
and two writes through the native transports. The count is taken at two sizes and
differenced, as `where_time_goes.py` does, so start-up cancels out. It is the
measurement behind the loop's direct call of a socket reader (`event_loop::reader`,
`transport::classify_reader`): compare a build with and without it.

    python benches/tcp_echo_callgrind.py            # needs valgrind
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from where_time_goes import callgrind, self_cost_by_object  # noqa: E402

WORKLOAD = """
import asyncio, sys, interloop
N = int(sys.argv[1])
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
class Client(asyncio.Protocol):
    def __init__(self, n, done): self.n, self.done = n, done
    def connection_made(self, t): self.t = t; t.write(b"x" * 64)
    def data_received(self, d):
        self.n -= 1
        if self.n: self.t.write(b"x" * 64)
        else: self.done.set_result(None)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    done = loop.create_future()
    t, _ = await loop.create_connection(lambda: Client(N, done), "127.0.0.1", port)
    await asyncio.wait_for(done, 120)
    t.close(); srv.close()
asyncio.run(main(), loop_factory=interloop.new_event_loop)
"""

SIZES = (2000, 6000)


def main() -> None:
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "echo.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        for n in SIZES:
            out = os.path.join(tmp, f"echo.{n}")
            p = callgrind([sys.executable, script, str(n)], out, stdout=subprocess.DEVNULL)
            if p.wait() != 0:
                raise SystemExit("the echo workload failed under valgrind")
            totals.append(sum(self_cost_by_object(out).values()))
    per = (totals[1] - totals[0]) / (SIZES[1] - SIZES[0])
    print(f"interloop: {per:.0f} instructions per 64-byte TCP echo round trip")


if __name__ == "__main__":
    main()
