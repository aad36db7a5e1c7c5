"""``/api/v1/me``: who am I, my WeChat identities, link another, unlink one, erase me
(SPEC §15). Every route takes the person's access token (``Authorization: Bearer``), checked
live: a revoked token, or one of a person erased, is a 401 at once. Changing the account takes
one of wxpush's own tokens: an OIDC client's (``aud`` = its ``client_id``) may read who the
person is, but a site the person logged in to must not link, unlink or erase for them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wxpush.errors import Forbidden, NotFound, Unauthorized
from wxpush.people.audit import Origin
from wxpush.people.schema import Identity, User
from wxpush.people.store import People
from wxpush.sms.phone import mask_phone
from wxpush.tokens.service import Claims, TokenService
from wxpush.web import scenes
from wxpush.web.requests import client_ip, read_json

NO_STORE = {"Cache-Control": "no-store"}
_ID_DIGITS = 18  # an identity id is a positive integer of at most this many digits


async def me(request: Request) -> JSONResponse:
    user = await _user(request, await _bearer(request))
    body = {"id": user.id, "phone": mask_phone(user.phone) if user.phone else None,
            "identities": [_identity(i) for i in user.identities]}  # fmt: skip
    return JSONResponse(body, headers=NO_STORE)


async def link(request: Request) -> JSONResponse:
    """A link scene: the WeChat identity that completes it is attached to this person."""
    claims = await _bearer(request, change=True)
    data = await read_json(request, required=False)
    return await scenes.start(request, data, link=(await _user(request, claims)).id)


async def unlink(request: Request) -> Response:
    claims = await _bearer(request, change=True)
    raw = request.path_params["identity"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _ID_DIGITS:
        raise NotFound("This account has no such identity.", code="identity_not_found")
    phone_counts: bool = request.state.settings.link_by_phone
    await _people(request).links.detach(
        claims.user_id, int(raw), _origin(request, claims), phone_is_a_way_in=phone_counts
    )
    return Response(status_code=204)


async def delete_me(request: Request) -> Response:
    """Erase the person: their user and identities go, then their tokens stop working.

    In that order, and idempotent: the database down is a 503 with nothing changed (the same
    token asks again); Redis down after the erasure is a 503 too, and the same token asking
    again (it still works: its revocation did not happen) finds the person gone and ends the
    tokens then."""
    claims = await _bearer(request, change=True)
    await _people(request).links.erase(claims.user_id, _origin(request, claims))
    tokens: TokenService = request.state.tokens
    await tokens.end_person(claims.user_id)
    return Response(status_code=204)


async def _bearer(request: Request, *, change: bool = False) -> Claims:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send the access token as 'Authorization: Bearer …'.",
                           code="invalid_token")  # fmt: skip
    tokens: TokenService = request.state.tokens
    claims = await tokens.verify_live(token.strip())
    if change and claims.client_id is not None:
        raise Forbidden(
            "An OIDC client's access token cannot change the account; log in with wxpush "
            "itself (the widget) for this.",
            code="client_token",
        )
    return claims


async def _user(request: Request, claims: Claims) -> User:
    user = await _people(request).get_user(claims.user_id)
    if user is None:
        raise _gone()
    return user


def _people(request: Request) -> People:
    people: People = request.state.people
    return people


def _origin(request: Request, claims: Claims) -> Origin:
    return Origin("api", client_ip(request), claims.client_id)


def _identity(identity: Identity) -> dict[str, object]:
    linked = identity.linked_at.isoformat() if identity.linked_at else None
    return {"id": identity.id, "provider": identity.provider, "appid": identity.appid,
            "openid_hint": openid_hint(identity.openid), "linked_at": linked}  # fmt: skip


def openid_hint(openid: str) -> str:
    """Enough of an openid to tell two apart on a screen, never the whole of it."""
    return "…" + openid[-4:] if len(openid) > 8 else "…"


def _gone() -> Unauthorized:
    return Unauthorized("This account no longer exists.", code="invalid_token")
