"""add_reader / add_writer / remove_reader / remove_writer on socketpairs and pipes."""
import asyncio
import os
import socket

import pytest


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _run_until(loop, predicate, limit=2.0):
    """Run the loop until predicate() is true (or `limit` seconds of loop time)."""

    async def waiter():
        deadline = loop.time() + limit
        while not predicate() and loop.time() < deadline:
            await asyncio.sleep(0.001)

    loop.run_until_complete(waiter())


def test_reader_called_with_args_when_data_arrives(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable(sock, tag):
        got.append((tag, sock.recv(100)))

    loop.add_reader(a, on_readable, a, "tag")
    b.send(b"hello")
    _run_until(loop, lambda: got)
    assert got == [("tag", b"hello")]
    assert loop.remove_reader(a) is True


def test_reader_accepts_fd_or_object_with_fileno(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a.fileno(), lambda: got.append(a.recv(10)))
    b.send(b"x")
    _run_until(loop, lambda: got)
    assert got == [b"x"]
    # Removal by the object finds the registration made with its fd.
    assert loop.remove_reader(a) is True


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_readable():
        calls.append(1)
        if len(calls) == 3:
            a.recv(100)  # drain only on the third call
            loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    b.send(b"data")
    _run_until(loop, lambda: len(calls) >= 3)
    # Not drained by the first two calls: the reader was called again.
    assert len(calls) == 3


def test_reader_not_called_without_data(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a, calls.append, 1)
    loop.run_until_complete(asyncio.sleep(0.02))
    assert calls == []
    assert loop.remove_reader(a) is True


def test_remove_reader_returns_false_when_not_registered(loop, sockpair):
    a, b = sockpair
    assert loop.remove_reader(a) is False
    loop.add_reader(a, print)
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_removed_reader_is_not_called(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a, calls.append, 1)
    loop.remove_reader(a)
    b.send(b"x")
    loop.run_until_complete(asyncio.sleep(0.02))
    assert calls == []


def test_replacing_a_reader_calls_only_the_new_one(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a, calls.append, "old")

    def new():
        calls.append("new")
        a.recv(100)

    loop.add_reader(a, new)
    b.send(b"x")
    _run_until(loop, lambda: calls)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == ["new"]
    assert loop.remove_reader(a) is True


def test_writer_called_while_writable(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_writable():
        calls.append(1)
        if len(calls) == 2:
            loop.remove_writer(a)

    loop.add_writer(a, on_writable)
    _run_until(loop, lambda: len(calls) >= 2)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert len(calls) == 2  # level-triggered, and removal stops it


def test_writer_waits_for_buffer_space(loop, sockpair):
    a, b = sockpair
    # Fill a's send buffer.
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []
    loop.add_writer(a, calls.append, "writable")
    loop.run_until_complete(asyncio.sleep(0.02))
    assert calls == []
    # Drain the peer; a becomes writable.
    def drain():
        try:
            while b.recv(65536):
                pass
        except BlockingIOError:
            pass

    loop.add_reader(b, drain)
    _run_until(loop, lambda: calls)
    assert calls and calls[0] == "writable"
    assert loop.remove_writer(a) is True
    assert loop.remove_reader(b) is True


def test_remove_writer_returns_false_when_not_registered(loop, sockpair):
    a, b = sockpair
    assert loop.remove_writer(a) is False
    loop.add_writer(a, print)
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False


def test_reader_and_writer_on_the_same_fd_are_independent(loop, sockpair):
    a, b = sockpair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a)
        b.send(b"ping")

    def on_readable():
        events.append(("r", a.recv(100)))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    _run_until(loop, lambda: len(events) >= 2)
    assert events == ["w", ("r", b"ping")]
    # Removing the writer kept the reader, and the other way round.
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


def test_reader_on_pipe_sees_eof(loop, pipe):
    r, w = pipe
    chunks = []

    def on_readable():
        data = os.read(r, 100)
        chunks.append(data)
        if not data:
            loop.remove_reader(r)

    loop.add_reader(r, on_readable)
    os.write(w, b"abc")
    _run_until(loop, lambda: chunks)
    os.close(w)
    _run_until(loop, lambda: chunks and chunks[-1] == b"")
    assert b"".join(chunks) == b"abc"
    assert chunks[-1] == b""


def test_writer_on_pipe(loop, pipe):
    r, w = pipe
    done = []

    def on_writable():
        os.write(w, b"through the pipe")
        loop.remove_writer(w)
        done.append(True)

    loop.add_writer(w, on_writable)
    _run_until(loop, lambda: done)
    assert os.read(r, 100) == b"through the pipe"


def test_reader_callback_exception_goes_to_handler_and_reader_stays(loop, sockpair):
    a, b = sockpair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def on_readable():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("reader failed")
        a.recv(100)
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    b.send(b"x")
    _run_until(loop, lambda: len(calls) >= 2)
    assert len(calls) == 2
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)


