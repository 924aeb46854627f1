"""Fixtures for every test folder: the real S3 store (see s3_server.py)."""

from s3_server import s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]
