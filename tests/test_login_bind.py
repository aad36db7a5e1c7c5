"""Binding a phone: the SMS code is spent only when the bind goes through (SPEC §5).

On a real SQLite file and a real PostgreSQL server. The database is "down" for real: the
PostgreSQL server is stopped, and the SQLite file is held locked by another connection (what
a backup or a stuck process does to it; as root, taking away its permissions would not stop
us writing).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests import fakewechat
from tests.test_login import (
    NEW_OPENID,
    PHONE,
    Site,
    assert_error,
    count_rows,
    database_url,
    sms_inbox,
    start,
)
from tests.test_login_handover import live_families
from tests.util import TIMEOUT, wait_for
from wxpush.infra import sql
from wxpush.login.scenes import SceneStore

__all__ = ["database_url", "sms_inbox", "start"]  # fixtures shared with test_login

Outage = Callable[[], AbstractContextManager[None]]


fake_wechat = fakewechat.fake_wechat


@pytest.fixture
def outage(
    database_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Outage:
    """A context in which the test's database cannot be written."""
    if database_url.startswith("sqlite"):
        # A locked SQLite file fails a write after the busy timeout: keep that short here.
        monkeypatch.setattr(sql, "SQLITE_BUSY_MS", 200)
        path = database_url.split(":///", 1)[1]

        @contextmanager
        def locked() -> Iterator[None]:
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()

        return locked
    server = request.getfixturevalue("postgres_server")

    @contextmanager
    def stopped() -> Iterator[None]:
        server.stop()
        try:
            yield
        finally:
            server.start()

    return stopped


@pytest.fixture
def site(outage: Outage, start: Callable[..., Site]) -> Site:
    return start()


def not_reg_scene(site: Site) -> tuple[str, str]:
    """A new person's scene, waiting for a phone, and the code sent to that phone."""
    created = site.new_scene()
    assert site.scan(created, NEW_OPENID, follow=True).startswith("Almost there")
    return created["scene"], site.send_code(created["scene"])


def bind(site: Site, scene: str, code: str) -> httpx.Response:
    body = {"phone": PHONE, "code": code}
    return site.client.post(f"/api/v1/scenes/{scene}/bind", json=body)


def wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def recovered(site: Site) -> None:
    assert wait_for(lambda: site.client.get("/readyz").status_code == 200)


def assert_logged_in(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body = dict(answer.json())
    assert body["status"] == "REG" and body["access_token"] and body["refresh_token"]
    return body


# -- a bind the database could not take ---------------------------------------------------


def test_a_bind_with_the_database_down_keeps_the_code_for_after_the_recovery(
    site: Site, outage: Outage, database_url: str, redis_url: str
) -> None:
    scene, code = not_reg_scene(site)
    with outage():
        assert_error(bind(site, scene, code), 503, "database_unavailable")
        assert site.poll(scene) == {"status": "NOT_REG", "code": 4}
    recovered(site)
    tokens = assert_logged_in(bind(site, scene, code))  # no new code, no 60 s wait
    assert tokens["user"]["new"] is True
    assert count_rows(database_url, "users") == 1
    assert site.poll(scene) == {"status": "REG", "code": 3, "claimed": True}
    assert live_families(redis_url) == 1


def test_the_code_that_bound_is_spent(site: Site, outage: Outage) -> None:
    scene, code = not_reg_scene(site)
    with outage():
        assert_error(bind(site, scene, code), 503, "database_unavailable")
    recovered(site)
    assert_logged_in(bind(site, scene, code))
    assert_error(bind(site, scene, code), 409, "scene_state")
    assert_error(bind(site, scene, wrong(code)), 409, "scene_state")


def test_wrong_codes_count_exactly_around_an_outage(site: Site, outage: Outage) -> None:
    """Each wrong code costs one try, down or not; the right one during the outage costs
    none: after four wrong ones, the fifth attempt (the right code) still binds."""
    scene, code = not_reg_scene(site)
    answer = bind(site, scene, wrong(code))
    assert_error(answer, 400, "wrong_code")
    assert "4 tries left" in answer.json()["message"]
    with outage():
        answer = bind(site, scene, wrong(code))
        assert_error(answer, 400, "wrong_code")
        assert "3 tries left" in answer.json()["message"]
        assert_error(bind(site, scene, code), 503, "database_unavailable")
        assert_error(bind(site, scene, code), 503, "database_unavailable")
    recovered(site)
    for left in ("2 tries left", "1 try left"):
        answer = bind(site, scene, wrong(code))
        assert_error(answer, 400, "wrong_code")
        assert left in answer.json()["message"]
    assert_logged_in(bind(site, scene, code))


def test_a_code_spent_by_five_wrong_tries_is_refused_down_or_not(
    site: Site, outage: Outage, database_url: str
) -> None:
    scene, code = not_reg_scene(site)
    for _ in range(5):
        assert_error(bind(site, scene, wrong(code)), 400, "wrong_code")
    with outage():
        assert_error(bind(site, scene, code), 410, "code_spent")
    recovered(site)
    assert_error(bind(site, scene, code), 410, "code_spent")
    assert count_rows(database_url, "users") == 0
    # a new code starts over
    fresh = site.send_code(scene)
    assert_logged_in(bind(site, scene, fresh))


def test_a_redis_error_after_the_bind_committed_keeps_the_code(
    site: Site, monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str
) -> None:
    """The person is in the database but the scene could not be moved: the same code
    finishes the login, with the same user and one live login."""
    scene, code = not_reg_scene(site)
    real = SceneStore.mark_bound
    failures = [RedisConnectionError("Redis connection lost")]

    async def mark_bound(self: SceneStore, *args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await real(self, *args, **kwargs)

    monkeypatch.setattr(SceneStore, "mark_bound", mark_bound)
    assert_error(bind(site, scene, code), 503, "redis_unavailable")
    assert count_rows(database_url, "users") == 1
    assert live_families(redis_url) == 0  # the tokens of the failed attempt were revoked
    tokens = assert_logged_in(bind(site, scene, code))
    assert count_rows(database_url, "users") == 1
    assert live_families(redis_url) == 1
    me = site.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["phone"] == "+86 138****8000"


def test_two_binds_with_the_right_code_make_one_user_and_one_login(
    start: Callable[..., Site], database_url: str, redis_url: str
) -> None:
    site = start()
    scene, code = not_reg_scene(site)

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(site.client.base_url), timeout=TIMEOUT) as c:
            url, body = f"/api/v1/scenes/{scene}/bind", {"phone": PHONE, "code": code}
            return list(await asyncio.gather(*(c.post(url, json=body) for _ in range(4))))

    answers = asyncio.run(both())
    assert sum(a.status_code == 200 for a in answers) == 1, [a.text for a in answers]
    for answer in answers:
        if answer.status_code != 200:
            assert_error(answer, 409, "scene_state")
    assert count_rows(database_url, "users") == 1
    assert count_rows(database_url, "identities") == 1
    assert live_families(redis_url) == 1
    assert_error(bind(site, scene, code), 409, "scene_state")
