"""The sandbox's OAuth screens: WeChat's ``open.weixin.qq.com`` doors, played on one server.

Point ``WXPUSH_WECHAT_CONNECT_BASE`` at ``{server}/sandbox`` and the authorize URLs the server
builds land here:

- ``GET /sandbox/connect/wxLogin.js``: the stand-in for WeChat's ``WxLogin.js``, which embeds
  ``/sandbox/connect/qrconnect`` in an iframe, as WeChat's does.
- ``GET /sandbox/connect/qrconnect``: the website QR code. It encodes the sandbox phone's
  ``/sandbox/phone/connect?uuid=…``, and the page polls ``/sandbox/connect/poll`` until the
  phone confirms (→ ``redirect_uri?code=&state=``) or declines (→ ``redirect_uri?state=``),
  then goes there: in the iframe itself with ``self_redirect=true``, else in the top window.
- ``GET|POST /sandbox/phone/connect``: the phone's confirm screen and its answer.
- ``GET|POST /sandbox/connect/oauth2/authorize``: the consent WeChat shows inside its own
  browser; the form's answer is a 302 to ``redirect_uri`` with a code (or none, declined).

A pending website login (``connect:{uuid}``: the app, ``redirect_uri``, ``state``, how the
phone answered and where the embed goes) lives 300 s in the server's Redis under
``wxpush:sandbox:``. Wrong parameters (an appid that is not a configured app of the right
kind, a ``redirect_uri`` that is not an absolute http(s) URL, a bad scope or ``state``) get
WeChat's "参数错误" page, status 400: the sandbox never redirects anywhere else.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import cast
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import segno
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from wxpush.sandbox import connectpage
from wxpush.sandbox.oauth import Scope
from wxpush.sandbox.persons import PERSON, openid_at, snapshot_openid, unionid_of
from wxpush.sandbox.platform import KEY_PREFIX, public_base, sandbox_platform
from wxpush.sandbox.shapes import App, parse_record
from wxpush.sandbox.state import RedisStore
from wxpush.web.errors import error_response

LOGIN_SECONDS = 300  # a website QR code waits this long for the phone
PENDING = "connect:"
STATE = re.compile(r"^[A-Za-z0-9]{0,128}$")  # WeChat's rule for state
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Pending:
    """A website login waiting for the phone (``outcome``: waiting, scanned, confirmed,
    declined; ``location``: where the embed goes once the phone answered)."""

    appid: str
    redirect_uri: str
    state: str
    expires_at: float
    outcome: str = "waiting"
    location: str | None = None


@dataclass(frozen=True)
class Asked:
    """What a site asks WeChat for: the app, where to send the person back, scope, state."""

    app: App
    redirect_uri: str
    scope: Scope
    state: str


class WrongParameters(Exception):
    """The request is not one WeChat would serve (the reason, in words, for the page)."""


async def wxlogin_js(request: Request) -> Response:
    script = connectpage.wxlogin_js(str(request.url.replace(query="")))
    return Response(script, media_type="application/javascript", headers=NO_STORE)


async def qrconnect(request: Request) -> Response:
    try:
        asked = _asked(request, dict(request.query_params), "website")
    except WrongParameters as wrong:
        return _wrong(str(wrong))
    uuid = secrets.token_urlsafe(12)
    deadline = time.time() + LOGIN_SECONDS
    await _save(request, uuid, Pending(asked.app.appid, asked.redirect_uri, asked.state, deadline))
    phone = f"{public_base(request)}/sandbox/phone/connect?uuid={quote(uuid, safe='')}"
    svg = segno.make(phone, error="m").svg_inline(scale=4, border=2)
    self_redirect = request.query_params.get("self_redirect") == "true"
    page = connectpage.qrconnect_page(svg, phone, uuid, self_redirect=self_redirect)
    return HTMLResponse(page, headers=NO_STORE)


async def poll(request: Request) -> Response:
    """How the phone answered: ``{"status", "location"?}`` (``expired`` once it is gone)."""
    pending = await _load(request, request.query_params.get("uuid", ""))
    if pending is None:
        return JSONResponse({"status": "expired"}, headers=NO_STORE)
    answer = {"status": pending.outcome}
    if pending.location is not None:
        answer["location"] = pending.location
    return JSONResponse(answer, headers=NO_STORE)


async def phone_connect(request: Request) -> Response:
    """The phone's confirm screen; opening it tells the embed the code was scanned."""
    uuid = request.query_params.get("uuid", "")
    pending = await _load(request, uuid)
    if pending is None:
        return _expired_qr()
    if pending.outcome == "waiting":
        await _save(request, uuid, replace(pending, outcome="scanned"))
    return HTMLResponse(connectpage.confirm_page(uuid, _name(request, pending.appid)),
                        headers=NO_STORE)  # fmt: skip