def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    got = {}
    try:
        for i, (a, b) in enumerate(pairs):
            a.setblocking(False)

            def on_readable(i=i, a=a):
                got[i] = a.recv(100)
                loop.remove_reader(a)

            loop.add_reader(a, on_readable)
        for i, (a, b) in enumerate(pairs):
            b.send(str(i).encode())
        _run_until(loop, lambda: len(got) == len(pairs))
        assert got == {i: str(i).encode() for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_add_reader_invalid_fd_raises(loop):
    with pytest.raises((ValueError, TypeError)):
        loop.add_reader(-1, print)
    with pytest.raises((ValueError, TypeError)):
        loop.add_reader("not a file", print)


def test_add_reader_on_closed_loop_raises(new_loop, sockpair):
    loop = new_loop()
    loop.close()
    a, b = sockpair
    with pytest.raises(RuntimeError):
        loop.add_reader(a, print)
    with pytest.raises(RuntimeError):
        loop.add_writer(a, print)


def test_remove_reader_after_close_returns_false(new_loop, sockpair):
    loop = new_loop()
    a, b = sockpair
    loop.add_reader(a, print)
    loop.close()
    assert loop.remove_reader(a) is False


def test_reader_removed_by_another_reader_in_the_same_batch_does_not_run(loop):
    # Both sockets are readable in the same poll; whichever callback runs
    # first removes the other's reader, which then must not run.
    (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
    ran = []
    try:
        def make(name, own, other):
            def cb():
                ran.append(name)
                own.recv(100)
                loop.remove_reader(own)
                loop.remove_reader(other)
            return cb

        loop.add_reader(a1, make("one", a1, a2))
        loop.add_reader(a2, make("two", a2, a1))
        b1.send(b"x")
        b2.send(b"x")
        _run_until(loop, lambda: ran)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert len(ran) == 1
    finally:
        for s in (a1, b1, a2, b2):
            s.close()


def test_reader_called_on_peer_close(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    b.close()
    _run_until(loop, lambda: got)
    assert got == [b""]


def test_writer_called_when_pipe_reader_closes(loop, pipe):
    # A full pipe is not writable; closing its read end makes the write end
    # report an error, which asyncio's selector delivers to the writer.
    r, w = pipe
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []
    loop.add_writer(w, lambda: (calls.append(1), loop.remove_writer(w)))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == []
    os.close(r)
    _run_until(loop, lambda: calls)
    assert calls == [1]
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")


def test_add_reader_on_closed_fd_raises_and_leaves_nothing_registered(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError):
        loop.add_reader(fd, print)
    assert loop.remove_reader(fd) is False


def test_add_reader_on_regular_file_raises(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        with pytest.raises(PermissionError):
            loop.add_reader(f.fileno(), print)
        assert loop.remove_reader(f.fileno()) is False


def test_readers_are_not_starved_by_a_busy_ready_queue(loop, sockpair):
    a, b = sockpair

    def spin():
        loop.call_soon(spin)

    def on_readable():
        a.recv(100)
        loop.remove_reader(a)
        loop.stop()

    loop.call_soon(spin)
    loop.add_reader(a, on_readable)
    b.send(b"x")
    loop.run_forever()  # returns only if the reader got its turn
    assert loop.remove_reader(a) is False
