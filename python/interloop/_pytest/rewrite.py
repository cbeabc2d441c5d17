"""Assertion rewriting done once: the main interpreter's rewritten code, reused by workers.

pytest rewrites the ``assert`` statements of test modules, conftests and plugin
packages when it imports them (parse, rewrite the tree, compile), and caches the
result in ``__pycache__`` unless bytecode writing is off (``PYTHONDONTWRITEBYTECODE``,
``-B``). Each worker imports the same plugins, conftests and test modules again, so
without a cache it would rewrite them again: most of a worker session's start-up.

The main interpreter records the code objects it rewrites (``Recorder``, wrapping
``_pytest.assertion.rewrite._rewrite_test``) and hands them to the workers marshalled,
with the hash of the source they came from. A worker installs them in front of
pytest's own cache lookup (``_read_pyc``): a module whose source still has that hash
gets the recorded code, anything else is rewritten as usual. The rewrite depends on
the source and the configuration (the same command line and ini in every runner),
and marshal's format on the interpreter (the same one): the code is what the worker
would have made.
"""
from __future__ import annotations

import importlib.util
import marshal


def _rewrite_module():
    try:
        from _pytest.assertion import rewrite
    except ImportError:  # pragma: no cover - pytest always has it
        return None
    if not (callable(getattr(rewrite, "_rewrite_test", None))
            and callable(getattr(rewrite, "_read_pyc", None))):
        return None  # a pytest whose internals differ: every runner rewrites itself
    return rewrite


class Recorder:
    """Main interpreter: keeps what pytest rewrites from now on."""

    def __init__(self):
        self.code = {}  # source path -> (source hash, code object)
        self.sent = set()  # paths already handed to the workers
        self._orig = None

    def install(self) -> bool:
        rewrite = _rewrite_module()
        if rewrite is None or self._orig is not None:
            return self._orig is not None
        orig = self._orig = rewrite._rewrite_test
        code = self.code

        def _rewrite_test(fn, config):
            got = orig(fn, config)
            first, co = got
            if isinstance(first, bytes):  # pytest >= 8.4: the source hash
                digest = first
            else:  # older pytest: a stat result
                try:
                    digest = importlib.util.source_hash(fn.read_bytes())
                except OSError:
                    return got
            code[str(fn)] = (digest, co)
            return got

        rewrite._rewrite_test = _rewrite_test
        return True

    def uninstall(self):
        rewrite = _rewrite_module()
        if self._orig is not None and rewrite is not None:
            rewrite._rewrite_test = self._orig
        self._orig = None
        self.code.clear()

    def take(self, everything=False) -> dict:
        """Marshalled code of what was rewritten since the last ``take`` (or all)."""
        out = {}
        for path, (digest, co) in list(self.code.items()):
            if everything or path not in self.sent:
                try:
                    out[path] = (digest, marshal.dumps(co))
                except ValueError:  # an unmarshallable constant: leave it to the worker
                    continue
                self.sent.add(path)
        return out


def use_recorded(cache: dict) -> bool:
    """Worker: pytest takes rewritten code from ``cache`` (path -> (source hash,
    marshalled code)) when the source matches. ``cache`` may grow later."""
    rewrite = _rewrite_module()
    if rewrite is None:
        return False
    orig = rewrite._read_pyc

    def _read_pyc(source, *args, **kwargs):
        got = cache.get(str(source))
        if got is not None:
            try:
                data = source.read_bytes()
            except OSError:
                data = None
            if data is not None and importlib.util.source_hash(data) == got[0][:8]:
                try:
                    return marshal.loads(got[1])
                except (ValueError, EOFError, TypeError):
                    pass
        return orig(source, *args, **kwargs)

    rewrite._read_pyc = _read_pyc
    return True
