"""Byte sizes as users write them: `512k`, `10g`, `1.5m`, `4096` (binary units, as the original)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in `text`; raises ValueError with a message fit for the user."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512k, 100m, 10g)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
