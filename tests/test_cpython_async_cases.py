"""CPython's IsolatedAsyncioTestCase-based asyncio tests, run on interloop.

These modules test asyncio's primitives (task groups, timeouts, wait_for,
locks, queues, to_thread, staggered race...) on whatever loop the running
``asyncio.Runner`` makes. Each class is subclassed here with interloop's
policy installed for the duration of the class, so the Runner makes interloop
loops. Expected failures live in ``cpython_expectations.py`` as for the mixins.

Results: see the report at the top of ``test_cpython_mixins.py``.
"""
import asyncio
import importlib
import sys
import unittest
import warnings

from cpython_expectations import apply_expectations
from test.test_asyncio import utils as test_utils

_MODULES = (
    "test_taskgroups",
    "test_timeouts",
    "test_waitfor",
    "test_locks",
    "test_queues",
    "test_threads",
    "test_futures2",
    "test_staggered",  # 3.13+
    "test_streams",  # StreamTests makes its loops with asyncio.new_event_loop()
)


class _InterloopPolicyMixin:
    """Installs interloop's policy around the class's tests."""

    @classmethod
    def setUpClass(cls):
        import interloop

        cls.__saved_policy = asyncio.get_event_loop_policy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(interloop.EventLoopPolicy())
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(cls.__saved_policy)

    async def asyncSetUp(self):
        import interloop

        # Proof that the test really runs on interloop.
        assert isinstance(asyncio.get_running_loop(), interloop.Loop)
        await super().asyncSetUp()

    def setUp(self):
        super().setUp()
        import interloop

        # The same proof for classic test cases that make their loop in setUp
        # (test_utils.TestCase subclasses keep it as `self.loop`).
        loop = getattr(self, "loop", None)
        assert loop is None or isinstance(loop, interloop.Loop), loop


def _interloop_classes():
    for module_name in _MODULES:
        try:
            module = importlib.import_module(f"test.test_asyncio.{module_name}")
        except ModuleNotFoundError:
            if sys.version_info >= (3, 13):
                raise
            continue  # not shipped with this CPython
        for name, obj in sorted(vars(module).items()):
            if (
                isinstance(obj, type)
                and (issubclass(obj, unittest.IsolatedAsyncioTestCase) or issubclass(obj, test_utils.TestCase))
                and obj.__module__ == module.__name__
                and not getattr(obj, "__unittest_skip__", False)
            ):
                suite = module_name.removeprefix("test_")
                cls = type(f"Interloop_{suite}_{name}", (_InterloopPolicyMixin, obj), {})
                cls.__module__ = __name__
                yield suite, name, cls


for _suite, _name, _cls in _interloop_classes():
    apply_expectations(_cls, f"{_suite}.{_name}")
    globals()[_cls.__name__] = _cls
del _suite, _name, _cls
