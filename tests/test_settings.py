"""Settings: typed, read once, and one clear line naming the variable when something is off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import wire
from wxpush.config.settings import Settings
from wxpush.errors import SettingsError
from wxpush.infra.redis_client import RedisTarget

BASE = {"WXPUSH_APPID": wire.APPID, "WXPUSH_APPSECRET": "s3cret", "WXPUSH_TOKEN": wire.TOKEN}


def load(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env}, dotenv=None)


def test_defaults() -> None:
    s = load()
    assert list(s.accounts) == ["default"]
    account = s.default_account
    assert (account.appid, account.secret, account.token) == (wire.APPID, "s3cret", wire.TOKEN)
    assert account.aes_key is None
    assert s.qr_expire_seconds == 300
    assert s.embedded_redis
    assert s.wechat_api_base == "https://api.weixin.qq.com"
    assert s.sms_provider == "console"
    assert (s.login_only, s.require_phone, s.link_by_phone, s.sandbox) == (
        False, True, True, False,
    )  # fmt: skip
    assert s.database_url.startswith("sqlite+aiosqlite:///")


def test_values_are_typed() -> None:
    key = wire.new_aes_key()
    s = load(
        WXPUSH_AES_KEY=key,
        WXPUSH_QR_EXPIRE_SECONDS="120",
        WXPUSH_LOGIN_ONLY="yes",
        WXPUSH_REQUIRE_PHONE="0",
        WXPUSH_ALLOWED_ORIGINS="https://a.example, https://b.example/",
        WXPUSH_REDIS_URL="redis://127.0.0.1:6379/0",
        WXPUSH_WECHAT_API_BASE="http://127.0.0.1:8000/sandbox/",
    )
    assert s.default_account.aes_key == key
    assert s.qr_expire_seconds == 120
    assert s.login_only is True and s.require_phone is False
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert not s.embedded_redis
    assert s.wechat_api_base == "http://127.0.0.1:8000/sandbox"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WXPUSH_AES_KEY": "tooshort"}, "WXPUSH_AES_KEY"),
        ({"WXPUSH_AES_KEY": "!" * 43}, "WXPUSH_AES_KEY"),
        ({"WXPUSH_AES_KEY_PREVIOUS": "a" * 44}, "WXPUSH_AES_KEY_PREVIOUS"),
        ({"WXPUSH_QR_EXPIRE_SECONDS": "soon"}, "WXPUSH_QR_EXPIRE_SECONDS"),
        ({"WXPUSH_QR_EXPIRE_SECONDS": "-5"}, "WXPUSH_QR_EXPIRE_SECONDS"),
        ({"WXPUSH_LOGIN_ONLY": "maybe"}, "WXPUSH_LOGIN_ONLY"),
        ({"WXPUSH_REDIS_URL": "http://localhost"}, "WXPUSH_REDIS_URL"),
        ({"WXPUSH_DATABASE_URL": "mysql://x"}, "WXPUSH_DATABASE_URL"),
        ({"WXPUSH_PUBLIC_URL": "example.com"}, "WXPUSH_PUBLIC_URL"),
        ({"WXPUSH_ALLOWED_ORIGINS": "example.com"}, "WXPUSH_ALLOWED_ORIGINS"),
        ({"WXPUSH_SMS_PROVIDER": "pigeon"}, "WXPUSH_SMS_PROVIDER"),
        ({"WXPUSH_SMS_PROVIDER": "webhook"}, "WXPUSH_SMS_WEBHOOK_URL"),
        ({"WXPUSH_TOKEN": "a b"}, "WXPUSH_TOKEN"),
        ({"WXPUSH_TOKEN": ""}, "WXPUSH_TOKEN"),
        ({"WXPUSH_APPID": ""}, "WXPUSH_APPID"),
        ({"WXPUSH_APPSECRET": ""}, "WXPUSH_APPSECRET"),
        ({"WXPUSH_REDIS_CONNECTIONS": "1"}, "WXPUSH_REDIS_CONNECTIONS"),
        ({"WXPUSH_REDIS_CONNECTIONS": "2"}, "WXPUSH_REDIS_CONNECTIONS"),
        ({"WXPUSH_REDIS_SENTINELS": "10.0.0.1"}, "WXPUSH_REDIS_SENTINELS"),
        ({"WXPUSH_REDIS_SENTINELS": "10.0.0.1:26379,,"}, "WXPUSH_REDIS_SENTINELS"),
        ({"WXPUSH_REDIS_SENTINELS": "10.0.0.1:99999"}, "WXPUSH_REDIS_SENTINELS"),
        ({"WXPUSH_REDIS_CLUSTER": "maybe"}, "WXPUSH_REDIS_CLUSTER"),
        ({"WXPUSH_REDIS_CLUSTER": "1", "WXPUSH_REDIS_SENTINELS": "h:1"}, "WXPUSH_REDIS_CLUSTER"),
        ({"WXPUSH_REDIS_CLUSTER": "1", "WXPUSH_REDIS_URL": ""}, "WXPUSH_REDIS_URL"),
        ({"WXPUSH_REDIS_CLUSTER": "1", "WXPUSH_REDIS_URL": "unix:///r.sock"}, "WXPUSH_REDIS_URL"),
        ({"WXPUSH_REDIS_CLUSTER": "1", "WXPUSH_REDIS_URL": "redis://h:7000/2"}, "WXPUSH_REDIS_URL"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(**env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


def test_sentinels_are_where_redis_is() -> None:
    s = load(WXPUSH_REDIS_URL="", WXPUSH_REDIS_SENTINELS=" 10.0.0.1:26379, [::1]:26380 ")
    assert not s.embedded_redis
    assert s.redis == RedisTarget(None, (("10.0.0.1", 26379), ("::1", 26380)), "mymaster")
    assert s.redis.mode == "sentinel"
    named = load(WXPUSH_REDIS_SENTINELS="h:1", WXPUSH_REDIS_SENTINEL_SERVICE="cache")
    assert named.redis is not None and named.redis.service == "cache"
    assert load(WXPUSH_REDIS_URL="").redis is None  # embedded


def test_a_cluster_is_reached_through_any_node() -> None:
    s = load(WXPUSH_REDIS_URL="rediss://:pw@node-1:7000", WXPUSH_REDIS_CLUSTER="yes")
    assert s.redis == RedisTarget("rediss://:pw@node-1:7000", (), "mymaster", True)
    assert s.redis.mode == "cluster"
    assert load(WXPUSH_REDIS_URL="redis://node-1:7000/0", WXPUSH_REDIS_CLUSTER="1").redis


def test_access_token_url_stands_in_for_the_secret() -> None:
    s = load(WXPUSH_APPSECRET="", WXPUSH_ACCESS_TOKEN_URL="http://127.0.0.1:7000/token")
    assert s.default_account.secret is None
    assert s.default_account.access_token_url == "http://127.0.0.1:7000/token"


def test_secrets_stay_out_of_reprs_and_redacted_dicts() -> None:
    s = load(WXPUSH_JWT_SECRET="jwt-secret-value", WXPUSH_AES_KEY=wire.new_aes_key())
    shown = repr(s.default_account) + repr(s.redacted())
    assert "s3cret" not in shown and "jwt-secret-value" not in shown
    assert s.default_account.aes_key not in shown


def test_accounts_file(tmp_path: Path) -> None:
    key = wire.new_aes_key()
    path = tmp_path / "accounts.toml"
    path.write_text(
        f"""
