"""The small policy objects the domain takes instead of the process settings.

Each holds the few values one service needs, built once by :class:`~.settings.Settings`
(``settings.login_policy()`` …) at start-up; a test builds one directly. A domain module
imports this file, never the settings: it cannot grow a dependency on the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wxpush.config.values import SmsProvider


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """How WeChat's callbacks are checked and remembered (SPEC §4)."""

    timestamp_window: int = 300  # seconds of clock difference accepted on a signature
    dedup_seconds: int = 120  # how long an event is remembered for WeChat's retries
    forward_url: str | None = None  # where events that are not login scans go


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """The rules of a login (SPEC §2, §5)."""

    qr_expire_seconds: int = 300
    scenes_per_minute_per_ip: int = 120
    require_phone: bool = True
    login_only: bool = False
    link_by_phone: bool = True
    reply_logged_in: str = "Logged in"
    reply_finish_on_screen: str = (
        "Almost there: finish signing in on the screen by confirming your phone number."
    )


@dataclass(frozen=True, slots=True)
class AliyunSms:
    """Alibaba Cloud SMS (Dysms ``SendSms``): a RAM user's AccessKey and what was registered."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    sign_name: str  # the approved sign (签名), e.g. 阿里云短信测试
    template_code: str  # the approved template (模板) with a ${code} variable, e.g. SMS_154950909
    endpoint: str = "https://dysmsapi.aliyuncs.com"


@dataclass(frozen=True, slots=True)
class TencentSms:
    """Tencent Cloud SMS (``SendSms`` 2021-01-11): a sub-user's key and what was registered."""

    secret_id: str
    secret_key: str = field(repr=False)
    sdk_app_id: str  # the SMS application's SdkAppId, e.g. 1400006666
    sign_name: str  # the approved sign's content, e.g. 腾讯云
    template_id: str  # the approved template with one parameter {1}, e.g. 1110
    region: str = "ap-guangzhou"
    endpoint: str = "https://sms.tencentcloudapi.com"


@dataclass(frozen=True, slots=True)
class SmsPolicy:
    """SMS codes: their life, their limits, how they are sent (SPEC §5)."""

    hmac_key: bytes  # codes are stored as keyed hashes; every process derives the same key
    provider: SmsProvider = "console"
    webhook_url: str | None = None
    aliyun: AliyunSms | None = None  # set when the provider is aliyun
    tencent: TencentSms | None = None  # set when the provider is tencent
    code_ttl: int = 300
    max_tries: int = 5
    interval: int = 60
    per_day_per_phone: int = 10
    per_hour_per_ip: int = 20

    def __repr__(self) -> str:  # never print the key
        return f"SmsPolicy(provider={self.provider!r})"


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """Access and refresh tokens (SPEC §3)."""

    issuer: str = "wxpush"
    audience: str = "wxpush"
    access_ttl: int = 7200
    refresh_ttl: int = 30 * 24 * 3600
    key_file: str = "wxpush-jwt-key.pem"
    secret: str | None = None  # HS256 instead of the ES256 key file

    def __repr__(self) -> str:  # never print the secret
        return f"TokenPolicy(issuer={self.issuer!r}, audience={self.audience!r})"
