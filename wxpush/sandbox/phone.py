"""The sandbox's phone: a page that plays the person scanning, and what it calls.

``POST /sandbox/phone/scan`` builds the event WeChat would send for a scan of the ticket's QR
code (``subscribe`` with ``qrscene_{scene_str}`` when the person follows, ``SCAN`` with
``{scene_str}`` when they already follow), signs it with the account's Token, encrypts it
(safe mode) when the account has an EncodingAESKey, and delivers it to the server's own
``/wechat/{account}/callback`` in-process, through the ASGI app (no network hop, so it works
whatever address the server is reachable at). It answers with the passive reply decrypted.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from wxpush.config.accounts import Account
from wxpush.sandbox import wire
from wxpush.sandbox.page import PHONE_PAGE
from wxpush.sandbox.platform import sandbox_platform
from wxpush.sandbox.shapes import IssuedQR
from wxpush.sms.phone import normalize_phone
from wxpush.sms.providers import ConsoleProvider
from wxpush.web.errors import error_response
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.messages import parse_fields

OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ACCOUNT_ID = "gh_sandbox0000"  # the service account's own id (ToUserName)


async def page(request: Request) -> Response:
    if await _issued(request, request.query_params.get("ticket", "")) is None:
        return _unknown_ticket()
    return HTMLResponse(PHONE_PAGE, headers={"Cache-Control": "no-store"})


async def scan(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        return error_response(400, "bad_json", "The body must be a JSON object.")
    if not isinstance(body, dict):
        return error_response(400, "bad_json", "The body must be a JSON object.")
    ticket, openid, follow = body.get("ticket"), body.get("openid"), body.get("follow", False)
    if not isinstance(ticket, str) or not isinstance(follow, bool):
        return error_response(400, "bad_request", "Give a ticket (text) and follow (true/false).")
    if not isinstance(openid, str) or not OPENID.match(openid):
        return error_response(400, "bad_request", "openid must be 1-64 letters, digits, - or _.")
    qr = await _issued(request, ticket)
    if qr is None:
        return _unknown_ticket()
    accounts = request.state.settings.accounts.values()
    account: Account | None = next((a for a in accounts if a.appid == qr.appid), None)
    if account is None:
        return error_response(409, "unknown_account", "The ticket's account is not configured.")
    event = "subscribe" if follow else "SCAN"
    key = f"qrscene_{qr.scene_str}" if follow else qr.scene_str
    xml = wire.event_xml(event, key, to_user=ACCOUNT_ID, openid=openid, ticket=ticket)
    params, content = _signed(account, xml, openid)
    answer = await _deliver(request, account.name, params, content)
    if answer.status_code != 200:
        return error_response(
            502, "callback_failed", f"The callback answered HTTP {answer.status_code}."
        )
    return JSONResponse({"event": event, "event_key": key, "reply": _reply(account, answer)})


async def sms(request: Request) -> Response:
    phone = normalize_phone(request.query_params.get("phone", ""))  # BadRequest → 400 JSON
    if request.state.settings.sms_provider != "console":
        return error_response(409, "not_console", "Codes are shown only with console SMS.")
    code = await ConsoleProvider(request.state.redis).latest(phone)
    return JSONResponse({"phone": phone, "code": code}, headers={"Cache-Control": "no-store"})


def _unknown_ticket() -> Response:
    return error_response(404, "unknown_ticket", "No QR code has this ticket (or it expired).")


async def _issued(request: Request, ticket: str) -> IssuedQR | None:
    return await sandbox_platform(request).ticket(ticket)


def _signed(account: Account, xml: bytes, openid: str) -> tuple[dict[str, str], bytes]:
    """The callback POST as WeChat signs it, encrypted when the account has an AES key."""
    crypto = None if account.aes_key is None else MessageCrypto(account.appid, account.aes_key)
    return wire.callback_request(
        xml, token=account.token, openid=openid, to_user=ACCOUNT_ID,
        mode="plain" if crypto is None else "safe", crypto=crypto,
    )  # fmt: skip


async def _deliver(
    request: Request, account: str, params: dict[str, str], body: bytes
) -> httpx.Response:
    """POST to our own callback through the ASGI app, with the app's lifespan state."""
    app, state = request.app, dict(request.scope.get("state", {}))

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=with_state, client=("127.0.0.1", 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.local") as client:
        return await client.post(
            f"/wechat/{quote(account, safe='')}/callback",
            params=params,
            content=body,
            headers={"Content-Type": "text/xml"},
        )


def _reply(account: Account, answer: httpx.Response) -> str | None:
    """The passive reply's text (decrypted in safe mode); ``None`` for ``success``."""
    if not answer.content.startswith(b"<xml"):
        return None
    fields = parse_fields(answer.content)
    if "Encrypt" in fields and account.aes_key is not None:
        plain = MessageCrypto(account.appid, account.aes_key).decrypt(fields["Encrypt"])
        fields = parse_fields(plain)
    return fields.get("Content")