[[account]]
name = "main"
appid = "wxaaaaaaaaaaaaaaaa"
secret = "one"
token = "tokenone"
aes_key = "{key}"

[[account]]
name = "tv"
appid = "wxbbbbbbbbbbbbbbbb"
token = "tokentwo"
access_token_url = "https://tokens.internal.example/wx"
""",
        encoding="utf-8",
    )
    s = Settings.from_env({"WXPUSH_ACCOUNTS_FILE": str(path)}, dotenv=None)
    assert list(s.accounts) == ["main", "tv"]
    assert s.accounts["main"].aes_key == key
    assert s.accounts["tv"].secret is None
    assert s.default_account.name == "main"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not toml = = =", "not valid TOML"),
        ("x = 1", "no [[account]]"),
        ('[[account]]\nname = "a"\nappid = "wx1"\nsecret = "s"\n', "token"),
        ('[[account]]\nname="a"\nappid="wx1"\nsecret="s"\ntoken="tok"\naes_key="short"\n',
         "aes_key"),
        ('[[account]]\nname="a"\nappid="wx1"\nsecret="s"\ntoken="tok"\n' * 2, "repeats"),
    ],
)  # fmt: skip
def test_a_bad_accounts_file_names_the_file_and_the_field(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"WXPUSH_ACCOUNTS_FILE": str(path)}, dotenv=None)
    assert str(caught.value).startswith("WXPUSH_ACCOUNTS_FILE")
    assert needle in str(caught.value)


CLIENT = 'client_id = "shop"\nredirect_uris = ["https://shop.example/cb"]\n'


def test_oidc_clients_from_the_accounts_file(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(
        f"""
