"""How much one tool result may say: a byte cap well inside an agent's context budget.

A token is about four bytes of JSON, so 36 KB of structured content and at most 24 KB of
text beside it come to about 15,000 tokens: well inside the 25,000 tokens clients allow
one result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

MAX_RESULT_BYTES = 36_000

T = TypeVar("T")


def size_of(value: Any) -> int:
    """Bytes of `value` as compact JSON (what a structured result costs)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def fit(items: Sequence[T], budget: int = MAX_RESULT_BYTES) -> tuple[list[T], bool]:
    """The longest prefix of `items` whose JSON fits in `budget` bytes, and whether any were cut."""
    kept: list[T] = []
    used = 2
    for item in items:
        used += size_of(item) + 1
        if used > budget:
            return kept, True
        kept.append(item)
    return kept, False


def cut_note(shown: int, total: int | None, narrow: str) -> str:
    """The message that says a result was cut, and how to ask for less."""
    of = f" of {total}" if total is not None else ""
    return f"Truncated: showing {shown}{of} to stay within the response budget. {narrow}"
