"""The incident report as text: severity, summary, timeline by layer, root cause, fixes."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ingero.analyse.chain import CausalChain
from ingero.analyse.chains import Analysis
from ingero.analyse.gotime import go_duration, round_to
from ingero.analyse.processes import contention

_TOP_OPS = 12


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(ns: int) -> str:
    return go_duration(round_to(ns, 1_000) if ns >= 1_000_000 else ns)


def chain_text(chain: CausalChain) -> str:
    lines = [f"[{chain.severity}] {chain.summary}"]
    if chain.origin == "stored":
        lines.append(f"  Recorded live during the trace at {_when(chain.detected_at)} ({chain.id})")
    if chain.timeline:
        lines.append("  Timeline:")
        for event in chain.timeline:
            detail = event.detail + (f" ({_dur(event.dur_us * 1000)})" if event.dur_us > 0 else "")
            lines.append(f"    [{event.layer:<6}]  {detail}")
    lines.append("")
    lines.append(f"  Root cause: {chain.root_cause}")
    if chain.recommendations:
        lines.append("  Fix: " + "; ".join(chain.recommendations))
    return "\n".join(lines)


def _header(a: Analysis) -> list[str]:
    counts = {s: sum(1 for c in a.chains if c.severity == s) for s in ("HIGH", "MEDIUM", "LOW")}
    if a.chains:
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        title = f"INCIDENT REPORT — {len(a.chains)} causal chain(s) found ({parts})"
    else:
        title = "INCIDENT REPORT — no causal chains detected"
    lines = [title, ""]
    if a.first_ns is None or a.last_ns is None:
        lines.append("  No events in the window.")
        return lines
    lines.append(
        f"  Window: {_when(a.first_ns)} → {_when(a.last_ns)} ({go_duration(round_to(a.wall_ns, 1_000_000))})"
        f" | {a.events:,} events ({a.gpu_calls:,} CUDA/driver calls)"
        + (f" | node {a.node}" if a.node else "")
    )
    if a.system is not None:
        s = a.system
        lines.append(
            f"  System (worst in window): CPU {s.cpu_pct:.0f}% | Mem {s.mem_pct:.0f}% "
            f"({s.mem_avail_mb} MB free)"
            f" | Load {s.load_avg:.1f} | Swap {s.swap_mb} MB"
        )
    if not a.chains:
        lines.append("  No anomalous patterns found.")
    return lines


def ops_text(stats: pl.DataFrame, limit: int = _TOP_OPS) -> str:
    if stats.height == 0:
        return ""
    lines = [
        "OPERATIONS (by time spent)",
        f"  {'op':<24} {'count':>10} {'p50':>11} {'p95':>11} {'p99':>11} {'max':>11} {'wall':>7}  anomalies",
    ]
    for row in stats.head(limit).iter_rows(named=True):
        pattern = f", spikes every ~{row['spike_period']} events" if row["spike_period"] else ""
        lines.append(
            f"  {row['op_name']:<24} {row['count']:>10,} {_dur(row['p50_ns']):>11} {_dur(row['p95_ns']):>11}"
            f" {_dur(row['p99_ns']):>11} {_dur(row['max_ns']):>11} "
            f"{row['wall_share'] * 100:>6.1f}%  {row['anomalies']}{pattern}"
        )
    if stats.height > limit:
        lines.append(f"  ... and {stats.height - limit} more (ingero explain --json lists all)")
    return "\n".join(lines)


def incident_report(a: Analysis) -> str:
    blocks = ["\n".join(_header(a))]
    blocks += [chain_text(c) for c in a.chains]
    ops = ops_text(a.op_stats)
    if ops:
        blocks.append(ops)
    return "\n\n".join(blocks) + "\n"


def stored_report(chains: list[CausalChain]) -> str:
    if not chains:
        return "  No stored causal chains found.\n  Run 'ingero trace' to collect events and detect chains.\n"
    blocks = [f"STORED CAUSAL CHAINS — {len(chains)} chain(s)"] + [chain_text(c) for c in chains]
    return "\n\n".join(blocks) + "\n"


def per_process_text(table: pl.DataFrame) -> str:
    if table.height == 0:
        return "  No CUDA or driver calls in the window.\n"
    lines = ["PER-PROCESS GPU API BREAKDOWN", ""]
    for (pid,), group in table.group_by(["pid"], maintain_order=True):
        name = group["name"][0]
        total = int(group["count"].sum())
        lines.append(f"  PID {pid}" + (f" ({name})" if name else "") + f" — {total:,} calls")
        for row in group.iter_rows(named=True):
            lines.append(
                f"    {row['op_name']:<24} {row['count']:>10,} calls  p50={_dur(row['p50_ns']):<11}"
                f" p95={_dur(row['p95_ns']):<11} p99={_dur(row['p99_ns']):<11} max={_dur(row['max_ns'])}"
            )
        lines.append("")
    procs, overlap = contention(table)
    if procs > 1:
        lines.append(
            f"  GPU CONTENTION: {procs} processes sharing the GPU with concurrent CUDA calls"
            f" (two or more active for {go_duration(round_to(overlap, 1_000_000))})"
        )
        lines.append("  Recommendation: check for serialization on the default stream, consider CUDA MPS")
    return "\n".join(lines) + "\n"
