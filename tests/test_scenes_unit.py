"""The scene state machine (SceneStore) alone, on a real redis-server and on the embedded store.

What the end-to-end tests see only through a browser: each transition's preconditions, what it
publishes (and that a refused one publishes nothing), the claim taken once and given back by
its own mark only, the lifetime of a scene, and the callback's de-dup key taken by the move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from tests.util import TIMEOUT
from wxpush.callback.dedup import Once, Retried
from wxpush.errors import Conflict, Gone, NotFound
from wxpush.infra.pipeline import PipelinedConnection
from wxpush.infra.redis_client import open_connections
from wxpush.login.messages import channel
from wxpush.login.scenes import RESULT_GRACE, Claim, Scene, SceneStore

pytestmark = pytest.mark.uvloop  # on uvloop too, which `wxpush serve` runs

ACCOUNT = "default"
OPENID = "oScenePerson00000000000001"
NOW = 1_800_000_000.0


class QRMaker:
    """WeChat's QR code API as the store sees it: records what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, scene_str: str, expire_seconds: int) -> str:
        self.asked.append((scene_str, expire_seconds))
        return f"http://weixin.qq.com/q/{len(self.asked)}"


@dataclass
class Store:
    scenes: SceneStore
    redis: Redis
    qr: QRMaker
    moved: list[tuple[str, str]]  # what the store told of each move it made

    async def new(self, expire_seconds: int = 300) -> Scene:
        return await self.scenes.create(ACCOUNT, expire_seconds, self.qr)

    async def reg(self, user_id: str = "u1", new: bool = False) -> Scene:
        scene = await self.new()
        moved = await self.scenes.mark_scanned(
            scene.id, account=ACCOUNT, openid=OPENID, user_id=user_id, new=new
        )
        assert moved is True
        return scene

    async def not_reg(self) -> Scene:
        scene = await self.new()
        moved = await self.scenes.mark_scanned(
            scene.id, account=ACCOUNT, openid=OPENID, user_id=None
        )
        assert moved is True
        return scene

    async def status(self, scene_id: str) -> str | None:
        scene = await self.scenes.get(scene_id)
        return None if scene is None else scene.status


@pytest.fixture(params=["redis", "embedded"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Store]:
    """A SceneStore as a server builds it: the pool and the hot path's lane (real Redis), or
    the embedded store of ``wxpush demo``."""
    client, hot = open_connections(redis_url if request.param == "redis" else None)
    moved: list[tuple[str, str]] = []
    scenes = SceneStore(client, hot, clock=lambda: NOW, moved=lambda *told: moved.append(told))
    yield Store(scenes, client, QRMaker(), moved)
    if isinstance(hot, PipelinedConnection):
        await hot.aclose()
    await client.aclose()


class Channel:
    """A subscriber of one scene's channel, reading its messages in order."""

    def __init__(self, redis: Redis, scene_id: str) -> None:
        self._redis = redis
        self.name = channel(scene_id)
        self._pubsub = redis.pubsub()

    async def __aenter__(self) -> Channel:
        await self._pubsub.subscribe(self.name)
        confirmed = await self._pubsub.get_message(timeout=TIMEOUT)
        assert confirmed is not None and confirmed["type"] == "subscribe"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pubsub.aclose()

    async def next(self) -> str:
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=TIMEOUT)
        assert message is not None, "nothing was published"
        return str(message["data"].decode())

    async def nothing_before(self, marker: str) -> None:
        """Nothing was published on the channel before ``marker``, published now."""
        await self._redis.publish(self.name, marker)
        assert await self.next() == marker


def key(scene_id: str) -> str:
    """The scene's hash in Redis (its channel has the same name)."""
    return channel(scene_id)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await check():
            await asyncio.sleep(0.02)


# -- create and read -----------------------------------------------------------------------


