"""call_soon / call_later / call_at / call_soon_threadsafe and their handles."""
import asyncio
import contextvars
import re
import threading
import weakref

import pytest


def test_call_soon_runs_in_fifo_order_with_args(loop):
    calls = []
    for i in range(10):
        loop.call_soon(calls.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == list(range(10))


def test_call_soon_passes_positional_args(loop):
    got = []
    loop.call_soon(lambda *a: got.append(a), 1, "two", None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == [(1, "two", None)]


def test_call_soon_rejects_keyword_args(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, end="")
    with pytest.raises(TypeError):
        loop.call_soon(print, context=None, end="")
    with pytest.raises(TypeError):
        loop.call_soon()
    with pytest.raises(TypeError):
        loop.call_soon(context=None)


def test_call_soon_keywords_are_checked_after_tasks_passed_context(loop):
    # asyncio's C tasks call call_soon(step, context=ctx) with one keyword-names
    # tuple that interloop then recognises by identity: other keywords must still
    # be refused, and a context passed by name from Python still honoured.
    import contextvars

    async def step_a_few_times():
        for _ in range(3):
            await asyncio.sleep(0)

    loop.run_until_complete(step_a_few_times())
    with pytest.raises(TypeError):
        loop.call_soon(print, end="")
    with pytest.raises(TypeError):
        loop.call_soon(print, context=None, end="")
    var = contextvars.ContextVar("v", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    got = []
    loop.call_soon(lambda: got.append(var.get()), context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == ["inner"]


def test_call_soon_through_the_unbound_method_and_with_context_keyword(loop):
    import contextvars
    var = contextvars.ContextVar("v", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    got = []
    type(loop).call_soon(loop, lambda *a: got.append((a, var.get())), 1, 2, context=ctx)
    loop.call_soon(lambda: got.append(((), var.get())), context=None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == [((1, 2), "inner"), ((), "outer")]
    with pytest.raises((TypeError, AttributeError)):  # not a loop: an error, no crash
        type(loop).call_soon(object(), print)


def test_callbacks_scheduled_during_a_batch_run_on_the_next_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "scheduled-by-first")

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # The callback scheduled by `first` joins the queue after `stop`'s, so
    # it runs in the iteration after stop(): not in this run.
    assert calls == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["first", "second", "scheduled-by-first"]


def test_call_soon_runs_callback_in_a_copy_of_the_current_context(loop):
    var = contextvars.ContextVar("var", default="default")
    var.set("at-schedule-time")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("changed-in-callback")

    loop.call_soon(cb)
    var.set("after-schedule")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["at-schedule-time"]
    assert var.get() == "after-schedule"


def test_call_soon_with_explicit_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("set-by-cb")

    handle = loop.call_soon(cb, context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["in-ctx"]
    assert ctx[var] == "set-by-cb"
    assert var.get() == "default"
    assert handle.get_context() is ctx


@pytest.mark.parametrize("method", ["call_later", "call_at", "call_soon_threadsafe"])
def test_timer_and_threadsafe_callbacks_use_explicit_context(loop, method):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []
    if method == "call_soon_threadsafe":
        handle = loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
    else:
        when = 0 if method == "call_later" else loop.time()
        handle = getattr(loop, method)(when, lambda: seen.append(var.get()), context=ctx)
    assert handle.get_context() is ctx
    loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == ["in-ctx"]


def test_call_later_orders_by_deadline_not_by_scheduling(loop):
    calls = []
    # call_at from one base time: deadlines do not depend on how long the
    # scheduling calls themselves take.
    now = loop.time()
    loop.call_at(now + 0.03, calls.append, 3)
    loop.call_at(now + 0.01, calls.append, 1)
    loop.call_at(now + 0.02, calls.append, 2)
    loop.call_at(now + 0.04, loop.stop)
    loop.run_forever()
    assert calls == [1, 2, 3]


def test_timers_with_same_deadline_all_run(loop):
    # Their relative order is undefined (asyncio's heap does not keep it).
    calls = []
    when = loop.time() + 0.01
    for i in range(20):
        loop.call_at(when, calls.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert sorted(calls) == list(range(20))


def test_call_later_waits_at_least_the_delay(loop):
    # Measured with the loop's own clock, against the handle's deadline:
    # the callback never runs before its deadline.
    ran_at = []
    handle = loop.call_later(0.05, lambda: ran_at.append(loop.time()))
    loop.call_later(0.06, loop.stop)
    loop.run_forever()
    assert len(ran_at) == 1
    assert ran_at[0] >= handle.when()


def test_call_later_negative_or_zero_delay_runs_without_waiting(loop):
    calls = []
    loop.call_later(0, calls.append, "zero")
    loop.call_later(-1, calls.append, "negative")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    # A negative delay is an earlier deadline than a zero delay.
    assert calls == ["negative", "zero"]


def test_call_at_uses_loop_time(loop):
    calls = []
    loop.call_at(loop.time() + 0.01, calls.append, "x")
    loop.call_at(loop.time() + 0.02, loop.stop)
    loop.run_forever()
    assert calls == ["x"]


def test_timer_handle_when_is_the_deadline(loop):
    when = loop.time() + 100
    assert loop.call_at(when, print).when() == when
    later = loop.call_later(50, print)
    assert later.when() >= loop.time() + 49
    assert later.when() <= loop.time() + 50


def test_cancelled_timer_does_not_run(loop):
    calls = []
    handle = loop.call_later(0.01, calls.append, "cancelled")
    loop.call_later(0.02, calls.append, "kept")
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert calls == ["kept"]


def test_cancelled_call_soon_does_not_run(loop):
    calls = []
    handle = loop.call_soon(calls.append, "cancelled")
    loop.call_soon(calls.append, "kept")
    handle.cancel()
    handle.cancel()  # idempotent
    assert handle.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["kept"]


def test_callback_can_cancel_a_later_ready_callback(loop):
    calls = []
    handles = []
    loop.call_soon(lambda: handles[0].cancel())
    handles.append(loop.call_soon(calls.append, "victim"))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == []


def test_cancelling_many_timers_leaves_the_rest(loop):
    calls = []
    handles = [loop.call_later(0.001 * (i % 5), calls.append, i) for i in range(200)]
    for h in handles[::2]:
        h.cancel()
    loop.run_until_complete(asyncio.sleep(0.02))
    assert sorted(calls) == list(range(1, 200, 2))


def test_handle_is_not_cancelled_after_it_ran(loop):
    handle = loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not handle.cancelled()
    handle.cancel()  # cancelling a handle that already ran is harmless
    assert handle.cancelled()


def _callback_for_repr(*args):
    pass


def test_handle_repr(loop):
    h = loop.call_soon(_callback_for_repr, 1, "a")
    r = repr(h)
    assert r.startswith("<Handle") and r.endswith(">")
    assert "_callback_for_repr" in r
    h.cancel()
    assert repr(h).startswith("<Handle cancelled")


def test_handle_repr_shows_args_in_debug_mode(loop):
    loop.set_debug(True)
    h = loop.call_soon(_callback_for_repr, 1, "a")
    assert "_callback_for_repr(1, 'a')" in repr(h)
    # ...and where it was created.
    assert "test_loop_callbacks.py" in repr(h)
    h.cancel()


def test_timer_handle_repr(loop):
    th = loop.call_later(10, _callback_for_repr)
    r = repr(th)
    assert r.startswith("<TimerHandle") and r.endswith(">")
    assert re.search(r"when=\d", r)
    assert "_callback_for_repr" in r
    th.cancel()
    assert repr(th).startswith("<TimerHandle cancelled")


def test_handles_have_the_asyncio_handle_api(loop):
    # Like uvloop's, interloop's handles need not be asyncio.Handle
    # instances; they must offer the same public methods.
    h = loop.call_soon(print)
    th = loop.call_later(1, print)
    tsh = loop.call_soon_threadsafe(print)
    for handle in (h, th, tsh):
        assert handle.get_context() is not None
        assert handle.cancelled() is False
        handle.cancel()
        assert handle.cancelled() is True
    assert isinstance(th.when(), float)


def test_handles_are_weak_referenceable(loop):
    h = loop.call_soon(print)
    th = loop.call_later(1, print)
    assert weakref.ref(h)() is h
    assert weakref.ref(th)() is th
    h.cancel()
    th.cancel()


def test_timer_handles_compare_by_deadline(loop):
    now = loop.time()
    a = loop.call_at(now + 10, print)
    b = loop.call_at(now + 20, print)
    assert a < b and b > a and a <= b and b >= a
    assert a != b
    a.cancel()
    b.cancel()


def test_time_is_monotonic_and_follows_time_monotonic(loop):
    import time

    t0 = loop.time()
    m0 = time.monotonic()
    loop.run_until_complete(asyncio.sleep(0.01))
    t1 = loop.time()
    m1 = time.monotonic()
    assert t1 >= t0
    # asyncio's loop clock is time.monotonic(); a drop-in must use the same
    # clock, or deadlines computed by libraries drift.
    assert m0 - 1 <= t0 <= m1 + 1
    assert m0 - 1 <= t1 <= m1 + 1


def test_call_soon_threadsafe_wakes_a_loop_blocked_without_timers(loop):
    fut = loop.create_future()
    started = threading.Event()

    def worker():
        started.wait()
        loop.call_soon_threadsafe(fut.set_result, "woken")

    thread = threading.Thread(target=worker)
    thread.start()
    loop.call_soon(started.set)
    try:
        assert loop.run_until_complete(fut) == "woken"
    finally:
        thread.join()


def test_call_soon_threadsafe_from_many_threads(loop):
    n_threads, per_thread = 16, 200
    received = []
    done = loop.create_future()
    barrier = threading.Barrier(n_threads)

    def record(tid, i):
        received.append((tid, i))
        if len(received) == n_threads * per_thread:
            done.set_result(None)

    def worker(tid):
        barrier.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, tid, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    try:
        loop.run_until_complete(done)
    finally:
        for t in threads:
            t.join()
    assert len(received) == n_threads * per_thread
    # Per thread, callbacks run in the order that thread scheduled them.
    for tid in range(n_threads):
        assert [i for t, i in received if t == tid] == list(range(per_thread))


@pytest.mark.parametrize(
    "schedule",
    [
        lambda loop: loop.call_soon(print),
        lambda loop: loop.call_later(1, print),
        lambda loop: loop.call_at(loop.time() + 1, print),
        lambda loop: loop.call_soon_threadsafe(print),
        lambda loop: loop.run_forever(),
    ],
    ids=["call_soon", "call_later", "call_at", "call_soon_threadsafe", "run_forever"],
)
def test_scheduling_on_a_closed_loop_raises_runtime_error(new_loop, schedule):
    loop = new_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        schedule(loop)


def test_run_until_complete_on_closed_loop_raises(new_loop):
    loop = new_loop()
    loop.close()

    async def coro():
        pass

    c = coro()
    with pytest.raises(RuntimeError):
        loop.run_until_complete(c)
    c.close()


@pytest.mark.parametrize(
    "schedule",
    [
        lambda loop, cb: loop.call_soon(cb),
        lambda loop, cb: loop.call_later(0, cb),
        lambda loop, cb: loop.call_at(loop.time(), cb),
        lambda loop, cb: loop.call_soon_threadsafe(cb),
    ],
    ids=["call_soon", "call_later", "call_at", "call_soon_threadsafe"],
)
@pytest.mark.parametrize("bad", [None, 42, "not callable"])
def test_non_callable_callback_raises_type_error_in_debug(loop, schedule, bad):
    # asyncio checks callbacks only in debug mode (_check_callback).
    loop.set_debug(True)
    with pytest.raises(TypeError):
        schedule(loop, bad)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda loop, cb: loop.call_soon(cb),
        lambda loop, cb: loop.call_later(0, cb),
        lambda loop, cb: loop.call_at(loop.time(), cb),
        lambda loop, cb: loop.call_soon_threadsafe(cb),
    ],
    ids=["call_soon", "call_later", "call_at", "call_soon_threadsafe"],
)
def test_coroutine_function_as_callback_raises_type_error_in_debug(loop, schedule):
    async def coro_fn():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError, match="coroutine"):
        schedule(loop, coro_fn)
    coro = coro_fn()
    with pytest.raises(TypeError, match="coroutine"):
        schedule(loop, coro)
    coro.close()


def test_call_later_requires_a_number(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", print)
    with pytest.raises(TypeError):
        loop.call_at(None, print)


def test_expired_timers_run_in_deadline_order(loop):
    import random

    rng = random.Random(1234)
    now = loop.time()
    deadlines = rng.sample(range(1, 100_000), 1000)
    calls = []
    for d in deadlines:
        # All in the past: they expire together and must run by deadline.
        loop.call_at(now - d / 100_000, calls.append, d)
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == sorted(deadlines, reverse=True)


def test_timer_cancelled_by_a_timer_expiring_in_the_same_batch_does_not_run(loop):
    ran = []
    handles = {}

    def cb(name, other):
        ran.append(name)
        handles[other].cancel()

    when = loop.time() + 0.005
    handles["a"] = loop.call_at(when, cb, "a", "b")
    handles["b"] = loop.call_at(when, cb, "b", "a")
    loop.run_until_complete(asyncio.sleep(0.02))
    assert len(ran) == 1


class _CustomBaseException(BaseException):
    pass


def test_other_base_exceptions_in_callback_go_to_handler(loop):
    # asyncio re-raises only SystemExit and KeyboardInterrupt out of the loop.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def raiser():
        raise _CustomBaseException()

    loop.call_soon(raiser)
    loop.call_soon(calls.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["after"]
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], _CustomBaseException)


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
@pytest.mark.parametrize("method", ["call_soon", "call_later"])
def test_cancel_releases_the_callback_and_args(loop, debug, method):
    import gc

    loop.set_debug(debug)

    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    if method == "call_soon":
        handle = loop.call_soon(print, payload)
    else:
        handle = loop.call_later(3600, print, payload)
    del payload
    gc.collect()
    assert ref() is not None  # the pending handle keeps it alive
    handle.cancel()
    gc.collect()
    assert ref() is None
    if debug:
        # ...but the repr still tells what the handle was.
        assert "cancelled" in repr(handle)
        assert "print(" in repr(handle)


def test_ran_handles_do_not_keep_args_alive_once_dropped(loop):
    import gc

    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    loop.call_soon(lambda p: None, payload)
    del payload
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_closed_loop_is_garbage_collected(loop_kind):
    import gc

    from conftest import make_loop

    loop = make_loop(loop_kind)
    loop.call_soon(print)  # a pending handle referencing the loop
    loop.call_later(10, print)
    loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None


def test_unclosed_loop_that_ran_callbacks_is_garbage_collected(loop_kind):
    # interloop keeps emptied handles for reuse, and they refer to their loop: the
    # GC must still see that cycle when the loop is dropped without close().
    import gc
    import warnings

    from conftest import make_loop

    loop = make_loop(loop_kind)
    for _ in range(5):
        loop.call_soon(len, ())
    loop.call_soon(loop.stop)
    loop.run_forever()
    # Left queued: a future's done-callback (a handle-less entry on interloop),
    # whose future refers back to the loop.
    fut = loop.create_future()
    fut.add_done_callback(lambda f: None)
    fut.set_result(None)
    del fut
    ref = weakref.ref(loop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # "unclosed event loop"
        del loop
        gc.collect()
    assert ref() is None


def test_closed_loop_with_tasks_is_garbage_collected(loop_kind):
    # interloop keeps the keyword arguments of its plain create_task ({"loop":
    # loop}) between calls: that cycle must not keep a closed loop alive.
    import gc

    from conftest import make_loop

    async def nothing():
        return 1

    loop = make_loop(loop_kind)
    for _ in range(3):
        assert loop.run_until_complete(loop.create_task(nothing())) == 1
    loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None


def test_call_soon_threadsafe_uses_the_calling_threads_context(loop):
    var = contextvars.ContextVar("var", default="default")
    fut = loop.create_future()

    def worker():
        var.set("thread")
        loop.call_soon_threadsafe(lambda: fut.set_result(var.get()))

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert loop.run_until_complete(fut) == "thread"
    finally:
        thread.join()


def test_call_soon_threadsafe_before_run_is_kept(loop):
    calls = []

    def worker():
        loop.call_soon_threadsafe(calls.append, "from thread")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["from thread"]


def test_loop_repr_shows_state(loop):
    seen = []
    loop.call_soon(lambda: seen.append(repr(loop)))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert "running=True" in seen[0]
    assert "running=False" in repr(loop)
    assert "closed=False" in repr(loop)
    assert f"debug={loop.get_debug()}" in repr(loop)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda loop: loop.call_soon(print),
        lambda loop: loop.call_later(1, print),
        lambda loop: loop.call_at(loop.time() + 1, print),
    ],
    ids=["call_soon", "call_later", "call_at"],
)
def test_non_threadsafe_scheduling_from_other_thread_in_debug_raises(loop, schedule):
    loop.set_debug(True)
    errors = []

    def worker():
        try:
            schedule(loop)
        except RuntimeError as exc:
            errors.append(exc)

    async def main():
        t = threading.Thread(target=worker)
        t.start()
        await loop.run_in_executor(None, t.join)

    loop.run_until_complete(main())
    assert len(errors) == 1
    assert "Non-thread-safe operation" in str(errors[0])


def _spin_forever(loop, counter):
    """A callback that reschedules itself: the ready queue is never empty."""

    def spin():
        counter[0] += 1
        loop.call_soon(spin)

    loop.call_soon(spin)


def test_timers_are_not_starved_by_a_busy_ready_queue(loop):
    counter = [0]
    _spin_forever(loop, counter)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()  # returns only if the timer got its turn
    assert counter[0] > 0


def test_threadsafe_callbacks_are_not_starved_by_a_busy_ready_queue(loop):
    counter = [0]
    _spin_forever(loop, counter)
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(loop.stop,))
    loop.call_soon(thread.start)
    try:
        loop.run_forever()
    finally:
        thread.join()
    assert counter[0] > 0


@pytest.mark.parametrize("delay", [1e9, 1e12, float("inf")], ids=["1e9", "1e12", "inf"])
def test_far_future_timer_does_not_disturb_the_loop(loop, delay):
    # asyncio caps its poll timeout; a native clock conversion must not
    # overflow or panic on huge deadlines.
    calls = []
    far = loop.call_later(delay, calls.append, "far")
    assert loop.run_until_complete(asyncio.sleep(0.001, result="ok")) == "ok"
    assert calls == []
    assert far.when() >= loop.time()
    far.cancel()


def test_far_past_timer_runs_at_once(loop):
    calls = []
    loop.call_later(-1e300, calls.append, "past")
    loop.call_at(float("-inf"), calls.append, "-inf")
    loop.run_until_complete(asyncio.sleep(0))
    assert sorted(calls) == ["-inf", "past"]


def test_sleep_zero_round_robins_tasks(loop):
    order = []

    async def worker(name):
        for i in range(3):
            order.append(f"{name}{i}")
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"), worker("c"))

    loop.run_until_complete(main())
    assert order == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_future_done_callbacks_run_in_registration_order(loop):
    fut = loop.create_future()
    order = []
    for i in range(5):
        fut.add_done_callback(lambda f, i=i: order.append(i))
    loop.call_soon(fut.set_result, None)
    loop.run_until_complete(fut)
    loop.run_until_complete(asyncio.sleep(0))
    assert order == [0, 1, 2, 3, 4]


def test_close_while_another_thread_schedules_threadsafe(new_loop):
    # Racing call_soon_threadsafe against close(): the thread sees either
    # success or RuntimeError('Event loop is closed'), never anything else.
    loop = new_loop()
    outcome = []
    started = threading.Event()

    def spammer():
        started.set()
        while True:
            try:
                loop.call_soon_threadsafe(int)
            except RuntimeError as exc:
                outcome.append(exc)
                return
            except BaseException as exc:  # pragma: no cover - the bug we look for
                outcome.append(exc)
                return

    thread = threading.Thread(target=spammer)
    thread.start()
    started.wait(10)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError)
    assert "closed" in str(outcome[0])


def _schedule_for_repr(loop, method):
    # One line for both loops: the "created at file:line" parts then agree.
    if method == "call_soon":
        return loop.call_soon(_callback_for_repr, 1, "a")
    if method == "call_soon_threadsafe":
        return loop.call_soon_threadsafe(_callback_for_repr, 1, "a")
    assert method == "call_at"
    return loop.call_at(123456.5, _callback_for_repr, 1, "a")


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_at"])
def test_handle_repr_is_asyncios_exactly(loop, debug, method):
    reference = asyncio.SelectorEventLoop()
    try:
        for lp in (loop, reference):
            lp.set_debug(debug)
        ours, theirs = _schedule_for_repr(loop, method), _schedule_for_repr(reference, method)
        assert repr(ours) == repr(theirs)
        ours.cancel()
        theirs.cancel()
        assert repr(ours) == repr(theirs)
    finally:
        reference.close()


def test_slow_callback_log_message_is_asyncios(loop, caplog):
    # Tools grep for this line; it must read the same on both loops.
    import logging
    import time

    loop.set_debug(True)
    loop.slow_callback_duration = 0.0
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.001)
        loop.call_soon(loop.stop)
        loop.run_forever()
    messages = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert messages
    assert re.fullmatch(
        r"Executing <Handle sleep\(0\.001\) created at .*test_loop_callbacks\.py:\d+> "
        r"took \d+\.\d{3} seconds",
        messages[0],
    ), messages[0]


