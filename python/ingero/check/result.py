"""One line of `ingero check`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OK = "ok"
FAIL = "fail"
INFO = "info"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL or INFO
    value: str
    # Set on every FAIL (and on INFO lines that suggest something): what to do.
    recommendation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
