"""`ingero mcp --http`: TLS only, bearer token, Host and Origin checks, a body cap; and a
real MCP client over HTTPS whose calls are audited with their principal."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.python.mcp_session import INGERO, structured
from tests.synthdb import write_synthetic_db

TOKEN = "test-token-0123456789abcdef"
INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
).encode()


@dataclass
class Served:
    port: int
    fingerprint: str
    audit: Path
    process: subprocess.Popen[str]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("http")
    db = write_synthetic_db(tmp / "t.db", 2_000, scenario="sched-tail")
    db.chmod(0o444)
    port = free_port()
    env = {
        **os.environ,
        "INGERO_MCP_BEARER_TOKEN": TOKEN,
        "INGERO_DB": str(tmp / "audit.db"),
        "COLUMNS": "200",
    }
    process = subprocess.Popen(
        [str(INGERO), "mcp", "--db", str(db), "--http", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        assert line, f"server exited: {''.join(lines)}"
        lines.append(line)
        if "serving MCP on" in line:
            break
    fingerprint = next(line.split("fingerprint")[1].strip() for line in lines if "fingerprint" in line)
    yield Served(port, fingerprint, tmp / "audit.db", process)
    process.terminate()
    process.wait(timeout=10)


def post(served: Served, headers: dict[str, str], body: bytes = INITIALIZE) -> http.client.HTTPResponse:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=context, timeout=10)
    base = {
        "Host": served.host,
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    conn.request("POST", "/mcp", body=body, headers={**base, **headers})
    response = conn.getresponse()
    response.read()
    return response


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_certificate_is_the_announced_one(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port)) as raw:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw) as tls:
            assert tls.version() == "TLSv1.3"
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    assert hashlib.sha256(der).hexdigest() == served.fingerprint.replace(":", "").lower()


def test_a_good_request_is_served(served: Served) -> None:
    assert post(served, bearer()).status == 200


def test_no_or_wrong_token_is_401_with_a_challenge(served: Served) -> None:
    for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": f"Basic {TOKEN}"}):
        response = post(served, headers)
        assert response.status == 401
        assert response.getheader("WWW-Authenticate", "").startswith("Bearer")


def test_foreign_origin_is_403(served: Served) -> None:
    assert post(served, {**bearer(), "Origin": "https://evil.example"}).status == 403
    assert post(served, {**bearer(), "Origin": f"https://{served.host}"}).status == 200


def test_foreign_host_is_rejected(served: Served) -> None:
    assert post(served, {**bearer(), "Host": f"evil.example:{served.port}"}).status == 421


def test_oversized_body_is_413(served: Served) -> None:
    assert post(served, bearer(), b" " * (2 << 20)).status == 413


def test_plain_http_gets_no_answer(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("POST", "/mcp", body=INITIALIZE, headers={"Host": served.host, **bearer()})
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.getresponse()


def test_mcp_client_over_https_is_audited_with_its_principal(served: Served) -> None:
    async def main() -> None:
        client = httpx2.AsyncClient(headers=bearer(), verify=False, timeout=30)
        async with (
            client,
            Client(streamable_http_client(f"https://{served.host}/mcp", http_client=client)) as mcp,
        ):
            tools = {t.name for t in (await mcp.list_tools()).tools}
            assert "run_sql" in tools
            stats = structured(await mcp.call_tool("get_trace_stats", {}))
            assert stats["total_events"] == 2_000

    anyio.run(main)
    conn = sqlite3.connect(f"file:{served.audit}?mode=ro", uri=True)
    rows = conn.execute("SELECT tool, status, transport, principal FROM mcp_calls").fetchall()
    conn.close()
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert ("get_trace_stats", "ok", "http", f"bearer:{digest}@127.0.0.1") in rows


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INGERO), "mcp", *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_non_loopback_without_token_is_refused(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 100)
    env = {k: v for k, v in os.environ.items() if k != "INGERO_MCP_BEARER_TOKEN"}
    proc = run_cli("--db", str(db), "--http", f"0.0.0.0:{free_port()}", env=env)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "without a bearer token" in proc.stderr


def test_readable_tls_key_is_refused(tmp_path: Path) -> None:
    db = write_synthetic_db(tmp_path / "t.db", 100)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o644)
    env = {**os.environ, "INGERO_MCP_BEARER_TOKEN": TOKEN}
    proc = run_cli(
        "--db",
        str(db),
        "--http",
        f"127.0.0.1:{free_port()}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        env=env,
    )
    assert proc.returncode != 0
    assert "readable by group or others" in proc.stderr
    assert "Traceback" not in proc.stderr
