"""Settings: the only reader of ``os.environ``.

Every ``WXPUSH_*`` variable is declared once, in :class:`Settings`, with its parser
(:mod:`.values`) and default in the field's metadata. :meth:`Settings.from_env` reads them all
once at start-up (a ``.env`` file in the working directory is read too; the real environment
wins) and a missing or malformed value raises :class:`~wxpush.errors.SettingsError`, whose
text is one line naming the variable, so that ``wxpush serve`` can stop with exactly that
line. The accounts are read by :mod:`.accounts`; the domain gets the policy objects of
:mod:`.policy` built here, never the settings themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from wxpush.config import values as v
from wxpush.config.accounts import Account, WebsiteApp, load_apps, parse_value
from wxpush.config.clients import Client
from wxpush.config.policy import (
    AliyunSms,
    CallbackPolicy,
    LoginPolicy,
    SmsPolicy,
    TencentSms,
    TokenPolicy,
)
from wxpush.errors import SettingsError
from wxpush.infra.redis_client import MAX_CONNECTIONS, RedisTarget


def _setting(
    env: str, parse: Callable[[str], Any], default: Any = None, *, secret: bool = False
) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the server, typed. Build with :meth:`from_env`."""

    accounts: Mapping[str, Account] = field(default_factory=dict)
    websites: Mapping[str, WebsiteApp] = field(default_factory=dict)
    clients: Mapping[str, Client] = field(default_factory=dict)
    accounts_file: str | None = _setting("WXPUSH_ACCOUNTS_FILE", v.text)
    redis_url: str | None = _setting("WXPUSH_REDIS_URL", v.redis_url)
    redis_sentinels: tuple[tuple[str, int], ...] = _setting(
        "WXPUSH_REDIS_SENTINELS", v.host_ports, ()
    )
    redis_sentinel_service: str = _setting("WXPUSH_REDIS_SENTINEL_SERVICE", v.text, "mymaster")
    redis_cluster: bool = _setting("WXPUSH_REDIS_CLUSTER", v.boolean, False)
    redis_connections: int = _setting(
        "WXPUSH_REDIS_CONNECTIONS", v.redis_connections, MAX_CONNECTIONS
    )
    database_url: str = _setting(
        "WXPUSH_DATABASE_URL", v.database_url, "sqlite+aiosqlite:///wxpush.db"
    )
    public_url: str | None = _setting("WXPUSH_PUBLIC_URL", v.http_url)
    allowed_origins: tuple[str, ...] = _setting("WXPUSH_ALLOWED_ORIGINS", v.origins, ())
    trusted_proxies: tuple[str, ...] = _setting("WXPUSH_TRUSTED_PROXIES", v.proxies, ())
    qr_expire_seconds: int = _setting("WXPUSH_QR_EXPIRE_SECONDS", v.positive_int, 300)
    jwt_key_file: str = _setting("WXPUSH_JWT_KEY_FILE", v.text, "wxpush-jwt-key.pem")
    jwt_secret: str | None = _setting("WXPUSH_JWT_SECRET", v.text, secret=True)
    jwt_issuer: str = _setting("WXPUSH_JWT_ISSUER", v.text, "wxpush")
    jwt_audience: str = _setting("WXPUSH_JWT_AUDIENCE", v.text, "wxpush")
    sms_provider: v.SmsProvider = _setting("WXPUSH_SMS_PROVIDER", v.sms_provider, "console")
    sms_webhook_url: str | None = _setting("WXPUSH_SMS_WEBHOOK_URL", v.http_url)
    aliyun_access_key_id: str | None = _setting("WXPUSH_ALIYUN_ACCESS_KEY_ID", v.word)
    aliyun_access_key_secret: str | None = _setting(
        "WXPUSH_ALIYUN_ACCESS_KEY_SECRET", v.word, secret=True
    )
    aliyun_sign_name: str | None = _setting("WXPUSH_ALIYUN_SIGN_NAME", v.nonblank)
    aliyun_template_code: str | None = _setting("WXPUSH_ALIYUN_TEMPLATE_CODE", v.word)
    aliyun_endpoint: str = _setting(
        "WXPUSH_ALIYUN_ENDPOINT", v.http_url, "https://dysmsapi.aliyuncs.com"
    )
    tencent_secret_id: str | None = _setting("WXPUSH_TENCENT_SECRET_ID", v.word)
    tencent_secret_key: str | None = _setting("WXPUSH_TENCENT_SECRET_KEY", v.word, secret=True)
    tencent_sdk_app_id: str | None = _setting("WXPUSH_TENCENT_SDK_APP_ID", v.digits)
    tencent_sign_name: str | None = _setting("WXPUSH_TENCENT_SIGN_NAME", v.nonblank)
    tencent_template_id: str | None = _setting("WXPUSH_TENCENT_TEMPLATE_ID", v.digits)
    tencent_region: str = _setting("WXPUSH_TENCENT_REGION", v.region, "ap-guangzhou")
    tencent_endpoint: str = _setting(
        "WXPUSH_TENCENT_ENDPOINT", v.http_url, "https://sms.tencentcloudapi.com"
    )
    forward_url: str | None = _setting("WXPUSH_FORWARD_URL", v.http_url)
    wechat_api_base: str = _setting(
        "WXPUSH_WECHAT_API_BASE", v.http_url, "https://api.weixin.qq.com"
    )
    wechat_connect_base: str = _setting(
        "WXPUSH_WECHAT_CONNECT_BASE", v.http_url, "https://open.weixin.qq.com"
    )
    unionid: bool = _setting("WXPUSH_UNIONID", v.boolean, False)
    login_only: bool = _setting("WXPUSH_LOGIN_ONLY", v.boolean, False)
    require_phone: bool = _setting("WXPUSH_REQUIRE_PHONE", v.boolean, True)
    link_by_phone: bool = _setting("WXPUSH_LINK_BY_PHONE", v.boolean, True)
    sandbox: bool = _setting("WXPUSH_SANDBOX", v.boolean, False)
    timestamp_window: int = _setting("WXPUSH_TIMESTAMP_WINDOW_SECONDS", v.positive_int, 300)
    dedup_seconds: int = _setting("WXPUSH_DEDUP_SECONDS", v.positive_int, 120)
    max_body_bytes: int = _setting("WXPUSH_MAX_BODY_BYTES", v.positive_int, 64 * 1024)
    body_timeout: int = _setting("WXPUSH_BODY_TIMEOUT_SECONDS", v.positive_int, 10)
    reply_logged_in: str = _setting("WXPUSH_REPLY_LOGGED_IN", v.text, "Logged in")
    reply_finish_on_screen: str = _setting(
        "WXPUSH_REPLY_FINISH_ON_SCREEN",
        v.text,
        "Almost there: finish signing in on the screen by confirming your phone number.",
    )
    access_token_ttl: int = _setting("WXPUSH_ACCESS_TOKEN_TTL_SECONDS", v.positive_int, 7200)
    refresh_token_ttl: int = _setting(
        "WXPUSH_REFRESH_TOKEN_TTL_SECONDS", v.positive_int, 30 * 24 * 3600
    )
    sms_code_ttl: int = _setting("WXPUSH_SMS_CODE_TTL_SECONDS", v.positive_int, 300)
    sms_max_tries: int = _setting("WXPUSH_SMS_MAX_TRIES", v.positive_int, 5)
    sms_interval: int = _setting("WXPUSH_SMS_INTERVAL_SECONDS", v.positive_int, 60)
    sms_per_day_per_phone: int = _setting("WXPUSH_SMS_PER_DAY_PER_PHONE", v.positive_int, 10)
    sms_per_hour_per_ip: int = _setting("WXPUSH_SMS_PER_HOUR_PER_IP", v.positive_int, 20)
    scenes_per_minute_per_ip: int = _setting("WXPUSH_SCENES_PER_MINUTE_PER_IP", v.positive_int, 120)
    sockets_per_ip: int = _setting("WXPUSH_SOCKETS_PER_IP", v.positive_int, 50)
    log_level: str = _setting("WXPUSH_LOG_LEVEL", v.log_level, "info")

    @property
    def embedded_redis(self) -> bool:
        """No Redis URL, sentinels or cluster: one process on an in-memory Redis-compatible
        store."""
        return self.redis_url is None and not self.redis_sentinels and not self.redis_cluster

    @property
    def redis(self) -> RedisTarget | None:
        """Where Redis is (``None``: the embedded store)."""
        if self.embedded_redis:
            return None
        return RedisTarget(
            self.redis_url, self.redis_sentinels, self.redis_sentinel_service, self.redis_cluster
        )

    @property
    def default_account(self) -> Account:
        """The first service account (``WXPUSH_APPID``'s, or the file's first)."""
        if not self.accounts:
            raise SettingsError("WXPUSH_APPID", "no service account is configured")
        return next(iter(self.accounts.values()))

    @classmethod
    def one(
        cls, name: str, environ: Mapping[str, str] | None = None, *, dotenv: str | None = ".env"
    ) -> Any:
        """One setting by field name, without the rest (``wxpush keygen`` needs no account)."""
        env = _environment(environ, dotenv)
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        raw = env.get(f.metadata["env"])
        if raw is None or not raw.strip():
            return f.default
        return parse_value(f.metadata["env"], f.metadata["parse"], raw)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | Path | None = ".env",
    ) -> Settings:
        """Read every setting once; raise :class:`SettingsError` on the first bad one."""
        env = _environment(environ, dotenv)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name: str | None = f.metadata.get("env")
            raw = env.get(name) if name else None
            if name is None or raw is None or raw.strip() == "":
                continue
            values[f.name] = parse_value(name, f.metadata["parse"], raw)
        settings = cls(**values)
        apps = load_apps(env, settings.accounts_file, unionid=settings.unionid)
        settings = dataclasses.replace(
            settings, accounts=apps.accounts, websites=apps.websites, clients=apps.clients
        )
        _check_consistency(settings)
        return settings

    # -- what each service is given ----------------------------------------------------------

    def callback_policy(self) -> CallbackPolicy:
        return CallbackPolicy(self.timestamp_window, self.dedup_seconds, self.forward_url)

    def login_policy(self) -> LoginPolicy:
        return LoginPolicy(
            qr_expire_seconds=self.qr_expire_seconds,
            scenes_per_minute_per_ip=self.scenes_per_minute_per_ip,
            require_phone=self.require_phone, login_only=self.login_only,
            link_by_phone=self.link_by_phone, reply_logged_in=self.reply_logged_in,
            reply_finish_on_screen=self.reply_finish_on_screen,
        )  # fmt: skip

    def sms_policy(self) -> SmsPolicy:
        return SmsPolicy(
            hmac_key=self._sms_key(), provider=self.sms_provider,
            webhook_url=self.sms_webhook_url, aliyun=self._aliyun(), tencent=self._tencent(),
            code_ttl=self.sms_code_ttl,
            max_tries=self.sms_max_tries, interval=self.sms_interval,
            per_day_per_phone=self.sms_per_day_per_phone,
            per_hour_per_ip=self.sms_per_hour_per_ip,
        )  # fmt: skip

    def token_policy(self) -> TokenPolicy:
        return TokenPolicy(
            issuer=self.jwt_issuer, audience=self.jwt_audience,
            access_ttl=self.access_token_ttl, refresh_ttl=self.refresh_token_ttl,
            key_file=self.jwt_key_file, secret=self.jwt_secret,
        )  # fmt: skip

    def _aliyun(self) -> AliyunSms | None:
        if self.sms_provider != "aliyun":
            return None
        return AliyunSms(
            access_key_id=_present(self.aliyun_access_key_id),
            access_key_secret=_present(self.aliyun_access_key_secret),
            sign_name=_present(self.aliyun_sign_name),
            template_code=_present(self.aliyun_template_code), endpoint=self.aliyun_endpoint,
        )  # fmt: skip

    def _tencent(self) -> TencentSms | None:
        if self.sms_provider != "tencent":
            return None
        return TencentSms(
            secret_id=_present(self.tencent_secret_id),
            secret_key=_present(self.tencent_secret_key),
            sdk_app_id=_present(self.tencent_sdk_app_id),
            sign_name=_present(self.tencent_sign_name),
            template_id=_present(self.tencent_template_id),
            region=self.tencent_region, endpoint=self.tencent_endpoint,
        )  # fmt: skip

    def _sms_key(self) -> bytes:
        """A key every process derives alike from secrets that are not in Redis."""
        material = hashlib.sha256(b"wxpush sms code v1")
        for account in sorted(self.accounts.values(), key=lambda a: a.name):
            for part in (account.appid, account.token, account.secret or ""):
                material.update(part.encode() + b"\0")
        for app in sorted(self.websites.values(), key=lambda a: a.name):
            material.update(f"{app.appid}\0{app.secret}\0".encode())
        material.update((self.jwt_secret or "").encode())
        return material.digest()

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for logs: secrets replaced by ``"***"``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif f.name in ("accounts", "websites", "clients"):
                value = [repr(a) for a in value.values()]
            out[f.name] = value
        return out


