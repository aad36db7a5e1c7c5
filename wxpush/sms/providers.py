"""Where a code goes: the console (development, the demo), a webhook (a bridge to an SMS
vendor of the operator's), or an SMS vendor called directly: Alibaba Cloud
(:mod:`.aliyun`) or Tencent Cloud (:mod:`.tencent`). Each provider raises
:class:`~wxpush.errors.BadGateway` when the code did not go out (and a vendor that throttles,
:class:`~wxpush.errors.RateLimited`); the caller then counts nothing against the person.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

from wxpush.clients import outbound
from wxpush.config.policy import SmsPolicy
from wxpush.errors import BadGateway
from wxpush.sms.aliyun import AliyunProvider
from wxpush.sms.phone import mask_phone
from wxpush.sms.tencent import TencentProvider

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 5.0


class SmsProvider(Protocol):
    """Delivers a code; raises :class:`~wxpush.errors.BadGateway` when it could not."""

    async def send(self, phone: str, code: str, expires_in: int) -> None: ...


class ConsoleProvider:
    """Prints the code on stdout, for development and the demo; sends nothing.

    It also keeps the latest code per phone in Redis (``wxpush:sms:console:last:{phone}``,
    for the code's lifetime) so that the sandbox can show it on a page.
    """

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def send(self, phone: str, code: str, expires_in: int) -> None:
        await self._redis.set(_console_key(phone), code, ex=expires_in)
        print(  # deliberate: showing the code is this provider's whole job
            f"[wxpush] SMS code for {mask_phone(phone)}: {code} (valid {expires_in} s)",
            flush=True,
        )

    async def latest(self, phone: str) -> str | None:
        """The last code "sent" to ``phone`` while it is still valid."""
        value = await self._redis.get(_console_key(phone))
        return None if value is None else _text(value)


class WebhookProvider:
    """POSTs ``{"phone", "code", "expires_in"}`` as JSON to a URL; any 2xx means sent.

    The receiver bridges to a real SMS vendor. Anything else — another status, a network
    error, no answer within 5 s — is a 502 for the caller, and the send is not counted. A
    kept-alive connection that the receiver closed just as the code went out on it is no
    failure: the code goes out again on a new one (see :mod:`wxpush.clients.outbound`).
    """

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url

    async def send(self, phone: str, code: str, expires_in: int) -> None:
        body = {"phone": phone, "code": code, "expires_in": expires_in}
        try:
            response = await outbound.post(
                self._http, self._url, json=body, timeout=WEBHOOK_TIMEOUT
            )
        except httpx.HTTPError as exc:
            logger.warning("SMS webhook unreachable for %s: %r", mask_phone(phone), exc)
            raise _sms_failed() from exc
        if not response.is_success:
            logger.warning(
                "SMS webhook answered %d for %s", response.status_code, mask_phone(phone)
            )
            raise _sms_failed()


def make_provider(policy: SmsPolicy, *, http: httpx.AsyncClient, redis: Any) -> SmsProvider:
    """The provider ``WXPUSH_SMS_PROVIDER`` names."""
    if policy.provider == "webhook":
        if not policy.webhook_url:
            raise ValueError("the webhook SMS provider needs WXPUSH_SMS_WEBHOOK_URL")
        return WebhookProvider(http, policy.webhook_url)
    if policy.provider == "aliyun":
        if policy.aliyun is None:
            raise ValueError("the aliyun SMS provider needs the WXPUSH_ALIYUN_* settings")
        return AliyunProvider(http, policy.aliyun)
    if policy.provider == "tencent":
        if policy.tencent is None:
            raise ValueError("the tencent SMS provider needs the WXPUSH_TENCENT_* settings")
        return TencentProvider(http, policy.tencent)
    return ConsoleProvider(redis)


def _console_key(phone: str) -> str:
    return f"wxpush:sms:console:last:{phone}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sms_failed() -> BadGateway:
    return BadGateway("The text message could not be sent; try again.", code="sms_failed")
