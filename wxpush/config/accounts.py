"""The accounts file and the WeChat apps it names.

WeChat service accounts come either from the ``WXPUSH_APPID``/``WXPUSH_APPSECRET``/
``WXPUSH_TOKEN``/``WXPUSH_AES_KEY`` family (one account, named ``default``) or from a TOML
file named by ``WXPUSH_ACCOUNTS_FILE`` holding several ``[[account]]`` tables. Open Platform
website apps (the ``website`` door, SPEC §13) come from ``[[website]]`` tables of the same
file and from ``WXPUSH_WEBSITE_APPID``/``WXPUSH_WEBSITE_SECRET`` (one app, named ``website``).
A name is unique across both kinds: it is the ``{name}`` of ``/wechat/{name}/…`` routes.
Domain code takes :class:`Account` and :class:`WebsiteApp` values; it never reads this file or
the environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wxpush.config import values
from wxpush.config.clients import Client, load_clients
from wxpush.errors import SettingsError

DEFAULT_ACCOUNT = "default"
DEFAULT_WEBSITE = "website"


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
    # bound to an Open Platform account: an unknown openid's unionid is looked up (§12)
    unionid: bool = False

    def __repr__(self) -> str:  # never print the secret or the keys
        return f"Account(name={self.name!r}, appid={self.appid!r})"


@dataclass(frozen=True, slots=True)
class WebsiteApp:
    """One Open Platform website app: WeChat's own QR code, confirmed on the phone."""

    name: str
    appid: str
    secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"WebsiteApp(name={self.name!r}, appid={self.appid!r})"


@dataclass(frozen=True, slots=True)
class Apps:
    """Every WeChat app the server is configured with, by name."""

    accounts: dict[str, Account]
    websites: dict[str, WebsiteApp]
    clients: dict[str, Client] = field(default_factory=dict)


def load_apps(env: Mapping[str, str], accounts_file: str | None, *, unionid: bool = False) -> Apps:
    """The service accounts and website apps of ``accounts_file`` (when given) and of the
    environment; at least one of either. ``unionid`` marks every service account as bound to
    an Open Platform account (``WXPUSH_UNIONID``)."""
    data = _read_file(accounts_file) if accounts_file else None
    accounts = _accounts_from_file(accounts_file or "", data) if data is not None else {}
    if not accounts and env.get("WXPUSH_APPID", "").strip():  # a file of websites or clients
        accounts = _accounts_from_env(env)
    websites = _websites(env, accounts_file, data)
    for name in websites:
        if name in accounts:
            raise SettingsError(
                "WXPUSH_ACCOUNTS_FILE" if data is not None else "WXPUSH_WEBSITE_APPID",
                f"the name {name!r} is both a service account and a website app",
            )
    if not accounts and not websites:
        raise SettingsError(
            "WXPUSH_APPID",
            "missing; set it (with WXPUSH_TOKEN), WXPUSH_WEBSITE_APPID or WXPUSH_ACCOUNTS_FILE",
        )
    if unionid:
        accounts = {n: replace(a, unionid=True) for n, a in accounts.items()}
    return Apps(accounts, websites, load_clients(accounts_file, data))


def load_accounts(env: Mapping[str, str], accounts_file: str | None) -> dict[str, Account]:
    """The service accounts: from ``accounts_file`` when given, else the ``WXPUSH_APPID``
    family of variables (one account, named ``default``)."""
    if accounts_file:
        return _accounts_from_file(accounts_file, _read_file(accounts_file))
    if not env.get("WXPUSH_APPID", "").strip():
        raise SettingsError(
            "WXPUSH_APPID", "missing; set it (with WXPUSH_TOKEN) or WXPUSH_ACCOUNTS_FILE"
        )
    return _accounts_from_env(env)


def _accounts_from_env(env: Mapping[str, str]) -> dict[str, Account]:
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
    "name": values.appid,
    "appid": values.appid,
    "secret": values.text,
    "token": values.wechat_token,
    "aes_key": values.aes_key,
    "aes_key_previous": values.aes_key,
    "access_token_url": values.http_url,
}