def test_handle_kept_after_running_is_not_reused_for_new_callbacks(loop):
    # Cancelling a handle that already ran must not touch other callbacks,
    # however the loop recycles its handle objects.
    calls = []
    old = [loop.call_soon(calls.append, f"old{i}") for i in range(10)]
    loop.call_soon(loop.stop)
    loop.run_forever()
    new = [loop.call_soon(calls.append, f"new{i}") for i in range(10)]
    assert not {id(h) for h in old} & {id(h) for h in new}
    for h in old:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [f"old{i}" for i in range(10)] + [f"new{i}" for i in range(10)]


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
@pytest.mark.parametrize("method", ["call_soon", "call_later"])
def test_weakly_referenced_handle_dies_after_running(loop, method, debug):
    import gc

    loop.set_debug(debug)

    def schedule(cb, *args):
        if method == "call_soon":
            return loop.call_soon(cb, *args)
        return loop.call_later(0, cb, *args)

    refs = [weakref.ref(schedule(int)) for _ in range(10)]
    loop.run_until_complete(asyncio.sleep(0.001))
    # New callbacks: a loop that recycled the dead handles would revive them.
    calls = []
    for i in range(10):
        schedule(calls.append, i)
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    for handle in alive:
        handle.cancel()  # what weakref-holding code does with a live handle
    loop.run_until_complete(asyncio.sleep(0.001))
    assert calls == list(range(10))
    assert alive == []


