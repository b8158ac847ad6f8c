"""A causal chain: what was seen, in which layer, why, and what to do about it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SEVERITY_RANK = {"HIGH": 3, "MEDIUM": 2, "LOW": 1}


@dataclass(frozen=True)
class TimelineEvent:
    """One link of a chain: a layer (SYSTEM, HOST, IO, NET, CUDA, DRIVER, ...) and what it showed."""

    layer: str
    op: str
    detail: str
    dur_us: int = 0

    def to_dict(self, *, omit_zero: bool = False) -> dict[str, Any]:
        """`omit_zero` drops a zero dur_us, as the original's stored JSON does."""
        out: dict[str, Any] = {
            "layer": self.layer,
            "op": self.op,
            "detail": self.detail,
            "dur_us": self.dur_us,
        }
        if omit_zero and not self.dur_us:
            del out["dur_us"]
        return out


@dataclass
class CausalChain:
    """A chain in the shape the original stores in `causal_chains`.

    `origin` says where it came from: "replay" (found now from the stored events) or
    "stored" (found live during the trace, when every event was seen, and read back).
    """

    id: str
    severity: str
    summary: str
    root_cause: str
    explanation: str
    recommendations: list[str] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    cuda_op: str = ""
    cuda_p99_us: int = 0
    cuda_p50_us: int = 0
    tail_ratio: float = 0.0
    detected_at: int = 0
    node: str = ""
    origin: str = "replay"

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(self.severity, 0)

    @property
    def key(self) -> str:
        """What the original merges on: the layer and op of the last timeline event (the symptom)."""
        if not self.timeline:
            return self.id
        last = self.timeline[-1]
        return f"{last.layer}:{last.op}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "detected_at": self.detected_at,
            "severity": self.severity,
            "summary": self.summary,
            "root_cause": self.root_cause,
            "explanation": self.explanation,
            "recommendations": list(self.recommendations),
            "cuda_op": self.cuda_op,
            "cuda_p99_us": self.cuda_p99_us,
            "cuda_p50_us": self.cuda_p50_us,
            "tail_ratio": round(self.tail_ratio, 1),
            "timeline": [t.to_dict() for t in self.timeline],
            "node": self.node,
            "origin": self.origin,
        }

    def row(self) -> tuple[Any, ...]:
        """The values of a `causal_chains` row, in column order."""
        return (
            self.id,
            self.detected_at,
            self.severity,
            self.summary,
            self.root_cause,
            self.explanation,
            json.dumps(self.recommendations, ensure_ascii=False, separators=(",", ":")),
            self.cuda_op,
            self.cuda_p99_us,
            self.cuda_p50_us,
            round(self.tail_ratio, 1),
            json.dumps(
                [t.to_dict(omit_zero=True) for t in self.timeline], ensure_ascii=False, separators=(",", ":")
            ),
            self.node,
        )


def cause_kinds(text: str) -> set[str]:
    """The kinds of cause a root-cause text names: scheduler, block I/O, network, memory."""
    lowered = text.lower()
    kinds = set()
    if "sched_switch" in lowered or "cpu" in lowered or "preempt" in lowered:
        kinds.add("scheduler")
    if "block i/o" in lowered:
        kinds.add("io")
    if "tcp" in lowered or "network" in lowered or "socket" in lowered:
        kinds.add("network")
    if "memory" in lowered or "swap" in lowered or "oom" in lowered:
        kinds.add("memory")
    return kinds


def dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def chain_id(node: str, descriptor: str) -> str:
    """The original's node-namespaced id, ``{node}:{descriptor}``."""
    return f"{node}:{descriptor}" if node else descriptor