async def test_a_new_scene_waits_with_its_qr_code_for_as_long_as_the_qr_lives(
    store: Store,
) -> None:
    scene = await store.new(300)
    assert store.qr.asked == [(f"login:{scene.id}", 300)]
    assert scene == Scene(scene.id, ACCOUNT, "LOOP", "http://weixin.qq.com/q/1", NOW + 300)
    assert await store.scenes.get(scene.id) == scene
    assert 299_000 < await store.redis.pttl(key(scene.id)) <= 300_000
    assert scene.expires_in(NOW + 120.5) == 179
    assert scene.expires_in(NOW + 301) == 0
    other = await store.new()
    assert other.id != scene.id and len(other.id) == len(scene.id) == 22


NOT_IDS = ["", "short", "A" * 21, "A" * 23, "A" * 21 + "!", "A" * 21 + "=", "A" * 21 + "/"]


@pytest.mark.parametrize("scene_id", NOT_IDS)
async def test_what_cannot_be_a_scene_id_is_no_scene(store: Store, scene_id: str) -> None:
    assert await store.scenes.get(scene_id) is None
    with pytest.raises(NotFound) as caught:
        await store.scenes.require(scene_id, "LOOP")
    assert caught.value.code == "scene_not_found"


async def test_a_non_ascii_id_is_no_scene_either(store: Store) -> None:
    for scene_id in ("A" * 21 + "é", "A" * 21 + "٣", "登" * 22):
        with pytest.raises(NotFound) as caught:
            await store.scenes.require(scene_id, "LOOP")
        assert caught.value.code == "scene_not_found"


async def test_a_scene_is_gone_once_its_time_is_up(store: Store) -> None:
    scene = await store.new(1)
    assert await store.status(scene.id) == "LOOP"
    await eventually(lambda: _gone(store, scene.id))
    with pytest.raises(Gone) as caught:
        await store.scenes.require(scene.id, "LOOP")
    assert caught.value.code == "scene_expired"
    assert await store.scenes.claim(scene.id, "f1") is None
    moved = await store.scenes.mark_scanned(scene.id, account=ACCOUNT, openid=OPENID, user_id="u1")
    assert moved is False
    assert await store.redis.exists(key(scene.id)) == 0  # a late scan brings nothing back


async def _gone(store: Store, scene_id: str) -> bool:
    return await store.scenes.get(scene_id) is None


async def test_require_names_the_state_it_found(store: Store) -> None:
    scene = await store.not_reg()
    assert (await store.scenes.require(scene.id, "NOT_REG")).openid == OPENID
    with pytest.raises(Conflict) as caught:
        await store.scenes.require(scene.id, "LOOP")
    assert (caught.value.code, caught.value.message) == (
        "scene_state",
        "This login is NOT_REG, not LOOP.",
    )
    with pytest.raises(Gone) as gone:
        await store.scenes.require("Z" * 22, "NOT_REG")  # plausible, but no such scene
    assert gone.value.code == "scene_expired"


# -- the scan: LOOP → REG / NOT_REG ------------------------------------------------------------


async def test_a_known_persons_scan_moves_loop_to_reg_and_says_only_so(store: Store) -> None:
    scene = await store.new()
    async with Channel(store.redis, scene.id) as heard:
        moved = await store.scenes.mark_scanned(
            scene.id, account=ACCOUNT, openid=OPENID, user_id="u1", new=True
        )
        assert moved is True
        status, stamp = (await heard.next()).split(" ")
    assert status == "REG" and float(stamp) > 0  # the status and when: no openid, no user
    after = await store.scenes.get(scene.id)
    assert after is not None
    assert (after.status, after.openid, after.user_id, after.new, after.claimed) == (
        "REG", OPENID, "u1", True, False,
    )  # fmt: skip


async def test_a_new_persons_scan_moves_loop_to_not_reg_keeping_the_openid(store: Store) -> None:
    scene = await store.new()
    async with Channel(store.redis, scene.id) as heard:
        moved = await store.scenes.mark_scanned(
            scene.id, account=ACCOUNT, openid=OPENID, user_id=None
        )
        assert moved is True
        assert (await heard.next()).split(" ")[0] == "NOT_REG"
    after = await store.scenes.get(scene.id)
    assert after is not None
    assert (after.status, after.openid, after.user_id) == ("NOT_REG", OPENID, None)


