"""What the two SMS vendors share: one signed POST with a hard 5 s bound, and the mapping of
their answers to our errors.

A message the vendor took is sent; anything else is the vendor's word, passed on in words:

- a refusal (a bad sign name, a wrong key, a number it will not serve) is a 502 ``sms_failed``
  whose message names the vendor and its code ("Aliyun SMS refused the message
  (isv.MOBILE_NUMBER_ILLEGAL): …");
- its throttling is a 429 ``sms_rate_limited`` with a ``Retry-After`` the size of the vendor's
  window (:func:`throttled`);
- no answer within :data:`VENDOR_TIMEOUT` s, a network error, an answer that is not the
  vendor's JSON: a 502 ``sms_failed``.

Each raises out of :meth:`~wxpush.sms.codes.SmsCodes.send`, which gives the reservation back:
a failed send counts against no limit. Nothing logged here holds a code or a secret: the
parameters travel in the body (httpx logs URLs at INFO), log lines name the vendor's code
and a masked number, and a vendor's words are cut to one line, with the code blanked out and
the number masked (:func:`vendor_words`), before they reach a log or an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from wxpush.clients import outbound
from wxpush.errors import BadGateway, RateLimited, WxpushError
from wxpush.sms.phone import mask_phone

logger = logging.getLogger(__name__)

VENDOR_TIMEOUT = 5.0  # seconds for the whole call, connect to last byte
MINUTE, HOUR = 60, 3600
GATEWAY_THROTTLE = 10  # the vendor's API gateway is over its request rate: a short wait
_CHINA_OFFSET = 8 * 3600  # the vendors' calendar days end at midnight China Standard Time
_MAX_WORDS = 160
_MAX_CODE = 80
SENT = ("", "")  # a verdict: the vendor took the message


class VendorProvider:
    """A provider that signs one POST to the vendor's endpoint and reads its verdict."""

    name: ClassVar[str]

    def __init__(
        self, http: httpx.AsyncClient, endpoint: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._http = http
        self._clock = clock
        parts = urlsplit(endpoint)
        self.host = parts.netloc.rpartition("@")[2]  # what httpx sends as Host, signed
        self.path = parts.path or "/"
        self._url = f"{parts.scheme}://{self.host}{self.path}"

    async def send(self, phone: str, code: str, expires_in: int) -> None:
        body = self.body(phone, code)
        headers = self.signed_headers(body)
        status, answer = await post(
            self._http, self.name, self._url, phone, content=body, headers=headers
        )
        verdict = self.verdict(status, answer)
        if verdict is None:
            raise unreadable(self.name, status, phone)
        if verdict != SENT:
            raise self.error(*verdict, phone=phone, sms_code=code)

    def body(self, phone: str, code: str) -> bytes:
        raise NotImplementedError

    def signed_headers(self, body: bytes) -> dict[str, str]:
        raise NotImplementedError

    def verdict(self, status: int, answer: Any) -> tuple[str, str] | None:
        """:data:`SENT` when sent, ``(vendor's code, its message)`` when not, ``None`` for
        an answer that is not the vendor's."""
        raise NotImplementedError

    def throttle_seconds(self, code: str, message: str) -> int | None:
        """``Retry-After`` when ``code`` is throttling, else ``None`` (a refusal)."""
        raise NotImplementedError

    def error(self, code: str, message: str, *, phone: str, sms_code: str) -> WxpushError:
        wait = self.throttle_seconds(code, message)
        shown = vendor_words(code, sms_code, phone)[:_MAX_CODE]
        if wait is not None:
            return throttled(self.name, shown, wait, phone)
        return refused(self.name, shown, vendor_words(message, sms_code, phone), phone)


async def post(
    http: httpx.AsyncClient, vendor: str, url: str, phone: str, *,
    content: bytes, headers: dict[str, str],
) -> tuple[int, Any]:  # fmt: skip
    """POST the signed request; return the status and the JSON answer (``None`` when the
    answer is not JSON). No answer within :data:`VENDOR_TIMEOUT` s is a 502."""
    try:
        async with asyncio.timeout(VENDOR_TIMEOUT):
            response = await outbound.post(
                http, url, content=content, headers=headers, timeout=VENDOR_TIMEOUT
            )
    except (httpx.HTTPError, TimeoutError) as exc:
        # the exception's text only: its request (and so the signed headers) stays out of logs
        logger.warning("%s SMS unreachable for %s: %s", vendor, mask_phone(phone),
                       type(exc).__name__)  # fmt: skip
        raise failed(f"{vendor} SMS could not be reached; try again.") from None
    try:
        return response.status_code, json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return response.status_code, None


def unreadable(vendor: str, status: int, phone: str) -> BadGateway:
    """The answer is not the vendor's JSON (a proxy's error page, a garbled body)."""
    logger.warning("%s SMS gave an unreadable answer (HTTP %d) for %s", vendor, status,
                   mask_phone(phone))  # fmt: skip
    return failed(f"{vendor} SMS gave an answer that could not be read (HTTP {status}); try again.")


def refused(vendor: str, code: str, words: str, phone: str) -> BadGateway:
    """The vendor refused the message: its code and message (:func:`vendor_words`)."""
    logger.warning("%s SMS refused the message for %s: %s (%s)", vendor, mask_phone(phone),
                   code, words)  # fmt: skip
    return failed(f"{vendor} SMS refused the message ({code}): {words}")


def throttled(vendor: str, code: str, retry_after: int, phone: str) -> RateLimited:
    """The vendor is limiting messages (to this number, or for the whole account)."""
    logger.warning("%s SMS is throttling %s: %s (retry after %d s)", vendor, mask_phone(phone),
                   code, retry_after)  # fmt: skip
    return RateLimited(
        f"{vendor} SMS is limiting the messages sent ({code}); try again later.",
        retry_after=retry_after,
        code="sms_rate_limited",
    )


def until_midnight_china(now: float) -> int:
    """Seconds until the next 00:00 in China (UTC+8), when the vendors' daily quotas reset."""
    return max(MINUTE, 86400 - int(now + _CHINA_OFFSET) % 86400)


def vendor_words(message: object, sms_code: str, phone: str) -> str:
    """A vendor's words fit for a log and an answer: one line, short, the SMS code blanked
    out and the number masked (a vendor may quote a parameter back)."""
    text = str(message)
    if sms_code:
        text = text.replace(sms_code, "******")
    digits = phone.removeprefix("+")
    for form in (phone, digits, digits.removeprefix("86") if digits.startswith("86") else ""):
        if len(form) >= 6:
            text = text.replace(form, mask_phone(phone))
    text = " ".join(text.split())
    return text if len(text) <= _MAX_WORDS else text[: _MAX_WORDS - 1] + "…"


def failed(message: str) -> BadGateway:
    return BadGateway(message, code="sms_failed")
