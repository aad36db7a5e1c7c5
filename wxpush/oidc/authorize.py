"""``GET /oidc/authorize``: the authorization request checked, and kept while the person logs in.

Checked in RFC 6749's order (§4.1.2.1): the client and its redirect URI first — a request
that fails there raises :class:`PageError` (an HTML 400; a redirect would make wxpush an open
redirector) — then everything else, each failure a :class:`RedirectError` back to the client
with ``error`` and ``state``. A valid request is kept in Redis under a random id while the
hosted page's scenes come and go (a follow QR expires and is renewed; the request stays)::

    wxpush:oidc:req:<id>    JSON of the request     TTL = REQUEST_SECONDS
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from wxpush.config.clients import Client, ClientDoor
from wxpush.infra.pipeline import HotCommands, hot_commands
from wxpush.oidc.errors import PageError, RedirectError

SCOPES = ("openid", "phone", "offline_access")
REQUEST_SECONDS = 900  # the hosted page's time to log in (its scenes renew within it)
MAX_STATE = 1024
MAX_NONCE = 255
_PKCE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
_KEY = "wxpush:oidc:req:"
_SINGLE = ("response_type", "scope", "state", "nonce", "code_challenge",
           "code_challenge_method", "prompt", "ui_locales")  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """An authorization request that passed every check."""

    client_id: str
    redirect_uri: str
    scope: str  # the granted scopes, space-separated, in SCOPES order
    state: str | None
    nonce: str | None
    code_challenge: str | None
    door: ClientDoor
    ui_locales: str = ""


def parse(clients: Mapping[str, Client], params: Mapping[str, Sequence[str]]) -> AuthRequest:
    """Check an authorization request (see the module docstring for the order).

    Raises:
        PageError: ``unknown_client`` or ``bad_redirect_uri``.
        RedirectError: ``invalid_request``, ``unsupported_response_type``, ``invalid_scope``,
            ``login_required``, ``request_not_supported``.
    """
    client_id, redirect_uri = _one(params, "client_id"), _one(params, "redirect_uri")
    client = clients.get(client_id or "")
    if client is None:
        raise PageError("unknown_client")
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise PageError("bad_redirect_uri")
    repeated = [name for name in _SINGLE if len(params.get(name, ())) > 1]
    state = _one(params, "state") if not repeated else None

    def fail(code: str, message: str) -> RedirectError:
        return RedirectError(code, message, redirect_uri or "", state)

    if repeated:
        raise fail("invalid_request", f"The parameter {repeated[0]} is repeated.")
    if state is not None and len(state) > MAX_STATE:
        raise fail("invalid_request", f"state is longer than {MAX_STATE} characters.")
    for unsupported in ("request", "request_uri"):
        if unsupported in params:
            raise fail(f"{unsupported}_not_supported", f"{unsupported} is not supported.")
    response_type = _one(params, "response_type")
    if response_type is None:
        raise fail("invalid_request", "response_type is missing (use code).")
    if response_type != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported.")
    asked = (_one(params, "scope") or "").split()
    if "openid" not in asked:
        raise fail("invalid_scope", "The scope must include openid.")
    nonce = _one(params, "nonce")
    if nonce is not None and len(nonce) > MAX_NONCE:
        raise fail("invalid_request", f"nonce is longer than {MAX_NONCE} characters.")
    challenge, method = _one(params, "code_challenge"), _one(params, "code_challenge_method")
    if challenge is None and method is not None:
        raise fail("invalid_request", "code_challenge_method without a code_challenge.")
    if challenge is not None:
        if (method or "plain") != "S256":
            raise fail("invalid_request", "code_challenge_method must be S256.")
        if not _PKCE.fullmatch(challenge):
            raise fail("invalid_request", "code_challenge is not a base64url S256 value.")
    elif client.public:
        raise fail("invalid_request", "A public client must send a PKCE S256 code_challenge.")
    if "none" in (_one(params, "prompt") or "").split():
        raise fail("login_required", "The person must log in with WeChat: no silent login.")
    return AuthRequest(
        client_id=client.client_id, redirect_uri=redirect_uri,
        scope=" ".join(s for s in SCOPES if s in asked), state=state, nonce=nonce,
        code_challenge=challenge, door=client.door,
        ui_locales=(_one(params, "ui_locales") or "")[:64],
    )  # fmt: skip


class Requests:
    """Authorization requests waiting for their person, by id (see the module docstring), on
    the pipelined connection when there is one (a login's hand-over reads it)."""

    def __init__(self, redis: Any, hot: HotCommands | None = None) -> None:
        self._redis = hot_commands(redis, hot)

    async def keep(self, request: AuthRequest) -> str:
        request_id = secrets.token_urlsafe(24)
        await self._redis.set(_KEY + request_id, json.dumps(asdict(request)), ex=REQUEST_SECONDS)
        return request_id

    async def get(self, request_id: str) -> AuthRequest | None:
        if not _ID.fullmatch(request_id):
            return None
        raw = await self._redis.get(_KEY + request_id)
        return None if raw is None else AuthRequest(**json.loads(raw))


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The parameter's value (an empty one is absent, RFC 6749 §3.1); the first if repeated."""
    values = params.get(name) or ()
    return values[0] if values and values[0] != "" else None
