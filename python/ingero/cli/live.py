"""The live view of `ingero trace`: a table redrawn every second with the system
line, each layer's ops (count, p50/p95/p99, spikes), and what each layer
received, stored and dropped."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ingero import _core
from ingero.codes import ops

# A layer losing more than this share of its events gets a warning line.
DROP_WARNING_SHARE = 0.05
# The sections of the table, in the original's order: (title, sources).
SECTIONS = (
    ("CUDA Runtime API", (1, 8)),
    ("CUDA Driver API", (4,)),
    ("NCCL", (9,)),
    ("Host Context", (3,)),
    ("Block I/O", (5,)),
    ("TCP", (6,)),
    ("Network Socket", (7,)),
)


def format_ns(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.1f}ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f}µs"
    return f"{ns}ns"


def system_line(view: _core.LiveView) -> Text:
    s = view["system"]
    if s is None:
        return Text("System: (first snapshot pending)", style="dim")
    return Text(
        f"System: CPU {s['cpu_pct']:5.1f}% | Mem {s['mem_pct']:5.1f}% "
        f"({s['mem_avail_mb']} MB free) | Swap {s['swap_mb']} MB | Load {s['load_avg']:.2f}"
    )


def _op_names() -> dict[tuple[int, int], str]:
    return {(o.source, o.id): o.name for o in ops()}


def ops_table(view: _core.LiveView, title: str, wanted: tuple[int, ...]) -> Table | None:
    rows = [op for op in view["ops"] if op[0] in wanted]
    if not rows:
        return None
    names = _op_names()
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("op", "count", "p50", "p95", "p99", "max", "spikes"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for source, op, count, p50, p95, p99, top, spikes in rows:
        table.add_row(
            names.get((source, op), f"{source}/{op}"),
            str(count),
            format_ns(p50),
            format_ns(p95),
            format_ns(p99),
            format_ns(top),
            Text(f"{spikes} !", style="bold yellow") if spikes else "0",
        )
    return table


def layer_table(view: _core.LiveView) -> list[RenderableType]:
    """Events received, stored and dropped per layer, with the warnings that matter."""
    table = Table(title="Layers", title_justify="left", box=None, pad_edge=False)
    for column in ("layer", "events", "stored", "dropped"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    warnings: list[RenderableType] = []
    for name, received, stored, dropped in view["layers"]:
        table.add_row(name, str(received), str(stored), str(dropped))
        if dropped and dropped / (received + dropped) > DROP_WARNING_SHARE:
            warnings.append(
                Text(
                    f"WARN: the {name} layer dropped {dropped} of {received + dropped} events "
                    "(more than 5%): consider --ringbuf-size",
                    style="bold yellow",
                )
            )
    if view["critical_dropped"]:
        warnings.append(
            Text(
                f"CRITICAL: {view['critical_dropped']} exec/exit/fork/OOM events were dropped "
                "-- this should never happen",
                style="bold red",
            )
        )
    return [table, *warnings]


def render(view: _core.LiveView) -> RenderableType:
    parts: list[RenderableType] = [system_line(view)]
    for title, wanted in SECTIONS:
        table = ops_table(view, title, wanted)
        if table is not None:
            parts.append(Text(""))
            parts.append(table)
    parts.append(Text(""))
    parts.extend(layer_table(view))
    return Group(*parts)


__all__ = ["format_ns", "render"]
