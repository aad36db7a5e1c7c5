"""The hub alone (Hub, Waiter) on a real redis-server: no web server, no scenes.

The end-to-end tests see the hub through sockets; here what it promises is pinned down one by
one: a waiter is handed out only once Redis has its subscription (a PUBLISH right after counts
it), a channel lives as long as its last waiter, every waiter of a channel hears every message
in order and no one else does, a waiter that falls behind is closed alone, a Redis restart ends
in a re-subscription and a RESYNC, and all of it on one connection.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import RedisServer
from tests.util import PROMPTLY, TIMEOUT
from wxpush.errors import Unavailable
from wxpush.infra.redis_client import open_redis
from wxpush.login.messages import channel
from wxpush.login.scenes import new_scene_id
from wxpush.realtime.hub import RESYNC, Hub, Waiter

pytestmark = pytest.mark.uvloop  # on uvloop too, which `wxpush serve` runs


@dataclass
class Running:
    """A hub listening in the background, and a plain client to publish and look with."""

    hub: Hub
    redis: Redis
    name: str  # the CLIENT SETNAME of the hub's connections
    reconnects: list[None]

    async def publish(self, scene_id: str, message: str) -> int:
        """PUBLISH on the scene's channel; Redis answers how many subscribers got it."""
        return int(await self.redis.publish(channel(scene_id), message))

    async def subscribers(self, scene_id: str) -> int:
        return int((await self.redis.pubsub_numsub(channel(scene_id)))[0][1])

    async def connections(self) -> list[dict[str, Any]]:
        """The hub's connections to Redis, as CLIENT LIST shows them."""
        return [row for row in await self.redis.client_list() if row.get("name") == self.name]


@asynccontextmanager
async def running_hub(
    url: str, wrap: Callable[[Redis], Any] = lambda client: client, *, listen: bool = True
) -> AsyncIterator[Running]:
    """A Hub on a server's own Redis client (``open_redis``), its listener running."""
    client = open_redis(url)
    name = f"wxpush-hub-test-{secrets.token_hex(4)}"
    client.connection_pool.connection_kwargs["client_name"] = name  # to tell its connections
    reconnects: list[None] = []
    hub = Hub(wrap(client), on_reconnect=lambda: reconnects.append(None))
    plain = Redis.from_url(url, socket_timeout=TIMEOUT)
    listener = asyncio.create_task(hub.run()) if listen else None
    try:
        yield Running(hub, plain, name, reconnects)
    finally:
        if listener is not None:
            await stop(listener)
        await hub.close()
        await plain.aclose()
        await client.aclose()


async def stop(listener: asyncio.Task[None]) -> None:
    """Cancel the listener until it has stopped: on Python 3.11 a cancel can be lost (see
    test_a_cancelled_listener_always_stops), and a test must end all the same."""
    for _ in range(3):
        listener.cancel()
        done, _ = await asyncio.wait([listener], timeout=PROMPTLY)
        if done:
            return
    raise AssertionError("the listener does not stop")


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[Running]:
    async with running_hub(redis_url) as running:
        yield running


async def next_of(waiter: Waiter, timeout: float = TIMEOUT) -> str | None:
    async with asyncio.timeout(timeout):
        return await waiter.next()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


# -- subscribing ------------------------------------------------------------------------------


async def test_a_waiter_is_handed_out_subscribed(hub: Running) -> None:
    """What is published the moment a waiter is handed out reaches it: a waiter that then
    reads its scene cannot miss a change."""
    for _ in range(50):
        scene = new_scene_id()
        async with hub.hub.waiter(channel(scene)) as waiter:
            assert await hub.publish(scene, "NOT_REG 1.5") == 1
            assert await next_of(waiter) == "NOT_REG 1.5"


async def test_a_waiter_that_comes_before_the_connection_waits_for_it(redis_url: str) -> None:
    async with running_hub(redis_url, listen=False) as running, AsyncExitStack() as stack:
        scene = new_scene_id()
        entering = asyncio.ensure_future(
            stack.enter_async_context(running.hub.waiter(channel(scene)))
        )
        listener = asyncio.create_task(running.hub.run())
        stack.push_async_callback(stop, listener)
        async with asyncio.timeout(TIMEOUT):
            waiter = await entering
        assert await running.publish(scene, "REG 2.5") == 1
        assert await next_of(waiter) == "REG 2.5"


async def test_a_channel_lives_as_long_as_its_last_waiter(hub: Running) -> None:
    scene = new_scene_id()
    async with hub.hub.waiter(channel(scene)) as first:
        async with hub.hub.waiter(channel(scene)) as second:
            assert await hub.subscribers(scene) == 1  # one subscription for both
            assert await hub.publish(scene, "m1") == 1
            assert (await next_of(first), await next_of(second)) == ("m1", "m1")
        assert hub.hub.waiter_count == 1
        assert await hub.publish(scene, "m2") == 1  # the first is still subscribed
        assert await next_of(first) == "m2"
    assert hub.hub.waiter_count == 0

    async def unsubscribed() -> bool:
        return await hub.subscribers(scene) == 0

    await eventually(unsubscribed)
    async with hub.hub.waiter(channel(scene)) as again:  # and subscribed anew for the next one
        assert await hub.publish(scene, "m3") == 1
        assert await next_of(again) == "m3"


