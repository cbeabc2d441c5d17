"""``interloop serve``: an ASGI server whose HTTP/1.1 layer is written in Rust
(``src/serve``) and whose workers are own-GIL sub-interpreters of one process
(docs/design-serve.md).

    interloop serve myapp:app --workers 4        # or: python -m interloop serve ...
    interloop.serve("myapp:app", workers=4)      # from a program
"""
from .run import DEFAULTS, AppLoadError, serve

__all__ = ["DEFAULTS", "AppLoadError", "serve"]
