"""The output schemas of the tools: what each structured result holds.

Strings that came from the traced system are already wrapped in [traced-data]
delimiters when they reach these models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Result(BaseModel):
    """Fields every tool result carries."""

    truncated: bool = Field(default=False, description="True when the result was cut to fit the budget")
    note: str = Field(default="", description="How to narrow the query when cut, and other caveats")
    audit: str = Field(default="", description="Where this call was recorded")


class CheckFact(BaseModel):
    name: str
    ok: bool | None = Field(description="True pass, False fail, None informational")
    value: str
    detail: str = ""


class CheckResult(Result):
    facts: list[CheckFact]


class OpStat(BaseModel):
    source: int
    op: int
    source_name: str
    op_name: str
    count: int
    p50_us: float | None
    p95_us: float | None
    p99_us: float | None
    min_us: float
    max_us: float
    total_ms: float
    wall_share: float | None = Field(description="Share of the traced wall time spent in this op (0..1)")
    anomalies: int | None = Field(description="Calls slower than 3x p50")


class ProcessCount(BaseModel):
    pid: int
    name: str
    events: int


class TraceStatsResult(Result):
    mode: str = Field(
        description="'exact' (percentiles from every event) or 'aggregate' (count/min/max only)"
    )
    total_events: int
    first_ns: int | None
    last_ns: int | None
    seconds: float
    ops: list[OpStat]
    processes: list[ProcessCount]
    stored_chains: int
    mcp_calls: int = Field(description="Audit events of MCP calls in the database (source MCP), not in ops")


class TimelineEntry(BaseModel):
    layer: str
    op: str
    detail: str
    dur_us: float


class Chain(BaseModel):
    id: str
    severity: str
    summary: str
    root_cause: str
    explanation: str
    recommendations: list[str]
    cuda_op: str
    cuda_p99_us: float
    cuda_p50_us: float
    tail_ratio: float
    detected_at: int
    node: str
    timeline: list[TimelineEntry]


class ChainsResult(Result):
    source: str = Field(description="'analysis' (computed from the events) or 'stored' (causal_chains rows)")
    total: int
    chains: list[Chain]


class SqlResultModel(Result):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    duration_ms: float


class StackGroup(BaseModel):
    hash: int
    count: int
    avg_us: float
    min_us: float
    max_us: float
    sum_arg0: int
    ops: list[str]
    processes: list[ProcessCount]
    native_frames: list[str]
    python_frames: list[str]


class StacksResult(Result):
    total_stacks: int
    stacks: list[StackGroup]


class GraphEvent(BaseModel):
    t_ns: int
    op: str
    duration_us: float
    stream: str = ""
    graph: str = ""
    exec: str = ""
    mode: str = ""
    ret_code: int = 0


class GraphLifecycleResult(Result):
    pid: int
    captures: int
    instantiations: int
    launches: int
    launches_per_capture: float | None
    events: list[GraphEvent]


class ExecHandleRate(BaseModel):
    exec: str
    launches: int
    rate_per_s: float
    klass: str = Field(description="HOT, cold or never-launched")


class GraphFrequencyResult(Result):
    pid: int
    window_seconds: float
    pool_size: int
    captures: int
    instantiations: int
    recaptures: int
    handles: list[ExecHandleRate]


class SchemaColumn(BaseModel):
    name: str
    note: str


class SchemaTable(BaseModel):
    name: str
    columns: list[SchemaColumn]


class SourceCode(BaseModel):
    id: int
    name: str
    description: str


class OpCode(BaseModel):
    source: int
    source_name: str
    op: int
    name: str
    description: str
    arg0: str
    arg1: str


class SchemaResult(Result):
    tables: list[SchemaTable]
    sources: list[SourceCode]
    ops: list[OpCode]
    tips: list[str]
