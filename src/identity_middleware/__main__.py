"""``python -m identity_middleware``: the same command line as ``identity-middleware``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
