"""Tokens: refresh, logout, who am I, and the public keys (JWKS)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wxpush.errors import Unauthorized
from wxpush.people.store import People
from wxpush.sms.phone import mask_phone
from wxpush.tokens.service import TokenService
from wxpush.web.requests import read_json, text_field

NO_STORE = {"Cache-Control": "no-store"}


def _tokens(request: Request) -> TokenService:
    tokens: TokenService = request.state.tokens
    return tokens


async def refresh(request: Request) -> JSONResponse:
    data = await read_json(request)
    pair = await _tokens(request).refresh(text_field(data, "refresh_token") or "")
    return JSONResponse(pair, headers=NO_STORE)


async def logout(request: Request) -> Response:
    data = await read_json(request)
    await _tokens(request).logout(text_field(data, "refresh_token") or "")
    return Response(status_code=204)


async def me(request: Request) -> JSONResponse:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send the access token as 'Authorization: Bearer …'.",
                           code="invalid_token")  # fmt: skip
    claims = await _tokens(request).verify_live(token.strip())
    people: People = request.state.people
    user = await people.get_user(claims.user_id)
    if user is None:
        raise Unauthorized("This account no longer exists.", code="invalid_token")
    identities = [
        {"provider": i.provider, "appid": i.appid, "openid": i.openid} for i in user.identities
    ]
    body = {"id": user.id, "phone": mask_phone(user.phone) if user.phone else None,
            "identities": identities}  # fmt: skip
    return JSONResponse(body, headers=NO_STORE)


async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_tokens(request).jwks(), headers={"Cache-Control": "public, max-age=300"})
