"""The CUDA Graph rules: capture OOM, launch CPU contention, launch-rate drop, never launched, warm-up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from ingero import codes
from ingero.analyse.chain import CausalChain, TimelineEvent, chain_id
from ingero.analyse.gotime import go_duration, go_round_ms, go_round_us, round_to
from ingero.analyse.rules.base import SCHED_SWITCH_THRESHOLD
from ingero.analyse.system import SystemContext

_MS = 1_000_000
_S = 1_000_000_000
CORRELATION_WINDOW_NS = 10 * _MS
FREQ_WINDOW_NS = 10 * _S
FREQ_DROP_RATIO = 0.5
NO_LAUNCH_TIMEOUT_NS = 30 * _S
CAPTURE_TIMEOUT_NS = 5 * _S
MIN_CAPTURE_NS = 1 * _MS
_MODES = {0: "global", 1: "thread_local", 2: "relaxed"}


@dataclass(frozen=True)
class GraphInput:
    graph: pl.DataFrame  # CUDA_GRAPH events of the window, by time
    sched: pl.DataFrame  # sched_switch events (timestamp, pid, arg1, duration), by time
    system: SystemContext | None
    pid: int  # 0: every process
    now_ns: int
    node: str


def _op_id(name: str) -> int:
    return codes.op_named(name).id


def _mine(df: pl.DataFrame, pid: int) -> pl.DataFrame:
    return df if pid == 0 else df.filter(pl.col("pid") == pid)


def _captures(g: GraphInput) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """Begin->end pairs per thread, and the EndCaptures themselves."""
    begin_op, end_op = _op_id("graphBeginCapture"), _op_id("graphEndCapture")
    rows = _mine(g.graph, g.pid).filter(pl.col("op").is_in([begin_op, end_op])).to_dicts()
    open_by_tid: dict[int, dict[str, int]] = {}
    pairs, ends = [], []
    for row in rows:
        if row["op"] == begin_op:
            open_by_tid[row["tid"]] = row
        else:
            ends.append(row)
            begin = open_by_tid.pop(row["tid"], None)
            if begin is not None:
                pairs.append(
                    {
                        "begin": begin["timestamp"],
                        "stream": begin["arg0"],
                        "mode": begin["arg1"],
                        "dur": row["duration"],
                    }
                )
    return pairs, ends


def capture_oom(g: GraphInput) -> list[CausalChain]:
    pairs, ends = _captures(g)
    if not pairs:
        return []
    failures = sum(1 for e in ends if e["ret_code"] != 0)
    pressure = g.system is not None and g.system.mem_pct > 90
    if failures == 0 and not pressure:
        return []
    timeline = [
        TimelineEvent(
            "CUDA_GRAPH",
            "graphCapture",
            f"capture (mode={_MODES.get(p['mode'], 'global')}, stream=0x{p['stream']:x}, "
            f"duration={go_round_us(p['dur'])})",
            p["dur"] // 1000,
        )
        for p in pairs
    ]
    cause = "memory pressure during CUDA Graph capture"
    if failures:
        cause = f"graph capture failed ({failures} capture(s) returned error) — OOM during graph capture"
        timeline.append(TimelineEvent("CUDA", "cudaMalloc", f"{failures} graph capture failure(s)"))
    if pressure and g.system is not None:
        timeline.append(
            TimelineEvent("SYSTEM", "memory", f"VRAM/memory pressure ({g.system.mem_pct:.0f}% used)")
        )
    return [
        CausalChain(
            id=chain_id(g.node, "graph-capture-oom"),
            severity="HIGH",
            summary=f"OOM during graph capture ({len(pairs)} capture(s))",
            root_cause=cause,
            timeline=timeline,
            explanation=(
                "CUDA Graph capture overlapped with memory pressure. When VRAM is near capacity, "
                "graph capture "
                "allocates temporary buffers that can trigger OOM. This is a common failure mode "
                "in vLLM with "
                "torch.compile(mode='reduce-overhead')."
            ),
            recommendations=[
                "Reduce model batch size to free VRAM before graph capture",
                "Set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to reduce fragmentation",
                "Monitor VRAM with ingero trace --remediate during graph warmup phase",
            ],
            detected_at=g.now_ns,
            node=g.node,
        )
    ]


def _launches(g: GraphInput) -> pl.DataFrame:
    return _mine(g.graph, g.pid).filter(pl.col("op") == _op_id("graphLaunch"))


def launch_cpu_contention(g: GraphInput) -> list[CausalChain]:
    launches = _launches(g)
    if launches.height == 0:
        return []
    sched = g.sched if g.pid == 0 else g.sched.filter((pl.col("pid") == g.pid) | (pl.col("arg1") == g.pid))
    if sched.height == 0:
        return []
    ts = sched["timestamp"]
    lo = ts.search_sorted(launches["timestamp"] - CORRELATION_WINDOW_NS, side="right")
    hi = ts.search_sorted(launches["timestamp"] + launches["duration"] + CORRELATION_WINDOW_NS, side="left")
    near = int((hi - lo).clip(lower_bound=0).sum())
    if near < SCHED_SWITCH_THRESHOLD:
        return []
    cum = pl.concat([pl.Series([0], dtype=pl.Int64), sched["duration"].cum_sum()])
    off = int((cum.gather(hi) - cum.gather(lo)).clip(lower_bound=0).sum())
    window = go_duration(CORRELATION_WINDOW_NS)
    return [
        CausalChain(
            id=chain_id(g.node, "graph-launch-cpu-contention"),
            severity="MEDIUM",
            summary=(
                f"CPU contention delaying graph dispatch ({launches.height} launch(es), {near} sched_switch)"
            ),
            root_cause="CPU scheduling interference during CUDA Graph launch",
            timeline=[
                TimelineEvent("CUDA_GRAPH", "graphLaunch", f"{launches.height} graph launch(es)"),
                TimelineEvent(
                    "HOST",
                    "sched_switch",
                    f"{near} context switches ({go_round_ms(off)} off-CPU) near graph launches",
                    off // 1000,
                ),
            ],
            explanation=(
                f"CUDA Graph launches experienced CPU scheduling interference. {near} sched_switch events "
                f"occurred within {window} of graph launches, causing {go_round_ms(off)} total "
                "off-CPU time. Graph "
                "launches are lightweight host-side operations, but CPU contention delays "
                "dispatch to the GPU."
            ),
            recommendations=[
                "Pin the inference process to dedicated CPU cores (taskset/cset)",
                "Reduce background CPU load during inference",
                "Add nice -n 19 to non-critical processes",
            ],
            detected_at=g.now_ns,
            node=g.node,
        )
    ]


def launch_rate_drops(g: GraphInput, snapshot_times: Sequence[int]) -> list[CausalChain]:
    """Per executable, the rate over the last 10 s of launches against its peak, at each snapshot."""
    launches = _launches(g)
    chains: dict[tuple[int, int], CausalChain] = {}
    for (pid, exec_handle), group in launches.group_by(["pid", "arg0"], maintain_order=True):
        ts = group["timestamp"]
        first = ts.search_sorted(ts - FREQ_WINDOW_NS, side="left")
        n = pl.Series(range(1, ts.len() + 1)) - first
        elapsed = ts - ts.gather(first)
        valid = (n >= 2) & (elapsed > _S // 10)
        rate = (n.cast(pl.Float64) / (elapsed.cast(pl.Float64) / _S)).zip_with(
            valid, pl.Series([None], dtype=pl.Float64)
        )
        peak = rate.cum_max().fill_null(strategy="forward")
        samples = valid.cast(pl.Int64).cum_sum()
        at = ts.search_sorted(pl.Series(list(snapshot_times), dtype=pl.Int64), side="right")
        for k, when in zip(at.to_list(), snapshot_times, strict=True):
            j = k - 1
            if j < 1 or samples[j] < 3 or (peak[j] or 0) < 5.0 or elapsed[j] < _S // 2:
                continue
            current = n[j] / (elapsed[j] / _S)
            ratio = current / peak[j]
            if ratio >= FREQ_DROP_RATIO or (int(pid), int(exec_handle)) in chains:
                continue
            drop = (1 - ratio) * 100
            top = float(peak[j])
            chains[(int(pid), int(exec_handle))] = CausalChain(
                id=chain_id(g.node, f"graph-freq-anomaly-0x{int(exec_handle):x}"),
                severity="MEDIUM",
                summary=f"graph launch rate dropped {drop:.0f}% (exec 0x{int(exec_handle):x}, PID {pid})",
                root_cause="graph pool exhaustion — likely re-capture triggered by new batch size",
                timeline=[
                    TimelineEvent(
                        "CUDA_GRAPH",
                        "graphLaunch",
                        f"rate dropped from {top:.0f} to {current:.0f} launches/sec (exec "
                        f"0x{int(exec_handle):x})",
                    )
                ],
                explanation=(
                    f"GraphLaunch rate for executable 0x{int(exec_handle):x} dropped {drop:.0f}% from peak "
                    f"({top:.0f} → {current:.0f} launches/sec). In vLLM, this pattern indicates a "
                    "new batch size "
                    "arrived that doesn't match any pre-captured graph, forcing a re-capture cycle. During "
                    "re-capture, the existing graph pool is not launched."
                ),
                recommendations=[
                    "Pre-warm all expected batch sizes during model startup",
                    "Set max_num_batched_tokens to limit batch size variability",
                    "Monitor with ingero trace to identify which batch sizes trigger re-capture",
                ],
                detected_at=int(when),
                node=g.node,
            )
    return list(chains.values())


def never_launched(g: GraphInput) -> list[CausalChain]:
    mine = _mine(g.graph, g.pid)
    inst = (
        mine.filter(pl.col("op") == _op_id("graphInstantiate"))
        .group_by(["pid", pl.col("arg1").alias("exec")])
        .agg(pl.col("timestamp").max().alias("at"))
    )
    if inst.height == 0:
        return []
    last_launch = (
        mine.filter(pl.col("op") == _op_id("graphLaunch"))
        .group_by(["pid", pl.col("arg0").alias("exec")])
        .agg(pl.col("timestamp").max().alias("launched"))
    )
    waiting = inst.join(last_launch, on=["pid", "exec"], how="left").filter(
        (pl.col("launched").is_null() | (pl.col("launched") < pl.col("at")))
        & (pl.lit(g.now_ns) - pl.col("at") >= NO_LAUNCH_TIMEOUT_NS)
    )
    chains = []
    for row in waiting.sort("at").to_dicts():
        exec_handle, pid, at = int(row["exec"]), int(row["pid"]), int(row["at"])
        clock = _clock(at)
        chains.append(
            CausalChain(
                id=chain_id(g.node, f"graph-never-launched-0x{exec_handle:x}"),
                severity="LOW",
                summary=f"graph instantiated but never launched (exec 0x{exec_handle:x}, PID {pid})",
                root_cause="graph instantiated but never launched — wasted VRAM",
                timeline=[
                    TimelineEvent(
                        "CUDA_GRAPH",
                        "graphInstantiate",
                        f"instantiated exec 0x{exec_handle:x} at {clock}, no launch after "
                        f"{go_duration(round_to(g.now_ns - at, _S))}",
                    )
                ],
                explanation=(
                    f"A CUDA Graph was instantiated (exec handle 0x{exec_handle:x}) but no "
                    "GraphLaunch was observed "
                    f"within {go_duration(NO_LAUNCH_TIMEOUT_NS)}. This wastes GPU memory — each "
                    "instantiated graph "
                    "holds device memory for its captured operations."
                ),
                recommendations=[
                    "Verify the graph capture path leads to actual execution",
                    "Destroy unused graph executables to free VRAM",
                ],
                detected_at=g.now_ns,
                node=g.node,
            )
        )
    return chains


def _clock(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def capture_warmup(g: GraphInput) -> list[CausalChain]:
    begin_op, end_op = _op_id("graphBeginCapture"), _op_id("graphEndCapture")
    rows = _mine(g.graph, g.pid).filter(pl.col("op").is_in([begin_op, end_op])).to_dicts()
    in_flight: dict[int, dict[str, int]] = {}
    short_fails = []
    for row in rows:
        if row["op"] == begin_op:
            in_flight[row["pid"]] = row
        else:
            in_flight.pop(row["pid"], None)
            if row["ret_code"] != 0 and row["duration"] < MIN_CAPTURE_NS:
                short_fails.append(row)
    timed_out = [r for r in in_flight.values() if g.now_ns - r["timestamp"] >= CAPTURE_TIMEOUT_NS]
    if not timed_out and not short_fails:
        return []
    timeline = [
        TimelineEvent(
            "CUDA_GRAPH",
            "graphBeginCapture",
            f"PID {r['pid']}: BeginCapture on stream 0x{r['arg0']:x} with no EndCapture after "
            f"{go_duration(round_to(g.now_ns - r['timestamp'], _S))}",
        )
        for r in timed_out
    ]
    timeline += [
        TimelineEvent(
            "CUDA_GRAPH",
            "graphEndCapture",
            f"PID {r['pid']}: capture failed (retCode={r['ret_code']}, "
            f"duration={go_round_us(r['duration'])}) "
            f"on stream 0x{r['arg0']:x}",
            r["duration"] // 1000,
        )
        for r in short_fails
    ]
    timeline.append(
        TimelineEvent(
            "CUDA",
            "cuBLAS",
            "cuBLAS defers handle creation until first use; if first use is during capture, disallowed "
            "operations abort the capture",
        )
    )
    return [
        CausalChain(
            id=chain_id(g.node, "graph-capture-warmup"),
            severity="MEDIUM",
            summary="CUDA Graph capture failure — possible cuBLAS lazy initialization",
            root_cause=(
                "cuBLAS defers handle creation until first use. If first use occurs during graph "
                "capture, the "
                "capture fails because handle creation triggers disallowed operations."
            ),
            timeline=timeline,
            explanation=(
                "CUDA Graph capture failure — possible cuBLAS lazy initialization. Add 3+ warmup iterations "
                "before cudaStreamBeginCapture to ensure cuBLAS handles are initialized. cuBLAS "
                "(and cuDNN) lazily "
                "create internal handles, memory pools, and kernel plans on first invocation. "
                "These initialization "
                "steps call CUDA APIs (e.g., cudaMalloc, cudaEventCreate) that are disallowed "
                "during stream capture, "
                "causing the capture to fail or produce an invalid graph."
            ),
            recommendations=[
                "Add 3+ warmup iterations before cudaStreamBeginCapture to ensure cuBLAS handles "
                "are initialized",
                "Call cublasCreate() and run a dummy GEMM before the first graph capture",
                "For PyTorch: use torch.cuda.make_graphed_callables() which handles warmup automatically",
                "Set CUBLAS_WORKSPACE_CONFIG=:4096:8 to pre-allocate cuBLAS workspaces",
            ],
            detected_at=g.now_ns,
            node=g.node,
        )
    ]


def graph_chains(g: GraphInput, snapshot_times: Sequence[int]) -> list[CausalChain]:
    if g.graph.height == 0:
        return []
    return (
        capture_oom(g)
        + launch_cpu_contention(g)
        + launch_rate_drops(g, snapshot_times)
        + never_launched(g)
        + capture_warmup(g)
    )