async def test_a_waiter_that_cannot_subscribe_gets_a_503(own_redis: RedisServer) -> None:
    async with running_hub(own_redis.url) as running:
        own_redis.stop()
        with pytest.raises(Unavailable) as caught:
            async with running.hub.waiter(channel(new_scene_id())):
                raise AssertionError("handed out without a subscription")
        assert (caught.value.status, caught.value.code) == (503, "redis_unavailable")
        assert running.hub.waiter_count == 0  # it left nothing behind


@pytest.mark.xfail(
    sys.version_info < (3, 12),
    strict=True,
    reason="on Python 3.11 asyncio.wait_for, which redis-py sends every command through when "
    "a socket timeout is set, returns the result of a send that completed as the cancel came "
    "and drops the cancel: a listener cancelled while it connects goes on listening, and the "
    "lifespan's shutdown waits for it forever",
)
async def test_a_cancelled_listener_always_stops(redis_url: str) -> None:
    """Cancelled at every point of its start (n turns of the event loop in), it stops."""
    for turns in range(40):
        async with running_hub(redis_url, listen=False) as running:
            listener = asyncio.create_task(running.hub.run())
            for _ in range(turns):
                await asyncio.sleep(0)
            listener.cancel()
            done, _ = await asyncio.wait([listener], timeout=PROMPTLY)
            await stop(listener)  # once more if need be, so that the test itself can end
            assert done, f"still listening after a cancel {turns} turns in"


# -- fan-out -----------------------------------------------------------------------------------


async def test_every_waiter_of_a_channel_hears_every_message_in_order(hub: Running) -> None:
    scene, elsewhere = new_scene_id(), new_scene_id()
    sent = [f"NOT_REG {n}" for n in range(10)]
    async with AsyncExitStack() as stack:
        mine = [await stack.enter_async_context(hub.hub.waiter(channel(scene))) for _ in range(3)]
        other = await stack.enter_async_context(hub.hub.waiter(channel(elsewhere)))
        for message in sent:
            assert await hub.publish(scene, message) == 1  # one subscription for the three
        assert await hub.publish(elsewhere, "marker") == 1
        for waiter in mine:
            assert [await next_of(waiter) for _ in sent] == sent
        assert await next_of(other) == "marker"  # and nothing of the other scene before it


async def test_a_waiter_that_falls_behind_is_closed_alone(hub: Running) -> None:
    scene, elsewhere = new_scene_id(), new_scene_id()
    async with (
        hub.hub.waiter(channel(scene), size=4) as slow,
        hub.hub.waiter(channel(scene), size=64) as reading,
        hub.hub.waiter(channel(elsewhere), size=4) as full,
    ):
        for n in range(5):
            await hub.publish(scene, f"m{n}")
        for n in range(4):  # exactly as many as its queue holds: nothing lost
            await hub.publish(elsewhere, f"e{n}")
        assert [await next_of(reading) for _ in range(5)] == [f"m{n}" for n in range(5)]
        assert [await next_of(full) for _ in range(4)] == [f"e{n}" for n in range(4)]
        assert slow.overflowed
        with pytest.raises(OverflowError):
            await slow.next()  # however much it still holds
        # The others go on, on the same subscription.
        assert await hub.publish(scene, "after") == 1
        assert await next_of(reading) == "after"
        assert await hub.publish(elsewhere, "again") == 1
        assert await next_of(full) == "again"
        assert not (reading.overflowed or full.overflowed)


async def test_a_stopped_waiter_answers_none(hub: Running) -> None:
    scene = new_scene_id()
    async with hub.hub.waiter(channel(scene)) as waiter:
        waiting = asyncio.ensure_future(waiter.next())
        waiter.stop()
        async with asyncio.timeout(TIMEOUT):
            assert await waiting is None
        await hub.publish(scene, "late")
        assert await next_of(waiter) is None


# -- one connection ----------------------------------------------------------------------------


async def test_one_pubsub_connection_whatever_the_number_of_waiters(hub: Running) -> None:
    scenes = [new_scene_id() for _ in range(300)]
    async with AsyncExitStack() as stack:
        for scene in scenes:
            await stack.enter_async_context(hub.hub.waiter(channel(scene)))
        for _ in range(3):
            await stack.enter_async_context(hub.hub.waiter(channel(scenes[0])))
        assert hub.hub.waiter_count == 303
        # One connection in all, subscribed to every scene and to the hub's own channel.
        assert [int(row["sub"]) for row in await hub.connections()] == [301]


# -- a Redis restart ---------------------------------------------------------------------------


