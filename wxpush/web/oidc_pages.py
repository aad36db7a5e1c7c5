"""The OIDC pages a browser sees: ``/oidc/authorize`` (the hosted login) and ``/oidc/logout``.

``/oidc/authorize`` checks the request (:mod:`wxpush.oidc.authorize`): an unknown client or a
redirect URI not registered is an HTML 400 in words, never a redirect; any other error goes
back to the client's redirect URI with ``error``, ``error_description``, ``state`` and ``iss``;
a good request is kept and answered with the hosted page — the widget on the client's door,
in ``zh``/``en`` (``ui_locales``, else ``Accept-Language``) — which, once the person is
logged in, goes on to ``redirect_uri?code=…&state=…``. The page may not be framed (a login
page in someone else's frame is clickjacking) and sends no ``Referer``.
"""

from __future__ import annotations

import html
import json
import logging
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from wxpush.errors import WxpushError
from wxpush.oidc.authorize import parse
from wxpush.oidc.errors import PageError, RedirectError
from wxpush.web.oidc import MAX_FORM, provider_of
from wxpush.web.redirect import HEADERS, language, page
from wxpush.web.requests import read_body
from wxpush.web.scenes import base_url

logger = logging.getLogger(__name__)

PAGE_HEADERS = {**HEADERS, "X-Frame-Options": "DENY",
                "Content-Security-Policy": "frame-ancestors 'none'"}  # fmt: skip
TITLE = {"en": "Log in with WeChat", "zh": "微信登录"}
LEAD = {"en": "Log in to {client} with WeChat.", "zh": "使用微信登录 {client}。"}


async def authorize(request: Request) -> Response:
    provider = provider_of(request)
    lang = language(request.headers.get("accept-language", ""))
    try:
        params = await _params(request)
        locales = params.get("ui_locales", [""])[0].split()
        lang = next((tag.split("-")[0] for tag in locales if tag[:2] in ("zh", "en")), lang)
        checked = parse(provider.clients, params)
        request_id = await provider.requests.keep(checked)
    except PageError as exc:
        return page(lang, exc.code, 400)
    except RedirectError as exc:
        back = {"error": exc.code, "error_description": exc.message}
        url = provider.back_to(exc.redirect_uri, back, exc.state)
        return RedirectResponse(url, status_code=302, headers=HEADERS)
    except WxpushError as exc:  # the body of a POSTed request: too large, too slow
        return page(lang, "failed", exc.status)
    except (RedisError, SQLAlchemyError, OSError) as exc:
        logger.warning("an OIDC login page met Redis away: %s", type(exc).__name__)
        return page(lang, "unavailable", 503)
    base = base_url(request)
    config = {"server": base, "request": request_id, "door": checked.door, "lang": lang}
    return HTMLResponse(_hosted(lang, checked.client_id, base, config), headers=PAGE_HEADERS)


async def logout(request: Request) -> Response:
    provider = provider_of(request)
    lang = language(request.headers.get("accept-language", ""))
    try:
        params = await _params(request)
        one = {name: values[0] for name, values in params.items() if values and values[0]}
        url = await provider.logout(
            one.get("id_token_hint"), one.get("post_logout_redirect_uri"), one.get("state"),
            one.get("client_id"),
        )  # fmt: skip
    except PageError as exc:
        return page(lang, exc.code, 400)
    except WxpushError as exc:
        return page(lang, "failed", exc.status)
    except (RedisError, SQLAlchemyError, OSError) as exc:
        logger.warning("an OIDC logout met Redis away: %s", type(exc).__name__)
        return page(lang, "unavailable", 503)
    if url is None:
        return page(lang, "logged_out", 200)
    return RedirectResponse(url, status_code=303, headers=HEADERS)


async def _params(request: Request) -> dict[str, list[str]]:
    """The query, or a POSTed form (OIDC Core §3.1.2.1 allows both)."""
    if request.method == "POST":
        text = (await read_body(request, MAX_FORM)).decode("utf-8", errors="replace")
        return parse_qs(text, keep_blank_values=True)
    return parse_qs(request.url.query, keep_blank_values=True)


def _hosted(lang: str, client_id: str, base: str, config: dict[str, str]) -> str:
    title = html.escape(TITLE[lang])
    lead = html.escape(LEAD[lang].format(client=client_id))
    data = json.dumps(config).replace("<", "\\u003c")  # inert inside <script>
    static = html.escape(f"{base}/static")
    return (
        f'<!doctype html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        f'<link rel="stylesheet" href="{static}/wxpush.css">\n'
        "<style>body{font:16px/1.5 -apple-system,'PingFang SC',sans-serif;margin:0;"
        "display:grid;place-items:center;min-height:100vh;color:#111}"
        "main{max-width:28em;padding:24px;text-align:center}</style>\n</head>\n<body>\n"
        f'<main data-wxpush-page="oidc_login">\n<h1>{title}</h1>\n<p>{lead}</p>\n'
        '<div data-wxpush="oidc-login"></div>\n</main>\n'
        f'<script type="application/json" id="wxpush-oidc">{data}</script>\n'
        f'<script type="module" src="{static}/wxpush-oidc.js"></script>\n'
        "</body>\n</html>\n"
    )
