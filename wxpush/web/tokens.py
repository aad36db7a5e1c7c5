"""Tokens: refresh, logout, and the public keys (JWKS)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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


async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_tokens(request).jwks(), headers={"Cache-Control": "public, max-age=300"})