async def test_after_a_redis_restart_every_waiter_is_resubscribed_and_told_to_resync(
    own_redis: RedisServer,
) -> None:
    async with running_hub(own_redis.url) as running, AsyncExitStack() as stack:
        scenes = [new_scene_id() for _ in range(3)]
        waiters = [await stack.enter_async_context(running.hub.waiter(channel(s))) for s in scenes]
        await asyncio.to_thread(own_redis.stop)
        await asyncio.to_thread(own_redis.start)  # empty: whatever changed meanwhile is lost
        for waiter in waiters:
            assert await next_of(waiter, TIMEOUT * 2) == RESYNC  # re-read your scene
        assert running.reconnects == [None]

        async def resubscribed() -> bool:
            return [await running.subscribers(s) for s in scenes] == [1, 1, 1]

        await eventually(resubscribed)
        for scene, waiter in zip(scenes, waiters, strict=True):
            assert await running.publish(scene, "NOT_REG 3.5") == 1
            assert await next_of(waiter) == "NOT_REG 3.5"  # the first message after RESYNC
        assert [int(row["sub"]) for row in await running.connections()] == [4]


class HeldConfirmations:
    """The hub's Redis, with a pub/sub connection slow to bring subscription confirmations:
    while ``holding``, a scene channel's confirmation is held until ``release`` is set."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self.holding = False
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def pubsub(self) -> _SlowPubSub:
        return _SlowPubSub(self._client.pubsub(), self)


class _SlowPubSub:
    def __init__(self, real: Any, gate: HeldConfirmations) -> None:
        self._real = real
        self._gate = gate

    async def subscribe(self, *names: str) -> None:
        await self._real.subscribe(*names)

    async def unsubscribe(self, *names: str) -> None:
        await self._real.unsubscribe(*names)

    async def aclose(self) -> None:
        await self._real.aclose()

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        async for message in self._real.listen():
            if (
                self._gate.holding
                and message["type"] == "subscribe"
                and message["channel"].startswith(b"wxpush:scene:")
            ):
                self._gate.arrived.set()
                await self._gate.release.wait()
            yield message


async def test_resync_comes_once_the_resubscription_is_confirmed(own_redis: RedisServer) -> None:
    gates: list[HeldConfirmations] = []

    def slow(client: Redis) -> HeldConfirmations:
        gates.append(HeldConfirmations(client))
        return gates[-1]

    async with (
        running_hub(own_redis.url, slow) as running,
        running.hub.waiter(channel(new_scene_id())) as waiter,
    ):
        heard: list[str] = []

        async def consume() -> None:
            while (message := await waiter.next()) is not None:
                heard.append(message)

        consumer = asyncio.create_task(consume())
        gates[0].holding = True
        await asyncio.to_thread(own_redis.stop)
        await asyncio.to_thread(own_redis.start)
        try:
            async with asyncio.timeout(TIMEOUT * 2):
                await gates[0].arrived.wait()  # Redis has confirmed; the hub not heard it
            assert heard == []  # so it cannot have told anyone to re-read yet
            gates[0].release.set()

            async def resynced() -> bool:
                return heard == [RESYNC]

            await eventually(resynced)
        finally:
            gates[0].release.set()
            consumer.cancel()


# -- this process's own moves ------------------------------------------------------------------


async def test_a_move_of_this_process_reaches_its_waiters_at_once_and_once(hub: Running) -> None:
    scene = new_scene_id()
    async with hub.hub.waiter(channel(scene)) as first, hub.hub.waiter(channel(scene)) as second:
        hub.hub.moved(channel(scene), "NOT_REG 7.5")  # before Redis has published anything
        assert await next_of(first, PROMPTLY) == "NOT_REG 7.5"
        assert await next_of(second, PROMPTLY) == "NOT_REG 7.5"
        assert await hub.publish(scene, "NOT_REG 7.5") == 1  # its copy back from Redis
        assert await hub.publish(scene, "REG 8.5") == 1  # another process's move
        assert await next_of(first) == "REG 8.5"  # the copy was dropped
        assert await next_of(second) == "REG 8.5"


async def test_a_copy_from_redis_that_comes_first_makes_the_local_one_dropped(
    hub: Running,
) -> None:
    scene = new_scene_id()
    async with hub.hub.waiter(channel(scene)) as waiter:
        assert await hub.publish(scene, "NOT_REG 9.5") == 1
        assert await next_of(waiter) == "NOT_REG 9.5"
        hub.hub.moved(channel(scene), "NOT_REG 9.5")
        hub.hub.moved(channel(scene), "REG 10.5")
        assert await next_of(waiter, PROMPTLY) == "REG 10.5"


async def test_a_move_no_local_waiter_waits_on_is_nothing(hub: Running) -> None:
    hub.hub.moved(channel(new_scene_id()), "NOT_REG 11.5")  # nobody here: no error, no state
    assert hub.hub.waiter_count == 0
