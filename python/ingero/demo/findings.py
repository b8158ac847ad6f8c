"""What the analysis found in one scenario's trace, and whether it names the
scenario's expected root cause."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingero.demo.scenarios import Expectation
from ingero.store.database import open_readonly

CUDA_LAYERS = {"CUDA", "DRIVER", "CUDA_GRAPH"}


@dataclass
class Findings:
    chains: list[dict[str, Any]]
    # One row per op: op_name, count, p50_ns, p99_ns, max_ns, wall_share, spike_period...
    op_stats: list[dict[str, Any]]
    # The processes that made CUDA calls.
    gpu_pids: list[int]


@dataclass
class Verdict:
    found: bool
    # The chain summary or statistic that matched, or why nothing did.
    detail: str


def analysis_available() -> bool:
    try:
        module = importlib.import_module("ingero.analyse")
    except ImportError:
        return False
    return callable(getattr(module, "analyse", None))


def analyse_pids(db: Path, pids: list[int]) -> Findings:
    """Runs the analysis on the events of `pids` in `db`."""
    analysis: Any = importlib.import_module("ingero.analyse")
    conn = open_readonly(db)
    try:
        result = analysis.analyse(conn, pids=pids)
    finally:
        conn.close()
    return Findings(
        chains=[c.to_dict() for c in result.chains],
        op_stats=result.op_stats.to_dicts(),
        gpu_pids=[int(p) for p in result.gpu_pids],
    )


def _chain_ops(chain: dict[str, Any]) -> set[str]:
    ops = {str(chain.get("cuda_op") or "")}
    for entry in chain.get("timeline") or []:
        if entry.get("layer") in CUDA_LAYERS:
            ops.add(str(entry.get("op") or ""))
    return ops


def _chain_text(chain: dict[str, Any]) -> str:
    return " ".join(str(chain.get(k) or "") for k in ("summary", "root_cause", "explanation"))


def chain_matches(chain: dict[str, Any], expectation: Expectation, stressor_pids: list[int]) -> bool:
    if not _chain_ops(chain) & expectation.ops:
        return False
    layers = {str(entry.get("layer")) for entry in chain.get("timeline") or []}
    if not expectation.layers <= layers:
        return False
    text = _chain_text(chain).lower()
    if expectation.words and not any(re.search(w, text) for w in expectation.words):
        return False
    return not expectation.names_stressor or any(re.search(rf"\bpid {pid}\b", text) for pid in stressor_pids)


def _number(row: dict[str, Any], key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


# A cold start is a one-off: a call this much slower than its op's median, and long
# enough (context creation, module loading) that no preemption or tail explains it.
COLD_FACTOR = 100
COLD_MIN_NS = 50_000_000
# The analysis's own tail threshold (p99 / p50), for the sharing signal.
TAIL_RATIO = 3.0


GPU_SOURCES = ("CUDA", "DRIVER")


def stat_matches(findings: Findings, expectation: Expectation) -> str | None:
    """The op statistic that shows the expected cause, worded, or None."""
    rows = [r for r in findings.op_stats if r.get("op_name") in expectation.ops]
    # Shares of the GPU calls' time: off-CPU time of the host layer is not a GPU op's.
    gpu_ops = [r for r in findings.op_stats if r.get("source_name") in GPU_SOURCES]
    if expectation.stat == "time_share" and gpu_ops:
        top = max(gpu_ops, key=lambda r: _number(r, "wall_share"))
        if top in rows:
            share = 100 * _number(top, "wall_share")
            return f"{top['op_name']} takes {share:.0f}% of the wall time, the largest share"
    for row in rows:
        name, p50, max_ns = row["op_name"], _number(row, "p50_ns"), _number(row, "max_ns")
        if expectation.stat == "spike_period" and row.get("spike_period"):
            return f"{name} spikes every ~{row['spike_period']} calls ({row.get('anomalies')} anomalies)"
        if expectation.stat == "cold_start" and p50 and max_ns >= COLD_FACTOR * p50 and max_ns >= COLD_MIN_NS:
            return f"{name}: a one-off call of {max_ns / 1e6:.0f} ms, {max_ns / p50:.0f}x its median"
        ratio = _number(row, "p99_ns") / p50 if p50 else 0.0
        if expectation.stat == "shared_gpu" and ratio >= TAIL_RATIO and len(findings.gpu_pids) >= 2:
            return (
                f"{name} p99 is {ratio:.1f}x its median while {len(findings.gpu_pids)} processes use the GPU"
            )
    return None


def judge(findings: Findings, expectation: Expectation, stressor_pids: list[int]) -> Verdict:
    for chain in findings.chains:
        if chain_matches(chain, expectation, stressor_pids):
            return Verdict(True, f"[{chain.get('severity')}] {chain.get('summary')}")
    stat = stat_matches(findings, expectation)
    if stat:
        return Verdict(True, stat)
    if findings.chains:
        return Verdict(False, f"{len(findings.chains)} chain(s), none about it")
    return Verdict(False, "no causal chain")
