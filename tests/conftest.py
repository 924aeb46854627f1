"""Fixtures for every test folder: the real S3 store (see s3_server.py)."""

import os

from s3_server import s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]

# tests/proof holds the long adversarial families (fuzzing, crashes, load, abuse).
# `make proof` runs them with SR_PROOF_PROFILE set; a plain `pytest` leaves them out.
collect_ignore = [] if os.environ.get("SR_PROOF_PROFILE") else ["proof"]
