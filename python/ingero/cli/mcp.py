"""`ingero mcp`: serve a trace database to AI agents over MCP (stdio, or HTTPS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ingero.cli.output import fail, stderr
from ingero.store.database import DatabaseError, open_readonly
from ingero.store.paths import default_db_path


def mcp(  # noqa: PLR0917 - Typer maps each parameter to an option
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Database to serve ($INGERO_DB, else ~/.ingero/ingero.db)."),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            help="Serve streamable HTTP over TLS on HOST:PORT instead of stdio "
            "(bearer token from $INGERO_MCP_BEARER_TOKEN).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM); default: self-signed.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM, mode 600).")] = None,
    max_body: Annotated[int, typer.Option(help="Largest HTTP request body accepted, bytes.")] = 1 << 20,
    token: Annotated[str | None, typer.Option("--token", hidden=True)] = None,
) -> None:
    """Serve the trace to AI agents over MCP: stdio by default (Claude Code, Cursor, ollmcp).

    Tools: trace stats, causal chains, stacks, CUDA Graphs, read-only SQL, schema; every call audited.
    """
    if token is not None:
        fail("--token: pass the token in INGERO_MCP_BEARER_TOKEN, never as a flag (flags show in ps)")
    path = db if db is not None else default_db_path()
    try:
        open_readonly(path).close()
    except DatabaseError as e:
        fail(f"{e} (record one with `ingero trace`, or pass --db)")
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")

    # Imported here: the MCP SDK is only loaded by the command that needs it.
    from ingero.serve import http as https  # noqa: PLC0415
    from ingero.serve.server import build_server  # noqa: PLC0415

    if http is None:
        if tls_cert is not None:
            fail("--tls-cert/--tls-key need --http")
        server, service = build_server(path, "stdio")
        try:
            server.run("stdio")
        finally:
            service.close()
        return

    try:
        listen = https.parse_listen(http)
        bearer = https.token_from_env(listen)
        if tls_key is not None:
            https.check_key_file(tls_key)
    except https.HttpSetupError as e:
        fail(str(e))
    from mcp.server.transport_security import TransportSecuritySettings  # noqa: PLC0415

    server, service = build_server(path, "http")

    app = server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        max_request_body_size=max_body,
        # Host and Origin are checked by our guard, against the TLS origins it serves.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=listen.host,
    )
    try:
        https.serve(app, listen, bearer, tls_cert, tls_key, stderr.print, max_body)
    except https.HttpSetupError as e:
        fail(str(e))
    finally:
        service.close()


def register(app: typer.Typer) -> None:
    app.command()(mcp)
