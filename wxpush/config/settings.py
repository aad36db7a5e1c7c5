"""Settings: the only reader of ``os.environ``.

Every ``WXPUSH_*`` variable is declared once, in :class:`Settings`, with its parser and
default in the field's metadata. :meth:`Settings.from_env` reads them all once at start-up
(a ``.env`` file in the working directory is read too; the real environment wins) and a
missing or malformed value raises :class:`SettingsError`, whose text is one line naming the
variable, so that ``wxpush serve`` can stop with exactly that line.

WeChat accounts come either from the ``WXPUSH_APPID``/``WXPUSH_APPSECRET``/``WXPUSH_TOKEN``/
``WXPUSH_AES_KEY`` family (one account, named ``default``) or from a TOML file named by
``WXPUSH_ACCOUNTS_FILE`` holding several ``[[account]]`` tables.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from dotenv import dotenv_values

from wxpush.infra.redis_client import MAX_CONNECTIONS, MIN_CONNECTIONS
from wxpush.web import origins
from wxpush.wechat.crypto import decode_aes_key

DEFAULT_ACCOUNT = "default"
SmsProvider = Literal["console", "webhook"]


class SettingsError(ValueError):
    """A setting is missing or malformed; ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


# ---------------------------------------------------------------------------------------------
# Parsers: each takes the raw string and returns the typed value or raises ValueError.


def _str(raw: str) -> str:
    return raw


def _int(raw: str) -> int:
    return int(raw.strip())


def _positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _redis_connections(raw: str) -> int:
    value = _positive_int(raw)
    if value < MIN_CONNECTIONS:
        raise ValueError(
            f"must be at least {MIN_CONNECTIONS} (the pub/sub connection, the pipelined one "
            "for the login path, and at least one for the rest)"
        )
    return value


def _bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def _url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.strip().rstrip("/")


def _redis_url(raw: str) -> str:
    if urlsplit(raw.strip()).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return raw.strip()


def _database_url(raw: str) -> str:
    scheme = urlsplit(raw.strip()).scheme
    if not scheme.startswith(("sqlite", "postgresql", "postgres")):
        raise ValueError("must be a sqlite:/// or postgresql:// URL")
    return raw.strip()


def _origins(raw: str) -> tuple[str, ...]:
    """Origins in the form browsers send them (see :func:`.origins.canonical`), or ``*``."""
    items = tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
    canonical: list[str] = []
    for item in items:
        origin = "*" if item == "*" else origins.canonical(item)
        if origin is None:
            raise ValueError(f"{item!r} is not an origin like https://example.com")
        canonical.append(origin)
    return tuple(canonical)


def _proxies(raw: str) -> tuple[str, ...]:
    """Addresses (``10.0.0.1``) and networks (``10.0.0.0/8``), the way uvicorn's
    ``forwarded_allow_ips`` reads them; anything else would be silently matched as a literal
    string there, and never trusted, so it is refused here."""
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    return tuple(_proxy(item) for item in items)


def _proxy(item: str) -> str:
    if item == "*":
        raise ValueError("'*' would take any client's word for its address; name the proxies")
    try:
        return str(ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item))
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or network like 10.0.0.0/8") from None


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _sms_provider(raw: str) -> SmsProvider:
    if raw.strip() not in {"console", "webhook"}:
        raise ValueError("must be console or webhook")
    return cast(SmsProvider, raw.strip())


def _aes_key(raw: str) -> str:
    decode_aes_key(raw.strip())
    return raw.strip()


_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9]{3,32}$")


def _wechat_token(raw: str) -> str:
    if not _TOKEN_CHARS.match(raw.strip()):
        raise ValueError("a WeChat Token is 3 to 32 letters or digits")
    return raw.strip()


