"""The command line, run as a user would run it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt

from tests import fakewechat
from tests.util import free_port

fake_wechat = fakewechat.fake_wechat


def wxpush(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
    return subprocess.run(
        [sys.executable, "-m", "wxpush", *args],
        env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "jwt.pem"
    key.parent.mkdir()
    done = wxpush("keygen", cwd=tmp_path, WXPUSH_JWT_KEY_FILE=str(key))
    assert done.returncode == 0, done.stderr
    assert "kid" in done.stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pem = key.read_bytes()
    signed = jwt.encode({"sub": "x"}, pem, algorithm="ES256")  # a usable P-256 key
    assert signed.count(".") == 2
    again = wxpush("keygen", cwd=tmp_path, WXPUSH_JWT_KEY_FILE=str(key))
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert key.read_bytes() == pem
    forced = wxpush("keygen", "--force", cwd=tmp_path, WXPUSH_JWT_KEY_FILE=str(key))
    assert forced.returncode == 0
    assert key.read_bytes() != pem


def test_check_reports_each_part_on_its_own_line(tmp_path: Path) -> None:
    done = wxpush(
        "check", cwd=tmp_path, WXPUSH_APPID="wx0123456789abcdef", WXPUSH_APPSECRET="s",
        WXPUSH_TOKEN="tok123", WXPUSH_WECHAT_API_BASE="http://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("settings: ok")
    assert lines[1].startswith("redis: ok (embedded")
    assert lines[2] == "database: ok (sqlite)"
    assert lines[3].startswith("wechat token (default): failed — WeChat cannot be reached")


def test_check_reaches_the_database(tmp_path: Path) -> None:
    done = wxpush(
        "check", cwd=tmp_path, WXPUSH_APPID="wx0123456789abcdef", WXPUSH_APPSECRET="s",
        WXPUSH_TOKEN="tok123", WXPUSH_WECHAT_API_BASE="http://127.0.0.1:9",
        WXPUSH_DATABASE_URL=f"postgresql://wxpush@127.0.0.1:{free_port()}/wxpush",
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert lines[2] == "database: failed — The database is not reachable; try again shortly."
    assert "Traceback" not in done.stderr


def test_check_names_a_bad_setting(tmp_path: Path) -> None:
    done = wxpush("check", cwd=tmp_path, WXPUSH_APPID="wx1", WXPUSH_TOKEN="tok123")
    assert done.returncode == 1
    assert done.stdout.strip() == (
        "settings: failed — WXPUSH_APPSECRET: missing (or give access_token_url)"
    )


def test_serve_refuses_a_ping_interval_over_50_seconds(tmp_path: Path) -> None:
    done = wxpush("serve", "--ws-ping-interval", "60", cwd=tmp_path)
    assert done.returncode == 2
    assert "--ws-ping-interval: '60': give seconds, more than 0 and at most 50" in done.stderr


def test_serve_refuses_a_keep_alive_out_of_range(tmp_path: Path) -> None:
    for bad in ("0", "3601", "ten"):
        done = wxpush("serve", "--keep-alive", bad, cwd=tmp_path)
        assert done.returncode == 2
        assert f"--keep-alive: '{bad}': give whole seconds, from 1 to 3600" in done.stderr


def test_check_reaches_each_website_app(tmp_path: Path, fake_wechat: fakewechat.FakeWeChat) -> None:
    env = {
        "WXPUSH_APPID": fake_wechat.appid, "WXPUSH_APPSECRET": fake_wechat.secret,
        "WXPUSH_TOKEN": "tok123", "WXPUSH_WECHAT_API_BASE": fake_wechat.url,
        "WXPUSH_WEBSITE_APPID": fake_wechat.website_appid,
        "WXPUSH_WEBSITE_SECRET": fake_wechat.website_secret,
    }  # fmt: skip
    done = wxpush("check", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "settings: ok (1 account(s): default; 1 website app(s): website)"
    assert lines[-1] == "wechat website app (website): ok"
    assert fake_wechat.calls["/sns/oauth2/access_token"] == 1
    wrong = wxpush("check", cwd=tmp_path, **{**env, "WXPUSH_WEBSITE_SECRET": "not-the-secret"})
    assert wrong.returncode == 1
    assert wrong.stdout.strip().splitlines()[-1] == (
        "wechat website app (website): failed — WeChat: the appsecret is invalid (errcode 40125)"
    )
    assert "not-the-secret" not in wrong.stdout + wrong.stderr
