"""``wxpush users find | show | delete | export`` (SPEC §15) as an operator runs it: a
subprocess on a running server's settings and database (SQLite file and PostgreSQL), with a
real redis-server, and the exit codes: 0 done, 1 no such user, 2 usage or settings, 3 the
database or Redis not reachable — always one line in words, never a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests import fakewechat
from tests.conftest import free_port
from tests.test_cli import wxpush
from tests.test_login import (
    NEW_OPENID,
    PHONE,
    Site,
    assert_error,
    database_url,
    select_rows,
    site,
    sms_inbox,
    start,
)
from tests.test_people_links import SECOND_OPENID, bearer, link_scene, log_in, me
from tests.util import wait_for

__all__ = ["database_url", "site", "sms_inbox", "start"]
fake_wechat = fakewechat.fake_wechat

OTHER_PHONE = "13900139000"
OTHER_OPENID = "oCliOtherPerson000000000001"


def users(site: Site, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``wxpush users …`` on the server's own settings (``env`` changes some), from a folder
    of its own."""
    folder = tmp_path / "operator"
    folder.mkdir(exist_ok=True)
    return wxpush("users", *args, cwd=folder, **{**site.env, **env})


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    line = done.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("wxpush users: "), line
    for word in words:
        assert word in line, line
    return line


def test_find_show_and_export_read_the_servers_people(
    site: Site, tmp_path: Path, database_url: str
) -> None:
    tokens = log_in(site, NEW_OPENID)
    user = tokens["user"]["id"]
    site.scan(link_scene(site, tokens), SECOND_OPENID)
    other = log_in(site, OTHER_OPENID, phone=OTHER_PHONE)["user"]["id"]

    for term in ("138 0013 8000", "+8613800138000", NEW_OPENID, SECOND_OPENID, user):
        found = users(site, tmp_path, "find", term)
        assert found.returncode == 0, found.stderr
        assert [line.split("\t")[0] for line in found.stdout.splitlines()] == [user]
        assert "2 identities" in found.stdout and "+86 138****8000" in found.stdout
    one_line_error(users(site, tmp_path, "find", "oNobody000000000000000000001"), 1, "no user")

    logins = f"SELECT id FROM audit WHERE user_id = '{user}' AND event = 'login'"
    assert wait_for(lambda: len(select_rows(database_url, logins)) >= 1)  # written apart
    shown = users(site, tmp_path, "show", user)
    assert shown.returncode == 0, shown.stderr
    assert f"user {user}" in shown.stdout and "phone +86 138****8000" in shown.stdout
    assert PHONE not in shown.stdout and "identities 2" in shown.stdout
    assert NEW_OPENID in shown.stdout and SECOND_OPENID in shown.stdout
    audit = shown.stdout.split("audit (")[1].splitlines()[1:]
    events = {line.split("\t")[1] for line in audit}
    assert {"bind", "link", "login"} <= events
    assert any("\tlogin\tfollow\t-\t127.0.0.1" in line for line in audit)
    assert "+8613800138000" in users(site, tmp_path, "show", user, "--with-phone").stdout
    limited = users(site, tmp_path, "show", user, "--limit", "1").stdout
    assert len(limited.split("audit (")[1].splitlines()) == 2  # the heading and one row

    exported = users(site, tmp_path, "export")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == sorted([user, other])
    mine = next(r for r in rows if r["id"] == user)
    assert mine["has_phone"] is True and "phone" not in mine
    assert [i["openid"] for i in mine["identities"]] == [NEW_OPENID, SECOND_OPENID]
    assert PHONE not in exported.stdout and "exported 2 users" in exported.stderr
    with_phone = users(site, tmp_path, "export", "--with-phone").stdout
    assert {json.loads(line)["phone"] for line in with_phone.splitlines()} == {
        "+8613800138000", "+8613900139000"}  # fmt: skip


