"""The sandbox: a stand-in WeChat platform, mounted at ``/sandbox`` only when enabled.

``WXPUSH_SANDBOX=1`` (always on in ``wxpush demo``) adds the WeChat API endpoints the server
uses (:mod:`wxpush.sandbox.platform`) and a phone page that plays the person scanning the QR
code (:mod:`wxpush.sandbox.phone`). Point ``WXPUSH_WECHAT_API_BASE`` at ``{server}/sandbox``
and the server logs people in without a WeChat account.

The sandbox keeps its state (access tokens, tickets → ``scene_str``, menus) in the server's
own Redis (``request.state.redis``), under ``wxpush:sandbox:*``, so it works on the embedded
store and across processes. It accepts the credentials of the accounts the server is
configured with. It is a development tool: never enable it on a public server.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from wxpush.sandbox import phone, platform

PREFIX = "/sandbox"


def mount() -> Mount:
    """The ``/sandbox`` mount. A plain :class:`Mount` of routes, not a sub-app, so requests
    keep the main app's lifespan state and exception handlers."""
    routes: list[BaseRoute] = [
        Route("/cgi-bin/token", platform.token, methods=["GET"]),
        Route("/cgi-bin/stable_token", platform.stable_token, methods=["POST"]),
        Route("/cgi-bin/qrcode/create", platform.qrcode_create, methods=["POST"]),
        Route("/cgi-bin/showqrcode", platform.showqrcode, methods=["GET"]),
        Route("/cgi-bin/menu/create", platform.menu_create, methods=["POST"]),
        Route("/cgi-bin/menu/get", platform.menu_get, methods=["GET"]),
        Route("/cgi-bin/menu/delete", platform.menu_delete, methods=["GET"]),
        Route("/cgi-bin/user/info", platform.user_info, methods=["GET"]),
        Route("/phone", phone.page, methods=["GET"]),
        Route("/phone/scan", phone.scan, methods=["POST"]),
        Route("/phone/sms", phone.sms, methods=["GET"]),
    ]
    return Mount(PREFIX, routes=routes)
