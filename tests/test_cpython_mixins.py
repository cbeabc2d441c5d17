"""CPython's own event-loop test mixins, run against interloop.

CPython tests its loops by mixing a ``create_event_loop`` into shared test
classes (``test_events.SelectEventLoopTests`` and friends); we do the same with
``interloop.new_event_loop``. pytest collects these unittest classes.

Which tests are expected not to pass, and why, is listed in one place:
``cpython_expectations.py``. Expected failures are strict xfails.

Results on main ae34746 (merged as 6c3464b; native socket transports), pass / xfail / skip,
unchanged with native datagram and pipe transports (net-transports, both versions,
also with PYTHONASYNCIODEBUG=1):

    mixin                                   3.13          3.12
    test_events (EventLoopTestsMixin
                 + SubprocessTestsMixin)    75 / 0 / 0    74 / 0 / 0
    test_sock_lowlevel.BaseSockTestsMixin   13 / 0 / 0    13 / 0 / 0
    test_sendfile.SendfileTestsBase         20 / 0 / 0    20 / 0 / 0
    test_subprocess.SubprocessMixin         35 / 0 / 0    34 / 0 / 0
    test_cpython_async_cases.py (IsolatedAsyncioTestCase suites)
                                            244 / 0 / 0   213 / 0 / 0

    asyncio's own loop, for reference: 143 of 143 mixin tests on 3.13, 141 of
    141 on 3.12. The same counts hold with PYTHONASYNCIODEBUG=1 on 3.13.
"""
import sys

import pytest

from test.test_asyncio import test_events
from test.test_asyncio import test_sendfile
from test.test_asyncio import test_sock_lowlevel
from test.test_asyncio import test_subprocess
from test.test_asyncio import utils as test_utils

from cpython_expectations import apply_expectations

if sys.platform == "win32":  # pragma: no cover - interloop is POSIX-only for now
    pytest.skip("interloop runs on POSIX", allow_module_level=True)


def _new_loop():
    import interloop

    return interloop.new_event_loop()


class InterloopEventLoopTests(
    # Unix flavour: installs a child watcher for the subprocess tests, as
    # CPython's own SelectEventLoopTests does.
    test_events.UnixEventLoopTestsMixin,
    test_events.SubprocessTestsMixin,
    test_utils.TestCase,
):
    def create_event_loop(self):
        return _new_loop()


class InterloopSockTests(test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return _new_loop()


class InterloopSendfileTests(test_sendfile.SendfileTestsBase, test_utils.TestCase):
    def create_event_loop(self):
        return _new_loop()


class InterloopSubprocessTests(test_subprocess.SubprocessMixin, test_utils.TestCase):
    # CPython runs this mixin once per child watcher; we use the policy's
    # default watcher (pidfd where available, else threaded).
    def setUp(self):
        super().setUp()
        self.loop = _new_loop()
        self.set_event_loop(self.loop)


apply_expectations(InterloopEventLoopTests, "events")
apply_expectations(InterloopSockTests, "sock_lowlevel")
apply_expectations(InterloopSendfileTests, "sendfile")
apply_expectations(InterloopSubprocessTests, "subprocess")
