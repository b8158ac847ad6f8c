"""The replay: every rule at one-second snapshots over the window, merged as the original merges."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from ingero import codes
from ingero.analyse import load
from ingero.analyse.chain import CausalChain
from ingero.analyse.evidence import Evidence, evidence_at
from ingero.analyse.load import Window
from ingero.analyse.rules.base import (
    BASELINE_SNAPSHOTS,
    DROP_RATIO,
    MIN_CALLS,
    MIN_PEAK_RATE,
    TAIL_RATIO,
    Context,
    OpView,
)
from ingero.analyse.rules.graph import GraphInput, graph_chains
from ingero.analyse.rules.host import host_chains
from ingero.analyse.rules.nccl import straggler_chains
from ingero.analyse.rules.noisy_neighbour import noisy_neighbour_chain
from ingero.analyse.rules.preemption import preempter_chain
from ingero.analyse.rules.tail import tail_chain
from ingero.analyse.rules.throughput import drop_chain, has_evidence
from ingero.analyse.stats import nearest_rank_of, op_name, op_stats, op_stats_of, split_by_op
from ingero.analyse.stored import merge_stored, stored_chains
from ingero.analyse.system import SystemContext, peak_system_context
from ingero.store.database import table_columns

Progress = Callable[[str, float], None]
SNAPSHOT_NS = 1_000_000_000
ROLLING_SAMPLES = 1000  # the original's per-op latency window


@dataclass
class Analysis:
    """What `analyse` found: per-op statistics and causal chains, most severe first."""

    op_stats: pl.DataFrame
    chains: list[CausalChain]
    window: Window
    first_ns: int | None
    last_ns: int | None
    events: int
    gpu_calls: int
    system: SystemContext | None
    node: str
    gpu_pids: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def wall_ns(self) -> int:
        if self.first_ns is None or self.last_ns is None:
            return 0
        return self.last_ns - self.first_ns


@dataclass
class _OpSeries:
    view_name: str
    layer: str
    times: pl.Series
    durations: pl.Series


def _node(conn: sqlite3.Connection) -> str:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "sessions" in tables and "node" in table_columns(conn, "sessions"):
        nodes = [r[0] for r in conn.execute("SELECT DISTINCT node FROM sessions WHERE node != ''")]
        # A merged fleet database has several: its chains belong to no single node.
        if len(nodes) == 1:
            return str(nodes[0])
    return ""


def _rolling_view(op: _OpSeries, n: int) -> OpView:
    window = op.durations.slice(max(n - ROLLING_SAMPLES, 0), min(n, ROLLING_SAMPLES)).sort()
    return OpView(op.view_name, op.layer, nearest_rank_of(window, 0.5), nearest_rank_of(window, 0.99), n)


def _global_view(op: _OpSeries) -> OpView:
    ordered = op.durations.sort()
    return OpView(
        op.view_name, op.layer, nearest_rank_of(ordered, 0.5), nearest_rank_of(ordered, 0.99), ordered.len()
    )


def _is_tail(view: OpView) -> bool:
    return view.count >= MIN_CALLS and view.p50_ns > 0 and view.p99_ns / view.p50_ns >= TAIL_RATIO


class _Merger:
    """Keeps, per symptom, the first chain of the highest severity seen (the original's mergeChains)."""

    def __init__(self) -> None:
        self.best: dict[str, CausalChain] = {}

    def add(self, chains: Sequence[CausalChain]) -> None:
        for chain in chains:
            key = chain.key
            if key.endswith(":all"):
                # OOM, TCP, pod and noisy-neighbour chains all end in CUDA:all; keep them apart.
                key = chain.id.rsplit(":", 1)[-1].removesuffix("-high").removesuffix("-medium")
            held = self.best.get(key)
            if held is None or chain.rank > held.rank:
                self.best[key] = chain


def _op_series(parts: dict[tuple[int, int], pl.DataFrame]) -> list[_OpSeries]:
    driver = codes.source_named("DRIVER").id
    return [
        _OpSeries(
            op_name(source, op), "DRIVER" if source == driver else "CUDA", part["timestamp"], part["duration"]
        )
        for (source, op), part in parts.items()
    ]


def _snapshot_times(first: int, last: int) -> list[int]:
    times = list(range(first + SNAPSHOT_NS, last, SNAPSHOT_NS))
    return [*times, last]


def _replay(
    ops: list[_OpSeries],
    times: list[int],
    *,
    evidence: list[Evidence],
    system: SystemContext | None,
    node: str,
    merger: _Merger,
    progress: Progress | None,
) -> None:
    counts = {
        op.view_name + op.layer: op.times.search_sorted(
            pl.Series(times, dtype=pl.Int64), side="right"
        ).to_list()
        for op in ops
    }
    peaks: dict[str, float] = {}
    prev_counts: dict[str, int] = {}
    prev_time: int | None = None
    cache: dict[tuple[str, int], OpView] = {}
    step = max(len(times) // 20, 1)
    for k, now in enumerate(times):
        ctx = Context(node, system, evidence[k], now)
        chains: list[CausalChain] = []
        tailed: set[str] = set()
        views: dict[str, OpView] = {}
        for op in ops:
            name = op.view_name + op.layer
            n = counts[name][k]
            if n == 0:
                continue
            view = cache.get((name, n))
            if view is None:
                view = cache[(name, n)] = _rolling_view(op, n)
            views[name] = view
            if _is_tail(view):
                chain = tail_chain(view, ctx)
                if chain is not None:
                    chains.append(chain)
                    tailed.add(name)
        # Throughput: calls per second between snapshots against the op's best rate so far.
        rates: dict[str, float] = {}
        if prev_time is not None and now - prev_time >= SNAPSHOT_NS // 2:
            elapsed = (now - prev_time) / 1e9
            for name, view in views.items():
                if name not in prev_counts:
                    continue
                delta = view.count - prev_counts[name]
                if delta < 10:
                    continue
                rates[name] = delta / elapsed
                peaks[name] = max(peaks.get(name, 0.0), rates[name])
        if k >= BASELINE_SNAPSHOTS and has_evidence(ctx):
            for name, current in rates.items():
                peak = peaks[name]
                if name in tailed or peak < MIN_PEAK_RATE or current < 1.0 or current / peak >= DROP_RATIO:
                    continue
                chain = drop_chain(views[name], peak, current, ctx)
                if chain is not None:
                    chains.append(chain)
        chains += host_chains(ctx)
        merger.add(chains)
        prev_counts = {name: v.count for name, v in views.items()}
        prev_time = now
        if progress is not None and k % step == 0:
            progress("replaying snapshots", 0.4 + 0.4 * k / len(times))


def _names_for(conn: sqlite3.Connection, gpu_pids: list[int], context: pl.DataFrame) -> dict[int, str]:
    # The GPU processes, whoever preempted them, and the processes of other events (bounded).
    host = codes.source_named("HOST").id
    others = context["arg1"].filter(context["source"] == host).unique().head(50).to_list()
    return load.process_names(conn, gpu_pids + others + context["pid"].unique().head(200).to_list())


def _target_cgroups(gpu: pl.DataFrame, context: pl.DataFrame, gpu_pids: list[int]) -> set[int]:
    """The GPU processes' own cgroups (0 is none, 1 the root); every other cgroup is a peer."""
    found = pl.concat(
        [gpu.select("cgroup_id"), context.filter(pl.col("pid").is_in(gpu_pids)).select("cgroup_id")]
    )
    return {int(c) for c in found["cgroup_id"].unique().to_list() if c is not None and c > 1}


def analyse(
    conn: sqlite3.Connection,
    window: Window | None = None,
    pids: list[int] | None = None,
    progress: Progress | None = None,
    *,
    include_stored: bool = True,
    node: str | None = None,
) -> Analysis:
    """Statistics and causal chains for the events of `window` (default: the whole database).

    `pids` limits the analysis to those processes (a sched_switch counts for a process when
    either side of the switch is it). With `include_stored`, chains the live trace stored in
    the window are added where the replay of the stored sample does not find them.
    """
    started = time.perf_counter()
    window = window or Window()
    node = _node(conn) if node is None else node
    src = load.Source(conn)

    def say(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    say("reading host, I/O, network, graph and NCCL events", 0.0)
    context = load.read_context_events(src, window, pids)
    system = peak_system_context(load.read_snapshots(src, window))
    # cgroup ids cost a column of every GPU call: read only when sched_switch carries them.
    with_cgroups = context.filter(pl.col("cgroup_id") > 1).height > 0
    say("reading CUDA and driver calls", 0.1)
    gpu = load.read_gpu_calls(src, window, pids, with_cgroups=with_cgroups)
    firsts = [s[0] for s in (gpu["timestamp"], context["timestamp"]) if s.len()]
    lasts = [s[-1] for s in (gpu["timestamp"], context["timestamp"]) if s.len()]
    first, last = (min(firsts), max(lasts)) if firsts else (None, None)
    say("computing statistics", 0.3)
    gpu_pids = sorted(int(p) for p in gpu["pid"].unique().to_list())
    targets = _target_cgroups(gpu, context, gpu_pids)
    gpu_calls = gpu.height
    # From here on the GPU calls live only as one (timestamp, duration) frame per op.
    parts = split_by_op(gpu.select("source", "op", "timestamp", "duration"))
    del gpu
    wall = (last or 0) - (first or 0)
    stats = pl.concat([op_stats_of(parts, wall), op_stats(context, wall)])
    stats = stats.sort(["total_ns", "count"], descending=True)
    names = _names_for(conn, gpu_pids, context)
    merger = _Merger()
    if first is not None and last is not None:
        times = _snapshot_times(first, last)
        evidence = evidence_at(context, times, filtered_by_pid=bool(pids))
        ops = _op_series(parts)
        _replay(ops, times, evidence=evidence, system=system, node=node, merger=merger, progress=progress)
        say("whole-window statistics", 0.8)
        end = Context(node, system, evidence[-1], last)
        # The whole window at once catches tails spread too thinly for any 1000-call window.
        merger.add(
            [c for op in ops if _is_tail(v := _global_view(op)) and (c := tail_chain(v, end)) is not None]
        )
        say("graph, NCCL and cgroup rules", 0.9)
        sched = codes.op_named("sched_switch")
        host_sched = context.filter((pl.col("source") == sched.source) & (pl.col("op") == sched.id))
        graph = context.filter(pl.col("source") == codes.source_named("CUDA_GRAPH").id)
        single = pids[0] if pids and len(pids) == 1 else 0
        merger.add(graph_chains(GraphInput(graph, host_sched, system, single, last, node), times))
        merger.add(straggler_chains(context, names, node, last))
        noisy = noisy_neighbour_chain(context, targets, node, last)
        merger.add([noisy] if noisy else [])
        preempters = preempter_chain(
            context,
            set(gpu_pids),
            names=names,
            symptoms=list(merger.best.values()),
            wall_ns=last - first,
            node=node,
            at_ns=last,
        )
        merger.add([preempters] if preempters else [])
    chains = list(merger.best.values())
    if include_stored:
        chains = merge_stored(
            chains, stored_chains(conn, window if window.start_ns or window.end_ns else None)
        )
    chains.sort(key=lambda c: (-c.rank, c.origin != "replay", c.detected_at))
    say("done", 1.0)
    return Analysis(
        op_stats=stats,
        chains=chains,
        window=window,
        first_ns=first,
        last_ns=last,
        events=gpu_calls + context.height,
        gpu_calls=gpu_calls,
        system=system,
        node=node,
        gpu_pids=gpu_pids,
        names=names,
        seconds=time.perf_counter() - started,
    )