def test_current_task_is_none_in_plain_callbacks(loop):
    seen = []

    async def main():
        loop.call_soon(lambda: seen.append(asyncio.current_task(loop)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return asyncio.current_task(loop)

    task = loop.create_task(main())
    assert loop.run_until_complete(task) is task
    assert seen == [None]


@pytest.mark.parametrize("state", ["ran", "cancelled"])
@pytest.mark.parametrize("method", ["call_soon", "call_later"])
def test_reference_cycle_through_a_handles_context_is_collected(loop, method, state):
    # A web framework keeps the request in a ContextVar; the request keeps a
    # timer handle made in that context: request -> handle -> context ->
    # request. The cycle collector must be able to free it.
    import gc

    var = contextvars.ContextVar("request")

    class Request:
        pass

    request = Request()
    ctx = contextvars.copy_context()
    ctx.run(var.set, request)
    if method == "call_soon":
        request.handle = loop.call_soon(int, context=ctx)
    else:
        request.handle = loop.call_later(0, int, context=ctx)
    if state == "cancelled":
        request.handle.cancel()
    loop.run_until_complete(asyncio.sleep(0.001))
    ref = weakref.ref(request)
    del request, ctx
    gc.collect()
    assert ref() is None


def test_reference_cycle_through_a_pending_timers_callback_is_collected(new_loop):
    # obj -> handle -> bound method -> obj, still scheduled when the loop
    # is closed (close() drops the loop's own references).
    import gc

    loop = new_loop()

    class Obj:
        def __init__(self):
            self.handle = loop.call_later(3600, self.on_timeout)

        def on_timeout(self):
            pass

    ref = weakref.ref(Obj())
    loop.close()
    gc.collect()
    assert ref() is None


def test_a_callbacks_result_is_released_outside_its_context(loop):
    # asyncio runs a callback with `context.run(callback, *args)` and drops the
    # result after leaving the context: a finalizer of the result sees the
    # context the loop runs in, not the callback's. Both for a handle from
    # call_soon and for a future's done-callback (queued without a handle on
    # interloop).
    var = contextvars.ContextVar("var", default="loop")
    seen = []

    class Result:
        def __del__(self):
            seen.append(var.get())

    def callback(*_):
        var.set("callback")
        return Result()

    loop.call_soon(callback)
    fut = loop.create_future()
    fut.add_done_callback(callback)
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["loop", "loop"]