def _environment(environ: Mapping[str, str] | None, dotenv: str | Path | None) -> dict[str, str]:
    """``.env`` (when present) overlaid by the real environment."""
    env: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def port_from_env(default: int = 8000) -> int:
    """``$PORT`` as platforms such as Heroku set it (the Procfile passes it too)."""
    raw = os.environ.get("PORT", "")
    return int(raw) if raw.isdigit() else default


# What each SMS provider cannot do without, in the order a missing one is reported.
_SMS_NEEDS: dict[str, tuple[str, ...]] = {
    "webhook": ("sms_webhook_url",),
    "aliyun": (
        "aliyun_access_key_id", "aliyun_access_key_secret", "aliyun_sign_name",
        "aliyun_template_code",
    ),
    "tencent": (
        "tencent_secret_id", "tencent_secret_key", "tencent_sdk_app_id", "tencent_sign_name",
        "tencent_template_id",
    ),
}  # fmt: skip
_ENV = {f.name: f.metadata.get("env", "") for f in dataclasses.fields(Settings)}


def _check_consistency(settings: Settings) -> None:
    if settings.redis is not None and (problem := settings.redis.problem()) is not None:
        raise SettingsError(*problem)
    provider = settings.sms_provider
    for name in _SMS_NEEDS.get(provider, ()):
        if getattr(settings, name) is None:
            raise SettingsError(_ENV[name], f"missing; the {provider} SMS provider needs it")


def _present(value: str | None) -> str:
    assert value is not None, "checked by _check_consistency at start-up"
    return value
