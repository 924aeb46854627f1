"""`python -m strongroom`: the same commands as the `strongroom` script."""

from __future__ import annotations

import sys

from strongroom.cli import main

if __name__ == "__main__":  # importing this module (a doc tool might) runs nothing
    sys.exit(main())
