"""WeChat's JSON answers: an HTTP status, a JSON object, an ``errcode`` turned into words.

Every WeChat API (the service account's ``cgi-bin``, the Open Platform's ``sns``) answers
HTTP 200 with a JSON object, ``{"errcode", "errmsg"}`` when it refuses. :func:`decode` and
:func:`checked` make that a :class:`~wxpush.errors.BadGateway` or a
:class:`~wxpush.errors.WeChatAPIError` whose message people can act on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from wxpush.errors import BadGateway, WeChatAPIError

logger = logging.getLogger(__name__)

MESSAGES: dict[int, str] = {
    -1: "WeChat is busy, try again",
    40001: "the access_token is invalid or no longer the latest",
    40013: "the appid is invalid",
    40014: "the access_token is invalid",
    40029: "the login code is invalid or has expired; log in again",
    40125: "the appsecret is invalid",
    40163: "the login code was already used; log in again",
    40164: "this server's IP is not on the account's IP whitelist",
    42001: "the access_token has expired",
    45009: "daily API quota reached",
    45011: "API calls are too frequent, try again later",
    46003: "the account has no custom menu",
    48001: "the account is not a verified service account, or lacks this API",
    89501: "this server's IP awaits the account administrator's confirmation",
    89503: "this server's IP needs the account administrator's confirmation",
}


def error_message(errcode: int) -> str:
    """The sentence for people describing WeChat's ``errcode``."""
    return f"WeChat: {MESSAGES.get(errcode, 'the request was refused')} (errcode {errcode})"


async def send(
    http: httpx.AsyncClient, method: str, url: str, upstream: str = "WeChat", **kwargs: Any
) -> httpx.Response:
    """One request to WeChat; a timeout or a network failure is a :class:`BadGateway` that
    names the kind of failure only (httpx's text may hold the URL, and with it a token, a
    secret or a login code)."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise BadGateway(f"{upstream} cannot be reached (timed out)") from exc
    except httpx.HTTPError as exc:
        raise BadGateway(f"{upstream} cannot be reached ({type(exc).__name__})") from exc


def json_object(content: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def decode(upstream: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise BadGateway(f"{upstream} answered HTTP {response.status_code}")
    data = json_object(response.content)
    if data is None:
        raise BadGateway(f"{upstream} did not answer a JSON object")
    return data


def checked(path: str, data: dict[str, Any]) -> dict[str, Any]:
    errcode = data.get("errcode", 0)
    if not isinstance(errcode, int) or errcode == 0:
        return data
    errmsg = str(data.get("errmsg", ""))
    logger.warning("WeChat %s answered errcode %d: %s", path, errcode, errmsg)
    raise WeChatAPIError(errcode, errmsg, error_message(errcode))
