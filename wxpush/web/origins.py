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

from wxpush.config.values import canonical_origin as canonical
from wxpush.config.values import origin_text as text

if TYPE_CHECKING:
    from wxpush.config.settings import Settings


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


def allowed_return(settings: Settings, url: str, scope: Scope) -> bool:
    """May a redirect door send the person back to ``url`` (a scene's ``return_to``)? An
    absolute http(s) URL without credentials, on an allowed origin or the server's own: the
    server never redirects anywhere else (no open redirect)."""
    if len(url) > MAX_RETURN_TO or not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return False
    if "*" in settings.allowed_origins:
        return True
    origin = canonical(f"{parts.scheme}://{parts.netloc}")
    return origin is not None and (
        origin in settings.allowed_origins or origin in own(settings, scope)
    )


MAX_RETURN_TO = 2048
