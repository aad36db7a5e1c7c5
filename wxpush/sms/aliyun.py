"""Alibaba Cloud SMS: Dysms ``SendSms`` (API 2017-05-25), signed ACS3-HMAC-SHA256.

One POST to the endpoint's ``/``; the parameters (``PhoneNumbers``, ``SignName``,
``TemplateCode``, ``TemplateParam`` = ``{"code":"123456"}``) are form-encoded in the body —
the V3 signature covers the body through ``x-acs-content-sha256``, and a URL would put the
code in httpx's INFO log. The answer is JSON, ``{"Code": "OK", "BizId", "RequestId", ...}``
for a message accepted; any other ``Code`` is the vendor's refusal (the gateway's own errors,
such as ``SignatureDoesNotMatch``, come with a 4xx status and the same shape).

Phone numbers: a mainland number goes as its 11 digits (``13800138000``), the form the Dysms
reference gives first; any other as country code and number without ``+``
(``85261234567``), as its reference writes international numbers. Those also need an
international template on the account.

Throttling (a 429 with ``Retry-After``): ``isv.BUSINESS_LIMIT_CONTROL``, the per-number
frequency limit, whose message says which window was hit ("触发分钟级流控Permits:1": 60 s;
hourly: 1 h; daily: until midnight China time); ``isv.DAY_LIMIT_CONTROL`` (the account's daily
quota: until midnight) and ``isv.MONTH_LIMIT_CONTROL`` (a day); ``Throttling*`` (the API
gateway's request rate: 10 s).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from wxpush.config.policy import AliyunSms
from wxpush.sms import signing, vendor

ACTION, VERSION = "SendSms", "2017-05-25"
FORM = "application/x-www-form-urlencoded"


class AliyunProvider(vendor.VendorProvider):
    """Sends each code through Alibaba Cloud SMS with the account's template."""

    name = "Aliyun"

    def __init__(
        self, http: httpx.AsyncClient, config: AliyunSms, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(http, config.endpoint, clock=clock)
        self._config = config

    def body(self, phone: str, code: str) -> bytes:
        params = {
            "PhoneNumbers": number_for_aliyun(phone),
            "SignName": self._config.sign_name,
            "TemplateCode": self._config.template_code,
            "TemplateParam": json.dumps({"code": code}, separators=(",", ":")),
        }
        return signing.canonical_query(params).encode()

    def signed_headers(self, body: bytes) -> dict[str, str]:
        """Every header the signature covers, and the signature."""
        headers = {
            "host": self.host,
            "content-type": FORM,
            "x-acs-action": ACTION,
            "x-acs-version": VERSION,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
            "x-acs-signature-nonce": secrets.token_hex(16),
            "x-acs-content-sha256": signing.sha256_hex(body),
        }
        authorization = signing.acs3_authorization(
            access_key_id=self._config.access_key_id,
            access_key_secret=self._config.access_key_secret,
            method="POST", path=self.path, query={}, headers=headers,
            body_hash=headers["x-acs-content-sha256"],
        )  # fmt: skip
        return {**headers, "authorization": authorization, "accept": "application/json"}

    def verdict(self, status: int, answer: Any) -> tuple[str, str] | None:
        if not isinstance(answer, dict) or not isinstance(answer.get("Code"), str):
            return None
        if answer["Code"] == "OK":
            return vendor.SENT if 200 <= status < 300 else None
        return answer["Code"], str(answer.get("Message", ""))

    def throttle_seconds(self, code: str, message: str) -> int | None:
        if code == "isv.BUSINESS_LIMIT_CONTROL":  # "触发分钟级流控Permits:1", hourly, daily
            if "天" in message or "day" in message.lower():
                return vendor.until_midnight_china(self._clock())
            if "小时" in message or "hour" in message.lower():
                return vendor.HOUR
            return vendor.MINUTE
        if code == "isv.DAY_LIMIT_CONTROL":
            return vendor.until_midnight_china(self._clock())
        if code == "isv.MONTH_LIMIT_CONTROL":
            return 86400
        if code.startswith("Throttling"):
            return vendor.GATEWAY_THROTTLE
        return None


def number_for_aliyun(e164: str) -> str:
    """``+8613800138000`` → ``13800138000``; ``+85261234567`` → ``85261234567``."""
    digits = e164.removeprefix("+")
    return digits[2:] if digits.startswith("86") else digits
