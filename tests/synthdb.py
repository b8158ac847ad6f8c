"""Synthetic ingero databases in the original's schema, one scenario per causal-chain rule.

`write_synthetic_db(path, n_events, scenario=...)` writes `n_events` rows to `events` (a
training loop of CUDA runtime/driver calls plus whatever host, I/O, network, graph or
NCCL events the scenario needs), `system_snapshots` at 1 Hz, `process_names` and a
`sessions` row. Bulk rows are generated inside SQLite by a recursive counter, so 10M
events take seconds, and "random" jitter comes from an integer hash of the row number
and the seed, so the same arguments always give the same file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = Path(__file__).resolve().parent.parent / "crates" / "ingero-core" / "src" / "store" / "schema.sql"

# 2026-04-01T00:00:00Z: far enough in the past that a "last 5 minutes" window is empty.
BASE_NS = 1_775_001_600_000_000_000
TRAIN_PID = 4242
HOG_PID = 5151  # the CPU hog that preempts the training process
TARGET_CGROUP = 0x1001
NCCL_PIDS = (6000, 6001, 6002, 6003)
STRAGGLER_RANK = 2

SCENARIOS = (
    "clean",
    "sched-tail",
    "io-tail",
    "net-tail",
    "page-alloc-tail",
    "cpu-tail",
    "swap-tail",
    "tcp-burst",
    "throughput-drop",
    "oom",
    "noisy-neighbour",
    "graph-capture-oom",
    "graph-launch-contention",
    "graph-freq-drop",
    "graph-never-launched",
    "graph-capture-warmup",
    "nccl-straggler",
    "multi-process",
)

# (source, op, base duration ns) of the training loop, picked by row number % 10.
_CUDA_MIX = (
    (1, 3, 6_000),  # cudaLaunchKernel
    (1, 3, 6_000),
    (1, 3, 6_000),
    (1, 3, 6_000),
    (1, 3, 6_000),
    (1, 7, 12_000),  # cudaMemcpyAsync
    (1, 5, 40_000),  # cudaStreamSync
    (4, 1, 5_000),  # cuLaunchKernel
    (1, 3, 6_000),
    (4, 5, 150_000),  # cuMemAlloc
)


@dataclass
class _Stream:
    """A block of `count` similar events, generated in SQL from the counter `i`."""

    count: int
    ts: str  # SQL expressions in terms of i (0..count-1)
    pid: str
    source: str
    op: str
    duration: str
    arg0: str = "0"
    arg1: str = "0"
    ret_code: str = "0"
    cgroup_id: str = "0"
    rank: str = "NULL"
    tid: str | None = None


@dataclass
class _Plan:
    span_ns: int
    streams: list[_Stream] = field(default_factory=list)
    snapshot: tuple[float, float, int, int, float] = (35.0, 40.0, 9000, 0, 1.5)
    names: dict[int, str] = field(default_factory=dict)


def _hash(expr: str, seed: int, mod: int) -> str:
    # Knuth's multiplicative hash: deterministic jitter without SQLite's unseeded random().
    return f"((({expr}) * 2654435761 + {seed * 40503 + 17}) % 4294967296 % {mod})"


def _training_loop(plan: _Plan, count: int, seed: int, *, tail: bool, drop: bool = False) -> None:
    """The CUDA calls of one training process, one every span/count ns."""
    step = plan.span_ns // max(count, 1)
    ts = f"{BASE_NS} + i * {step}"
    if drop:
        # The last third runs at a quarter of the rate: same calls, spread 4x wider.
        cut = count * 3 // 4
        fast, slow = step // 2, step * 2
        ts = (
            f"(CASE WHEN i < {cut} THEN {BASE_NS} + i * {fast}"
            f" ELSE {BASE_NS} + {cut} * {fast} + (i - {cut}) * {slow} END)"
        )
    src = "CASE i % 10 " + " ".join(f"WHEN {k} THEN {s}" for k, (s, _, _) in enumerate(_CUDA_MIX)) + " END"
    op = "CASE i % 10 " + " ".join(f"WHEN {k} THEN {o}" for k, (_, o, _) in enumerate(_CUDA_MIX)) + " END"
    base = "CASE i % 10 " + " ".join(f"WHEN {k} THEN {d}" for k, (_, _, d) in enumerate(_CUDA_MIX)) + " END"
    jitter = f"({base}) * {_hash('i', seed, 1000)} / 2000"
    duration = f"({base}) + {jitter}"
    if tail:
        # Every 50th call (a cudaLaunchKernel) stalls 25x: the p99/p50 tail the rules look for.
        duration = f"(CASE WHEN i % 50 = 0 THEN ({base}) * 25 ELSE {duration} END)"
    plan.streams.append(
        _Stream(
            count=count,
            ts=ts,
            pid=str(TRAIN_PID),
            source=src,
            op=op,
            duration=duration,
            arg0="4096 + i % 7 * 1024",
            arg1="140000000 + i % 3",
            cgroup_id=str(TARGET_CGROUP),
        )
    )
    plan.names[TRAIN_PID] = "python3"


def _spread(count: int, span_ns: int, offset_ns: int = 0) -> str:
    step = max(span_ns // max(count, 1), 1)
    return f"{BASE_NS + offset_ns} + i * {step}"


def _plan(scenario: str, n_events: int, seed: int) -> _Plan:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (one of: {', '.join(SCENARIOS)})")
    # At least a minute of trace, so 1 s rate windows and the 30 s graph timeout have room.
    span = max(60_000_000_000, n_events * 10_000)
    plan = _Plan(span_ns=span)
    extra: list[_Stream] = []

    def host_sched(count: int, victim: int, hog: int, off_cpu_ns: str, cgroup: str = "0") -> _Stream:
        return _Stream(
            count=count,
            ts=_spread(count, span, 3_000),
            pid=str(victim),
            source="3",
            op="1",
            duration=off_cpu_ns,
            arg1=str(hog),
            cgroup_id=cgroup,
        )

    few = max(min(n_events // 100, 20_000), 60)  # host events: ~1% of the trace
    tail = scenario.endswith("-tail")
    if scenario in ("clean", "tcp-burst", "oom", "multi-process") or scenario.startswith("graph-"):
        # A healthy host: a few context switches and a little journald I/O. (None for the
        # graph scenarios: launches every 10 ms would put any switch near one.)
        if not scenario.startswith("graph-"):
            extra.append(host_sched(4, TRAIN_PID, HOG_PID, "20000"))
        extra.append(_Stream(8, _spread(8, span, 7_000), "96", "5", "2", "150000", arg0="8"))
        plan.names[96] = "jbd2/nvme0n1p1-8"
    if scenario == "sched-tail":
        extra.append(host_sched(few, TRAIN_PID, HOG_PID, f"2000000 + {_hash('i', seed, 500000)}"))
        plan.names[HOG_PID] = "stress-ng"
    elif scenario == "io-tail":
        extra.append(
            _Stream(
                few,
                _spread(few, span, 5_000),
                "96",
                "5",
                "1",
                f"30000000 + {_hash('i', seed, 5000000)}",
                "256",
            )
        )
        plan.names[96] = "kworker/u8:2"
    elif scenario == "net-tail":
        extra.append(_Stream(few, _spread(few, span, 4_000), str(TRAIN_PID), "7", "2", "80000", "7", "65536"))
    elif scenario == "page-alloc-tail":
        extra.append(
            _Stream(
                few,
                _spread(few, span, 2_000),
                str(TRAIN_PID),
                "3",
                "3",
                "3000",
                arg0=str((2 << 30) // few + 4096),
            )
        )
    elif scenario == "cpu-tail":
        plan.snapshot = (97.0, 60.0, 6000, 0, 7.5)
    elif scenario == "swap-tail":
        plan.snapshot = (50.0, 80.0, 2000, 512, 3.0)
    elif scenario == "tcp-burst":
        extra.append(
            _Stream(150, _spread(150, span, 1_000), "0", "6", "1", "0", "3232235777 << 32", "167772161")
        )
    elif scenario == "throughput-drop":
        extra.append(host_sched(few, TRAIN_PID, HOG_PID, "1500000"))
        plan.names[HOG_PID] = "stress-ng"
    elif scenario == "oom":
        extra.append(_Stream(1, f"{BASE_NS + span // 2}", "7777", "3", "4", "0", arg1="7777"))
        plan.names[7777] = "memhog"
    elif scenario == "noisy-neighbour":
        per = max(few // 4, 20)
        extra.append(
            host_sched(per, TRAIN_PID, HOG_PID, f"8000000 + {_hash('i', seed, 900000)}", str(TARGET_CGROUP))
        )
        for k, cg in enumerate((0x2001, 0x2002, 0x2003)):
            extra.append(
                host_sched(per, 7000 + k, 7100 + k, f"200000 + {_hash('i', seed + k, 90000)}", str(cg))
            )
    elif scenario == "graph-capture-oom":
        extra.append(_Stream(3, _spread(3, span, 1_000), str(TRAIN_PID), "8", "1", "20000", "0x7f00", "0"))
        extra.append(
            _Stream(
                3, _spread(3, span, 901_000), str(TRAIN_PID), "8", "2", "2000000", "0x7f00", "0x9000 + i", "2"
            )
        )
    elif scenario == "graph-launch-contention":
        launches = max(min(n_events // 200, 5000), 50)
        extra.append(
            _Stream(
                launches, _spread(launches, span, 10_000), str(TRAIN_PID), "8", "4", "9000", "0xe0", "0x7f00"
            )
        )
        # Each launch is preempted right after it starts.
        extra.append(host_sched(launches, TRAIN_PID, HOG_PID, "1200000"))
        extra[-1].ts = _spread(launches, span, 12_000)
        plan.names[HOG_PID] = "stress-ng"
    elif scenario == "graph-freq-drop":
        fast, slow = 4000, 100
        # 100 launches/s for 40 s, then 10 launches/s for the last 10 s.
        extra.append(
            _Stream(fast, f"{BASE_NS} + i * 10000000", str(TRAIN_PID), "8", "4", "9000", "0xe0", "0x7f00")
        )
        extra.append(
            _Stream(
                slow,
                f"{BASE_NS} + 40000000000 + i * 100000000",
                str(TRAIN_PID),
                "8",
                "4",
                "9000",
                "0xe0",
                "0x7f00",
            )
        )
    elif scenario == "graph-never-launched":
        extra.append(
            _Stream(1, f"{BASE_NS + 1_000_000}", str(TRAIN_PID), "8", "3", "50000", "0x9000", "0xdead")
        )
    elif scenario == "graph-capture-warmup":
        extra.append(_Stream(1, f"{BASE_NS + 2_000_000}", str(TRAIN_PID), "8", "1", "20000", "0x7f00", "0"))
    elif scenario == "nccl-straggler":
        rounds = max(min(n_events // 20, 50_000), 100)
        for rank, pid in enumerate(NCCL_PIDS):
            late = 15_000_000 if rank == STRAGGLER_RANK else _hash("i", seed + rank, 200_000)
            wait = "300000" if rank == STRAGGLER_RANK else f"15300000 - ({late})"
            extra.append(
                _Stream(
                    rounds,
                    f"{BASE_NS} + i * ({span // rounds}) + {late}",
                    str(pid),
                    "9",
                    "3",
                    wait,
                    "67108864",
                    "12345678901",
                    rank=str(rank),
                )
            )
            plan.names[pid] = f"python3 rank{rank}"
    elif scenario == "multi-process":
        plan.names[TRAIN_PID + 1] = "python3 infer"

    used = sum(s.count for s in extra)
    cuda = max(n_events - used, 0)
    if scenario == "multi-process":
        _training_loop(plan, cuda // 2, seed, tail=False)
        _training_loop(plan, cuda - cuda // 2, seed + 1, tail=False)
        plan.streams[-1].pid = str(TRAIN_PID + 1)
        plan.streams[-1].ts += " + 1500"
    else:
        _training_loop(plan, cuda, seed, tail=tail, drop=scenario == "throughput-drop")
    plan.streams.extend(extra)
    return plan


def _insert_stream(conn: sqlite3.Connection, node: str, first_seq: int, s: _Stream) -> None:
    if s.count <= 0:
        return
    tid = s.tid or s.pid
    conn.execute(
        f"""
        WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {s.count})
        INSERT INTO events (id, timestamp, pid, tid, source, op, duration, arg0, arg1, ret_code,
                            node, rank, cgroup_id)
        SELECT ? || ':' || ({first_seq} + i), {s.ts}, {s.pid}, {tid}, {s.source}, {s.op}, {s.duration},
               {s.arg0}, {s.arg1}, {s.ret_code}, ?, {s.rank}, {s.cgroup_id}
        FROM c
        """,
        (node, node),
    )


def write_synthetic_db(
    path: str | Path, n_events: int, *, scenario: str = "clean", seed: int = 0, node: str = "synth"
) -> Path:
    """Writes a new database at `path` with `n_events` events of `scenario`; returns the path.

    Scenarios (`SCENARIOS`): "clean" fires no chain; "<cause>-tail" gives cudaLaunchKernel a
    25x p99 tail beside that host cause; the others stage one rule each (throughput drop,
    OOM, TCP burst, noisy neighbour, the five CUDA Graph rules, an NCCL straggler, and two
    processes sharing the GPU).
    """
    path = Path(path)
    if path.exists():
        path.unlink()
    plan = _plan(scenario, n_events, seed)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(SCHEMA.read_text())
        # Indexes are built once at the end: far faster than maintaining them per row.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master"
            " WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        conn.execute("BEGIN")
        seq = 0
        for stream in plan.streams:
            _insert_stream(conn, node, seq, stream)
            seq += stream.count
        cpu, mem, avail, swap, load = plan.snapshot
        seconds = plan.span_ns // 1_000_000_000 + 1
        conn.executemany(
            "INSERT INTO system_snapshots (timestamp, cpu_pct, mem_pct, mem_avail, swap_mb, load_avg) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(BASE_NS + k * 1_000_000_000, cpu, mem, avail, swap, load) for k in range(seconds)],
        )
        conn.executemany(
            "INSERT INTO process_names (pid, name, seen_at) VALUES (?, ?, ?)",
            [(pid, name, BASE_NS) for pid, name in plan.names.items()],
        )
        conn.execute(
            "INSERT INTO sessions (started_at, stopped_at, gpu_model, cpu_cores, node, flags) "
            "VALUES (?, ?, 'Synthetic GPU', 2, ?, ?)",
            (BASE_NS, BASE_NS + plan.span_ns, node, f"synthetic,scenario={scenario}"),
        )
        conn.execute("COMMIT")
        for _, sql in indexes:
            conn.execute(sql)
    finally:
        conn.close()
    return path


if __name__ == "__main__":
    import sys
    import time

    started = time.perf_counter()
    out = write_synthetic_db(
        sys.argv[1], int(sys.argv[2]), scenario=sys.argv[3] if len(sys.argv) > 3 else "clean"
    )
    print(f"{out}: {time.perf_counter() - started:.1f} s")
