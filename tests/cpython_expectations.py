"""The one list of CPython mixin tests that are not expected to pass on interloop.

Keyed by the suite name used in ``test_cpython_mixins.py`` (``events``...) or
``test_cpython_async_cases.py`` (``module.Class``, e.g. ``locks.LockTests``) and
the test method name. Each entry says what is expected (``XFAIL``: strict, so a fix shows up
as an unexpected pass and the entry must be removed; ``SKIP``: the test checks
an asyncio-internal detail, not behaviour) and why. ``versions`` limits an
entry to some CPython versions (the mixins differ slightly between them).

When a test starts passing, delete its line; when interloop regresses, fix
interloop rather than adding a line here, unless the reason is one below.
"""
from __future__ import annotations

import dataclasses
import functools
import sys

import pytest

XFAIL = "xfail"
SKIP = "skip"

#: Transports, servers, pipes, subprocess and sendfile belong to issue 3. They are
#: asyncio's classes with native hot paths (socket, datagram and pipe transports)
#: and pass; a test that stops passing while issue 3 goes on is listed with this
#: reason.
NETWORK = "network issue #3"


@dataclasses.dataclass(frozen=True)
class Expectation:
    kind: str  # XFAIL or SKIP
    reason: str
    versions: tuple[tuple[int, int], ...] = ()  # empty: every version

    def applies(self) -> bool:
        return not self.versions or sys.version_info[:2] in self.versions


def _many(names: str, kind: str, reason: str, versions=()) -> dict[str, Expectation]:
    """Entries for several tests with one reason: ``**_many("test_a test_b", XFAIL, NETWORK)``."""
    return {n: Expectation(kind, reason, versions) for n in names.split()}


# suite -> test name -> expectation
EXPECTATIONS: dict[str, dict[str, Expectation]] = {
    "events": {},
    "sock_lowlevel": {},
    "sendfile": {},
    "subprocess": {},
}


def expectations_for(suite: str) -> dict[str, Expectation]:
    """The entries of ``suite`` that apply to the running CPython."""
    return {name: e for name, e in EXPECTATIONS.get(suite, {}).items() if e.applies()}


def apply_expectations(cls, suite: str):
    """Mark the tests of ``cls`` listed for ``suite`` as strict xfail / skip.

    CPython's test functions are shared with CPython's own classes, so each
    marked test gets a wrapper of its own instead of a mark on the original.
    """
    for name, expectation in expectations_for(suite).items():
        original = getattr(cls, name, None)
        if original is None:
            raise AssertionError(f"{suite}: no test {name!r} on {cls.__name__} (stale entry?)")

        @functools.wraps(original)
        def wrapper(self, *args, __original=original, **kwargs):
            return __original(self, *args, **kwargs)

        if expectation.kind == XFAIL:
            mark = pytest.mark.xfail(reason=expectation.reason, strict=True)
        elif expectation.kind == SKIP:
            mark = pytest.mark.skip(reason=expectation.reason)
        else:
            raise AssertionError(f"unknown expectation kind {expectation.kind!r}")
        setattr(cls, name, mark(wrapper))
    return cls