def _appid(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """One WeChat service account that people scan to log in."""

    name: str
    appid: str
    token: str
    secret: str | None = None
    aes_key: str | None = None
    aes_key_previous: str | None = None
    access_token_url: str | None = None

    def __repr__(self) -> str:  # never print the secret or the keys
        return f"Account(name={self.name!r}, appid={self.appid!r})"


def _setting(
    env: str, parse: Callable[[str], Any], default: Any = None, *, secret: bool = False
) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the server, typed. Build with :meth:`from_env`."""

    accounts: Mapping[str, Account] = field(default_factory=dict)
    accounts_file: str | None = _setting("WXPUSH_ACCOUNTS_FILE", _str)
    redis_url: str | None = _setting("WXPUSH_REDIS_URL", _redis_url)
    redis_connections: int = _setting(
        "WXPUSH_REDIS_CONNECTIONS", _redis_connections, MAX_CONNECTIONS
    )
    database_url: str = _setting(
        "WXPUSH_DATABASE_URL", _database_url, "sqlite+aiosqlite:///wxpush.db"
    )
    public_url: str | None = _setting("WXPUSH_PUBLIC_URL", _url)
    allowed_origins: tuple[str, ...] = _setting("WXPUSH_ALLOWED_ORIGINS", _origins, ())
    trusted_proxies: tuple[str, ...] = _setting("WXPUSH_TRUSTED_PROXIES", _proxies, ())
    qr_expire_seconds: int = _setting("WXPUSH_QR_EXPIRE_SECONDS", _positive_int, 300)
    jwt_key_file: str = _setting("WXPUSH_JWT_KEY_FILE", _str, "wxpush-jwt-key.pem")
    jwt_secret: str | None = _setting("WXPUSH_JWT_SECRET", _str, secret=True)
    jwt_issuer: str = _setting("WXPUSH_JWT_ISSUER", _str, "wxpush")
    jwt_audience: str = _setting("WXPUSH_JWT_AUDIENCE", _str, "wxpush")
    sms_provider: SmsProvider = _setting("WXPUSH_SMS_PROVIDER", _sms_provider, "console")
    sms_webhook_url: str | None = _setting("WXPUSH_SMS_WEBHOOK_URL", _url)
    forward_url: str | None = _setting("WXPUSH_FORWARD_URL", _url)
    wechat_api_base: str = _setting("WXPUSH_WECHAT_API_BASE", _url, "https://api.weixin.qq.com")
    login_only: bool = _setting("WXPUSH_LOGIN_ONLY", _bool, False)
    require_phone: bool = _setting("WXPUSH_REQUIRE_PHONE", _bool, True)
    link_by_phone: bool = _setting("WXPUSH_LINK_BY_PHONE", _bool, True)
    sandbox: bool = _setting("WXPUSH_SANDBOX", _bool, False)
    timestamp_window: int = _setting("WXPUSH_TIMESTAMP_WINDOW_SECONDS", _positive_int, 300)
    dedup_seconds: int = _setting("WXPUSH_DEDUP_SECONDS", _positive_int, 120)
    max_body_bytes: int = _setting("WXPUSH_MAX_BODY_BYTES", _positive_int, 64 * 1024)
    body_timeout: int = _setting("WXPUSH_BODY_TIMEOUT_SECONDS", _positive_int, 10)
    reply_logged_in: str = _setting("WXPUSH_REPLY_LOGGED_IN", _str, "Logged in")
    reply_finish_on_screen: str = _setting(
        "WXPUSH_REPLY_FINISH_ON_SCREEN",
        _str,
        "Almost there: finish signing in on the screen by confirming your phone number.",
    )
    access_token_ttl: int = _setting("WXPUSH_ACCESS_TOKEN_TTL_SECONDS", _positive_int, 7200)
    refresh_token_ttl: int = _setting(
        "WXPUSH_REFRESH_TOKEN_TTL_SECONDS", _positive_int, 30 * 24 * 3600
    )
    sms_code_ttl: int = _setting("WXPUSH_SMS_CODE_TTL_SECONDS", _positive_int, 300)
    sms_max_tries: int = _setting("WXPUSH_SMS_MAX_TRIES", _positive_int, 5)
    sms_interval: int = _setting("WXPUSH_SMS_INTERVAL_SECONDS", _positive_int, 60)
    sms_per_day_per_phone: int = _setting("WXPUSH_SMS_PER_DAY_PER_PHONE", _positive_int, 10)
    sms_per_hour_per_ip: int = _setting("WXPUSH_SMS_PER_HOUR_PER_IP", _positive_int, 20)
    scenes_per_minute_per_ip: int = _setting("WXPUSH_SCENES_PER_MINUTE_PER_IP", _positive_int, 120)
    sockets_per_ip: int = _setting("WXPUSH_SOCKETS_PER_IP", _positive_int, 50)
    log_level: str = _setting("WXPUSH_LOG_LEVEL", _log_level, "info")

    @property
    def embedded_redis(self) -> bool:
        """No Redis URL: one process on an in-memory Redis-compatible store."""
        return self.redis_url is None

    @property
    def default_account(self) -> Account:
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
        return _parse(f.metadata["env"], f.metadata["parse"], raw)

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
            values[f.name] = _parse(name, f.metadata["parse"], raw)
        settings = cls(**values)
        accounts = _load_accounts(env, settings)
        settings = dataclasses.replace(settings, accounts=accounts)
        _check_consistency(settings)
        return settings

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for logs: secrets replaced by ``"***"``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif f.name == "accounts":
                value = [repr(a) for a in self.accounts.values()]
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


def _parse(variable: str, parse: Callable[[str], Any], raw: str) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(variable, str(exc) or "malformed value") from exc


def _load_accounts(env: Mapping[str, str], settings: Settings) -> dict[str, Account]:
    if settings.accounts_file:
        return _accounts_from_file(settings.accounts_file)
    if not env.get("WXPUSH_APPID", "").strip():
        raise SettingsError(
            "WXPUSH_APPID", "missing; set it (with WXPUSH_TOKEN) or WXPUSH_ACCOUNTS_FILE"
        )
    account = _account(
        {
            "name": DEFAULT_ACCOUNT,
            "appid": env.get("WXPUSH_APPID"),
            "secret": env.get("WXPUSH_APPSECRET"),
            "token": env.get("WXPUSH_TOKEN"),
            "aes_key": env.get("WXPUSH_AES_KEY"),
            "aes_key_previous": env.get("WXPUSH_AES_KEY_PREVIOUS"),
            "access_token_url": env.get("WXPUSH_ACCESS_TOKEN_URL"),
        },
        lambda key: f"WXPUSH_{_ENV_SUFFIX[key]}",
    )
    return {DEFAULT_ACCOUNT: account}


_ENV_SUFFIX = {
    "name": "ACCOUNT_NAME",
    "appid": "APPID",
    "secret": "APPSECRET",
    "token": "TOKEN",
    "aes_key": "AES_KEY",
    "aes_key_previous": "AES_KEY_PREVIOUS",
    "access_token_url": "ACCESS_TOKEN_URL",
}

_ACCOUNT_PARSERS: dict[str, Callable[[str], Any]] = {
    "name": _appid,
    "appid": _appid,
    "secret": _str,
    "token": _wechat_token,
    "aes_key": _aes_key,
    "aes_key_previous": _aes_key,
    "access_token_url": _url,
}


def _account(raw: Mapping[str, Any], variable: Callable[[str], str]) -> Account:
    values: dict[str, Any] = {}
    for key, parse in _ACCOUNT_PARSERS.items():
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise SettingsError(variable(key), "must be a string")
        values[key] = _parse(variable(key), parse, value)
    for required in ("name", "appid", "token"):
        if required not in values:
            raise SettingsError(variable(required), "missing")
    if "secret" not in values and "access_token_url" not in values:
        raise SettingsError(variable("secret"), "missing (or give access_token_url)")
    return Account(**values)


def _accounts_from_file(path: str) -> dict[str, Account]:
    variable = "WXPUSH_ACCOUNTS_FILE"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(variable, f"{path} is not valid TOML: {exc}") from exc
    tables = data.get("account")
    if not isinstance(tables, list) or not tables:
        raise SettingsError(variable, f"{path} has no [[account]] tables")
    accounts: dict[str, Account] = {}
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise SettingsError(variable, f"{path}: account #{index + 1} is not a table")
        account = _account(table, _file_variable(f"{variable} ({path}, account #{index + 1}"))
        if account.name in accounts:
            raise SettingsError(variable, f"{path}: account name {account.name!r} repeats")
        accounts[account.name] = account
    return accounts


def _file_variable(where: str) -> Callable[[str], str]:
    """Name a field of an accounts-file table the way errors print it."""
    return lambda key: f"{where}, {key})"


def _check_consistency(settings: Settings) -> None:
    if settings.sms_provider == "webhook" and not settings.sms_webhook_url:
        raise SettingsError("WXPUSH_SMS_WEBHOOK_URL", "missing; the webhook SMS provider needs it")
