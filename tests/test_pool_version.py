"""CPython 3.12 before 3.12.4 crashes at exit after a sub-interpreter imports asyncio
(gh-112140): there, creating a pool must fail with a clear error instead."""
import asyncio
import sys

import pytest

import interloop


@pytest.mark.skipif(not ((3, 12) <= sys.version_info < (3, 12, 4)),
                    reason="only CPython 3.12.0-3.12.3 refuse to create pools")
def test_pool_refuses_on_broken_312():
    with pytest.raises(RuntimeError, match=r"3\.12\.4.*gh-112140"):
        interloop.Pool(1)
    with pytest.raises(RuntimeError, match="gh-112140"):
        interloop.InterpreterExecutor(1)

    async def main():
        with pytest.raises(RuntimeError, match="gh-112140"):
            await interloop.spawn(print)
    asyncio.run(main())


def test_public_exports():
    for name in ("Pool", "spawn", "InterpreterExecutor", "RemoteError"):
        assert hasattr(interloop, name)
    assert issubclass(interloop.RemoteError, Exception)