[[client]]
{CLIENT}client_secret = "sixteen-chars-or-more"
post_logout_redirect_uris = ["https://shop.example/"]

[[client]]
client_id = "tv.app"
redirect_uris = ["http://127.0.0.1:9000/cb", "https://tv.example/cb"]
door = "follow"
""",
        encoding="utf-8",
    )
    s = load(WXPUSH_ACCOUNTS_FILE=str(path))  # clients only: the account comes from WXPUSH_APPID
    assert list(s.accounts) == ["default"] and list(s.clients) == ["shop", "tv.app"]
    shop, tv = s.clients["shop"], s.clients["tv.app"]
    assert not shop.public and shop.door == "auto"
    assert shop.post_logout_redirect_uris == ("https://shop.example/",)
    assert tv.public and tv.door == "follow" and len(tv.redirect_uris) == 2
    assert "sixteen" not in repr(shop) and "sixteen" not in str(s.redacted())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[client]]\nredirect_uris = ["https://a.example/cb"]\n', "client_id"),
        ('[[client]]\nclient_id = "shop"\n', "redirect_uris"),
        ('[[client]]\nclient_id = "a b"\nredirect_uris = ["https://a.example/cb"]\n',
         "client_id"),
        (f'[[client]]\n{CLIENT}client_secret = "short"\n', "at least 16"),
        ('[[client]]\nclient_id = "x"\nredirect_uris = ["https://a.example/cb#f"]\n',
         "fragment"),
        ('[[client]]\nclient_id = "x"\nredirect_uris = ["/relative"]\n', "absolute"),
        ('[[client]]\nclient_id = "x"\nredirect_uris = "https://a.example/cb"\n', "list"),
        (f'[[client]]\n{CLIENT}door = "oauth"\n', "door"),
        (f'[[client]]\n{CLIENT}secret = "typo-of-client-secret"\n', "not a client setting"),
        (f"[[client]]\n{CLIENT}" * 2, "repeats"),
    ],
)  # fmt: skip
def test_a_bad_client_names_the_file_and_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load(WXPUSH_ACCOUNTS_FILE=str(path))
    assert str(caught.value).startswith("WXPUSH_ACCOUNTS_FILE") and needle in str(caught.value)


def test_missing_accounts_file() -> None:
    with pytest.raises(SettingsError, match="WXPUSH_ACCOUNTS_FILE: cannot read"):
        Settings.from_env({"WXPUSH_ACCOUNTS_FILE": "/nonexistent/accounts.toml"}, dotenv=None)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"WXPUSH_APPID={wire.APPID}\nWXPUSH_APPSECRET=fromfile\nWXPUSH_TOKEN=filetoken\n"
        "WXPUSH_QR_EXPIRE_SECONDS=60\n",
        encoding="utf-8",
    )
    s = Settings.from_env({"WXPUSH_QR_EXPIRE_SECONDS": "90"}, dotenv=dotenv)
    assert s.default_account.secret == "fromfile"
    assert s.default_account.token == "filetoken"
    assert s.qr_expire_seconds == 90


def test_serve_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
    env.update(BASE, WXPUSH_AES_KEY="not-a-key")
    done = subprocess.run(
        [sys.executable, "-m", "wxpush", "serve", "--port", "0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "wxpush: WXPUSH_AES_KEY: an EncodingAESKey is 43 characters of base64 (A-Z a-z 0-9 + /)"
    ]
