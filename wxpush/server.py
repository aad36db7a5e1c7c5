"""How uvicorn runs the app: its WebSocket protocol, keep-alive, proxy headers and logging.

Shared by ``wxpush serve`` and ``wxpush demo`` (and the benchmarks that start a server).
"""

from __future__ import annotations

import copy
from typing import Any

from wxpush.config.settings import Settings

PING_INTERVAL = 45.0
MAX_PING_INTERVAL = 50.0  # every socket is pinged at least this often
# Seconds an idle keep-alive HTTP connection stays open. uvicorn's default is 5; a reverse
# proxy or load balancer keeps its idle upstream connections for 60 s, and one that reuses a
# connection just as the server closes it gets a reset (a 502 for its client). Above the
# proxy's timeout, the proxy is always the side that closes.
KEEP_ALIVE = 75
MAX_KEEP_ALIVE = 3600


def websocket_options(ping_interval: float = PING_INTERVAL) -> dict[str, Any]:
    """uvicorn's WebSocket settings: the lean protocol of :mod:`wxpush.realtime.wsprotocol` (one
    shared keep-alive timer), no per-message deflate (tiny JSON frames gain nothing from it,
    and it costs memory on every socket)."""
    return {
        "ws": "wxpush.realtime.wsprotocol:WaitingSocketProtocol",
        "ws_ping_interval": ping_interval,
        "ws_per_message_deflate": False,
    }


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging and proxy settings, from ours.

    Forwarded headers are believed only from ``WXPUSH_TRUSTED_PROXIES`` (uvicorn's default
    trusts 127.0.0.1, so anyone on the machine, or a local tunnel, could name any address
    and reset every per-IP limit). uvicorn's access log is off: it writes each request's
    path and query string, which carry scene ids and WeChat's signatures; the app writes its
    own (:mod:`wxpush.web.access`).
    """
    return {
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "access_log": False,
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level),
    }


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration with wxpush's own loggers added at ``level``
    (uvicorn's ``log_level`` reaches only uvicorn's loggers). Given to uvicorn, it is applied
    in every worker process too. Access lines go to stdout, as uvicorn's did; the rest to
    stderr."""
    from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    fmt = "%(levelprefix)s %(name)s: %(message)s"
    config["formatters"]["wxpush"] = {"()": "uvicorn.logging.DefaultFormatter", "fmt": fmt}
    for name, stream in (("wxpush", "stderr"), ("wxpush.access", "stdout")):
        config["handlers"][name] = {
            "formatter": "wxpush", "class": "logging.StreamHandler", "stream": f"ext://sys.{stream}",
        }  # fmt: skip
        config["loggers"][name] = {"handlers": [name], "propagate": False}
    config["loggers"]["wxpush"]["level"] = LOG_LEVELS[level]
    # the lean WebSocket protocol keeps handshake and frame logs out (see its docstring)
    config["loggers"]["wxpush.realtime.wsprotocol"] = {"level": "WARNING"}
    return config
