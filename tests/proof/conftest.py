"""The proof families reuse the HTTP tests' live-server harness (tests/api)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
