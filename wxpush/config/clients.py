"""The OpenID Connect clients of the accounts file: ``[[client]]`` tables (SPEC §14).

A client with a ``client_secret`` is *confidential* (it authenticates at the token endpoint);
one without is *public* (a browser or mobile app: PKCE ``S256`` is required instead). Redirect
URIs are compared exactly, as registered; a URI with a fragment, credentials or a scheme other
than http(s) is refused here, at start-up::

    [[client]]
    client_id = "shop"
    client_secret = "…"                       # absent: a public client
    redirect_uris = ["https://shop.example/auth/callback"]
    post_logout_redirect_uris = ["https://shop.example/"]
    door = "auto"                             # auto (default), follow, website
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from wxpush.errors import SettingsError

ClientDoor = Literal["auto", "follow", "website"]
CLIENT_DOORS: tuple[ClientDoor, ...] = ("auto", "follow", "website")
MIN_SECRET_LENGTH = 16
_ID_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~")


@dataclass(frozen=True, slots=True)
class Client:
    """One relying party: a site or an app that logs people in through wxpush."""

    client_id: str
    redirect_uris: tuple[str, ...]
    client_secret: str | None = None
    post_logout_redirect_uris: tuple[str, ...] = ()
    door: ClientDoor = "auto"

    @property
    def public(self) -> bool:
        return self.client_secret is None

    def __repr__(self) -> str:  # never print the secret
        kind = "public" if self.public else "confidential"
        return f"Client(client_id={self.client_id!r}, {kind})"


def load_clients(path: str | None, data: Mapping[str, Any] | None) -> dict[str, Client]:
    """The ``[[client]]`` tables of the accounts file (none without one)."""
    tables = [] if data is None else data.get("client", [])
    if not isinstance(tables, list):
        raise SettingsError("WXPUSH_ACCOUNTS_FILE", f"{path}: client must be [[client]] tables")
    clients: dict[str, Client] = {}
    for index, table in enumerate(tables):
        where = f"WXPUSH_ACCOUNTS_FILE ({path}, client #{index + 1}"
        if not isinstance(table, dict):
            raise SettingsError(
                "WXPUSH_ACCOUNTS_FILE", f"{path}: client #{index + 1} is not a table"
            )
        client = _client(table, _named(where))
        if client.client_id in clients:
            raise SettingsError(
                "WXPUSH_ACCOUNTS_FILE", f"{path}: client_id {client.client_id!r} repeats"
            )
        clients[client.client_id] = client
    return clients


def _client(raw: Mapping[str, Any], variable: Callable[[str], str]) -> Client:
    unknown = set(raw) - {"client_id", "client_secret", "redirect_uris",
                          "post_logout_redirect_uris", "door"}  # fmt: skip
    if unknown:
        raise SettingsError(variable(sorted(unknown)[0]), "is not a client setting")
    client_id = _string(raw, "client_id", variable)
    if client_id is None:
        raise SettingsError(variable("client_id"), "missing")
    if len(client_id) > 64 or not set(client_id) <= _ID_CHARACTERS:
        raise SettingsError(variable("client_id"), "at most 64 of A-Z a-z 0-9 - . _ ~")
    secret = _string(raw, "client_secret", variable)
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise SettingsError(
            variable("client_secret"), f"must be at least {MIN_SECRET_LENGTH} characters"
        )
    redirect_uris = _uris(raw, "redirect_uris", variable)
    if not redirect_uris:
        raise SettingsError(variable("redirect_uris"), "missing; list at least one URI")
    door: Any = _string(raw, "door", variable) or "auto"
    if door not in CLIENT_DOORS:
        raise SettingsError(variable("door"), f"must be one of {', '.join(CLIENT_DOORS)}")
    return Client(
        client_id=client_id, redirect_uris=redirect_uris, client_secret=secret,
        post_logout_redirect_uris=_uris(raw, "post_logout_redirect_uris", variable),
        door=door,
    )  # fmt: skip


def _named(where: str) -> Callable[[str], str]:
    return lambda key: f"{where}, {key})"


def _string(raw: Mapping[str, Any], key: str, variable: Callable[[str], str]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SettingsError(variable(key), "must be a string")
    return value.strip() or None


def _uris(raw: Mapping[str, Any], key: str, variable: Callable[[str], str]) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingsError(variable(key), "must be a list of URLs")
    for uri in value:
        problem = _uri_problem(uri)
        if problem:
            raise SettingsError(variable(key), f"{uri!r} {problem}")
    return tuple(value)


def _uri_problem(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an absolute http(s) URL"
    if parts.fragment or "#" in uri:
        return "has a fragment (RFC 6749 §3.1.2 forbids one)"
    if "@" in parts.netloc:
        return "carries credentials"
    return None
