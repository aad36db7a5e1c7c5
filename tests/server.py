"""Real servers in a background thread, on a free port: an ASGI app under uvicorn, or a raw
HTTP/1.1 receiver that drops kept-alive connections (:func:`keepalive_closer`)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn

from tests.util import TIMEOUT, wait_for


@contextmanager
def serve(app: Any, port: int = 0, **config: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (on ``port``, or any free one) and yield its base URL; stop
    it on exit. An app that must know its own URL before it starts is given a ``port``."""
    cfg = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config
    )
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive())
        assert server.started, "server failed to start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT * 2)


@dataclass
class Closer:
    """A receiver whose kept-alive connections end the moment they are used again."""

    url: str
    answered: list[bytes] = field(default_factory=list)  # the bodies of requests it answered
    dropped: int = 0  # requests it read and dropped without an answer


@contextmanager
def keepalive_closer(
    *, how: Literal["close", "reset"] = "close", drop: Literal["reused", "every"] = "reused",
    body: bytes = b"{}", content_type: str = "application/json",
) -> Iterator[Closer]:  # fmt: skip
    """A raw HTTP/1.1 receiver, in a thread, that answers the first request of a connection
    and keeps the connection open, then drops it unanswered when the next request arrives
    on it (``how``: a FIN, or a reset): what a server does whose keep-alive timeout fires
    just as a client sends on the idle connection. ``drop="every"`` drops first requests
    too: a receiver that fails whatever the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    closer = Closer(f"http://127.0.0.1:{listener.getsockname()[1]}/hook")

    def serve_one(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for number in itertools.count():
                request = _read_request(stream)
                if request is None:
                    return
                if drop == "every" or number > 0:
                    closer.dropped += 1
                    if how == "reset":
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    return
                closer.answered.append(request)
                head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
                conn.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # shut down: the test is over
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield closer
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        acceptor.join(TIMEOUT)
        listener.close()


def _read_request(stream: Any) -> bytes | None:
    """One request's body (by Content-Length), or ``None`` once the client has gone."""
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if not line:
        return None
    return bytes(stream.read(length))
