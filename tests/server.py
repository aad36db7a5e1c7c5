"""Run an ASGI app under a real uvicorn server in a background thread, on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
