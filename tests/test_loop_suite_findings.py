"""Behaviours found by running other projects' suites (scripts/real-suites) and
the long runs (tests/test_long_soak.py), on both loops."""
import asyncio
import os
from unittest import mock

import pytest


@pytest.mark.parametrize("value", [0, 1, "", "yes", None])
def test_set_debug_takes_any_value_by_its_truth(loop, value):
    loop.set_debug(value)
    assert bool(loop.get_debug()) is bool(value)


@pytest.mark.parametrize("when_offset", [10, 10.5])
def test_call_at_keeps_the_type_of_when(loop, when_offset):
    when = type(when_offset)(int(loop.time()) + when_offset)
    h = loop.call_at(when, lambda: None)
    assert h.when() == when and type(h.when()) is type(when)
    assert h._when == when and type(h._when) is type(when)
    h.cancel()


def test_timers_follow_a_patched_time(loop):
    fired = []

    async def main():
        now = loop.time()
        loop.call_at(now + 3600, fired.append, "late")
        with mock.patch.object(loop, "time", return_value=now + 3601):
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert fired == ["late"]


def test_call_later_and_sleep_follow_a_patched_time_and_the_clock_after(loop):
    fired = []

    async def main():
        now = loop.time()
        with mock.patch.object(loop, "time", return_value=now + 1000):
            loop.call_later(1, fired.append, "relative to the patched time")
            await asyncio.sleep(0)
            assert fired == []
        assert "time" not in vars(loop)
        # Back on the real clock: the timer is 1000 s away and must not fire.
        await asyncio.sleep(0.01)
        assert fired == []
        loop.call_later(0.001, fired.append, "real")
        await asyncio.sleep(0.05)

    loop.run_until_complete(main())
    assert fired == ["real"]


def _fds():
    return set(os.listdir("/proc/self/fd"))


def test_close_releases_the_loops_descriptors(new_loop):
    before = _fds()
    loop = new_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert _fds() <= before


def test_a_closed_loop_refuses_threadsafe_calls_after_its_descriptors_are_gone(new_loop):
    import threading
    loop = new_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    errors = []

    def other_thread():
        try:
            loop.call_soon_threadsafe(print, "never")
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors == ["Event loop is closed"]
    with pytest.raises(RuntimeError, match="closed"):
        loop.add_reader(0, print)
    assert loop.remove_reader(0) is False
