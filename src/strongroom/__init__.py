"""Strongroom: a self-hostable file service that keeps each request inside its space."""

__version__ = "0.1.0"
