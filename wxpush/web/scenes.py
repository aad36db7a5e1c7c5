"""``/api/v1/scenes``: create a login, read its state, render its QR, bind a phone."""

from __future__ import annotations

import asyncio
import io
import re
import time
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wxpush.errors import BadRequest
from wxpush.infra.metrics import Metrics
from wxpush.login import messages
from wxpush.login.doors import Doors
from wxpush.login.flow import LoginFlow
from wxpush.login.waiting import watch
from wxpush.web.origins import MAX_RETURN_TO, allowed_return
from wxpush.web.requests import client_ip, read_json, text_field

QR_CACHE = "private, max-age=60"


def _flow(request: Request) -> LoginFlow:
    flow: LoginFlow = request.state.login
    return flow


def base_url(request: Request) -> str:
    """The server's public base URL: ``WXPUSH_PUBLIC_URL`` or what the request says."""
    configured: str | None = request.state.settings.public_url
    return configured or str(request.base_url).rstrip("/")


async def create(request: Request) -> JSONResponse:
    data = await read_json(request, required=False)
    oidc = text_field(data, "oidc", optional=True, max_length=64)
    if oidc is not None:  # a scene of the hosted OIDC page: the request's client's door only
        kind = text_field(data, "kind", optional=True)
        await request.state.oidc.request_for_scene(oidc, kind or "follow")
    return await start(request, data, oidc=oidc)


async def start(
    request: Request, data: dict[str, Any], *, oidc: str | None = None, link: str | None = None
) -> JSONResponse:
    """A new scene of the door ``data`` asks for (SPEC §12): for a login, an OIDC request's
    login, or a link of the user ``link`` (SPEC §15); the same answer for all."""
    account = text_field(data, "account", optional=True)
    kind = text_field(data, "kind", optional=True)
    return_to = text_field(data, "return_to", optional=True, max_length=MAX_RETURN_TO * 2)
    if return_to is not None and not allowed_return(
        request.state.settings, return_to, request.scope
    ):
        raise BadRequest(
            "return_to must be an http(s) URL on an allowed origin.", code="bad_return_to"
        )
    base = base_url(request)
    doors: Doors = request.state.doors
    started = await doors.start(
        kind, account, ip=client_ip(request), base_url=base, return_to=return_to, oidc=oidc,
        link=link,
    )  # fmt: skip
    scene = started.scene
    api = f"{base}/api/v1/scenes/{scene.id}"
    ws_base = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base[7:]
    body: dict[str, Any] = {
        "scene": scene.id,
        "status": "LOOP",
        "code": 2,
        "kind": scene.kind,
        "expires_in": max(0, round(scene.expires_at - time.time())),
        "expires_at": datetime.fromtimestamp(scene.expires_at, UTC).isoformat(),
        "ws_url": f"{ws_base}/ws/v1/scenes/{scene.id}",
        "wait_url": f"{api}/wait",
    }
    if scene.kind == "follow":
        body.update(qr_url=scene.qr_url, qr_image=f"{api}/qr.svg")
    else:
        body["authorize_url"] = started.authorize_url
    if started.wxlogin is not None:
        body.update(wxlogin=started.wxlogin, wxlogin_script=started.wxlogin_script)
    return JSONResponse(body, status_code=201, headers={"Cache-Control": "no-store"})


async def read(request: Request) -> JSONResponse:
    body = await _flow(request).state(request.path_params["scene"])
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def qr_svg(request: Request) -> Response:
    qr = segno.make(await _flow(request).qr_url(request.path_params["scene"]), error="m")
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=8, border=2, xmldecl=False, title="WeChat login QR code")
    return Response(out.getvalue(), media_type="image/svg+xml",
                    headers={"Cache-Control": QR_CACHE})  # fmt: skip


async def qr_png(request: Request) -> Response:
    qr = segno.make(await _flow(request).qr_url(request.path_params["scene"]), error="m")
    out = io.BytesIO()
    qr.save(out, kind="png", scale=8, border=2)
    return Response(out.getvalue(), media_type="image/png", headers={"Cache-Control": QR_CACHE})


async def send_sms(request: Request) -> JSONResponse:
    data = await read_json(request)
    phone = text_field(data, "phone") or ""
    resend_in = await _flow(request).send_code(
        request.path_params["scene"], phone, ip=client_ip(request)
    )
    return JSONResponse({"resend_in": resend_in}, status_code=202)


async def bind(request: Request) -> JSONResponse:
    data = await read_json(request)
    phone, code = text_field(data, "phone") or "", text_field(data, "code") or ""
    body = await _flow(request).bind(
        request.path_params["scene"], phone, code, ip=client_ip(request)
    )
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


WAIT_DEFAULT, WAIT_MIN, WAIT_MAX = 25, 1, 55
_SECONDS = re.compile(r"[0-9]{1,3}")


def _wait_timeout(request: Request) -> int:
    raw = request.query_params.get("timeout", str(WAIT_DEFAULT))
    # ASCII digits only: str.isdigit() also takes "²" and "٣", which int() refuses or reads
    if not _SECONDS.fullmatch(raw) or not WAIT_MIN <= int(raw) <= WAIT_MAX:
        raise BadRequest(
            f"timeout is a whole number of seconds from {WAIT_MIN} to {WAIT_MAX}.",
            code="invalid_timeout",
        )
    return int(raw)


async def wait(request: Request) -> JSONResponse:
    """Long-poll: answer as soon as the state is not ``LOOP``, else ``LOOP`` at the timeout."""
    timeout = _wait_timeout(request)
    metrics: Metrics = request.state.metrics
    gauge = metrics.waiters.labels("long_poll")
    gauge.inc()
    try:
        state = await _first_settled(request, timeout)
    finally:
        gauge.dec()
    return JSONResponse(state, headers={"Cache-Control": "no-store"})


async def _first_settled(request: Request, seconds: int) -> dict[str, Any]:
    """The first state that is not ``LOOP``, or the latest one after ``seconds``.

    The deadline stops the waiting (the waiter hears no more), never a read under way: a
    read that has just claimed the scene is issuing its tokens, and cutting it short would
    lose the login. Such a read finishes and is the answer.
    """
    flow, hub, scene_id = _flow(request), request.state.hub, request.path_params["scene"]
    latest: dict[str, Any] = {"status": "LOOP", "code": 2}
    async with (
        hub.waiter(messages.channel(scene_id)) as waiter,
        aclosing(watch(flow, scene_id, waiter)) as states,
    ):
        deadline = asyncio.get_running_loop().call_later(seconds, waiter.stop)
        try:
            async for state, _ in states:
                latest = state
                if state["status"] != "LOOP":
                    break
        except OverflowError:
            pass  # cannot happen with one read per message; answer what we have
        finally:
            deadline.cancel()
    return latest
