"""The native module's surface as seen from Python, on the main side and in a pool
worker: the protocol constants it exports, and what a Rust panic in one of its
entry points becomes (a Python exception, never an abort)."""
import asyncio
import sys

import pytest

import interloop
from interloop import _interloop as native

needs_workers = pytest.mark.skipif(
    sys.version_info < (3, 12, 4),
    reason="pool workers need CPython >= 3.12.4 (gh-112140)")

PROTOCOL = ("COMPLETION_OK", "COMPLETION_ERR", "COMPLETION_REMOTE_ERR",
            "COMPLETION_CANCELLED", "COMPLETION_LOST", "COMPLETION_FILLED",
            "WORKER_READY", "WORKER_FAILED", "WORKER_EXITED",
            "JOB_FLAG_INTERRUPT", "PAYLOAD_STASHED", "PAYLOAD_FILL", "ZERO_COPY_MIN")
CHANNEL = ("SEND", "RECV", "SENT", "FULL", "CLOSED",
           "TAG_PICKLE", "TAG_RAW", "TAG_BUFFER", "TAG_PICKLE_OOB")


def exported(module, names):
    return {name: getattr(module, name) for name in names}


def worker_constants():
    """Run in a pool worker: the same names, read from the worker-side module."""
    from interloop import _interloop as worker_native
    assert worker_native._IS_WORKER
    return (exported(worker_native, PROTOCOL),
            exported(worker_native.channel_module(), CHANNEL))


def run(coro):
    return asyncio.run(coro, loop_factory=interloop.new_event_loop)


def test_protocol_constants_are_ints_and_distinct_where_they_must_be():
    main = exported(native, PROTOCOL)
    assert all(type(v) is int for v in main.values())
    kinds = [v for k, v in main.items() if k.startswith(("COMPLETION_", "WORKER_"))]
    assert len(set(kinds)) == len(kinds)
    # Job results are below 16, control messages from workers at 16 and above.
    assert max(v for k, v in main.items() if k.startswith("COMPLETION_")) < 16
    assert min(v for k, v in main.items() if k.startswith("WORKER_")) >= 16
    assert main["PAYLOAD_STASHED"] != main["PAYLOAD_FILL"]
    # Neither marker can start a pickle (protocol >= 2 starts with 0x80).
    assert {main["PAYLOAD_STASHED"], main["PAYLOAD_FILL"]}.isdisjoint({0x80})
    assert main["ZERO_COPY_MIN"] > 0


def test_channel_constants():
    chan = exported(native._chan, CHANNEL)
    assert all(type(v) is int for v in chan.values())
    assert chan["SEND"] != chan["RECV"]
    assert len({chan["SENT"], chan["FULL"], chan["CLOSED"]}) == 3
    tags = [chan[k] for k in CHANNEL if k.startswith("TAG_")]
    assert len(set(tags)) == len(tags)


def test_channel_send_results_are_the_exported_ones():
    n = native._chan
    ch = n.new(1)
    assert n.send(ch, b"x", n.TAG_RAW, None) == n.SENT
    assert n.send(ch, b"y", n.TAG_RAW, None) == n.FULL
    n.close(ch)
    assert n.send(ch, b"z", n.TAG_RAW, None) == n.CLOSED


@needs_workers
def test_worker_side_exports_the_same_constants():
    async def main():
        async with interloop.Pool(1) as pool:
            return await pool.run(worker_constants)

    protocol, chan = run(main())
    assert protocol == exported(native, PROTOCOL)
    assert chan == exported(native._chan, CHANNEL)


# -- a Rust panic in an entry point --------------------------------------------------
# `_test_panic(message)` exists only for these tests: it panics in Rust.

def worker_panics(where):
    """Run in a pool worker: hit a panicking entry of the worker-side module or of
    its channel module; return what was raised."""
    from interloop import _interloop as worker_native
    target = worker_native if where == "module" else worker_native.channel_module()
    try:
        target._test_panic("boom in a worker")
    except SystemError as e:
        return str(e)
    return None


@pytest.mark.parametrize("where", ["module", "channel"])
def test_main_side_panic_is_a_system_error(where):
    target = native if where == "module" else native._chan
    for _ in range(2):  # the module keeps working after a panic
        with pytest.raises(SystemError, match="panic in interloop's _test_panic: boom"):
            target._test_panic("boom")
    with pytest.raises(TypeError):
        target._test_panic()


@needs_workers
@pytest.mark.parametrize("where", ["module", "channel"])
def test_worker_side_panic_is_a_system_error_of_the_job(where):
    async def main():
        async with interloop.Pool(1) as pool:
            first = await pool.run(worker_panics, where)
            second = await pool.run(worker_panics, where)  # the worker survived
            return first, second, await pool.run(sum, [1, 2])

    first, second, total = run(main())
    assert first == second == "panic in interloop's _test_panic: boom in a worker"
    assert total == 3