def _account(raw: Mapping[str, Any], variable: Callable[[str], str]) -> Account:
    flag = raw.get("unionid", False)
    if not isinstance(flag, bool):
        raise SettingsError(variable("unionid"), "must be true or false")
    values: dict[str, Any] = {"unionid": flag} if flag else {}
    for key, parse in _ACCOUNT_PARSERS.items():
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise SettingsError(variable(key), "must be a string")
        values[key] = parse_value(variable(key), parse, value)
    for required in ("name", "appid", "token"):
        if required not in values:
            raise SettingsError(variable(required), "missing")
    if "secret" not in values and "access_token_url" not in values:
        raise SettingsError(variable("secret"), "missing (or give access_token_url)")
    return Account(**values)


def _read_file(path: str) -> dict[str, Any]:
    variable = "WXPUSH_ACCOUNTS_FILE"
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(variable, f"{path} is not valid TOML: {exc}") from exc


def _accounts_from_file(path: str, data: Mapping[str, Any]) -> dict[str, Account]:
    variable = "WXPUSH_ACCOUNTS_FILE"
    tables = data.get("account")
    if tables is None and (data.get("website") or data.get("client")):
        return {}  # a server of website logins only
    if not isinstance(tables, list) or not tables:
        raise SettingsError(variable, f"{path} has no [[account]] (or [[website]]) tables")
    accounts: dict[str, Account] = {}
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise SettingsError(variable, f"{path}: account #{index + 1} is not a table")
        account = _account(table, _file_variable(f"{variable} ({path}, account #{index + 1}"))
        if account.name in accounts:
            raise SettingsError(variable, f"{path}: account name {account.name!r} repeats")
        accounts[account.name] = account
    return accounts


def _websites(
    env: Mapping[str, str], path: str | None, data: Mapping[str, Any] | None
) -> dict[str, WebsiteApp]:
    """The ``[[website]]`` tables of the file, then the ``WXPUSH_WEBSITE_*`` app."""
    found: dict[str, WebsiteApp] = {}
    tables = [] if data is None else data.get("website", [])
    if not isinstance(tables, list):
        raise SettingsError("WXPUSH_ACCOUNTS_FILE", f"{path}: website must be [[website]] tables")
    sources: list[tuple[Mapping[str, Any], Callable[[str], str]]] = []
    for index, item in enumerate(tables):
        where = f"WXPUSH_ACCOUNTS_FILE ({path}, website #{index + 1}"
        if not isinstance(item, dict):
            raise SettingsError(
                "WXPUSH_ACCOUNTS_FILE", f"{path}: website #{index + 1} is not a table"
            )
        sources.append((item, _file_variable(where)))
    if env.get("WXPUSH_WEBSITE_APPID", "").strip() or env.get("WXPUSH_WEBSITE_SECRET", "").strip():
        env_app: Mapping[str, Any] = {
            "name": DEFAULT_WEBSITE,
            "appid": env.get("WXPUSH_WEBSITE_APPID"),
            "secret": env.get("WXPUSH_WEBSITE_SECRET"),
        }
        sources.append((env_app, lambda key: f"WXPUSH_WEBSITE_{key.upper()}"))
    for table, variable in sources:
        app = _website(table, variable)
        if app.name in found:
            raise SettingsError(variable("name"), f"the website app name {app.name!r} repeats")
        found[app.name] = app
    return found


def _website(raw: Mapping[str, Any], variable: Callable[[str], str]) -> WebsiteApp:
    parsers: dict[str, Callable[[str], Any]] = {
        "name": values.appid, "appid": values.appid, "secret": values.text,
    }  # fmt: skip
    fields: dict[str, Any] = {}
    for key, parse in parsers.items():
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SettingsError(variable(key), "missing")
        if not isinstance(value, str):
            raise SettingsError(variable(key), "must be a string")
        fields[key] = parse_value(variable(key), parse, value)
    return WebsiteApp(**fields)


def _file_variable(where: str) -> Callable[[str], str]:
    """Name a field of an accounts-file table the way errors print it."""
    return lambda key: f"{where}, {key})"


def parse_value(variable: str, parse: Callable[[str], Any], raw: str) -> Any:
    """``parse(raw)``, its ``ValueError`` turned into a :class:`SettingsError` naming
    ``variable``."""
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(variable, str(exc) or "malformed value") from exc
