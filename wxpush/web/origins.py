"""Origins: which pages may open the scene sockets (CORS follows the same list).

An origin is compared in the form browsers send it, ``scheme://host[:port]``: lower case,
the scheme's default port left out. A browser's Origin must be one of
``WXPUSH_ALLOWED_ORIGINS`` (``*``: any) or the server's own origin — never judged by the
request's ``Host`` header, which the page's side controls: a page on ``evil.example`` whose
name has been re-pointed at this server (DNS rebinding) sends ``Host: evil.example`` along
with its own Origin, and a page on another scheme or port is another origin.
"""

from __future__ import annotations

import ipaddress
from contextlib import suppress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.types import Scope

if TYPE_CHECKING:
    from wxpush.config.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}


def allowed(settings: Settings, origin: str | None, scope: Scope) -> bool:
    """May a connection with this ``Origin`` header (``None``: apps and TVs send none) go on?"""
    if origin is None or "*" in settings.allowed_origins:
        return True
    seen = canonical(origin)
    return seen is not None and (seen in settings.allowed_origins or seen in own(settings, scope))


def own(settings: Settings, scope: Scope) -> set[str]:
    """The server's own origin: ``WXPUSH_PUBLIC_URL``'s scheme, host and port; without one,
    the address and scheme this connection actually reached (ASGI's ``server`` and
    ``scheme``). A loopback address is ``localhost`` too: no page but this server's can be
    served from this machine's own port."""
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        return {canonical(f"{parts.scheme}://{parts.netloc}") or ""}
    server = scope.get("server")
    if not server or server[1] is None:  # a Unix socket: only a proxy, which names the URL
        return set()
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    host, port = str(server[0]), int(server[1])
    with suppress(ValueError):
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # an IPv4 client of a dual-stack socket (--host ::)
        host = str(address)
        if address.is_loopback:
            return {text(scheme, host, port), text(scheme, "localhost", port)}
    return {text(scheme, host, port)}


def canonical(url: str) -> str | None:
    """The origin ``url`` names, as a browser's ``Origin`` header would put it, or ``None``
    when it is not a bare http(s) origin (``null``, a path, user info, a bad port)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return text(scheme, parts.hostname, port)


def text(scheme: str, host: str, port: int | None) -> str:
    """An origin from its parts: IPv6 hosts in brackets, the scheme's default port left out."""
    host = f"[{host.lower()}]" if ":" in host else host.lower()
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
