"""The accounts file and the accounts it names.

WeChat service accounts come either from the ``WXPUSH_APPID``/``WXPUSH_APPSECRET``/
``WXPUSH_TOKEN``/``WXPUSH_AES_KEY`` family (one account, named ``default``) or from a TOML
file named by ``WXPUSH_ACCOUNTS_FILE`` holding several ``[[account]]`` tables. Domain code
takes :class:`Account` values; it never reads this file or the environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wxpush.config import values
from wxpush.errors import SettingsError

DEFAULT_ACCOUNT = "default"


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


def load_accounts(env: Mapping[str, str], accounts_file: str | None) -> dict[str, Account]:
    """The service accounts: from ``accounts_file`` when given, else the ``WXPUSH_APPID``
    family of variables (one account, named ``default``)."""
    if accounts_file:
        return _accounts_from_file(accounts_file)
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
    "name": values.appid,
    "appid": values.appid,
    "secret": values.text,
    "token": values.wechat_token,
    "aes_key": values.aes_key,
    "aes_key_previous": values.aes_key,
    "access_token_url": values.http_url,
}


def _account(raw: Mapping[str, Any], variable: Callable[[str], str]) -> Account:
    values: dict[str, Any] = {}
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


def parse_value(variable: str, parse: Callable[[str], Any], raw: str) -> Any:
    """``parse(raw)``, its ``ValueError`` turned into a :class:`SettingsError` naming
    ``variable``."""
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(variable, str(exc) or "malformed value") from exc
