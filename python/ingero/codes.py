"""The source/op code tables, as defined once in Rust (ingero-common)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ingero import _core


@dataclass(frozen=True)
class Source:
    id: int
    name: str
    description: str


@dataclass(frozen=True)
class Op:
    source: int
    id: int
    name: str
    description: str
    arg0: str
    arg1: str


@cache
def sources() -> tuple[Source, ...]:
    return tuple(Source(*row) for row in _core.sources())


@cache
def ops() -> tuple[Op, ...]:
    return tuple(Op(*row) for row in _core.ops())


def op_named(name: str) -> Op:
    """The op called `name` (case-insensitive), e.g. ``cudaMalloc``."""
    wanted = name.lower()
    for op in ops():
        if op.name.lower() == wanted:
            return op
    raise KeyError(name)


def source_named(name: str) -> Source:
    wanted = name.upper()
    for source in sources():
        if source.name == wanted:
            return source
    raise KeyError(name)
