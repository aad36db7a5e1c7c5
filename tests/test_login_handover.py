"""A claimed login always reaches exactly one channel (SPEC §2: the token is handed out once).

The claim of a ``REG`` scene and the issue of its tokens are one step: a long-poll whose
timeout falls while the tokens are being issued answers them; a socket that closes meanwhile,
or a token issue that fails, gives the login back for the next reader. The issue is held (or
failed) inside the server by a gate on :meth:`TokenService.issue`, so each race is decided
the same way on every run.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection, connect

from tests import fakewechat
from tests.conftest import RedisServer
from tests.test_login import NEW_OPENID, Site, sms_inbox, start
from tests.util import TIMEOUT, wait_for
from wxpush.config.settings import Settings
from wxpush.infra.metrics import Metrics
from wxpush.infra.ratelimit import RateLimiter
from wxpush.infra.sql import open_engine
from wxpush.login.arrival import Arrival
from wxpush.login.flow import LoginFlow
from wxpush.login.scenes import SceneStore
from wxpush.people.store import People
from wxpush.sms.codes import SmsCodes
from wxpush.sms.providers import ConsoleProvider
from wxpush.tokens.service import TokenService

__all__ = ["sms_inbox", "start"]  # fixtures shared with test_login

fake_wechat = fakewechat.fake_wechat


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """These races are in Redis: one database kind is enough."""
    return f"sqlite+aiosqlite:///{tmp_path / 'people.db'}"


@dataclass
class IssueGate:
    """Stands in the way of every token issue of the server while armed (it runs in the
    server's thread; the test decides, from its own, when each issue goes on or fails)."""

    armed: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    proceed: threading.Event = field(default_factory=threading.Event)
    failures: list[Exception] = field(default_factory=list)  # raised by the next issues
    issued: int = 0

    async def hold(self) -> None:
        if not self.armed:
            return
        self.entered.set()
        await asyncio.to_thread(self.proceed.wait, TIMEOUT * 4)
        if self.failures:
            raise self.failures.pop(0)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> IssueGate:
    gate = IssueGate()
    real = TokenService.issue

    async def issue(self: TokenService, user_id: str, **options: Any) -> dict[str, Any]:
        await gate.hold()
        pair = await real(self, user_id, **options)
        gate.issued += 1
        return pair

    monkeypatch.setattr(TokenService, "issue", issue)
    return gate


@pytest.fixture
def site(start: Callable[..., Site]) -> Site:
    """A server where a scan alone logs a new person in: every scan makes a REG scene."""
    return start(WXPUSH_REQUIRE_PHONE="false")


def live_families(redis_url: str) -> int:
    """Refresh-token families that can still be used: the logins someone holds."""
    store = redis.Redis.from_url(redis_url)
    try:
        return sum(store.scard(key) > 0 for key in store.scan_iter("wxpush:rtf:*"))
    finally:
        store.close()


def has_tokens(state: dict[str, Any]) -> bool:
    return "access_token" in state and "refresh_token" in state


def poll_until_logged_in(site: Site, scene: str) -> dict[str, Any]:
    """Poll until a read hands out the login (reads that see it claimed claim nothing)."""

    def read() -> dict[str, Any] | None:
        state = site.poll(scene)
        return state if has_tokens(state) else None

    return wait_for(read)


async def frame(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))


# -- the long-poll --------------------------------------------------------------------------


def _long_poll_across_its_timeout(site: Site, gate: IssueGate, *, scan_first: bool) -> None:
    created = site.new_scene()
    scene = created["scene"]
    if scan_first:
        assert site.scan(created, NEW_OPENID) == "Logged in"
    gate.armed = True
    with (
        ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=str(site.client.base_url), timeout=TIMEOUT * 4) as waiting,
    ):
        sent = time.monotonic()
        answer = pool.submit(waiting.get, f"/api/v1/scenes/{scene}/wait", params={"timeout": 2})
        if not scan_first:
            assert site.scan(created, NEW_OPENID) == "Logged in"
        assert gate.entered.wait(TIMEOUT), "no reader claimed the scene"
        assert not answer.done(), "the long-poll answered before the scan landed"
        # The claim's token issue is held until the long-poll's 2 s are up: an answer that
        # comes now is the one the timeout cut short (a LOOP while the scene is claimed).
        with suppress(FutureTimeout):
            answer.result(timeout=max(0.0, sent + 2.5 - time.monotonic()))
        gate.proceed.set()
        state = answer.result(TIMEOUT * 2)
    assert state.status_code == 200, state.text
    body = state.json()
    assert body["status"] == "REG" and has_tokens(body), body
    assert site.poll(scene) == {"status": "REG", "code": 3, "claimed": True}


