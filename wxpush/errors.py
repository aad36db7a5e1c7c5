"""The exception tree and its mapping to JSON errors.

::

    WxpushError                       (status, error code, human message)
    ├── BadRequest            400
    ├── Unauthorized          401
    ├── Forbidden             403
    ├── NotFound              404
    ├── RequestTimeout        408  (the body did not arrive in time; the connection closes)
    ├── Conflict              409
    ├── Gone                  410
    ├── PayloadTooLarge       413
    ├── RateLimited           429  (+ Retry-After)
    ├── BadGateway            502  (an upstream such as the SMS webhook failed)
    │   └── WeChatAPIError         WeChat answered an errcode; message in words
    └── Unavailable           503  (Redis or the database is down)

Protocol errors from :mod:`wxpush.wechat.errors` are mapped by :func:`from_protocol_error`.
:mod:`wxpush.web.errors` answers every one as ``{"error": "<code>", "message": "<sentence>"}``
with its status; none carries a traceback. No HTTP framework is imported here.

:class:`SettingsError` stands apart: a setting that is missing or malformed stops start-up
(or a command) with its one line.
"""

from __future__ import annotations

from typing import ClassVar

from wxpush.wechat import errors as wx


class SettingsError(ValueError):
    """A setting is missing or malformed; ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class WxpushError(Exception):
    """An error with an HTTP status, a snake_case code and a message for people."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    headers: dict[str, str]

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.headers = {}


class BadRequest(WxpushError):
    status, code = 400, "bad_request"


class Unauthorized(WxpushError):
    status, code = 401, "unauthorized"


class Forbidden(WxpushError):
    status, code = 403, "forbidden"


class NotFound(WxpushError):
    status, code = 404, "not_found"


class RequestTimeout(WxpushError):
    status, code = 408, "body_timeout"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.headers["Connection"] = "close"  # the rest of the body may still be on its way


class Conflict(WxpushError):
    status, code = 409, "conflict"


class Gone(WxpushError):
    status, code = 410, "gone"


class PayloadTooLarge(WxpushError):
    status, code = 413, "payload_too_large"


class RateLimited(WxpushError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)
        self.headers["Retry-After"] = str(self.retry_after)


class BadGateway(WxpushError):
    status, code = 502, "bad_gateway"


class WeChatAPIError(BadGateway):
    """WeChat answered with a non-zero ``errcode``."""

    code = "wechat_error"

    def __init__(self, errcode: int, errmsg: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.errmsg = errmsg


class Unavailable(WxpushError):
    status, code = 503, "unavailable"


_PROTOCOL: list[tuple[type[wx.ProtocolError], type[WxpushError], str, str]] = [
    (wx.StaleTimestampError, Forbidden, "stale_timestamp", "The request's timestamp is too old."),
    (wx.SignatureError, Forbidden, "bad_signature", "The WeChat signature does not match."),
    (wx.AppIdMismatchError, BadRequest, "wrong_appid", "The message is for another appid."),
    (wx.CiphertextError, BadRequest, "bad_ciphertext", "The encrypted message is malformed."),
    (wx.ForbiddenDoctypeError, BadRequest, "doctype_forbidden", "DOCTYPE is not accepted."),
    (wx.XMLError, BadRequest, "bad_xml", "The XML is malformed or incomplete."),
]


def from_protocol_error(exc: wx.ProtocolError) -> WxpushError:
    """Map a WeChat protocol error to its HTTP error (first match in the table wins)."""
    for kind, http, code, message in _PROTOCOL:
        if isinstance(exc, kind):
            return http(message, code=code)
    return BadRequest("The WeChat message is invalid.", code="bad_message")
