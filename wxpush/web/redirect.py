"""``GET /wechat/{name}/oauth/redirect``: where WeChat sends the browser back, answered in words.

The person's browser lands here from WeChat (the website door's QR code, confirmed on the
phone, in WxLogin.js's frame; or the in-WeChat consent), so every answer is a small HTML
page in the person's language (``zh``/``en`` by ``Accept-Language``), never JSON and never a
traceback: "logged in, return to the page", or a ``303`` to the scene's ``return_to``, or the
failure in words with its status (SPEC §13). The URL carries the code and the state: the
page sends no ``Referer`` and is not cached, and neither the code nor anything about the
person reaches the page or the log.
"""

from __future__ import annotations

import html
import logging

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from wxpush.errors import WeChatAPIError, WxpushError
from wxpush.login.doors import Doors

logger = logging.getLogger(__name__)

HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

# code -> (English, Chinese); each says what happened and what to do.
TEXTS: dict[str, tuple[str, str]] = {
    "logged_in": (
        "You are logged in. Return to the page you came from.",
        "登录成功，请返回原页面。",
    ),
    "finish_on_screen": (
        "Almost there: return to the page you came from and confirm your phone number.",
        "还差一步：请返回原页面，验证您的手机号。",
    ),
    "linked": (
        "This WeChat account is now linked to your account. Return to the page you came from.",
        "已将此微信关联到您的账号。请返回原页面。",
    ),
    "identity_taken": (
        "This WeChat account already belongs to another account, so it was not linked. "
        "Return to the page you came from.",
        "此微信已属于另一个账号，未关联。请返回原页面。",
    ),
    "state_invalid": (
        "This login link is unknown, already used or expired. Go back and start the login again.",
        "此登录链接无效、已使用或已过期。请返回并重新登录。",
    ),
    "declined": (
        "You declined the WeChat login. Go back to try again.",
        "您已拒绝微信登录授权。请返回重试。",
    ),
    "snapshot_user": (
        "WeChat opened this page as a preview, so no one can be logged in. "
        "Open the page in WeChat itself and try again.",
        "微信以快照页方式打开了此页面，无法登录。请在微信中打开页面后重试。",
    ),
    "invalid_code": (
        "The login code WeChat sent back is malformed. Go back and try again.",
        "微信返回的登录凭证格式有误。请返回重试。",
    ),
    "wechat_error": (
        "WeChat did not accept this login ({detail}). Go back and try again.",
        "微信未接受此次登录（{detail}）。请返回重试。",
    ),
    "bad_gateway": (
        "WeChat cannot be reached right now. Go back and try again in a moment.",
        "暂时无法连接微信。请稍后返回重试。",
    ),
    "unavailable": (
        "The login service is briefly unavailable. Go back and try again in a moment.",
        "登录服务暂时不可用。请稍后返回重试。",
    ),
    "unknown_client": (
        "The site that sent you here is not known to this login server. Go back to it.",
        "将您引导至此的网站未在本登录服务登记。请返回该网站。",
    ),
    "bad_redirect_uri": (
        "The site asked to send you back to an address it has not registered, so the login "
        "stops here. Go back to the site.",
        "该网站要求跳转到一个未登记的地址，登录已停止。请返回该网站。",
    ),
    "bad_logout": (
        "This logout link is not valid. You may close this page.",
        "此退出登录链接无效。您可以关闭此页面。",
    ),
    "bad_post_logout_redirect_uri": (
        "The site asked to send you to an address it has not registered after logging out. "
        "You may close this page.",
        "该网站要求退出后跳转到一个未登记的地址。您可以关闭此页面。",
    ),
    "logged_out": (
        "You are logged out. You may close this page.",
        "您已退出登录。您可以关闭此页面。",
    ),
    "failed": (
        "This login could not be completed. Go back and try again.",
        "此次登录未能完成。请返回重试。",
    ),
}
TITLES = {
    "en": {
        "logged_in": "Logged in",
        "linked": "Linked",
        "finish_on_screen": "Almost there",
        "logged_out": "Logged out",
        "": "Login not completed",
    },
    "zh": {
        "logged_in": "登录成功",
        "linked": "关联成功",
        "finish_on_screen": "还差一步",
        "logged_out": "已退出登录",
        "": "登录未完成",
    },
}


async def redirect(request: Request) -> Response:
    doors: Doors = request.state.doors
    query = request.query_params
    lang = language(request.headers.get("accept-language", ""))
    if request.method == "HEAD":  # a link checker: answer, but spend nothing
        return HTMLResponse(b"", headers=HEADERS)
    try:
        done = await doors.redirected(
            request.path_params["name"], query.get("code") or None, query.get("state", "")
        )
    except WeChatAPIError as exc:
        return page(lang, "wechat_error", exc.status, detail=f"errcode {exc.errcode}")
    except WxpushError as exc:
        text = exc.code if exc.code in TEXTS else _by_status(exc.status)
        return page(lang, text, exc.status)
    except (RedisError, OSError) as exc:
        logger.warning("a login redirect met Redis or the database away: %s", type(exc).__name__)
        return page(lang, "unavailable", 503)
    if done.return_to is not None:
        return RedirectResponse(done.return_to, status_code=303, headers=HEADERS)
    return page(lang, _DONE.get(done.status, "finish_on_screen"), 200)


_DONE = {"REG": "logged_in", "LINKED": "linked", "CONFLICT": "identity_taken"}


def page(lang: str, text: str, status: int, *, detail: str = "") -> HTMLResponse:
    """The whole answer: a title and one sentence, in ``lang``."""
    english, chinese = TEXTS[text]
    sentence = (chinese if lang == "zh" else english).format(detail=detail)
    title = TITLES[lang].get(text, TITLES[lang][""])
    body = (
        f'<!doctype html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font:16px/1.5 -apple-system,'PingFang SC',sans-serif;margin:0;"
        "display:grid;place-items:center;min-height:100vh;color:#111}"
        "main{max-width:28em;padding:24px;text-align:center}</style>\n</head>\n<body>\n"
        f'<main data-wxpush-page="{text}">\n<h1>{html.escape(title)}</h1>\n'
        f"<p>{html.escape(sentence)}</p>\n</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def language(accept_language: str) -> str:
    """``zh`` or ``en``: the first of the two the browser ranks highest (default ``en``)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept_language.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in ("zh", "en"):
            ranked.append((-weight, index, primary))
    return min(ranked)[2] if ranked else "en"


def _by_status(status: int) -> str:
    if status == 502:
        return "bad_gateway"
    return "unavailable" if status == 503 else "failed"
