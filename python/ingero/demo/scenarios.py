"""The six demo scenarios: each a workload, the stressor that causes its problem, and
the root cause the analysis is expected to find (and must not find without it)."""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1 << 20
MS = 1_000_000  # ns


@dataclass(frozen=True)
class Expectation:
    """How to recognise the expected root cause in what the analysis returns.

    A causal chain matches when it concerns one of `ops` (its cuda_op or a CUDA entry of
    its timeline), every layer of `layers` appears in its timeline, its text (summary,
    root cause, explanation) matches one of `words`, when given, and, with
    `names_stressor`, names one of the scenario's stressor processes (as a preempter: on a
    busy machine other processes preempt too, so contention alone proves nothing). `stat`, when
    given, names an op-statistics signal that also counts as finding it (for causes no
    chain rule covers): "time_share" (the op has the largest share of wall time),
    "spike_period" (it spikes periodically), "cold_start" (a one-off call far slower
    than its median) or "shared_gpu" (its tail while another process uses the GPU)."""

    ops: frozenset[str]
    layers: frozenset[str] = frozenset()
    words: tuple[str, ...] = ()
    names_stressor: bool = False
    stat: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    # The root cause, as the demo states it before looking at the analysis.
    expected: str
    # What the demo does to the workload to cause it.
    stressor: str
    expectation: Expectation
    # workload.py flags of the run with and without the stressor.
    workload: tuple[str, ...]
    stress: tuple[str, ...] = ()
    # simcuda knobs of the run, and those that are (part of) the stressor.
    env: dict[str, str] = field(default_factory=dict)
    stress_env: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # The evidence is host events (scheduler, page allocation): needs host capture.
    needs_host_events: bool = False
    # The workload pins itself and its stressors to one CPU (the last one allowed).
    pin_cpu: bool = False
    # The workload's processes share one simulated device timeline.
    shared_device: bool = False


SYNC_OPS = frozenset({"cudaStreamSync", "cudaDeviceSync", "cuCtxSynchronize", "cudaMemcpy"})
# The analysis's preemption chain ends in a CUDA "preempted" entry.
PREEMPTED_OPS = SYNC_OPS | {"preempted"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="incident",
        title="Incident: a training step slows down, then recovers",
        description="A steady loop; midway, CPU-bound jobs land on its core and another process "
        "churns host memory; then they stop.",
        expected="CPU contention and host memory pressure: the trainer is preempted by the "
        "background jobs (sched_switch) while pages are allocated, and cudaStreamSynchronize "
        "latency rises with them",
        stressor="2 CPU-bound processes pinned to the trainer's CPU and one allocating 64 MiB "
        "blocks, during steps 200-400 of 600",
        expectation=Expectation(ops=PREEMPTED_OPS, layers=frozenset({"HOST"}), names_stressor=True),
        workload=("--steps", "600", "--kernel-us", "100", "--cpu-work-us", "300"),
        stress=("--hogs", "2", "--memory-mib", "64", "--stress-from", "200", "--stress-to", "400"),
        needs_host_events=True,
        pin_cpu=True,
    ),
    Scenario(
        name="cold-start",
        title="CUDA cold start",
        description="The first CUDA calls of a process create its context and load each kernel's "
        "module; later calls are fast.",
        expected="cold start: the first cudaMalloc pays context creation and the first launch of "
        "each kernel pays module loading, hundreds of times the steady-state cost",
        stressor="context creation of 250 ms and lazy module loading of 30 ms per kernel "
        "(SIMCUDA_CONTEXT_INIT_NS, SIMCUDA_MODULE_LOAD_NS)",
        expectation=Expectation(
            ops=frozenset({"cudaMalloc", "cudaLaunchKernel"}),
            words=("cold", "first", "warm", "init"),
            stat="cold_start",
        ),
        workload=("--steps", "300", "--kernels", "4", "--kernel-us", "100", "--alloc-bytes", str(MIB)),
        stress_env={"SIMCUDA_CONTEXT_INIT_NS": str(250 * MS), "SIMCUDA_MODULE_LOAD_NS": str(30 * MS)},
    ),
    Scenario(
        name="memcpy-bottleneck",
        title="Memory transfer bottleneck",
        description="Every step copies its input host to device with a synchronous cudaMemcpy.",
        expected="host-to-device cudaMemcpy dominates the traced time: the step is bound by "
        "transfers, not by compute",
        stressor="32 MiB synchronous host-to-device copies each step (256 KiB without it)",
        expectation=Expectation(
            ops=frozenset({"cudaMemcpy", "cuMemcpy", "cuMemcpyHtoD"}),
            words=("memcpy", "transfer", "copy"),
            stat="time_share",
        ),
        workload=("--steps", "150", "--kernel-us", "50"),
        stress=("--copy-bytes", str(32 * MIB)),
    ),
    Scenario(
        name="periodic-spike",
        title="Periodic allocation spikes",
        description="Each step allocates a small scratch buffer; every 25th step the allocator "
        "grows its pool with one large cudaMalloc.",
        expected="cudaMalloc spikes periodically (every ~25 calls): a large allocation at a fixed "
        "interval, the pattern of a caching allocator growing or emptying its pool",
        stressor="a 128 MiB cudaMalloc every 25th step (1 MiB otherwise)",
        expectation=Expectation(
            ops=frozenset({"cudaMalloc", "cuMemAlloc"}),
            words=("periodic", "every", "spike"),
            stat="spike_period",
        ),
        workload=("--steps", "300", "--alloc-bytes", str(MIB)),
        stress=("--spike-every", "25", "--spike-bytes", str(128 * MIB)),
    ),
    Scenario(
        name="cpu-contention",
        title="CPU contention",
        description="CPU-bound jobs share the trainer's core for the middle third of the run.",
        expected="CPU contention: CPU-bound processes on the trainer's core preempt it "
        "(sched_switch), and cudaStreamSynchronize returns late",
        stressor="2 CPU-bound processes pinned to the trainer's CPU during steps 200-400 of 600",
        expectation=Expectation(ops=PREEMPTED_OPS, layers=frozenset({"HOST"}), names_stressor=True),
        workload=("--steps", "600", "--kernel-us", "100", "--cpu-work-us", "300"),
        stress=("--hogs", "2", "--stress-from", "200", "--stress-to", "400"),
        needs_host_events=True,
        pin_cpu=True,
    ),
    Scenario(
        name="gpu-steal",
        aliases=("gpu-contention", "contention"),
        title="GPU time thief: two processes share one GPU",
        description="A second process starts running long kernels on the same device; the GPU "
        "time-slices between them.",
        expected="a second process on the same GPU: the device time-slices between them, so the "
        "trainer's synchronisations wait for the other process's kernels",
        stressor="a second process running 2 ms kernels back to back on device 0 from step 300 "
        "of 500 (0.5 ms context switch between processes)",
        expectation=Expectation(
            ops=SYNC_OPS, words=("process", "share", "contention", "steal", "slic"), stat="shared_gpu"
        ),
        workload=("--steps", "500", "--kernel-us", "100"),
        stress=("--competitor-kernel-us", "2000", "--stress-from", "300"),
        env={"SIMCUDA_SWITCH_NS": str(MS // 2)},
        shared_device=True,
    ),
)


def find(name: str) -> Scenario | None:
    return next((s for s in SCENARIOS if name == s.name or name in s.aliases), None)


def names() -> list[str]:
    return [s.name for s in SCENARIOS]
