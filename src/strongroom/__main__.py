"""`python -m strongroom`: the same commands as the `strongroom` script."""

from __future__ import annotations

import sys

from strongroom.cli import main

sys.exit(main())
