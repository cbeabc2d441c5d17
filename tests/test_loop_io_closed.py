"""add_*/remove_* with a file object that was closed or detached while registered.

asyncio's selectors look a registration up by the descriptor the object gives and,
when that fails (a closed or detached socket's ``fileno()`` is -1), by the object the
registration was made with. Libraries rely on it: AnyIO removes its reader with the
socket object after another task closed the socket. Each case runs on both loops.
"""
import asyncio
import os
import socket

import pytest

from test_loop_io import sockpair  # noqa: F401 - a fixture


class FileLike:
    """An object with ``fileno()``, closable like a socket (-1 once closed)."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd

    def close(self):
        os.close(self.fd)
        self.fd = -1


@pytest.mark.parametrize("side", ["reader", "writer"])
@pytest.mark.parametrize("how", ["close", "detach"])
def test_remove_with_the_socket_it_was_added_with_after_close(loop, sockpair, side, how):
    a, _ = sockpair
    getattr(loop, f"add_{side}")(a, lambda: None)
    fd = a.fileno()
    if how == "close":
        a.close()
    else:
        os.close(a.detach())
    assert a.fileno() == -1
    assert getattr(loop, f"remove_{side}")(a) is True
    # The registration is gone: the same call cannot find it any more.
    with pytest.raises(ValueError):
        getattr(loop, f"remove_{side}")(a)
    assert getattr(loop, f"remove_{side}")(fd) is False


@pytest.mark.parametrize("side", ["reader", "writer"])
def test_remove_with_an_object_with_fileno_after_close(loop, sockpair, side):
    a, _ = sockpair
    f = FileLike(os.dup(a.fileno()))
    getattr(loop, f"add_{side}")(f, lambda: None)
    f.close()
    assert getattr(loop, f"remove_{side}")(f) is True


@pytest.mark.parametrize("side", ["reader", "writer"])
def test_remove_with_the_int_after_the_descriptor_was_closed(loop, sockpair, side):
    a, _ = sockpair
    fd = os.dup(a.fileno())
    getattr(loop, f"add_{side}")(fd, lambda: None)
    os.close(fd)
    assert getattr(loop, f"remove_{side}")(fd) is True
    assert getattr(loop, f"remove_{side}")(fd) is False


@pytest.mark.parametrize("side", ["reader", "writer"])
def test_closed_socket_does_not_find_a_registration_made_with_the_int(loop, sockpair, side):
    a, _ = sockpair
    fd = os.dup(a.fileno())
    s = socket.socket(fileno=fd)
    getattr(loop, f"add_{side}")(fd, lambda: None)
    s.close()
    with pytest.raises(ValueError):
        getattr(loop, f"remove_{side}")(s)
    assert getattr(loop, f"remove_{side}")(fd) is True


def test_closed_unregistered_socket_and_negative_int_are_refused(loop, sockpair):
    a, _ = sockpair
    a.close()
    for method in (loop.add_reader, loop.add_writer):
        with pytest.raises(ValueError):
            method(a, lambda: None)
        with pytest.raises(ValueError):
            method(-1, lambda: None)
    for method in (loop.remove_reader, loop.remove_writer):
        with pytest.raises(ValueError):
            method(a)
        with pytest.raises(ValueError):
            method(-1)


def test_other_side_of_a_closed_sockets_registration(loop, sockpair):
    a, _ = sockpair
    loop.add_reader(a, lambda: None)
    a.close()
    # Found through the object (an unknown closed socket raises ValueError), and
    # it has no writer.
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True


def test_a_closed_file_objects_fileno_error_is_a_value_error(loop, sockpair):
    a, _ = sockpair
    f = os.fdopen(os.dup(a.fileno()), "rb", buffering=0)
    loop.add_reader(f, lambda: None)
    fd = f.fileno()
    f.close()  # fileno() now raises ValueError: asyncio refuses before any lookup
    with pytest.raises(ValueError):
        loop.remove_reader(f)
    assert loop.remove_reader(fd) is True


def test_anyio_unix_stream_closed_while_another_task_receives(loop_kind, tmp_path):
    """The case as AnyIO users meet it: ``aclose()`` while a receive waits. AnyIO
    removes its reader in a done callback, so a failure reaches the loop's
    exception handler, not the caller."""
    anyio = pytest.importorskip("anyio")
    from conftest import make_loop

    path = str(tmp_path / "s")
    outcome = []
    handler_calls = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: handler_calls.append(ctx))
        async def serve(stream):
            async with stream:
                await anyio.sleep(5)

        listener = await anyio.create_unix_listener(path)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            stream = await anyio.connect_unix(path)

            async def receive():
                try:
                    await stream.receive()
                except (anyio.ClosedResourceError, anyio.EndOfStream) as e:
                    outcome.append(type(e).__name__)

            async with anyio.create_task_group() as inner:
                inner.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                await stream.aclose()
            tg.cancel_scope.cancel()
        await listener.aclose()

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": lambda: make_loop(loop_kind)})
    assert outcome == ["ClosedResourceError"]
    assert handler_calls == []
