"""``/wechat/{account}/callback``: WeChat's URL check (GET) and its event pushes (POST)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from wxpush.callback import CallbackService, Inbound
from wxpush.endpoints.common import read_body
from wxpush.errors import NotFound, WxpushError, from_protocol_error
from wxpush.settings import Account
from wxpush.wechat.errors import ProtocolError


def _account(request: Request) -> Account:
    name = request.path_params["account"]
    account = request.state.settings.accounts.get(name)
    if account is None:
        raise NotFound(f"No WeChat account is configured under the name {name!r}.")
    return account  # type: ignore[no-any-return]


async def verify(request: Request) -> Response:
    service: CallbackService = request.state.callbacks
    echostr = service.verify_url(_account(request), request.query_params)
    return PlainTextResponse(echostr)


async def receive(request: Request) -> Response:
    received = time.monotonic()
    account = _account(request)
    service: CallbackService = request.state.callbacks
    outcomes = request.state.metrics.callbacks
    try:
        body = await read_body(request, request.state.settings.max_body_bytes)
        raw_query = request.scope["query_string"].decode("latin-1")
        inbound = Inbound(request.query_params, raw_query, body, received)
        reply = await service.handle(account, inbound)
    except ProtocolError as exc:
        outcomes.labels(from_protocol_error(exc).code).inc()
        raise
    except WxpushError as exc:
        outcomes.labels(exc.code).inc()
        raise
    outcomes.labels("answered").inc()
    return Response(reply.body, media_type=reply.content_type)
