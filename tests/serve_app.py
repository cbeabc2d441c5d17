"""A Starlette app served by interloop serve in tests/test_serve.py (several
workers: each own-GIL sub-interpreter imports this module)."""
import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app):
    marker = os.environ.get("SERVE_TEST_MARKER_DIR")
    yield {"started": "yes", "pid": os.getpid()}
    if marker:
        # One file per worker: lifespan shutdown ran there.
        import threading
        with open(os.path.join(marker, f"shutdown-{threading.get_ident()}"), "w") as f:
            f.write("done")


async def hello(request):
    return PlainTextResponse("Hello, world!")


async def as_json(request):
    return JSONResponse({"n": int(request.path_params["n"]), "q": request.query_params.get("q"),
                         "items": list(range(3))})


async def scope(request):
    s = request.scope
    return JSONResponse({
        "type": s["type"], "http_version": s["http_version"], "method": s["method"],
        "scheme": s["scheme"], "path": s["path"], "raw_path": s["raw_path"].decode("latin-1"),
        "query_string": s["query_string"].decode("latin-1"), "root_path": s["root_path"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]],
        "client": list(s["client"]), "server": list(s["server"]),
        "state": request.state.started, "asgi": s["asgi"],
        "tls": s["extensions"].get("tls"),
    })


async def echo(request):
    body = await request.body()
    return Response(body, media_type="application/octet-stream",
                    headers={"x-length": str(len(body))})


async def stream(request):
    n = int(request.query_params.get("n", "5"))

    async def gen():
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)
    return StreamingResponse(gen(), media_type="text/plain")


async def slow(request):
    await asyncio.sleep(int(request.query_params.get("ms", "300")) / 1000)
    return PlainTextResponse("slow done")


async def boom(request):
    raise RuntimeError("boom from the app")


async def wait_disconnect(request):
    # Waits for the client to go away, then leaves a marker file.
    while True:
        m = await request.receive()
        if m["type"] == "http.disconnect":
            break
    with open(request.query_params["marker"], "w") as f:
        f.write("disconnected")
    return PlainTextResponse("unreachable")


async def ws_echo(websocket):
    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "close-me":
                await websocket.close(code=4001, reason="asked to")
                return
            if msg.get("text") == "state":
                await websocket.send_text(websocket.scope["state"]["started"])
            elif msg.get("text") == "scheme":
                await websocket.send_text(websocket.scope["scheme"])
            elif msg.get("text") is not None:
                await websocket.send_text(msg["text"])
            else:
                await websocket.send_bytes(msg["bytes"])
    except WebSocketDisconnect:
        pass


async def ws_quiet(websocket):
    # Accepts, then neither receives nor sends for a while (pings go on meanwhile).
    await websocket.accept()
    await asyncio.sleep(int(websocket.query_params.get("ms", "1000")) / 1000)
    await websocket.send_text("still here")
    await websocket.close(code=1000)


async def ws_refuse(websocket):
    await websocket.close(code=1008)


app = Starlette(routes=[
    Route("/", hello),
    Route("/json/{n:int}", as_json),
    Route("/scope", scope),
    Route("/echo", echo, methods=["POST", "PUT"]),
    Route("/stream", stream),
    Route("/slow", slow),
    Route("/boom", boom),
    Route("/wait-disconnect", wait_disconnect),
    WebSocketRoute("/ws", ws_echo),
    WebSocketRoute("/ws-refuse", ws_refuse),
    WebSocketRoute("/ws-quiet", ws_quiet),
], lifespan=lifespan)
