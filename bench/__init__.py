"""Strongroom's benchmark: containment, token checks, serving rate, large transfers.

Run everything with `python -m bench` (or `make bench`); `--quick` is a short smoke
profile and `--only containment|tokens|serving|large` picks parts. Every figure is the
median of several rounds measured in the same run as its peers, and every ratio is
computed within that run, so the numbers compare like with like on one machine.
See `bench/README.md` for the figures and how to reproduce them.
"""

__all__: list[str] = []
