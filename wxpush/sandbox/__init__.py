"""The sandbox: a stand-in WeChat platform, mounted at ``/sandbox`` only when enabled.

``WXPUSH_SANDBOX=1`` (always on in ``wxpush demo``) adds the WeChat API endpoints the server
uses (:mod:`wxpush.sandbox.wechatapi`, the same core the test fake runs, served by
:mod:`wxpush.sandbox.platform`) and a phone page that plays the person scanning the QR code
(:mod:`wxpush.sandbox.phone`, which sends the callback as WeChat would, built by
:mod:`wxpush.sandbox.wire`), and WeChat's OAuth screens: the website QR code and the
consent inside WeChat (:mod:`wxpush.sandbox.connect`). Point ``WXPUSH_WECHAT_API_BASE`` and
``WXPUSH_WECHAT_CONNECT_BASE`` at ``{server}/sandbox`` and the server logs people in through
every door without a WeChat account.

The sandbox keeps its state (access tokens, tickets → ``scene_str``, menus) in the server's
own Redis (``request.state.redis``), under ``wxpush:sandbox:*``, so it works on the embedded
store and across processes. It accepts the credentials of the accounts the server is
configured with. It is a development tool: never enable it on a public server.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

PREFIX = "/sandbox"


def mount() -> Mount:
    """The ``/sandbox`` mount. A plain :class:`Mount` of routes, not a sub-app, so requests
    keep the main app's lifespan state and exception handlers.

    The phone (and the SMS and people modules it reaches) is imported here, not with the
    package, so the test fake and ``tests/wire.py`` load only the core and the wire builder.
    """
    from wxpush.sandbox import connect, phone, platform

    routes: list[BaseRoute] = [
        *platform.sandbox_routes(),
        Route("/phone", phone.page, methods=["GET"]),
        Route("/phone/scan", phone.scan, methods=["POST"]),
        Route("/phone/sms", phone.sms, methods=["GET"]),
        Route("/phone/connect", connect.phone_connect, methods=["GET"]),
        Route("/phone/connect", connect.phone_answer, methods=["POST"]),
        Route("/connect/wxLogin.js", connect.wxlogin_js, methods=["GET"]),
        Route("/connect/qrconnect", connect.qrconnect, methods=["GET"]),
        Route("/connect/poll", connect.poll, methods=["GET"]),
        Route("/connect/oauth2/authorize", connect.authorize, methods=["GET"]),
        Route("/connect/oauth2/authorize", connect.authorize_answer, methods=["POST"]),
    ]
    return Mount(PREFIX, routes=routes)