async def test_a_resolved_scene_outlives_a_qr_code_about_to_expire(store: Store) -> None:
    short, long = await store.new(5), await store.new(300)
    for scene in (short, long):
        await store.scenes.mark_scanned(scene.id, account=ACCOUNT, openid=OPENID, user_id=None)
    assert await store.redis.pttl(key(short.id)) > (RESULT_GRACE - 1) * 1000
    assert 299_000 < await store.redis.pttl(key(long.id)) <= 300_000  # never shortened


@pytest.mark.parametrize("first", ["REG", "NOT_REG"])
async def test_only_a_waiting_scene_is_moved_by_a_scan(store: Store, first: str) -> None:
    scene = await (store.reg() if first == "REG" else store.not_reg())
    async with Channel(store.redis, scene.id) as heard:
        for user_id in ("u2", None):
            moved = await store.scenes.mark_scanned(
                scene.id, account=ACCOUNT, openid="oSomeoneElse", user_id=user_id
            )
            assert moved is False
        await heard.nothing_before("marker")
    after = await store.scenes.get(scene.id)
    assert after is not None and (after.status, after.openid) == (first, OPENID)


async def test_another_accounts_scan_changes_nothing(store: Store) -> None:
    scene = await store.new()
    async with Channel(store.redis, scene.id) as heard:
        moved = await store.scenes.mark_scanned(
            scene.id, account="other", openid=OPENID, user_id="u1"
        )
        assert moved is False
        await heard.nothing_before("marker")
    assert await store.scenes.get(scene.id) == scene


async def test_a_scan_of_an_unknown_scene_creates_nothing(store: Store) -> None:
    moved = await store.scenes.mark_scanned("Q" * 22, account=ACCOUNT, openid=OPENID, user_id="u1")
    assert moved is False
    assert await store.redis.exists(key("Q" * 22)) == 0


# -- the callback's de-dup key ------------------------------------------------------------


async def test_the_move_takes_the_events_key_and_a_retry_changes_nothing(store: Store) -> None:
    once = Once("wxpush:dedup:test:scan-1", ttl=120)
    scene = await store.new()
    moved = await store.scenes.mark_scanned(
        scene.id, account=ACCOUNT, openid=OPENID, user_id="u1", once=once
    )
    assert moved is True
    assert await store.redis.get(once.key) == once.marker
    assert 119_000 < await store.redis.pttl(once.key) <= 120_000
    # WeChat's retry of the same event, even aimed at a scene still waiting, moves nothing.
    waiting = await store.new()
    async with Channel(store.redis, waiting.id) as heard:
        retried = await store.scenes.mark_scanned(
            waiting.id, account=ACCOUNT, openid=OPENID, user_id="u1", once=once
        )
        assert retried == Retried(once.marker)
        await heard.nothing_before("marker")
    assert await store.status(waiting.id) == "LOOP"
    # Once the first delivery has stored its reply, a retry gets that reply.
    await store.redis.set(once.key, b"R<xml>reply</xml>")
    retried = await store.scenes.mark_scanned(
        waiting.id, account=ACCOUNT, openid=OPENID, user_id=None, once=once
    )
    assert retried == Retried(b"R<xml>reply</xml>")
    assert await store.status(waiting.id) == "LOOP"


async def test_a_scan_that_moves_nothing_leaves_the_events_key_free(store: Store) -> None:
    once = Once("wxpush:dedup:test:scan-2", ttl=120)
    scene = await store.reg()
    for account in (ACCOUNT, "other"):
        moved = await store.scenes.mark_scanned(
            scene.id, account=account, openid=OPENID, user_id="u1", once=once
        )
        assert moved is False
    assert await store.redis.exists(once.key) == 0


# -- the claim -------------------------------------------------------------------------------


async def test_a_reg_scene_is_claimed_once(store: Store) -> None:
    scene = await store.reg("u7", new=True)
    assert await store.scenes.claim(scene.id, "family-1") == Claim("u7", True)
    assert await store.scenes.claim(scene.id, "family-2") is None
    after = await store.scenes.get(scene.id)
    assert after is not None and (after.status, after.claimed) == ("REG", True)


