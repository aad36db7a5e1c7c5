"""A person's own links (SPEC §15) over HTTP: link another WeChat, a conflict, unlink, the last
way in, erase me; and the audit row of every change. A real uvicorn, redis-server, SQLite file
and PostgreSQL, the fake WeChat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests import fakewechat
from tests.conftest import RedisServer
from tests.pg import PostgresServer
from tests.test_doors import come_back, doors_env, website_code
from tests.test_login import (
    NEW_OPENID,
    PHONE,
    Site,
    assert_error,
    count_rows,
    database_url,
    select_rows,
    site,
    sms_inbox,
    start,
)
from tests.util import TIMEOUT, wait_for

__all__ = ["database_url", "site", "sms_inbox", "start"]
fake_wechat = fakewechat.fake_wechat

OTHER_OPENID = "oOtherPerson0000000000000001"
SECOND_OPENID = "oSecondWeChat000000000000001"
UNIONID = "uLinkPerson0000000000000001"


@pytest.fixture
def doors(start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat) -> Site:
    return start(**doors_env(fake_wechat, WXPUSH_UNIONID="1"))


def log_in(site: Site, openid: str, phone: str = PHONE) -> dict[str, Any]:
    """A new person through the follow door, phone bound: their tokens."""
    created = site.new_scene()
    site.scan(created, openid, follow=True)
    return site.bind(created["scene"], phone)


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": "Bearer " + tokens["access_token"]}


def me(site: Site, tokens: dict[str, Any]) -> dict[str, Any]:
    answer = site.client.get("/api/v1/me", headers=bearer(tokens))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def link_scene(site: Site, tokens: dict[str, Any], **body: Any) -> dict[str, Any]:
    answer = site.client.post("/api/v1/me/identities", json=body, headers=bearer(tokens))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def events(database_url: str, user_id: str) -> list[tuple[Any, ...]]:
    query = f"SELECT event, door, client_id, detail FROM audit WHERE user_id = '{user_id}'"
    return select_rows(database_url, query + " ORDER BY id")


# -- link --------------------------------------------------------------------------------


def test_a_logged_in_person_links_another_wechat_through_the_follow_door(
    site: Site, database_url: str
) -> None:
    tokens = log_in(site, NEW_OPENID)
    user = tokens["user"]["id"]
    created = link_scene(site, tokens)
    assert {"scene", "status", "code", "kind", "qr_url", "qr_image", "ws_url", "wait_url",
            "expires_in", "expires_at"} <= set(created)  # fmt: skip
    assert site.fake.scene_of(created["qr_url"]) == f"link:{created['scene']}"

    async def watch() -> list[dict[str, Any]]:
        async with connect(created["ws_url"]) as ws:
            first = json.loads(await ws.recv())
            reply = await asyncio.to_thread(site.scan, created, SECOND_OPENID, follow=True)
            assert reply == "This WeChat account is now linked to your account."
            return [first, json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))]

    frames = asyncio.run(watch())
    assert frames[0]["status"] == "LOOP"
    assert frames[1] == {"status": "REG", "code": 3, "linked": True}  # no tokens
    assert site.poll(created["scene"]) == {"status": "REG", "code": 3, "linked": True}
    identities = me(site, tokens)["identities"]
    assert [i["openid_hint"] for i in identities] == ["…0001", "…0001"]
    assert all(set(i) == {"id", "provider", "appid", "openid_hint", "linked_at"}
               for i in identities)  # fmt: skip
    # the new WeChat logs the same person in, no phone step
    again = site.new_scene()
    assert site.scan(again, SECOND_OPENID) == "Logged in"
    assert site.poll(again["scene"])["user"] == {"id": user, "new": False}
    assert ("link", "follow", None, "wechat_mp") in events(database_url, user)


def test_a_wechat_that_is_another_persons_is_a_conflict_and_nothing_moves(
    site: Site, database_url: str
) -> None:
    mine = log_in(site, NEW_OPENID)
    theirs = log_in(site, OTHER_OPENID, phone="13900139000")
    created = link_scene(site, mine)
    reply = site.scan(created, OTHER_OPENID)
    assert reply.startswith("This WeChat account already belongs to another account")
    state = site.poll(created["scene"])
    assert state == {"status": "CONFLICT", "code": 5, "error": "identity_taken"}
    assert len(me(site, mine)["identities"]) == 1
    assert len(me(site, theirs)["identities"]) == 1
    login = site.new_scene()
    site.scan(login, OTHER_OPENID)
    assert site.poll(login["scene"])["user"]["id"] == theirs["user"]["id"]
    assert count_rows(database_url, "identities") == 2
    assert not [e for e in events(database_url, mine["user"]["id"]) if e[0] == "link"]


def test_linking_ones_own_wechat_again_changes_nothing(site: Site) -> None:
    tokens = log_in(site, NEW_OPENID)
    created = link_scene(site, tokens)
    site.scan(created, NEW_OPENID)
    assert site.poll(created["scene"]) == {"status": "REG", "code": 3, "linked": True}
    assert len(me(site, tokens)["identities"]) == 1


def test_a_link_through_the_website_door_ends_on_a_page_in_words(
    doors: Site, database_url: str
) -> None:
    tokens = log_in(doors, NEW_OPENID)
    created = link_scene(doors, tokens, kind="website")
    page = come_back(doors, created, website_code(doors, unionid=UNIONID))
    assert page.status_code == 200
    assert 'data-wxpush-page="linked"' in page.text
    assert doors.poll(created["scene"]) == {"status": "REG", "code": 3, "linked": True}
    providers = sorted(i["provider"] for i in me(doors, tokens)["identities"])
    assert providers == ["wechat_mp", "wechat_open"]
    assert ("link", "website", None, "wechat_open") in events(database_url, tokens["user"]["id"])


def test_a_wechat_whose_unionid_is_another_persons_is_a_conflict(doors: Site) -> None:
    web = doors.client.post("/api/v1/scenes", json={"kind": "website"}).json()
    come_back(doors, web, website_code(doors, unionid=UNIONID))
    theirs = doors.bind(web["scene"], "13900139000")
    mine = log_in(doors, NEW_OPENID)
    doors.fake.users[SECOND_OPENID] = {"unionid": UNIONID}  # the other person's own WeChat
    created = link_scene(doors, mine)
    doors.scan(created, SECOND_OPENID)
    assert doors.poll(created["scene"])["status"] == "CONFLICT"
    assert len(me(doors, mine)["identities"]) == 1
    assert len(me(doors, theirs)["identities"]) == 1


def test_a_link_scene_needs_a_live_access_token(site: Site) -> None:
    tokens = log_in(site, NEW_OPENID)
    assert_error(site.client.post("/api/v1/me/identities", json={}), 401, "invalid_token")
    for header in ("Bearer nope", "Basic abc", "Bearer"):
        answer = site.client.post("/api/v1/me/identities", headers={"Authorization": header})
        assert_error(answer, 401, "invalid_token")
    answer = site.client.post("/api/v1/me/identities", json={"kind": "nope"},
                              headers=bearer(tokens))  # fmt: skip
    assert_error(answer, 400, "bad_kind")
    answer = site.client.post("/api/v1/me/identities", json={"kind": "website"},
                              headers=bearer(tokens))  # fmt: skip
    assert_error(answer, 400, "kind_unavailable")


def test_a_link_scene_is_no_login(site: Site) -> None:
    """Nobody is logged in through a link scene: no tokens, no phone step, no claim."""
    tokens = log_in(site, NEW_OPENID)
    created = link_scene(site, tokens)
    site.scan(created, SECOND_OPENID)
    scene = created["scene"]
    answer = site.client.post(f"/api/v1/scenes/{scene}/sms", json={"phone": PHONE})
    assert_error(answer, 409, "scene_state")
    waited = site.client.get(f"/api/v1/scenes/{scene}/wait", params={"timeout": 1})
    assert waited.json() == {"status": "REG", "code": 3, "linked": True}


# -- unlink ------------------------------------------------------------------------------


def test_unlink_one_identity_then_its_wechat_is_a_stranger(site: Site, database_url: str) -> None:
    tokens = log_in(site, NEW_OPENID)
    site.scan(link_scene(site, tokens), SECOND_OPENID)
    first, second = me(site, tokens)["identities"]
    gone = site.client.delete(f"/api/v1/me/identities/{second['id']}", headers=bearer(tokens))
    assert gone.status_code == 204
    assert [i["id"] for i in me(site, tokens)["identities"]] == [first["id"]]
    again = site.client.delete(f"/api/v1/me/identities/{second['id']}", headers=bearer(tokens))
    assert_error(again, 404, "identity_not_found")
    stranger = site.new_scene()
    site.scan(stranger, SECOND_OPENID)
    assert site.poll(stranger["scene"]) == {"status": "NOT_REG", "code": 4}
    assert ("unlink", "api", None, f"identity {second['id']}") in events(
        database_url, tokens["user"]["id"]
    )


def test_another_persons_identity_is_not_found(site: Site) -> None:
    mine = log_in(site, NEW_OPENID)
    theirs = log_in(site, OTHER_OPENID, phone="13900139000")
    their_id = me(site, theirs)["identities"][0]["id"]
    for raw in (str(their_id), "abc", "-1", "9" * 30, "1.5"):
        answer = site.client.delete(f"/api/v1/me/identities/{raw}", headers=bearer(mine))
        assert_error(answer, 404, "identity_not_found")
    assert len(me(site, theirs)["identities"]) == 1
    answer = site.client.delete(f"/api/v1/me/identities/{their_id}")
    assert_error(answer, 401, "invalid_token")


def test_the_last_way_in_stays(start: Callable[..., Site]) -> None:
    site = start(WXPUSH_REQUIRE_PHONE="false")
    created = site.new_scene()
    site.scan(created, NEW_OPENID)
    tokens = site.poll(created["scene"])
    only = me(site, tokens)["identities"][0]["id"]
    answer = site.client.delete(f"/api/v1/me/identities/{only}", headers=bearer(tokens))
    assert_error(answer, 409, "last_identity")
    assert len(me(site, tokens)["identities"]) == 1


def test_with_a_phone_the_last_wechat_may_go_and_the_phone_brings_the_person_back(
    site: Site,
) -> None:
    tokens = log_in(site, NEW_OPENID)
    only = me(site, tokens)["identities"][0]["id"]
    answer = site.client.delete(f"/api/v1/me/identities/{only}", headers=bearer(tokens))
    assert answer.status_code == 204
    assert me(site, tokens)["identities"] == []
    back = log_in(site, SECOND_OPENID)  # a new WeChat, the same phone: the same person
    assert back["user"] == {"id": tokens["user"]["id"], "new": False}


def test_without_link_by_phone_a_phone_is_no_way_in(start: Callable[..., Site]) -> None:
    site = start(WXPUSH_LINK_BY_PHONE="false")
    tokens = log_in(site, NEW_OPENID)
    only = me(site, tokens)["identities"][0]["id"]
    answer = site.client.delete(f"/api/v1/me/identities/{only}", headers=bearer(tokens))
    assert_error(answer, 409, "last_identity")


# -- erase -------------------------------------------------------------------------------


def test_delete_me_erases_the_person_and_ends_their_tokens(site: Site, database_url: str) -> None:
    tokens = log_in(site, NEW_OPENID)
    user = tokens["user"]["id"]
    site.scan(link_scene(site, tokens), SECOND_OPENID)
    other = log_in(site, OTHER_OPENID, phone="13900139000")
    assert site.client.delete("/api/v1/me", headers=bearer(tokens)).status_code == 204

    assert_error(site.client.get("/api/v1/me", headers=bearer(tokens)), 401, "invalid_token")
    refreshed = site.client.post("/api/v1/token/refresh",
                                 json={"refresh_token": tokens["refresh_token"]})  # fmt: skip
    assert_error(refreshed, 401, "invalid_refresh_token")
    assert_error(site.client.delete("/api/v1/me", headers=bearer(tokens)), 401, "invalid_token")
    for openid in (NEW_OPENID, SECOND_OPENID):  # both of their WeChats are strangers again
        created = site.new_scene()
        site.scan(created, openid)
        assert site.poll(created["scene"]) == {"status": "NOT_REG", "code": 4}
    assert select_rows(database_url, f"SELECT id FROM users WHERE id = '{user}'") == []
    assert select_rows(database_url, f"SELECT id FROM identities WHERE user_id = '{user}'") == []
    assert me(site, other)["id"] == other["user"]["id"]  # nobody else is touched
    audit = events(database_url, user)
    assert audit[-1] == ("delete", "api", None, None)
    assert {"bind", "link", "delete"} <= {e[0] for e in audit}
    dump = json.dumps(select_rows(database_url, "SELECT * FROM audit"), default=str)
    assert PHONE not in dump and NEW_OPENID not in dump and SECOND_OPENID not in dump
    fresh = log_in(site, NEW_OPENID)  # the same WeChat and phone make a new person
    assert fresh["user"]["new"] is True and fresh["user"]["id"] != user


def test_a_refreshed_token_of_an_erased_person_is_refused_too(site: Site) -> None:
    tokens = log_in(site, NEW_OPENID)
    body = {"refresh_token": tokens["refresh_token"]}
    refreshed = site.client.post("/api/v1/token/refresh", json=body).json()
    assert site.client.delete("/api/v1/me", headers=bearer(refreshed)).status_code == 204
    for pair in (tokens, refreshed):
        assert_error(site.client.get("/api/v1/me", headers=bearer(pair)), 401, "invalid_token")
    answer = site.client.post("/api/v1/token/refresh",
                              json={"refresh_token": refreshed["refresh_token"]})  # fmt: skip
    assert_error(answer, 401, "invalid_refresh_token")


# -- the audit log -----------------------------------------------------------------------


def test_every_login_has_its_audit_row_with_door_and_ip(site: Site, database_url: str) -> None:
    tokens = log_in(site, NEW_OPENID)
    user = tokens["user"]["id"]
    created = site.new_scene()
    site.scan(created, NEW_OPENID)
    site.poll(created["scene"])

    def logins() -> list[tuple[Any, ...]]:
        query = f"SELECT door, ip FROM audit WHERE user_id = '{user}' AND event = 'login'"
        return select_rows(database_url, query)

    assert wait_for(lambda: len(logins()) == 2)  # the bind's answer and the scan's claim
    assert logins() == [("follow", "127.0.0.1")] * 2
    assert ("bind", "follow", None, "new user") in events(database_url, user)


def test_a_person_registered_without_a_phone_has_a_register_row(
    start: Callable[..., Site], database_url: str
) -> None:
    site = start(WXPUSH_REQUIRE_PHONE="false")
    created = site.new_scene()
    site.scan(created, NEW_OPENID)
    user = site.poll(created["scene"])["user"]["id"]
    assert events(database_url, user)[0] == ("register", "follow", None, "new user")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_database_hung_is_a_503_and_the_same_token_asks_again(
    start: Callable[..., Site], postgres_server: PostgresServer
) -> None:
    site = start()
    tokens = log_in(site, NEW_OPENID)
    site.scan(link_scene(site, tokens), SECOND_OPENID)
    second = me(site, tokens)["identities"][1]["id"]
    with postgres_server.frozen():
        for method, path in (("GET", "/api/v1/me"), ("POST", "/api/v1/me/identities"),
                             ("DELETE", f"/api/v1/me/identities/{second}"),
                             ("DELETE", "/api/v1/me")):  # fmt: skip
            answer = site.client.request(method, path, headers=bearer(tokens))
            assert_error(answer, 503, "database_unavailable")
    assert len(me(site, tokens)["identities"]) == 2  # nothing changed
    assert site.client.delete("/api/v1/me", headers=bearer(tokens)).status_code == 204
    assert_error(site.client.get("/api/v1/me", headers=bearer(tokens)), 401, "invalid_token")


def test_redis_away_is_a_503_nothing_is_erased_and_asking_again_works(
    start: Callable[..., Site], own_redis: RedisServer, database_url: str
) -> None:
    site = start(WXPUSH_REDIS_URL=own_redis.url)
    tokens = log_in(site, NEW_OPENID)
    own_redis.stop()
    try:
        answer = site.client.delete("/api/v1/me", headers=bearer(tokens))
        assert_error(answer, 503, "redis_unavailable")
    finally:
        own_redis.start()
    assert count_rows(database_url, "users") == 1
    wait_for(lambda: site.client.get("/readyz").status_code == 200)
    assert site.client.delete("/api/v1/me", headers=bearer(tokens)).status_code == 204
    assert_error(site.client.get("/api/v1/me", headers=bearer(tokens)), 401, "invalid_token")
    refreshed = site.client.post("/api/v1/token/refresh",
                                 json={"refresh_token": tokens["refresh_token"]})  # fmt: skip
    assert_error(refreshed, 401, "invalid_refresh_token")
