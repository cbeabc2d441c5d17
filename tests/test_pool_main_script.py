"""Scripts as new users write them, run in a subprocess: what a pool worker does with
the caller's main script, which it runs as ``__mp_main__`` to find the functions
sent to it."""
import sys

import pytest

import test_pool

pytestmark = test_pool.pytestmark[0]  # CPython >= 3.12.4 (the scripts choose their loop)

UNGUARDED = """
import asyncio
import interloop

async def double(x):
    return 2 * x

async def main():
    async with interloop.Pool(2) as pool:
        print("result", await pool.run(double, 21))

{entry}
"""


@pytest.mark.parametrize("entry", [
    "interloop.run(main())",
    "asyncio.run(main(), loop_factory=interloop.new_event_loop)",
    "interloop.install()\nasyncio.run(main())",
])
def test_unguarded_entry_point_gives_one_clear_error(tmp_path, entry):
    p = test_pool.run_script(tmp_path, UNGUARDED.format(entry=entry))
    assert p.returncode == 1, p.stderr
    assert "result" not in p.stdout
    # The caller's traceback ends with the one error that says what to do.
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("interloop._wire.UnguardedMainError: "), p.stderr
    assert 'if __name__ == "__main__":' in last
    assert "script.py" in last
    assert "cannot be called from a running event loop" not in last
    if entry.startswith("interloop.run"):
        # interloop.run closes the coroutine it will not run.
        assert "never awaited" not in p.stderr, p.stderr


def test_guarded_entry_point_runs(tmp_path):
    src = UNGUARDED.format(entry='if __name__ == "__main__":\n    interloop.run(main())')
    p = test_pool.run_script(tmp_path, src)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["result", "42"]


def test_top_level_pool_in_an_unguarded_script(tmp_path):
    src = """
    import interloop

    def double(x):
        return 2 * x

    ex = interloop.InterpreterExecutor(workers=1)
    print("result", ex.submit(double, 21).result(timeout=30))
    ex.shutdown()
    """
    p = test_pool.run_script(tmp_path, src)
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("interloop._wire.UnguardedMainError: interloop.Pool()"), p.stderr


REFUSING = """
import asyncio
import interloop
import httptools                      # refuses sub-interpreters (its parser extension)
import _testsinglephase               # CPython's single-phase-init test extension
from httptools import parse_url       # a name from a module that refuses them

async def double(x):
    return 2 * x

def plain(x):
    return x + 1

async def uses_httptools():
    return httptools.parse_url(b"http://h/p").path

async def uses_imported_name():
    return parse_url(b"http://h/p").path

async def main():
    async with interloop.Pool(2) as pool:
        print("double", await pool.run(double, 21))
        print("plain", await pool.run(plain, 1))
        print("local", uses_httptools.__module__, await uses_httptools())
        for fn in (uses_httptools, uses_imported_name):
            try:
                await pool.run(fn)
            except ImportError as e:
                print("refused", fn.__name__, type(e).__name__, e.name, "|", e)

if __name__ == "__main__":
    interloop.run(main())
"""


def test_script_importing_an_extension_that_refuses_subinterpreters(tmp_path):
    pytest.importorskip("httptools")
    pytest.importorskip("_testsinglephase")
    p = test_pool.run_script(tmp_path, REFUSING)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:3] == ["double 42", "plain 2", "local __main__ b'/p'"], p.stdout
    refused = lines[3:]
    assert [line.split(" |")[0] for line in refused] == [
        "refused uses_httptools ImportError httptools",
        "refused uses_imported_name ImportError httptools",
    ], p.stdout
    for line in refused:
        assert "does not support loading in subinterpreters" in line
        assert "interloop: pool workers are sub-interpreters" in line
