"""``/wechat/{account}/callback``: WeChat's URL check (GET) and its event pushes (POST).

The POST is the busiest route of the server, so it is a plain ASGI app: no request object,
no response class, no middleware (the app hands it over before Starlette's routing, see
:class:`wxpush.app.App`). Its errors have the same JSON shape and statuses as everywhere else.
"""

from __future__ import annotations

import time

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

from wxpush.callback.forward import Inbound
from wxpush.callback.service import CallbackService
from wxpush.config.accounts import Account
from wxpush.config.settings import Settings
from wxpush.errors import NotFound
from wxpush.web.errors import error_answer
from wxpush.web.requests import read_asgi_body


def _account(settings: Settings, name: str) -> Account:
    account = settings.accounts.get(name)
    if account is None:
        raise NotFound(f"No WeChat account is configured under the name {name!r}.")
    return account


async def verify(request: Request) -> Response:
    service: CallbackService = request.state.callbacks
    account = _account(request.state.settings, request.path_params["account"])
    echostr = service.verify_url(account, request.query_params)
    return PlainTextResponse(echostr)


class Callback:
    """The route as Starlette sees it: GET (and HEAD) for the URL check, POST for events.
    One route for both, so that any other method is answered 405 with an ``Allow`` naming
    them all. The app serves the POST as a hot route: this app is called without routing or
    middleware (:class:`wxpush.app.App`)."""

    def __init__(self) -> None:
        self._verify = request_response(verify)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            await handle_post(scope, receive, send, scope["path_params"]["account"])
        else:  # the route lets through only GET and HEAD besides
            await self._verify(scope, receive, send)


async def handle_post(scope: Scope, receive: Receive, send: Send, account_name: str) -> None:
    """Answer one callback: WeChat's passive reply, or a JSON error."""
    received = time.monotonic()
    state = scope["state"]
    settings: Settings = state["settings"]
    outcomes = state["metrics"].callbacks
    try:
        account = _account(settings, account_name)
        body = await read_asgi_body(scope, receive, settings.max_body_bytes, settings.body_timeout)
        if body is None:
            return  # the client left
        raw_query = scope["query_string"].decode("latin-1")
        inbound = Inbound(QueryParams(raw_query), raw_query, body, received)
        reply = await state["callbacks"].handle(account, inbound)
    except Exception as exc:
        code, answer = error_answer(exc)
        outcomes.labels(code).inc()
        await answer(scope, receive, send)
        return
    outcomes.labels("answered").inc()
    await send({
        "type": "http.response.start", "status": 200,
        "headers": [(b"content-type", reply.content_type.encode("latin-1")),
                    (b"content-length", str(len(reply.body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": reply.body})
