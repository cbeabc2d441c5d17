"""Real software on interloop's loop (and, for comparison, on asyncio's).

Network traffic stays on 127.0.0.1. These tests exercise whole stacks nobody here
wrote: uvicorn serving a Starlette app (started the way users start it, with
``--loop interloop:new_event_loop``), aiohttp's client and server with a websocket,
and a subprocess pipe carrying a few megabytes.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import make_loop

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

APP = textwrap.dedent(
    """
    import asyncio
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def home(request):
        loop = asyncio.get_running_loop()
        return JSONResponse({"loop": type(loop).__module__ + "." + type(loop).__name__})

    async def echo(request):
        body = await request.body()
        await asyncio.sleep(0)
        return PlainTextResponse(body[::-1])

    app = Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["POST"])])
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"server exited early with {proc.returncode}:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


@pytest.mark.parametrize("http_impl", ["httptools", "h11"])
@pytest.mark.parametrize("loop_opt", ["asyncio", "interloop:new_event_loop"])
def test_uvicorn_serves_starlette(tmp_path, http_impl, loop_opt):
    if http_impl == "httptools":
        pytest.importorskip("httptools")
    (tmp_path / "app.py").write_text(APP)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port",
         str(port), "--loop", loop_opt, "--http", http_impl, "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(20):  # keep-alive: one connection, many requests
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            loop_name = json.loads(resp.read())["loop"]
        expected = "interloop._loop.Loop" if loop_opt.startswith("interloop") else None
        if expected:
            assert loop_name == expected
        else:
            assert not loop_name.startswith("interloop")
        body = os.urandom(200_000)
        conn.request("POST", "/echo", body=body)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == body[::-1]
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)  # graceful shutdown, as Ctrl-C
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError("uvicorn did not stop on SIGINT")
    assert proc.returncode == 0, out.decode(errors="replace")


def test_aiohttp_client_server_and_websocket(loop_kind):
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def main():
        async def hello(request):
            return web.Response(text="hello " + request.match_info["name"])

        async def ws_handler(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(msg.data.upper())
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(msg.data[::-1])
            return ws

        app = web.Application()
        app.router.add_get("/hello/{name}", hello)
        app.router.add_get("/ws", ws_handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                texts = await asyncio.gather(*(
                    _get_text(session, f"http://127.0.0.1:{port}/hello/n{i}") for i in range(30)
                ))
                assert texts == [f"hello n{i}" for i in range(30)]
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                    await ws.send_str("ping")
                    assert (await ws.receive_str()) == "PING"
                    blob = os.urandom(100_000)
                    await ws.send_bytes(blob)
                    assert (await ws.receive_bytes()) == blob[::-1]
        finally:
            await runner.cleanup()
        return type(asyncio.get_running_loop()).__module__

    module = asyncio.run(main(), loop_factory=lambda: make_loop(loop_kind))
    assert module.startswith("interloop") == (loop_kind == "interloop")


async def _get_text(session, url):
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


def test_subprocess_pipes_megabytes_through_cat(loop_kind):
    payload = os.urandom(4 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate(payload)
        return proc.returncode, out

    rc, out = asyncio.run(main(), loop_factory=lambda: make_loop(loop_kind))
    assert rc == 0
    assert out == payload
