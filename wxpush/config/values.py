"""Parsers of setting values: each takes the raw text and returns the typed value or raises
``ValueError`` with the problem in words (the caller names the variable).

Origins are kept in the form browsers send them in their ``Origin`` header (see
:func:`canonical_origin`), so comparing one is a set lookup.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal, cast
from urllib.parse import urlsplit

from wxpush.infra.redis_client import MIN_CONNECTIONS
from wxpush.wechat.crypto import decode_aes_key

SmsProvider = Literal["console", "webhook", "aliyun", "tencent"]
SMS_PROVIDERS: tuple[SmsProvider, ...] = ("console", "webhook", "aliyun", "tencent")
DEFAULT_PORTS = {"http": 80, "https": 443}


def text(raw: str) -> str:
    return raw


def positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def redis_connections(raw: str) -> int:
    value = positive_int(raw)
    if value < MIN_CONNECTIONS:
        raise ValueError(
            f"must be at least {MIN_CONNECTIONS} (the pub/sub connection, the pipelined one "
            "for the login path, and at least one for the rest)"
        )
    return value


def boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.strip().rstrip("/")


def redis_url(raw: str) -> str:
    if urlsplit(raw.strip()).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return raw.strip()


def host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port,…`` (a Redis Sentinel set)."""
    found: list[tuple[str, int]] = []
    for item in (part.strip() for part in raw.split(",")):
        host, _, port = item.rpartition(":")
        if not item or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r}: give host:port, comma-separated")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def database_url(raw: str) -> str:
    scheme = urlsplit(raw.strip()).scheme
    if not scheme.startswith(("sqlite", "postgresql", "postgres")):
        raise ValueError("must be a sqlite:/// or postgresql:// URL")
    return raw.strip()


def origins(raw: str) -> tuple[str, ...]:
    """Origins in the form browsers send them (see :func:`canonical_origin`), or ``*``."""
    items = tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
    canonical: list[str] = []
    for item in items:
        origin = "*" if item == "*" else canonical_origin(item)
        if origin is None:
            raise ValueError(f"{item!r} is not an origin like https://example.com")
        canonical.append(origin)
    return tuple(canonical)


def proxies(raw: str) -> tuple[str, ...]:
    """Addresses (``10.0.0.1``) and networks (``10.0.0.0/8``), the way uvicorn's
    ``forwarded_allow_ips`` reads them; anything else would be silently matched as a literal
    string there, and never trusted, so it is refused here."""
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    return tuple(_proxy(item) for item in items)


def _proxy(item: str) -> str:
    if item == "*":
        raise ValueError("'*' would take any client's word for its address; name the proxies")
    try:
        return str(ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item))
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or network like 10.0.0.0/8") from None


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def sms_provider(raw: str) -> SmsProvider:
    if raw.strip() not in SMS_PROVIDERS:
        raise ValueError("must be console, webhook, aliyun or tencent")
    return cast(SmsProvider, raw.strip())


def word(raw: str) -> str:
    """A key id, a template code: one word, no spaces (a pasted value keeps none by mistake)."""
    value = raw.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ValueError("must be one word, without spaces")
    return value


def digits(raw: str) -> str:
    """Tencent's SdkAppId and TemplateId, numbers kept as text (``1400006666``)."""
    value = raw.strip()
    if not (value.isascii() and value.isdigit()):
        raise ValueError("must be digits, like 1400006666")
    return value


_REGION = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")


def region(raw: str) -> str:
    if not _REGION.match(raw.strip()):
        raise ValueError("must be a region like ap-guangzhou")
    return raw.strip()


def aes_key(raw: str) -> str:
    decode_aes_key(raw.strip())
    return raw.strip()


_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9]{3,32}$")


def wechat_token(raw: str) -> str:
    if not _TOKEN_CHARS.match(raw.strip()):
        raise ValueError("a WeChat Token is 3 to 32 letters or digits")
    return raw.strip()


def nonblank(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


appid = nonblank


def canonical_origin(url: str) -> str | None:
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
    return origin_text(scheme, parts.hostname, port)


def origin_text(scheme: str, host: str, port: int | None) -> str:
    """An origin from its parts: IPv6 hosts in brackets, the scheme's default port left out."""
    host = f"[{host.lower()}]" if ":" in host else host.lower()
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