def test_delete_ends_the_tokens_and_erases_the_person(
    site: Site, tmp_path: Path, database_url: str
) -> None:
    tokens = log_in(site, NEW_OPENID)
    user = tokens["user"]["id"]
    other = log_in(site, OTHER_OPENID, phone=OTHER_PHONE)
    refused = users(site, tmp_path, "delete", user)  # no terminal to confirm at: refused
    one_line_error(refused, 2, "--yes")
    assert me(site, tokens)["id"] == user

    done = users(site, tmp_path, "delete", user, "--yes")
    assert done.returncode == 0, done.stderr
    assert "tokens: ended" in done.stdout and f"deleted user {user}" in done.stdout
    assert_error(site.client.get("/api/v1/me", headers=bearer(tokens)), 401, "invalid_token")
    refreshed = site.client.post("/api/v1/token/refresh",
                                 json={"refresh_token": tokens["refresh_token"]})  # fmt: skip
    assert_error(refreshed, 401, "invalid_refresh_token")
    created = site.new_scene()
    site.scan(created, NEW_OPENID)  # their WeChat is a stranger again
    assert site.poll(created["scene"]) == {"status": "NOT_REG", "code": 4}
    assert select_rows(database_url, f"SELECT id FROM users WHERE id = '{user}'") == []
    assert select_rows(database_url, f"SELECT id FROM identities WHERE user_id = '{user}'") == []
    assert me(site, other)["id"] == other["user"]["id"]

    query = f"SELECT event, door FROM audit WHERE user_id = '{user}' ORDER BY id"
    assert select_rows(database_url, query)[-1] == ("delete", "cli")
    dump = json.dumps(select_rows(database_url, "SELECT * FROM audit"), default=str)
    assert PHONE not in dump and NEW_OPENID not in dump
    shown = users(site, tmp_path, "show", user)
    assert shown.returncode == 0 and f"user {user}: erased" in shown.stdout
    assert "\tdelete\tcli\t" in shown.stdout
    one_line_error(users(site, tmp_path, "delete", user, "--yes"), 1, f"no user {user}")
    one_line_error(users(site, tmp_path, "find", PHONE), 1)


def test_redis_not_reachable_stops_the_delete_with_nothing_deleted(
    site: Site, tmp_path: Path, database_url: str
) -> None:
    tokens = log_in(site, NEW_OPENID)
    user = tokens["user"]["id"]
    away = f"redis://127.0.0.1:{free_port()}/0"
    one_line_error(users(site, tmp_path, "delete", user, "--yes", WXPUSH_REDIS_URL=away),
                   3, "Redis is not reachable", "nothing was deleted")  # fmt: skip
    assert me(site, tokens)["id"] == user
    assert len(select_rows(database_url, f"SELECT id FROM users WHERE id = '{user}'")) == 1


def test_on_an_embedded_redis_delete_says_the_tokens_are_not_ended(
    site: Site, tmp_path: Path, database_url: str
) -> None:
    user = log_in(site, NEW_OPENID)["user"]["id"]
    embedded = {k: v for k, v in site.env.items() if k != "WXPUSH_REDIS_URL"}
    folder = tmp_path / "embedded"
    folder.mkdir()
    done = wxpush("users", "delete", user, "--yes", cwd=folder, **embedded)
    assert done.returncode == 0, done.stderr
    assert "tokens: not ended from here" in done.stdout and "restart" in done.stdout
    assert select_rows(database_url, f"SELECT id FROM users WHERE id = '{user}'") == []


def test_unknown_users_and_bad_usage_are_one_line(site: Site, tmp_path: Path) -> None:
    one_line_error(users(site, tmp_path, "show", "u_nobody"), 1, "no user u_nobody")
    one_line_error(users(site, tmp_path, "delete", "u_nobody", "--yes"), 1, "no user u_nobody")
    one_line_error(users(site, tmp_path, "find", "   "), 2, "phone number")
    bad = users(site, tmp_path, "show", "someone", "--limit", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "give a whole number from 1 to 1000" in bad.stderr
    assert users(site, tmp_path).returncode == 2  # a verb is required


def test_a_database_not_there_is_one_line_and_nothing_is_created(
    site: Site, tmp_path: Path
) -> None:
    closed = f"postgresql+asyncpg://wxpush:secret-pw@127.0.0.1:{free_port()}/wxpush"
    line = one_line_error(users(site, tmp_path, "export", WXPUSH_DATABASE_URL=closed), 3,
                          "not reachable", "nothing was changed")  # fmt: skip
    assert "secret-pw" not in line
    missing = tmp_path / "nowhere.db"
    one_line_error(users(site, tmp_path, "find", "x", WXPUSH_DATABASE_URL=_sqlite(missing)), 2,
                   "no database file")  # fmt: skip
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    one_line_error(users(site, tmp_path, "show", "x", WXPUSH_DATABASE_URL=_sqlite(empty)), 2,
                   "holds no wxpush tables", "start this wxpush")  # fmt: skip


def _sqlite(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"
