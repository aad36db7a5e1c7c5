"""The sandbox's WeChat API: WeChat's paths, JSON shapes and errcodes, state in Redis.

Like WeChat, these endpoints answer HTTP 200 with ``{"errcode", "errmsg"}`` on a bad call
(a wrong appid 40013, secret 40125, missing token 41001, unknown token 40001, malformed
body 47001 or arguments 40097) — that is what :class:`~wxpush.clients.wechat.WeChatAPI` parses.
Only ``showqrcode`` of an unknown ticket answers a JSON 404, as an image URL would.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from typing import Any
from urllib.parse import quote

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wxpush.config.accounts import Account
from wxpush.web.errors import error_response

TOKEN_LIFETIME = 7200
MAX_QR_SECONDS = 2_592_000  # WeChat's cap for temporary QR codes: 30 days
_KEY = "wxpush:sandbox:"
_ERRMSG = {
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40016: "invalid button size",
    40097: "invalid args",
    40125: "invalid appsecret",
    41001: "access_token missing",
    46003: "menu no exist",
    47001: "data format error",
}


def wechat_error(errcode: int) -> JSONResponse:
    """WeChat's error shape (errcode 0 is WeChat's plain success)."""
    errmsg = _ERRMSG.get(errcode, "error")
    suffix = "" if errcode == 0 else f" rid: {secrets.token_hex(6)}"
    return JSONResponse({"errcode": errcode, "errmsg": errmsg + suffix})


def account_by_appid(request: Request, appid: object) -> Account | None:
    accounts = request.state.settings.accounts.values()
    return next((a for a in accounts if a.appid == appid), None)


def public_base(request: Request) -> str:
    """``WXPUSH_PUBLIC_URL``, or the scheme and host this request came to."""
    configured: str | None = request.state.settings.public_url
    return configured or f"{request.url.scheme}://{request.url.netloc}"


async def _body(request: Request) -> Any:
    """The JSON body, or ``None`` when it is not JSON."""
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):
        return None


def _credentials(request: Request, appid: object, secret: object) -> JSONResponse | None:
    account = account_by_appid(request, appid)
    if account is None:
        return wechat_error(40013)
    if account.secret is None or not secrets.compare_digest(str(secret), account.secret):
        return wechat_error(40125)
    return None


async def _grant(request: Request, appid: str, token: str) -> JSONResponse:
    redis = request.state.redis
    ttl = await redis.ttl(_KEY + "token:" + token)
    if ttl is None or int(ttl) <= 0:
        await redis.set(_KEY + "token:" + token, appid, ex=TOKEN_LIFETIME)
        ttl = TOKEN_LIFETIME
    return JSONResponse({"access_token": token, "expires_in": int(ttl)})


async def token(request: Request) -> Response:
    query = request.query_params
    if query.get("grant_type") != "client_credential":
        return wechat_error(40002)
    appid = query.get("appid", "")
    return _credentials(request, appid, query.get("secret", "")) or await _grant(
        request, appid, secrets.token_urlsafe(48)
    )


async def stable_token(request: Request) -> Response:
    body = await _body(request)
    if not isinstance(body, dict):
        return wechat_error(47001)
    appid = body.get("appid")
    refused = _credentials(request, appid, body.get("secret"))
    if refused is not None:
        return refused
    redis = request.state.redis
    key = _KEY + "stable:" + str(appid)
    current = await redis.get(key)
    if current is None or body.get("force_refresh") is True:
        if current is not None:
            await redis.delete(_KEY + "token:" + _text(current))
        current = secrets.token_urlsafe(48)
        await redis.set(key, current, ex=TOKEN_LIFETIME)
    return await _grant(request, str(appid), _text(current))


async def _caller(request: Request) -> str | JSONResponse:
    """The appid whose access_token the request carries, or WeChat's refusal."""
    access_token = request.query_params.get("access_token", "")
    if not access_token:
        return wechat_error(41001)
    appid = await request.state.redis.get(_KEY + "token:" + access_token)
    return wechat_error(40001) if appid is None else _text(appid)


async def qrcode_create(request: Request) -> Response:
    appid = await _caller(request)
    if isinstance(appid, Response):
        return appid
    body = await _body(request)
    try:
        scene = body["action_info"]["scene"]
        scene_str = str(scene.get("scene_str", scene.get("scene_id", "")))
        expire = min(int(body.get("expire_seconds", 60)), MAX_QR_SECONDS)
    except (KeyError, TypeError, ValueError, AttributeError):
        return wechat_error(40097)
    if not 1 <= len(scene_str) <= 64 or expire <= 0:
        return wechat_error(40097)
    ticket = "gQsandbox" + secrets.token_urlsafe(32)
    record = {"scene_str": scene_str, "appid": appid, "expires_at": int(time.time()) + expire}
    await request.state.redis.set(_KEY + "ticket:" + ticket, json.dumps(record), ex=expire)
    url = phone_url(request, ticket)
    return JSONResponse({"ticket": ticket, "expire_seconds": expire, "url": url})


def phone_url(request: Request, ticket: str) -> str:
    return f"{public_base(request)}/sandbox/phone?ticket={quote(ticket, safe='')}"


async def ticket_record(request: Request, ticket: str) -> dict[str, Any] | None:
    """What :func:`qrcode_create` stored for ``ticket`` (``None``: unknown or expired)."""
    raw = await request.state.redis.get(_KEY + "ticket:" + ticket) if ticket else None
    record: dict[str, Any] | None = None if raw is None else json.loads(raw)
    return record


async def showqrcode(request: Request) -> Response:
    ticket = request.query_params.get("ticket", "")
    if await ticket_record(request, ticket) is None:
        return error_response(404, "unknown_ticket", "No QR code has this ticket (or it expired).")
    out = io.BytesIO()
    segno.make(phone_url(request, ticket), error="m").save(out, kind="png", scale=4)
    return Response(out.getvalue(), media_type="image/png")


async def menu_create(request: Request) -> Response:
    appid = await _caller(request)
    if isinstance(appid, Response):
        return appid
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("button"), list):
        return wechat_error(40016)
    await request.state.redis.set(_KEY + "menu:" + appid, json.dumps(body))
    return wechat_error(0)


async def menu_get(request: Request) -> Response:
    appid = await _caller(request)
    if isinstance(appid, Response):
        return appid
    raw = await request.state.redis.get(_KEY + "menu:" + appid)
    return wechat_error(46003) if raw is None else JSONResponse({"menu": json.loads(raw)})


async def menu_delete(request: Request) -> Response:
    appid = await _caller(request)
    if isinstance(appid, Response):
        return appid
    await request.state.redis.delete(_KEY + "menu:" + appid)
    return wechat_error(0)


async def user_info(request: Request) -> Response:
    appid = await _caller(request)
    if isinstance(appid, Response):
        return appid
    openid = request.query_params.get("openid", "")
    if not openid:
        return wechat_error(40003)
    profile = {
        "subscribe": 1, "openid": openid, "language": "zh_CN",
        "subscribe_time": int(time.time()), "remark": "", "groupid": 0, "tagid_list": [],
        "subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 0, "qr_scene_str": "",
    }  # fmt: skip
    return JSONResponse(profile)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
