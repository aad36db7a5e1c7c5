"""The OpenID Connect endpoints (SPEC §14): discovery, token, userinfo, revoke, introspect.

Every error here is RFC 6749's JSON, ``{"error", "error_description"}`` — a bad form, a body
too large, Redis or the database away (503 ``temporarily_unavailable``) included — never
§3's shape and never a traceback. Token answers are ``no-store`` (RFC 6749 §5.1). The pages
a browser sees (``/oidc/authorize``, ``/oidc/logout``) are :mod:`.oidc_pages`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from wxpush.errors import WxpushError
from wxpush.oidc.clients import authenticate
from wxpush.oidc.errors import OAuthError, invalid_request, invalid_token
from wxpush.oidc.provider import Provider, token_param
from wxpush.web.requests import read_body
from wxpush.web.scenes import base_url

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM = 16 * 1024
Handler = Callable[[Request], Awaitable[Response]]


def provider_of(request: Request) -> Provider:
    provider: Provider = request.state.oidc
    return provider


def rfc_errors(handler: Handler) -> Handler:
    """Answer whatever ``handler`` raises in RFC 6749's shape."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnect:
            return Response(status_code=400)
        except OAuthError as exc:
            return error(exc.status, exc.code, exc.message, exc.headers)
        except WxpushError as exc:  # 408/413 of the body, and the like
            code = "invalid_request" if exc.status < 500 else "temporarily_unavailable"
            return error(exc.status, code, exc.message, exc.headers)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            logger.warning("an OIDC request met Redis or the database away: %s", type(exc).__name__)
            message = "The login service is briefly unavailable; try again shortly."
            return error(503, "temporarily_unavailable", message, {"Retry-After": "1"})

    answer.__name__ = answer.__qualname__ = handler.__name__
    answer.__doc__ = handler.__doc__
    return answer


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": code, "error_description": message}
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (RFC 6749 §3.2); a repeated parameter is
    ``invalid_request`` (§3.1)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise invalid_request("Send the parameters as application/x-www-form-urlencoded.")
    try:
        text = (await read_body(request, MAX_FORM)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_request("The form is not UTF-8.") from exc
    return _single(parse_qs(text, keep_blank_values=True))


def _single(parsed: dict[str, list[str]]) -> dict[str, str]:
    for name, values in parsed.items():
        if len(values) > 1:
            raise invalid_request(f"The parameter {name} is repeated.")
    return {name: values[0] for name, values in parsed.items() if values[0] != ""}


@rfc_errors
async def configuration(request: Request) -> Response:
    body = provider_of(request).metadata(base_url(request))
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


@rfc_errors
async def token(request: Request) -> Response:
    provider = provider_of(request)
    form = await read_form(request)
    client = authenticate(provider.clients, request.headers.get("authorization"), form)
    return JSONResponse(await provider.endpoint.grant(client, form), headers=NO_STORE)


@rfc_errors
async def userinfo(request: Request) -> Response:
    provider = provider_of(request)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    access_token = value.strip() if scheme.lower() == "bearer" else ""
    if not access_token and request.method == "POST":  # RFC 6750 §2.2: the form body
        access_token = (await read_form(request)).get("access_token", "")
    if not access_token:
        raise invalid_token("Send the access token as 'Authorization: Bearer …'.")
    return JSONResponse(await provider.userinfo(access_token), headers=NO_STORE)


@rfc_errors
async def revoke(request: Request) -> Response:
    provider = provider_of(request)
    form = await read_form(request)
    client = authenticate(provider.clients, request.headers.get("authorization"), form)
    await provider.revoke(client, token_param(form))
    return Response(status_code=200, headers=NO_STORE)


@rfc_errors
async def introspect(request: Request) -> Response:
    provider = provider_of(request)
    form = await read_form(request)
    client = authenticate(provider.clients, request.headers.get("authorization"), form)
    if client.public:
        raise OAuthError("invalid_client", "Introspection is for confidential clients.", status=401)
    body: dict[str, Any] = await provider.introspect(client, token_param(form))
    return JSONResponse(body, headers=NO_STORE)