def test_a_long_poll_timing_out_during_the_claim_answers_the_login(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    _long_poll_across_its_timeout(site, gate, scan_first=False)
    assert live_families(redis_url) == 1


def test_a_long_poll_on_a_reg_scene_timing_out_during_its_first_read_answers_the_login(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    _long_poll_across_its_timeout(site, gate, scan_first=True)
    assert live_families(redis_url) == 1


def test_a_long_poll_that_times_out_without_a_scan_still_answers_loop(site: Site) -> None:
    created = site.new_scene()
    answer = site.client.get(f"/api/v1/scenes/{created['scene']}/wait", params={"timeout": 1})
    assert answer.status_code == 200
    assert answer.json() == {"status": "LOOP", "code": 2, "expires_in": answer.json()["expires_in"]}
    assert site.scan(created, NEW_OPENID) == "Logged in"
    assert has_tokens(site.poll(created["scene"]))  # the login waits for the next reader


# -- the WebSocket --------------------------------------------------------------------------


def test_a_socket_closing_during_the_claim_gives_the_login_to_the_next_reader(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    created = site.new_scene()
    scene = created["scene"]
    gate.armed = True

    async def close_mid_claim() -> None:
        async with connect(created["ws_url"]) as ws:
            assert (await frame(ws))["status"] == "LOOP"
            assert await asyncio.to_thread(site.scan, created, NEW_OPENID) == "Logged in"
            assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
        # the browser is gone before its tokens exist

    asyncio.run(close_mid_claim())
    gate.armed = False
    gate.proceed.set()
    state = poll_until_logged_in(site, scene)
    assert state["status"] == "REG" and state["user"]["new"] is True
    assert site.poll(scene) == {"status": "REG", "code": 3, "claimed": True}
    assert gate.issued == 2  # the socket's tokens, revoked, and the poll's
    assert live_families(redis_url) == 1


def test_a_socket_that_stays_gets_the_login_after_a_slow_issue(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    created = site.new_scene()
    gate.armed = True

    async def stay() -> dict[str, Any]:
        async with connect(created["ws_url"]) as ws:
            assert (await frame(ws))["status"] == "LOOP"
            assert await asyncio.to_thread(site.scan, created, NEW_OPENID) == "Logged in"
            assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
            gate.proceed.set()
            return await frame(ws)

    state = asyncio.run(stay())
    assert state["status"] == "REG" and has_tokens(state)
    assert site.poll(created["scene"]) == {"status": "REG", "code": 3, "claimed": True}
    assert live_families(redis_url) == 1


# -- polling, and a failure between the claim and the tokens -----------------------------


def test_a_redis_error_during_the_issue_leaves_the_login_to_the_next_poll(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    created = site.new_scene()
    assert site.scan(created, NEW_OPENID) == "Logged in"
    gate.armed = True
    gate.failures.append(RedisConnectionError("Redis connection lost"))
    gate.proceed.set()
    answer = site.client.get(f"/api/v1/scenes/{created['scene']}")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "redis_unavailable"
    state = site.poll(created["scene"])
    assert state["status"] == "REG" and has_tokens(state)
    assert live_families(redis_url) == 1


def test_a_redis_error_during_a_long_polls_issue_leaves_the_login_to_the_next_reader(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    created = site.new_scene()
    gate.armed = True
    gate.failures.append(RedisConnectionError("Redis connection lost"))
    with ThreadPoolExecutor(1) as pool:
        url = f"/api/v1/scenes/{created['scene']}/wait"
        answer = pool.submit(site.client.get, url, params={"timeout": 5})
        assert site.scan(created, NEW_OPENID) == "Logged in"
        assert gate.entered.wait(TIMEOUT)
        gate.proceed.set()
        waited = answer.result(TIMEOUT * 2)
    # the long-poll keeps waiting through a Redis error and then reads the scene again
    assert waited.status_code == 200, waited.text
    body = waited.json()
    assert body["status"] == "REG" and has_tokens(body), body
    assert live_families(redis_url) == 1


# -- the invariant, with every kind of reader at once -------------------------------------


def test_exactly_one_channel_gets_the_tokens_whatever_the_readers_do(
    site: Site, gate: IssueGate, redis_url: str
) -> None:
    """Sockets (half of them closing while the claim is held), long-polls whose timeout
    falls during the claim, and polls, all on one scene: one of them gets the login."""
    created = site.new_scene()
    scene, base = created["scene"], str(site.client.base_url)
    gate.armed = True

    async def everyone() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT * 4) as client:
            sockets = [await connect(created["ws_url"]) for _ in range(8)]
            for ws in sockets:
                assert (await frame(ws))["status"] == "LOOP"
            waits = [
                asyncio.ensure_future(client.get(f"/api/v1/scenes/{scene}/wait?timeout=1"))
                for _ in range(8)
            ]
            assert await asyncio.to_thread(site.scan, created, NEW_OPENID) == "Logged in"
            assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
            polls = await asyncio.gather(*(client.get(f"/api/v1/scenes/{scene}") for _ in range(8)))
            got += [p.json() for p in polls]
            for ws in sockets[:4]:
                await ws.close()
            # every long-poll's second is up while the first claim is still held
            await asyncio.wait(waits, timeout=1.5)
            gate.armed = False
            gate.proceed.set()
            got += [(await w).json() for w in waits]
            for ws in sockets[4:]:
                got.append(await frame(ws))
                await ws.close()
        return got

    answers = asyncio.run(everyone())
    delivered = [a for a in answers if has_tokens(a)]
    assert len(delivered) <= 1
    assert all(a["status"] == "REG" for a in answers), answers
    if not delivered:  # the claimer was a socket that closed: the login waits for a reader
        delivered.append(poll_until_logged_in(site, scene))
    assert site.poll(scene) == {"status": "REG", "code": 3, "claimed": True}
    assert live_families(redis_url) == 1


# -- a cancelled reader (the server stopping, say) ----------------------------------------


@pytest.fixture
async def flow(redis_url: str, tmp_path: Path) -> Any:
    env = {"WXPUSH_APPID": "wx0123456789abcdef", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok123"}
    settings = Settings.from_env(
        {**env, "WXPUSH_JWT_KEY_FILE": str(tmp_path / "k.pem")}, dotenv=None
    )
    client = Redis.from_url(redis_url)
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    people = People(engine)
    scenes, metrics = SceneStore(client), Metrics()
    yield LoginFlow(
        policy=settings.login_policy(), accounts=settings.accounts, scenes=scenes,
        people=people, tokens=TokenService(settings.token_policy(), client),
        sms=SmsCodes(settings.sms_policy(), client, ConsoleProvider(client)), wechat={},
        limiter=RateLimiter(client), metrics=metrics,
        arrival=Arrival(settings.login_policy(), scenes, people, metrics),
    )  # fmt: skip
    people.close()
    await engine.dispose()
    await client.aclose()


async def _reg_scene(flow: LoginFlow) -> str:
    async def qr(scene_str: str, seconds: int) -> str:
        return "http://weixin.qq.com/q/test"

    scene = await flow.scenes.create("default", 300, qr)
    moved = await flow.scenes.mark_scanned(
        scene.id, account="default", openid=NEW_OPENID, user_id="u1"
    )
    assert moved is True
    return scene.id


async def test_a_reader_cancelled_during_the_issue_gives_the_login_back(
    flow: LoginFlow, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    scene = await _reg_scene(flow)
    entered, proceed = asyncio.Event(), asyncio.Event()
    real = flow.tokens.issue

    async def held(user_id: str, **options: Any) -> dict[str, Any]:
        entered.set()
        await proceed.wait()
        return await real(user_id, **options)

    monkeypatch.setattr(flow.tokens, "issue", held)
    reader = asyncio.ensure_future(flow.state(scene))
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await flow.state(scene) == {"status": "REG", "code": 3, "claimed": True}
    proceed.set()  # the tokens of the cancelled reader come into being, for no one

    async def next_reader() -> dict[str, Any]:
        while not has_tokens(state := await flow.state(scene)):
            await asyncio.sleep(0.01)
        return state

    state = await asyncio.wait_for(next_reader(), TIMEOUT)
    assert state["user"] == {"id": "u1", "new": False}
    assert await flow.state(scene) == {"status": "REG", "code": 3, "claimed": True}
    assert await asyncio.to_thread(live_families, redis_url) == 1


async def test_a_reader_cancelled_during_the_claim_itself_gives_the_login_back(
    flow: LoginFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the claim's script is on its way: the claim may have been taken."""
    scene = await _reg_scene(flow)
    real = flow.scenes.claim
    sent = asyncio.Event()

    async def claim(*args: Any, **kwargs: Any) -> Any:
        running = asyncio.ensure_future(real(*args, **kwargs))
        sent.set()
        await asyncio.sleep(3600)  # the answer never comes back to this reader
        return await running  # pragma: no cover

    monkeypatch.setattr(flow.scenes, "claim", claim)
    reader = asyncio.ensure_future(flow.state(scene))
    await asyncio.wait_for(sent.wait(), TIMEOUT)

    async def taken() -> None:  # the claim script has run in Redis
        while not ((s := await flow.scenes.get(scene)) and s.claimed):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(taken(), TIMEOUT)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    monkeypatch.setattr(flow.scenes, "claim", real)

    async def next_reader() -> dict[str, Any]:
        while not has_tokens(state := await flow.state(scene)):
            await asyncio.sleep(0.01)
        return state

    assert has_tokens(await asyncio.wait_for(next_reader(), TIMEOUT))


async def test_a_claim_is_given_back_once_redis_is_back(
    flow: LoginFlow, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    """Redis goes away between the claim and the tokens, so the claim cannot be given back
    at once; it comes back with its data (a restart that keeps it, a failover): the claim is
    given back then, and the login is not lost."""
    scene = await _reg_scene(flow)

    async def issue_as_redis_goes(user_id: str, **options: Any) -> dict[str, Any]:
        with suppress(redis.ConnectionError):  # it closes our connection as it goes
            redis_server.client().shutdown(save=True)
        assert redis_server.proc is not None
        redis_server.proc.wait(timeout=TIMEOUT)
        redis_server.proc = None
        raise RedisConnectionError("Redis connection lost")

    real = flow.tokens.issue
    monkeypatch.setattr(flow.tokens, "issue", issue_as_redis_goes)
    try:
        with pytest.raises(RedisConnectionError, match="Redis connection lost") as caught:
            await flow.state(scene)
        assert type(caught.value) is RedisConnectionError
        monkeypatch.setattr(flow.tokens, "issue", real)
        await asyncio.to_thread(redis_server.start)  # with the claimed scene on disk
    finally:
        (redis_server.workdir / "dump.rdb").unlink(missing_ok=True)
        if redis_server.proc is None:
            redis_server.start()

    async def next_reader() -> dict[str, Any]:
        while True:
            with suppress(RedisError):
                if has_tokens(state := await flow.state(scene)):
                    return state
            await asyncio.sleep(0.05)

    state = await asyncio.wait_for(next_reader(), TIMEOUT * 2)
    assert state["user"] == {"id": "u1", "new": False}


def test_a_socket_closing_during_an_oidc_hand_over_gives_it_to_the_next_reader(
    start: Callable[..., Site], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """The hosted OIDC page's scene: its claim hands over a code instead of tokens; a socket
    gone before the code reaches it gives the claim back, and that code is deleted."""
    from tests import test_oidc
    from wxpush.oidc.provider import Provider

    gate, real = IssueGate(), Provider.hand_over

    async def hand_over(self: Provider, request_id: str, user_id: str, **kw: Any) -> Any:
        await gate.hold()
        return await real(self, request_id, user_id, **kw)

    monkeypatch.setattr(Provider, "hand_over", hand_over)
    site = start(
        WXPUSH_ACCOUNTS_FILE=test_oidc.clients_file(tmp_path), WXPUSH_REQUIRE_PHONE="false"
    )
    rid = test_oidc.request_id(test_oidc.authorize(site))
    created = site.client.post("/api/v1/scenes", json={"oidc": rid}).json()
    gate.armed = True

    async def close_mid_hand_over() -> None:
        async with connect(created["ws_url"]) as ws:
            assert (await frame(ws))["status"] == "LOOP"
            assert await asyncio.to_thread(site.scan, created, NEW_OPENID) == "Logged in"
            assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
        # the hosted page is gone before its redirect exists

    asyncio.run(close_mid_hand_over())
    gate.armed = False
    gate.proceed.set()  # the socket's hand-over now makes its code, which reaches no one
    state = wait_for(lambda: site.poll(created["scene"]).get("redirect"))
    assert site.poll(created["scene"]) == {"status": "REG", "code": 3, "claimed": True}
    store = redis.Redis.from_url(redis_url)
    assert len(list(store.scan_iter("wxpush:oidc:code:*"))) == 1  # the lost one was deleted
    store.close()
    code = dict(httpx.QueryParams(httpx.URL(state).query))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": test_oidc.SHOP}
    assert test_oidc.token(site, **form).status_code == 200  # the reader's own code works