async def test_of_many_claims_at_once_one_wins(store: Store) -> None:
    scene = await store.reg("u7")
    claims = await asyncio.gather(*(store.scenes.claim(scene.id, f"f{n}") for n in range(20)))
    assert [c for c in claims if c is not None] == [Claim("u7", False)]


async def test_only_a_reg_scene_can_be_claimed(store: Store) -> None:
    loop, not_reg = await store.new(), await store.not_reg()
    for scene_id in (loop.id, not_reg.id, "Q" * 22):
        assert await store.scenes.claim(scene_id, "family-1") is None
    assert (await store.status(loop.id), await store.status(not_reg.id)) == ("LOOP", "NOT_REG")


async def test_a_claim_is_given_back_by_its_own_mark_only(store: Store) -> None:
    scene = await store.reg("u7")
    assert await store.scenes.claim(scene.id, "family-1") == Claim("u7", False)
    await store.scenes.release(scene.id, "family-2")  # not its claim: nothing happens
    assert await store.scenes.claim(scene.id, "family-3") is None
    await store.scenes.release(scene.id, "family-1")  # its own: the next reader claims
    assert await store.scenes.claim(scene.id, "family-4") == Claim("u7", False)
    await store.scenes.release(scene.id, "family-1")  # a stale give-back: family-4's stays
    assert await store.scenes.claim(scene.id, "family-5") is None


async def test_giving_back_a_claim_never_taken_or_of_a_gone_scene_changes_nothing(
    store: Store,
) -> None:
    scene = await store.reg("u7")
    await store.scenes.release(scene.id, "family-1")
    assert await store.scenes.claim(scene.id, "family-2") == Claim("u7", False)
    await store.redis.delete(key(scene.id))  # expired meanwhile
    await store.scenes.release(scene.id, "family-2")
    assert await store.redis.exists(key(scene.id)) == 0  # not brought back


# -- the bind: NOT_REG → REG, claimed by the bind itself -----------------------------------


async def test_a_bind_moves_not_reg_to_reg_already_claimed_by_it(store: Store) -> None:
    scene = await store.not_reg()
    async with Channel(store.redis, scene.id) as heard:
        await store.scenes.mark_bound(scene.id, user_id="u9", new=True, mark="family-b")
        assert (await heard.next()).split(" ")[0] == "REG"
    after = await store.scenes.get(scene.id)
    assert after is not None
    assert (after.status, after.user_id, after.new, after.claimed) == ("REG", "u9", True, True)
    assert await store.scenes.claim(scene.id, "family-1") is None  # the bind answer had them
    await store.scenes.release(scene.id, "family-b")  # the bind failed on the way
    assert await store.scenes.claim(scene.id, "family-2") == Claim("u9", True)


async def test_only_a_not_reg_scene_can_be_bound(store: Store) -> None:
    loop, reg = await store.new(), await store.reg()
    for scene_id in (loop.id, reg.id, "Q" * 22):
        with pytest.raises(Conflict) as caught:
            await store.scenes.mark_bound(scene_id, user_id="u9", new=False, mark="family-b")
        assert caught.value.code == "scene_state"
    assert (await store.status(loop.id), await store.status(reg.id)) == ("LOOP", "REG")
    assert await store.scenes.claim(reg.id, "family-1") == Claim("u1", False)  # not taken


async def test_each_move_made_is_told_with_the_message_it_published(store: Store) -> None:
    scene = await store.new()
    async with Channel(store.redis, scene.id) as heard:
        assert await store.scenes.mark_scanned(
            scene.id, account=ACCOUNT, openid=OPENID, user_id=None
        )
        assert store.moved == [(channel(scene.id), await heard.next())]
    again = await store.scenes.mark_scanned(scene.id, account=ACCOUNT, openid=OPENID, user_id=None)
    assert again is False
    assert len(store.moved) == 1  # a move that did not happen is not told
