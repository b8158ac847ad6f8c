"""The host layers end to end: real kernel events from real processes, stored
by `ingero trace`, compared with each workload's own account (tests/hostload.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ingero import _core
from ingero.cli import live
from ingero.codes import op_named, source_named
from tests.conftest import ROOT, Run, load_json, run_cli

HOSTLOAD = ROOT / "tests" / "hostload.py"
MIB = 1 << 20

pytestmark = pytest.mark.usefixtures("privileged")


def trace(db: Path, *command: str, flags: tuple[str, ...] = (), timeout: float = 120) -> Run:
    """`ingero trace` of `command`; the simulated libcudart stands in for CUDA."""
    lib = ROOT / "tests" / "simcuda" / "build" / "libcudart.so.12"
    run = run_cli("trace", *flags, "--db", str(db), "--cuda-lib", str(lib), "--", *command, timeout=timeout)
    assert run.returncode == 0, run.stderr
    return run


def end_counts(stdout: str) -> dict[str, int]:
    """The `events: received N, stored N, dropped N` line, by name."""
    line = next(line for line in stdout.splitlines() if line.startswith("events:"))
    return {name.strip(): int(n) for name, n in re.findall(r"([a-z ]+) (\d+)", line.split(":", 1)[1])}


def hostload(*args: str) -> list[str]:
    return [sys.executable, str(HOSTLOAD), *args]


def code(op: str) -> tuple[int, int]:
    o = op_named(op)
    return o.source, o.id


def host_rows(db_rows: Any, db: Path, op: str, columns: str = "pid, tid, duration, arg0, arg1") -> list[Any]:
    source, op_id = code(op)
    rows: list[Any] = db_rows(db, f"SELECT {columns} FROM events WHERE source = ? AND op = ?", source, op_id)
    return rows


@pytest.fixture(scope="module", autouse=True)
def _simcuda(simcuda_lib: Path) -> None:
    """Builds the simulated library every trace here attaches to."""


@contextlib.contextmanager
def cpu_hog(cpu: int) -> Iterator[int]:
    hog = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # running before the traced process starts
        yield hog.pid
    finally:
        hog.kill()
        hog.wait()


def test_a_traced_process_sharing_its_core_with_a_hog_is_switched_out_by_it(
    tmp_path: Path, db_rows: Any
) -> None:
    db, out = tmp_path / "t.db", tmp_path / "spin.json"
    with cpu_hog(0) as hog:
        trace(db, "taskset", "-c", "0", *hostload("spin", "1.5", str(out)))
    spinner = load_json(out)["pid"]
    switches = [r for r in host_rows(db_rows, db, "sched_switch") if r[0] == spinner]
    assert len(switches) >= 10, switches
    assert all(r[2] > 0 for r in switches), "off-CPU durations"
    preemptors = Counter(r[4] for r in switches)
    # The hog competes for that core the whole time (other tasks may too, on a
    # busy machine): it is named as the one holding the CPU, for long stretches.
    assert preemptors[hog] >= 5, preemptors
    assert sum(r[2] for r in switches if r[4] == hog) > 100_000_000, "the hog held the core for >0.1 s"


def test_every_fork_exec_and_exit_of_a_burst_is_stored_while_the_host_ring_overflows(
    tmp_path: Path, db_rows: Any
) -> None:
    db, out = tmp_path / "t.db", tmp_path / "forks.json"
    # A 4 KiB ring holds 46 records: the page allocations and context switches
    # of 1000 processes flood it, while exec/exit/fork have their own ring.
    run = trace(db, *hostload("forks", "1000", str(out)), flags=("--ringbuf-size", "4096"), timeout=240)
    made = load_json(out)
    children = made["children"]
    assert len(children) == 1000
    counts = end_counts(run.stdout)
    assert counts["dropped"] > 0, "the host ring was not flooded: the test proves nothing"
    assert "CRITICAL" not in run.stderr
    forks = host_rows(db_rows, db, "process_fork")
    assert Counter(r[4] for r in forks if r[0] == made["pid"]) == Counter(children)
    execs = Counter(r[0] for r in host_rows(db_rows, db, "process_exec"))
    exits = {r[0]: r[3] for r in host_rows(db_rows, db, "process_exit")}
    for child in children:
        assert execs[child] == 1, child
        assert exits.get(child) == 0, child  # /bin/true exits 0
    assert made["pid"] in exits


def test_page_allocations_of_a_traced_process_add_up_to_what_it_touched(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "alloc.json"
    # Page allocations are only counted in the aggregates unless every event is stored.
    run = trace(db, *hostload("alloc", "64", str(out)), flags=("--record-all",))
    made = load_json(out)
    allocated = sum(r[3] for r in host_rows(db_rows, db, "mm_page_alloc") if r[0] == made["pid"])
    assert "dropped 0" in run.stdout, run.stdout
    assert allocated >= made["bytes"]
    # Untraced processes show up as per-second summaries (this one only for the
    # moment between its fork and its enrolment, before it ran any of its code).
    summaries = host_rows(db_rows, db, "mm_page_alloc_summary")
    assert {r[0] for r in summaries} - {made["pid"]}, "no other process allocated?"
    assert sum(r[4] for r in summaries if r[0] == made["pid"]) < made["bytes"] // 16


def cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


@contextlib.contextmanager
def memory_limited_cgroup(name: str, limit: int) -> Iterator[tuple[list[Path], Path]]:
    """A cgroup limited to `limit` bytes: the cgroup.procs files to join, and
    the cgroup v2 directory whose inode BPF reports as the cgroup id. Uses the
    v2 memory controller where it is available, else the v1 one beside a v2
    group (hybrid hosts)."""
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy")
    group = root / name
    created = [group]
    group.mkdir()
    try:
        if "memory" in (root / "cgroup.controllers").read_text().split():
            (root / "cgroup.subtree_control").write_text("+memory")
            (group / "memory.max").write_text(str(limit))
            (group / "memory.swap.max").write_text("0")
            procs = [group / "cgroup.procs"]
        else:
            v1 = Path("/sys/fs/cgroup/memory")
            if not v1.is_dir():
                pytest.skip("no memory controller")
            v1_group = v1 / name
            v1_group.mkdir()
            created.append(v1_group)
            (v1_group / "memory.limit_in_bytes").write_text(str(limit))
            procs = [group / "cgroup.procs", v1_group / "cgroup.procs"]
        yield procs, group
    finally:
        for directory in reversed(created):
            for _ in range(50):  # the killed process leaves the group a moment later
                with contextlib.suppress(OSError):
                    directory.rmdir()
                    break
                time.sleep(0.1)


def test_an_oom_kill_in_a_small_cgroup_names_its_victim(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "alloc.json"
    name = f"ingero-oom-{os.getpid()}"
    with memory_limited_cgroup(name, 32 * MIB) as (procs, group):
        joins = "; ".join(f"echo $$ > {p}" for p in procs)
        victim_cmd = f"{joins}; exec {' '.join(hostload('alloc', '512', str(out)))}"
        # The traced command survives: the victim is its child, killed by the OOM killer.
        trace(db, "sh", "-c", f"sh -c '{victim_cmd}'; echo status $?")
        cgroup_id = group.stat().st_ino
    assert not out.exists(), "the allocation was not stopped"
    kills = host_rows(db_rows, db, "oom_kill", "pid, arg1, comm, cgroup_id")
    assert len(kills) == 1, kills
    victim, victim_arg, comm, event_cgroup = kills[0]
    assert victim == victim_arg
    assert comm == Path(sys.executable).name[:15]
    exits = {r[0]: r[3] for r in host_rows(db_rows, db, "process_exit")}
    assert exits[victim] == 128 + 9, "killed by SIGKILL"
    assert event_cgroup == cgroup_id
    assert db_rows(db, "SELECT cgroup_path FROM cgroup_metadata WHERE cgroup_id = ?", cgroup_id) == [
        (f"/{name}",)
    ]


def test_direct_io_reads_and_writes_become_block_events(tmp_path: Path, db_rows: Any) -> None:
    db, out, data = tmp_path / "t.db", tmp_path / "io.json", tmp_path / "data.bin"
    trace(db, *hostload("directio", str(data), "16", str(out)))
    made = load_json(out)
    for op, nbytes in (("block_write", made["written"]), ("block_read", made["read"])):
        rows = [r for r in host_rows(db_rows, db, op) if r[0] == made["pid"]]
        assert rows, op
        assert all(r[2] > 0 for r in rows), f"{op} latencies"
        # Every byte went to or came from the disk (sectors of 512 bytes). The
        # block layer splits requests larger than the device takes and may
        # issue the tails from a kernel worker: most, not all, are the process's.
        assert sum(r[3] for r in rows) * 512 >= 0.9 * nbytes, op
        everyone = db_rows(db, "SELECT SUM(arg0) FROM events WHERE source = ? AND op = ?", *code(op))
        assert everyone[0][0] * 512 >= nbytes, op


def test_socket_sends_and_receives_carry_their_fds_and_byte_counts(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "net.json"
    trace(db, *hostload("sockets", str(out)))
    made = load_json(out)
    stored = Counter(
        (o.removeprefix("net_"), fd, n)
        for o in ("net_send", "net_recv")
        for pid, _, duration, fd, n in host_rows(db_rows, db, o)
        if pid == made["pid"] and duration > 0
    )
    assert stored == Counter((c["op"], c["fd"], c["bytes"]) for c in made["calls"])


def test_json_lines_match_the_stored_rows(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "net.json"
    run = trace(db, *hostload("sockets", str(out)), flags=("--json", "--record-all"))
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines, run.stderr
    assert "events: received" in run.stderr, "the report goes to stderr beside JSON"
    mask = (1 << 64) - 1
    from_json = Counter(
        (
            e["timestamp"], e["pid"], e["tid"], e["source_id"], e["op_id"], e["duration_ns"],
            e["args"][0] & mask, e["args"][1] & mask, e["return_code"], e["cgroup_id"], e["process_name"],
        )
        for e in lines
    )  # fmt: skip
    stored = Counter(
        (*row[:6], row[6] & mask, row[7] & mask, *row[8:])
        for row in db_rows(
            db,
            "SELECT timestamp, pid, tid, source, op, duration, arg0, arg1, ret_code, cgroup_id, comm "
            "FROM events",
        )
    )
    assert from_json == stored
    names = {(e["source"], e["op"]) for e in lines}
    assert (source_named("NET").name, "net_send") in names


def test_system_snapshots_are_taken_every_second(tmp_path: Path, db_rows: Any) -> None:
    db = tmp_path / "t.db"
    trace(db, "sleep", "2.5")
    rows = db_rows(
        db,
        "SELECT timestamp, cpu_pct, mem_pct, mem_avail, swap_mb, load_avg FROM system_snapshots ORDER BY 1",
    )
    assert len(rows) >= 3, rows
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(rows)]
    assert all(0.5e9 < gap < 1.5e9 for gap in gaps[:-1]), gaps  # the last one is taken at stop
    total_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    for _, cpu, mem, avail, swap, load in rows:
        assert 0 <= cpu <= 100
        assert 0 < mem < 100
        assert 0 < avail <= total_mb
        assert swap >= 0
        assert load >= 0


def test_layers_can_be_turned_off(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "net.json"
    trace(db, *hostload("sockets", str(out)), flags=("--no-host", "--no-io", "--no-tcp", "--no-net"))
    assert db_rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


def test_live_view_counts_agree_with_the_stored_rows(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "spin.json"
    tracer = _core.Tracer(layers=["host", "io", "tcp", "net"])
    tracer.start(db, "n1", record_all=True)
    pid = tracer.launch(hostload("sockets", str(out)))
    assert _core.wait_child(pid, 60_000) == 0
    time.sleep(1.2)  # a system snapshot is taken every second
    final = tracer.stop()
    view = tracer.live()
    assert view["system"] is not None
    assert view["critical_dropped"] == final["critical_dropped"] == 0
    stored_by_source = dict(db_rows(db, "SELECT source, COUNT(*) FROM events GROUP BY source"))
    layers = {name: (received, stored, dropped) for name, received, stored, dropped in view["layers"]}
    for name, source in (("host", "HOST"), ("io", "IO"), ("net", "NET")):
        received, stored, _ = layers[name]
        assert received == stored == stored_by_source.get(source_named(source).id, 0), name
    stored_by_op = dict(
        ((s, o), n) for s, o, n in db_rows(db, "SELECT source, op, COUNT(*) FROM events GROUP BY source, op")
    )
    assert {(s, o): count for s, o, count, *_ in view["ops"]} == stored_by_op
    for _, _, _, p50, p95, p99, top, _ in view["ops"]:
        assert p50 <= p95 <= p99 <= top
    console = Console(width=120, record=True)
    console.print(live.render(view))
    text = console.export_text()
    assert "Host Context" in text
    assert "Network Socket" in text
    assert "net_send" in text
    host_line = next(line.split() for line in text.splitlines() if line.startswith("host "))
    assert host_line == ["host", *map(str, layers["host"])]


def test_tracing_every_cuda_process_enrols_them_in_the_host_layers(tmp_path: Path, db_rows: Any) -> None:
    db, out = tmp_path / "t.db", tmp_path / "w.json"
    lib = ROOT / "tests" / "simcuda" / "build" / "libcudart.so.12"
    trace = subprocess.Popen(
        [sys.executable, "-m", "ingero", "trace", "-d", "5s", "--db", str(db), "--cuda-lib", str(lib)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert trace.stderr is not None
        assert "attached" in trace.stderr.readline()
        workload = [sys.executable, str(ROOT / "tests" / "simcuda" / "workload.py"), "--lib", str(lib)]
        subprocess.run([*workload, "--json", str(out), "--mallocs=1", "--hold=0.5"], check=True)
        bystander = subprocess.run(
            ["sh", "-c", "sleep 0.3; echo $$"], capture_output=True, text=True, check=True
        )
        _, err = trace.communicate(timeout=60)
    finally:
        if trace.poll() is None:
            trace.kill()
    assert trace.returncode == 0, err
    cuda_pid, other_pid = load_json(out)["pid"], int(bystander.stdout)
    # Enrolled once the drainer saw its first CUDA call: its exit is recorded ...
    assert [r[3] for r in host_rows(db_rows, db, "process_exit") if r[0] == cuda_pid] == [0]
    # ... and a process that never called CUDA is not.
    assert all(r[0] != other_pid for r in host_rows(db_rows, db, "process_exit"))


@contextlib.contextmanager
def unanswered_network(name: str) -> Iterator[None]:
    """A network namespace whose only link is a TUN device nobody reads: every
    packet sent to its subnets is lost, so TCP retransmits its SYNs."""
    if shutil.which("ip") is None or not Path("/dev/net/tun").exists():
        pytest.skip("needs iproute2 and /dev/net/tun")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for step in (
            "ip tuntap add dev t0 mode tun",
            "ip addr add 10.9.9.1/24 dev t0",
            "ip addr add fd00:9::1/64 dev t0 nodad",
            "ip link set t0 up",
        ):
            subprocess.run(["ip", "netns", "exec", name, *step.split()], check=True)
        yield
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_tcp_retransmits_of_both_address_families_are_recorded(tmp_path: Path, db_rows: Any) -> None:
    db, name = tmp_path / "t.db", f"ingero-tcp-{os.getpid()}"
    connect = (
        "import socket\n"
        "for host in ('10.9.9.2', 'fd00:9::2'):\n"
        "    try:\n"
        "        socket.create_connection((host, 80), timeout=1.6)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    with unanswered_network(name):
        trace(db, "ip", "netns", "exec", name, sys.executable, "-c", connect)
    rows = host_rows(db_rows, db, "tcp_retransmit", "arg0, arg1, ret_code")
    # (saddr << 32) | daddr; for IPv6 the last 32 bits of each (::1 -> ::2).
    v4 = (0x0A090901 << 32) | 0x0A090902
    assert {(a0, a1 & 0xFFFF, rc & 0xFF) for a0, a1, rc in rows} == {(v4, 80, 2), ((1 << 32) | 2, 80, 10)}
    syn_sent = 2
    assert all(rc >> 8 == syn_sent for *_, rc in rows)
