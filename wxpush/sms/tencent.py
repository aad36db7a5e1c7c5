"""Tencent Cloud SMS: ``SendSms`` (API 2021-01-11, service ``sms``), signed TC3-HMAC-SHA256.

One JSON POST to the endpoint's ``/``: ``PhoneNumberSet`` (the E.164 number, ``+86…``, as
the reference asks), ``SmsSdkAppId``, ``SignName``, ``TemplateId`` and ``TemplateParamSet``
(``[code]``: the template's one parameter ``{1}``); action, version, timestamp and region in
``X-TC-*`` headers, ``content-type``, ``host`` and ``x-tc-action`` signed. The answer is always
HTTP 200 with ``{"Response": {...}}``: an ``Error`` (``{"Code", "Message"}``) when the call was
refused as a whole, otherwise a ``SendStatusSet`` with one status per number, whose ``Code``
is ``"Ok"`` for a message sent — any other is a refusal too.

Throttling (a 429 with ``Retry-After``), as an error or a number's status: ``LimitExceeded.*``
— ``PhoneNumberThirtySecondLimit`` 30 s, ``PhoneNumberOneHourLimit`` 1 h, the daily limits
(``PhoneNumberDailyLimit``, ``PhoneNumberSameContentDailyLimit``, ``DailyLimit``,
``App…DailyLimit``) until midnight China time, others (``DeliveryFrequencyLimit``) 60 s —
and ``RequestLimitExceeded*`` (the API's request rate: 10 s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from wxpush.config.policy import TencentSms
from wxpush.sms import signing, vendor

ACTION, VERSION, SERVICE = "SendSms", "2021-01-11", "sms"
JSON_TYPE = "application/json; charset=utf-8"


class TencentProvider(vendor.VendorProvider):
    """Sends each code through Tencent Cloud SMS with the application's template."""

    name = "Tencent Cloud"

    def __init__(
        self, http: httpx.AsyncClient, config: TencentSms, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(http, config.endpoint, clock=clock)
        self._config = config

    def body(self, phone: str, code: str) -> bytes:
        c = self._config
        params = {
            "PhoneNumberSet": [phone],
            "SmsSdkAppId": c.sdk_app_id,
            "SignName": c.sign_name,
            "TemplateId": c.template_id,
            "TemplateParamSet": [code],
        }
        return json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()

    def signed_headers(self, body: bytes) -> dict[str, str]:
        timestamp = int(self._clock())
        signed = {"content-type": JSON_TYPE, "host": self.host, "x-tc-action": ACTION}
        authorization = signing.tc3_authorization(
            secret_id=self._config.secret_id, secret_key=self._config.secret_key,
            service=SERVICE, timestamp=timestamp,
            date=time.strftime("%Y-%m-%d", time.gmtime(timestamp)),
            method="POST", path=self.path, query={}, headers=signed,
            body_hash=signing.sha256_hex(body),
        )  # fmt: skip
        return {
            **signed,
            "x-tc-version": VERSION,
            "x-tc-timestamp": str(timestamp),
            "x-tc-region": self._config.region,
            "authorization": authorization,
        }

    def verdict(self, status: int, answer: Any) -> tuple[str, str] | None:
        """The call's error, else the (one) number's status."""
        response = answer.get("Response") if isinstance(answer, dict) else None
        if not 200 <= status < 300 or not isinstance(response, dict):
            return None
        error = response.get("Error")
        if isinstance(error, dict) and isinstance(error.get("Code"), str):
            return error["Code"], str(error.get("Message", ""))
        statuses = response.get("SendStatusSet")
        if not isinstance(statuses, list) or len(statuses) != 1:
            return None
        number = statuses[0]
        if not isinstance(number, dict) or not isinstance(number.get("Code"), str):
            return None
        if number["Code"] == "Ok":
            return vendor.SENT
        return number["Code"], str(number.get("Message", ""))

    def throttle_seconds(self, code: str, message: str) -> int | None:
        if code.startswith("RequestLimitExceeded"):
            return vendor.GATEWAY_THROTTLE
        if code != "LimitExceeded" and not code.startswith("LimitExceeded."):
            return None
        if code.endswith("ThirtySecondLimit"):
            return 30
        if code.endswith("OneHourLimit"):
            return vendor.HOUR
        if "DailyLimit" in code:
            return vendor.until_midnight_china(self._clock())
        return vendor.MINUTE
