"""The code table exported by ingero._core against the published databases'
own `sources`/`ops` rows: the same integers must mean the same operations."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ingero import codes
from tests.conftest import ROOT

TRACES = ROOT.parent / "shared" / "traces"


def published_databases() -> list[Path]:
    found = sorted(TRACES.glob("*.db"))
    if not found and os.environ.get("CI"):
        pytest.fail(f"no published databases in {TRACES}")
    return found


@pytest.mark.parametrize("db", published_databases(), ids=lambda p: p.name)
def test_codes_name_what_the_published_databases_name(db: Path) -> None:
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        published_ops = conn.execute("SELECT source_id, op_id, name FROM ops").fetchall()
        published_sources = conn.execute("SELECT id, name FROM sources").fetchall()
    finally:
        conn.close()
    ours_ops = {(o.source, o.id): o.name for o in codes.ops()}
    ours_sources = {s.id: s.name for s in codes.sources()}
    assert published_ops
    for source, op, name in published_ops:
        assert ours_ops.get((source, op)) == name, (source, op, name)
    for source, name in published_sources:
        assert ours_sources.get(source) == name, (source, name)


def test_lookup_by_name() -> None:
    assert codes.op_named("CUDAMALLOC").id == 1
    assert codes.source_named("cuda_graph").id == 8
    with pytest.raises(KeyError):
        codes.op_named("cudaNothing")
