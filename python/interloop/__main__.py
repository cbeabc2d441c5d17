"""``python -m interloop serve module:app``: see ``interloop._serve.cli``."""
import sys

from ._serve.cli import main

sys.exit(main())