async def phone_answer(request: Request) -> Response:
    """``POST /sandbox/phone/connect {uuid, person, confirm}``: the phone's tap."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return error_response(400, "bad_json", "The body must be a JSON object.")
    uuid, person, confirm = body.get("uuid"), body.get("person"), body.get("confirm")
    if not isinstance(uuid, str) or not isinstance(confirm, bool):
        return error_response(400, "bad_request", "Give a uuid (text) and confirm (true/false).")
    if not isinstance(person, str) or not PERSON.match(person):
        return error_response(400, "bad_request", "person must be 1-64 letters, digits, - or _.")
    pending = await _load(request, uuid)
    if pending is None:
        return error_response(404, "unknown_uuid", "This QR code expired: reload the page.")
    if pending.location is not None:
        return error_response(409, "answered", "This login was already answered.")
    if confirm:
        platform = sandbox_platform(request)
        app = platform.apps[pending.appid]
        code = await platform.issue_code(
            app.appid, openid_at(app, person), unionid=unionid_of(person), scope="snsapi_login"
        )
        location = _with_query(pending.redirect_uri, code=code, state=pending.state)
    else:
        location = _with_query(pending.redirect_uri, state=pending.state)
    outcome = "confirmed" if confirm else "declined"
    await _save(request, uuid, replace(pending, outcome=outcome, location=location))
    return JSONResponse({"outcome": outcome})


async def authorize(request: Request) -> Response:
    """The consent inside WeChat: pick a person, continue (or decline)."""
    try:
        asked = _asked(request, dict(request.query_params), "service")
    except WrongParameters as wrong:
        return _wrong(str(wrong))
    name = _name(request, asked.app.appid)
    page = connectpage.consent_page(asked.app.appid, asked.redirect_uri, asked.scope,
                                    asked.state, name)  # fmt: skip
    return HTMLResponse(page, headers=NO_STORE)


async def authorize_answer(request: Request) -> Response:
    """The consent form's answer: 302 to ``redirect_uri`` with a code and state, or with the
    state alone (declined). A snapshot user gets a virtual openid, ``snsapi_base`` and no
    unionid; ``snsapi_base`` gives no unionid either (WeChat gives it for snsapi_userinfo)."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace"),
                                         keep_blank_values=True).items()}  # fmt: skip
    try:
        asked = _asked(request, form, "service")
        person, action = form.get("person", ""), form.get("action", "")
        if not PERSON.match(person) or action not in ("continue", "decline"):
            raise WrongParameters("Pick a person, then continue or decline.")
    except WrongParameters as wrong:
        return _wrong(str(wrong))
    if action == "decline":
        return _redirect(_with_query(asked.redirect_uri, state=asked.state))
    appid, snapshot = asked.app.appid, form.get("snapshot") == "1"
    if snapshot:
        code = await sandbox_platform(request).issue_code(
            appid, snapshot_openid(appid, person), scope="snsapi_base", snapshot=True
        )
    else:
        unionid = unionid_of(person) if asked.scope == "snsapi_userinfo" else None
        code = await sandbox_platform(request).issue_code(
            appid, openid_at(asked.app, person), unionid=unionid, scope=asked.scope
        )
    return _redirect(_with_query(asked.redirect_uri, code=code, state=asked.state))


# --- checks and small parts -------------------------------------------------------------------


def _asked(request: Request, params: dict[str, str], kind: str) -> Asked:
    """The request's parameters, checked as WeChat checks them (else :class:`WrongParameters`)."""
    app = sandbox_platform(request).apps.get(params.get("appid", ""))
    if app is None or app.kind != kind:
        what = "website app" if kind == "website" else "service account"
        raise WrongParameters(f"The appid is not a {what} the sandbox knows.")
    redirect_uri = params.get("redirect_uri", "")
    if not _absolute_http(redirect_uri):
        raise WrongParameters("redirect_uri must be an absolute http(s) URL.")
    scope = params.get("scope", "")
    scopes = ("snsapi_login",) if kind == "website" else ("snsapi_base", "snsapi_userinfo")
    if scope not in scopes:
        raise WrongParameters(f"scope must be {' or '.join(scopes)}.")
    response_type = params.get("response_type", "code" if kind == "website" else "")
    if response_type != "code":
        raise WrongParameters("response_type must be code.")
    state = params.get("state", "")
    if not STATE.match(state):
        raise WrongParameters("state must be at most 128 letters and digits.")
    return Asked(app, redirect_uri, cast(Scope, scope), state)


def _absolute_http(uri: str) -> bool:
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _with_query(uri: str, **params: str) -> str:
    """``uri`` with ``params`` added to its query (its own query and fragment kept)."""
    parts = urlsplit(uri)
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=302, headers=NO_STORE)


def _name(request: Request, appid: str) -> str:
    """The configured name of the app ``appid`` (what its pages call it)."""
    settings = request.state.settings
    apps = [*settings.accounts.values(), *settings.websites.values()]
    return next((a.name for a in apps if a.appid == appid), appid)


def _wrong(reason: str) -> Response:
    page = connectpage.message_page("wrong-parameters", "参数错误 (wrong parameters)", reason)
    return HTMLResponse(page, status_code=400, headers=NO_STORE)


def _expired_qr() -> Response:
    words = "This QR code expired or is unknown: reload the login page and scan again."
    page = connectpage.message_page("expired", "二维码已失效 (QR code expired)", words)
    return HTMLResponse(page, status_code=404, headers=NO_STORE)


async def _save(request: Request, uuid: str, pending: Pending) -> None:
    store = RedisStore(request.state.redis, KEY_PREFIX)
    await store.set(PENDING + uuid, json.dumps(asdict(pending)), pending.expires_at - time.time())


async def _load(request: Request, uuid: str) -> Pending | None:
    if not uuid:
        return None
    raw = await RedisStore(request.state.redis, KEY_PREFIX).get(PENDING + uuid)
    return None if raw is None else parse_record(Pending, raw)
