"""Host-side workloads for the kernel-event tests: each does one kind of thing
the host layers trace and writes its own account of it as JSON, the oracle the
tests compare the stored events with.

    hostload.py spin SECONDS OUT          busy loop (to compete with a CPU hog)
    hostload.py forks COUNT OUT           COUNT fork+exec+exit of /bin/true
    hostload.py alloc MIB OUT             touch MIB MiB of fresh memory
    hostload.py directio FILE MIB OUT     O_DIRECT write then read of MIB MiB
    hostload.py sockets OUT               UDP and TCP exchanges on loopback
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20


def spin(seconds: float) -> dict[str, Any]:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"pid": os.getpid(), "iterations": n}


def forks(count: int) -> dict[str, Any]:
    children = []
    for _ in range(count):
        child = subprocess.Popen(["/bin/true"])
        children.append(child.pid)
        child.wait()
    return {"pid": os.getpid(), "children": children}


def alloc(mib: int) -> dict[str, Any]:
    region = mmap.mmap(-1, mib * MIB)
    page = mmap.PAGESIZE
    for offset in range(0, mib * MIB, page):
        region[offset] = 1
    region.close()
    return {"pid": os.getpid(), "bytes": mib * MIB}


def directio(path: Path, mib: int) -> dict[str, Any]:
    block = MIB
    buffer = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT requires
    buffer.write(b"\xab" * block)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        written = sum(os.pwritev(fd, [buffer], i * block) for i in range(mib))
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        read = sum(os.preadv(fd, [buffer], i * block) for i in range(mib))
    finally:
        os.close(fd)
    return {"pid": os.getpid(), "written": written, "read": read}


def sockets() -> dict[str, Any]:
    """UDP sendto/recvfrom and TCP send/recv: each call's fd and byte count."""
    calls: list[dict[str, Any]] = []
    udp_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_rx.bind(("127.0.0.1", 0))
    udp_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for size in (100, 1400, 7):
        sent = udp_tx.sendto(b"u" * size, udp_rx.getsockname())
        calls.append({"op": "send", "fd": udp_tx.fileno(), "bytes": sent})
        data, _ = udp_rx.recvfrom(65536)
        calls.append({"op": "recv", "fd": udp_rx.fileno(), "bytes": len(data)})
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    acceptor.start()
    client = socket.create_connection(server.getsockname())
    acceptor.join()
    peer = accepted[0]
    for size in (5000, 64):
        sent = client.send(b"t" * size)
        calls.append({"op": "send", "fd": client.fileno(), "bytes": sent})
        got = 0
        while got < sent:
            chunk = peer.recv(65536)
            calls.append({"op": "recv", "fd": peer.fileno(), "bytes": len(chunk)})
            got += len(chunk)
    for s in (udp_rx, udp_tx, server, client, peer):
        s.close()
    return {"pid": os.getpid(), "calls": calls}


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "spin":
        result = spin(float(args[0]))
    elif kind == "forks":
        result = forks(int(args[0]))
    elif kind == "alloc":
        result = alloc(int(args[0]))
    elif kind == "directio":
        result = directio(Path(args[0]), int(args[1]))
        args = args[1:]
    elif kind == "sockets":
        result = sockets()
        args = ["", *args]
    else:
        raise SystemExit(f"unknown workload {kind}")
    Path(args[1]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
