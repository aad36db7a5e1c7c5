"""Domain errors as HTTP answers: the one JSON shape ``{"error", "message"}`` and its status.

:mod:`wxpush.errors` holds the exception tree and knows no HTTP framework; this module turns
any exception a handler raised into the answer the client sees, never a traceback.
"""

from __future__ import annotations

import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from wxpush.errors import WxpushError, from_protocol_error
from wxpush.wechat.errors import ProtocolError

logger = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one shape of every error answer."""
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def response_of(error: WxpushError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, error.headers)


def error_answer(exc: Exception) -> tuple[str, Response]:
    """The error code and JSON answer for anything a handler raised (never a traceback)."""
    if isinstance(exc, WxpushError):
        return exc.code, response_of(exc)
    if isinstance(exc, ProtocolError):
        error = from_protocol_error(exc)
        return error.code, response_of(error)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        logger.warning("Redis is unavailable: %s", type(exc).__name__)
        message = "Redis is not reachable; try again shortly."
        return "redis_unavailable", error_response(503, "redis_unavailable", message)
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if "Allow" in headers:  # Starlette joins a route's methods from a set: in no fixed order
            headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
        return code, error_response(exc.status_code, code, str(exc.detail), headers)
    logger.error("unhandled error", exc_info=exc)
    message = "Something went wrong on the server."
    return "internal_error", error_response(500, "internal_error", message)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
