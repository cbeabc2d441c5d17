"""The wire module: its numbers, its completion decision, and how workers load it."""
import asyncio
import sys

import pytest

import interloop
from interloop import _interloop, _wire

COMPLETION_KINDS = ("COMPLETION_OK", "COMPLETION_ERR", "COMPLETION_REMOTE_ERR",
                    "COMPLETION_CANCELLED", "COMPLETION_LOST", "COMPLETION_FILLED")
CONTROL_KINDS = ("WORKER_READY", "WORKER_FAILED", "WORKER_EXITED")


def test_protocol_numbers_are_the_native_modules():
    for name in COMPLETION_KINDS + CONTROL_KINDS + (
            "JOB_FLAG_INTERRUPT", "PAYLOAD_STASHED", "PAYLOAD_FILL", "ZERO_COPY_MIN"):
        assert getattr(_wire, name) == getattr(_interloop, name), name
    # `classify` tells control messages from completions by this ordering.
    assert max(getattr(_wire, k) for k in COMPLETION_KINDS) < _wire.WORKER_READY
    assert min(getattr(_wire, k) for k in CONTROL_KINDS) == _wire.WORKER_READY
    # Stashed data must not be mistaken for a pickle (0x80) or empty data (None).
    assert {_wire.PAYLOAD_STASHED, _wire.PAYLOAD_FILL}.isdisjoint({0x80})


def _fill_data(sid=7, bytearray_=False):
    return bytes((_wire.PAYLOAD_FILL,)) + sid.to_bytes(8, "little") + bytes((bytearray_,))


@pytest.mark.parametrize("kind,data,action", [
    ("WORKER_READY", b"", _wire.CONTROL),
    ("WORKER_FAILED", b"preload failed", _wire.CONTROL),
    ("WORKER_EXITED", b"", _wire.CONTROL),
    ("COMPLETION_FILLED", b"", _wire.TAKE_FILLED),
    ("COMPLETION_OK", _fill_data(), _wire.START_FILL),
    ("COMPLETION_OK", b"", _wire.DECODE),  # None
    ("COMPLETION_OK", b"\x80\x05N.", _wire.DECODE),  # a pickle
    ("COMPLETION_OK", bytes((_wire.PAYLOAD_STASHED,)) + bytes(8) + b"\x80\x05N.", _wire.DECODE),
    ("COMPLETION_ERR", b"\x80\x05N.", _wire.DECODE),
    ("COMPLETION_REMOTE_ERR", b"\x80\x05N.", _wire.DECODE),
    ("COMPLETION_CANCELLED", b"", _wire.DECODE),
    ("COMPLETION_LOST", b"worker 0 stopped", _wire.DECODE),
])
def test_classify_names_one_action_per_completion(kind, data, action):
    assert _wire.classify(getattr(_wire, kind), data) is action


def test_fill_args_read_a_fill_marker():
    assert _wire.fill_args(_fill_data(sid=2**40 + 3)) == (2**40 + 3, False)
    assert _wire.fill_args(_fill_data(sid=1, bytearray_=True)) == (1, True)


@pytest.mark.parametrize("kind,exc_type", [
    ("COMPLETION_CANCELLED", asyncio.CancelledError),
    ("COMPLETION_LOST", RuntimeError),
])
def test_decode_raises_for_failed_jobs(kind, exc_type):
    with pytest.raises(exc_type):
        _wire.decode(getattr(_wire, kind), b"worker 0 stopped while running this job")


def test_decode_rebuilds_a_remote_error_with_its_traceback():
    kind, data = _wire.encode_error(ValueError("bad"))
    assert kind == _wire.COMPLETION_ERR
    with pytest.raises(ValueError, match="bad") as info:
        _wire.decode(kind, data)
    assert isinstance(info.value.__cause__, _wire.RemoteTraceback)


@pytest.mark.skipif(sys.version_info < (3, 12, 4),
                    reason="pool workers need CPython >= 3.12.4 (gh-112140)")
def test_a_worker_starts_without_importing_the_package():
    """A worker runs `_wire` and `_worker` without importing `interloop` (which would
    import asyncio and the whole caller-side API at start-up)."""
    probe = "sorted(m for m in __import__('sys').modules if m.split('.')[0] == 'interloop')"

    async def main():
        async with interloop.Pool(1) as pool:
            return await pool.run(eval, probe)

    assert asyncio.run(main()) == ["interloop._interloop", "interloop._wire", "interloop._worker"]
