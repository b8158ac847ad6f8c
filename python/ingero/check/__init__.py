"""`ingero check`: whether tracing works on this machine, tried for real where it can be."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ingero.check import bpf, gpu, system
from ingero.check.result import FAIL, INFO, OK, Check

GROUPS: list[Callable[[], Iterator[Check]]] = [system.checks, bpf.checks, gpu.checks]


def all_checks() -> Iterator[Check]:
    """Every check in the order they are shown; each group is one module."""
    for group in GROUPS:
        yield from group()


def tracing_works(checks: list[Check]) -> bool:
    return not any(c.status == FAIL for c in checks)


__all__ = ["FAIL", "INFO", "OK", "Check", "all_checks", "tracing_works"]
