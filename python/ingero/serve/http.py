"""Streamable HTTP with TLS: the checks every request passes before it reaches MCP.

Host and Origin must name this server (DNS-rebinding defence), the bearer token from
INGERO_MCP_BEARER_TOKEN is compared in constant time, bodies are capped, and only
TLS 1.3 is spoken: a plain-HTTP request gets no answer.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import ssl
import stat
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_ENV = "INGERO_MCP_BEARER_TOKEN"
MAX_BODY_BYTES = 1 << 20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
PRINCIPAL_KEY = "ingero.principal"


class HttpSetupError(Exception):
    """A listen address, certificate or token the server cannot start with (one line)."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen(text: str) -> Listen:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise HttpSetupError(f"--http: expected HOST:PORT (e.g. 127.0.0.1:8765), got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return Listen(host, int(port))


def token_from_env(listen: Listen) -> str | None:
    token = os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise HttpSetupError(f"{TOKEN_ENV} is too short: use at least 16 random characters")
    if token is None and not listen.loopback:
        raise HttpSetupError(
            f"refusing to listen on {listen.host} without a bearer token: set {TOKEN_ENV}, or bind 127.0.0.1"
        )
    return token


def _respond(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> ASGIApp:
    body = json.dumps({"error": message}).encode()

    async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class Guard:
    """ASGI middleware: Host, Origin, bearer token and body size, in that order."""

    def __init__(
        self, app: ASGIApp, listen: Listen, token: str | None, max_body: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.max_body = max_body
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        self._principal = (
            f"bearer:{hashlib.sha256(token.encode()).hexdigest()[:12]}" if token else "anonymous"
        )
        names = {listen.host, *(LOOPBACK_NAMES if listen.loopback else ())}
        self.hosts = {f"{n}:{listen.port}" for n in names} | {
            f"[{n}]:{listen.port}" for n in names if ":" in n
        }
        self.origins = {f"https://{h}" for h in self.hosts}

    def _header(self, scope: Scope, name: bytes) -> str | None:
        for key, value in scope.get("headers", []):
            if key.lower() == name:
                return bytes(value).decode("latin-1")
        return None

    def _authorized(self, scope: Scope) -> bool:
        if self._token_digest is None:
            return True
        value = self._header(scope, b"authorization") or ""
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        # Equal-length digests compared in constant time: neither length nor prefix leaks.
        return hmac.compare_digest(hashlib.sha256(credentials.strip().encode()).digest(), self._token_digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = self._header(scope, b"host")
        if host is None or host.lower() not in self.hosts:
            await _respond(421, "Host not served here")(scope, receive, send)
            return
        origin = self._header(scope, b"origin")
        if origin is not None and origin.lower() not in self.origins:
            await _respond(403, "Origin not allowed")(scope, receive, send)
            return
        if not self._authorized(scope):
            challenge = [(b"www-authenticate", b'Bearer realm="ingero"')]
            await _respond(401, "missing or wrong bearer token", challenge)(scope, receive, send)
            return
        length = self._header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _respond(413, f"request body over {self.max_body} bytes")(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            await _respond(413, f"request body over {self.max_body} bytes")(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        scope[PRINCIPAL_KEY] = f"{self._principal}@{client[0]}"
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the cap (Content-Length may be absent)."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = bytes(message.get("body", b""))
            seen += len(chunk)
            if seen > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def check_key_file(key: Path) -> None:
    try:
        mode = key.stat().st_mode
    except OSError as e:
        raise HttpSetupError(f"--tls-key: cannot read {key}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HttpSetupError(
            f"--tls-key: {key} is readable by group or others (mode {mode & 0o777:o}): chmod 600 it"
        )


def self_signed(listen: Listen, directory: Path) -> tuple[Path, Path, str]:
    """An ephemeral ECDSA P-256 certificate for the listen address, valid one day, and its
    SHA-256 fingerprint."""

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for addr in {"127.0.0.1", "::1", listen.host}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            names.append(x509.DNSName(addr))
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ingero mcp")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return cert_path, key_path, fingerprint


def serve(  # noqa: PLR0917
    app: ASGIApp,
    listen: Listen,
    token: str | None,
    cert: Path | None,
    key: Path | None,
    announce: Callable[[str], None],
    max_body: int = MAX_BODY_BYTES,
) -> None:
    """Serves `app` behind the guard over TLS 1.3 until interrupted."""
    with tempfile.TemporaryDirectory(prefix="ingero-mcp-") as tmp:
        if cert is None or key is None:
            cert, key, fingerprint = self_signed(listen, Path(tmp))
            announce(f"self-signed certificate, SHA-256 fingerprint {fingerprint}")
        else:
            check_key_file(key)
        config = uvicorn.Config(
            Guard(app, listen, token, max_body),
            host=listen.host,
            port=listen.port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_level="warning",
            h11_max_incomplete_event_size=64 * 1024,
        )
        try:
            config.load()
        except (ssl.SSLError, OSError) as e:
            raise HttpSetupError(f"cannot load the TLS certificate/key: {e}") from None
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
        _AnnouncingServer(config, f"serving MCP on https://{listen.host}:{listen.port}/mcp", announce).run()


class _AnnouncingServer(uvicorn.Server):
    """Says it serves only once the socket listens, so a client told so can connect."""

    def __init__(self, config: uvicorn.Config, line: str, announce: Callable[[str], None]) -> None:
        super().__init__(config)
        self._line, self._announce = line, announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce(self._line)
