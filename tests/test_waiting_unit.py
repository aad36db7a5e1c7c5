"""The waiting logic (watch) alone: a real Waiter fed by the test, and a stand-in for the flow.

What a browser must see is the first state after subscribing, then each change once and in
order, and nothing after a final one; a RESYNC re-reads, a read that fails while Redis is away
is tried again, and expiry is noticed by a timer of the waiter's own. The end-to-end tests
cannot choose when a message arrives relative to a read; here the test does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.util import TIMEOUT
from wxpush.errors import Unavailable
from wxpush.login import waiting as watching
from wxpush.login.flow import LoginFlow
from wxpush.login.waiting import EXPIRY, watch
from wxpush.realtime.hub import RESYNC, Waiter

pytestmark = pytest.mark.uvloop  # on uvloop too, which `wxpush serve` runs

SCENE = "S" * 22
LOOP = {"status": "LOOP", "code": 2}
NOT_REG = {"status": "NOT_REG", "code": 4}
REG = {"status": "REG", "code": 3, "access_token": "a", "refresh_token": "r"}
CLAIMED = {"status": "REG", "code": 3, "claimed": True}
EXPIRED = {"status": "EXPIRED", "code": 1}


class Flow:
    """LoginFlow's two reads. Each answers the scene's state as the test sets it: the next of
    ``script`` when there is one, else ``now``; EXPIRED from ``gone_at`` on (the key's own
    expiry in Redis). Every read is recorded with what the waiter had heard (``"first"`` for
    the first read)."""

    def __init__(self, now: dict[str, Any], *, expires_at: float | None = None) -> None:
        self.now = now
        self.script: list[dict[str, Any]] = []
        self.expires_at = time.time() + 300 if expires_at is None else expires_at
        self.gone_at = self.expires_at
        self.reads: list[str | None] = []
        self.failures: list[Exception] = []

    def _current(self) -> dict[str, Any]:
        if time.time() >= self.gone_at:
            return dict(EXPIRED)
        return dict(self.script.pop(0) if self.script else self.now)

    async def first_state(self, scene_id: str) -> tuple[dict[str, Any], float]:
        assert scene_id == SCENE
        self.reads.append("first")
        return self._current(), self.expires_at

    async def state(self, scene_id: str, *, heard: str | None = None) -> dict[str, Any]:
        assert scene_id == SCENE
        self.reads.append(heard)
        if self.failures:
            raise self.failures.pop(0)
        return self._current()


class Recording(Waiter):
    """A waiter that also tells when its own expiry timer spoke."""

    __slots__ = ("expiry",)

    def __init__(self) -> None:
        super().__init__(SCENE, 16)
        self.expiry = asyncio.Event()

    def offer(self, message: str) -> None:
        super().offer(message)
        if message == EXPIRY:
            self.expiry.set()


Watched = AsyncGenerator[tuple[dict[str, Any], float | None], None]


@asynccontextmanager
async def watching_with(flow: Flow, waiter: Waiter) -> AsyncIterator[Watched]:
    async with aclosing(watch(cast(LoginFlow, flow), SCENE, waiter)) as states:
        yield states


async def next_state(states: Watched) -> tuple[dict[str, Any], float | None]:
    async with asyncio.timeout(TIMEOUT):
        return await anext(states)


async def ended(states: Watched) -> bool:
    """The watch is over (it ends by itself, without waiting on the waiter)."""
    async with asyncio.timeout(TIMEOUT):
        try:
            await anext(states)
        except StopAsyncIteration:
            return True
    return False


# -- the first state -------------------------------------------------------------------------


async def test_the_first_state_is_read_once_subscribed() -> None:
    flow, waiter = Flow(LOOP), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        assert flow.reads == ["first"]
        waiter.stop()  # the browser left
        assert await ended(states)


async def test_a_change_between_subscribe_and_read_is_seen_once() -> None:
    """Published after the subscription but before the first read: the read already sees it,
    and the message that follows changes nothing, so it is not sent twice."""
    flow, waiter = Flow(NOT_REG), Waiter(SCENE, 16)
    waiter.offer("NOT_REG 1.5")
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (NOT_REG, None)
        flow.script = [NOT_REG, REG]  # what the reads after the two messages find
        waiter.offer("REG 2.5")
        assert await next_state(states) == (REG, 2.5)
        assert flow.reads == ["first", "NOT_REG", "REG"]
        assert await ended(states)


@pytest.mark.parametrize("final", [REG, CLAIMED, EXPIRED])
async def test_a_final_first_state_ends_the_watch(final: dict[str, Any]) -> None:
    flow, waiter = Flow(final), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (final, None)
        assert await ended(states)
    assert flow.reads == ["first"]


# -- changes -------------------------------------------------------------------------------


async def test_each_change_in_order_then_the_final_one_ends_it() -> None:
    flow, waiter = Flow(LOOP), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = NOT_REG
        waiter.offer("NOT_REG 10.25")
        assert await next_state(states) == (NOT_REG, 10.25)
        flow.now = REG
        waiter.offer("REG 11.5")
        assert await next_state(states) == (REG, 11.5)
        assert await ended(states)
    assert flow.reads == ["first", "NOT_REG", "REG"]


async def test_a_message_that_changes_nothing_sends_nothing() -> None:
    flow, waiter = Flow(LOOP), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.script = [LOOP, NOT_REG, NOT_REG, REG]  # what each read of the four finds
        waiter.offer(RESYNC)  # nothing changed meanwhile
        waiter.offer("NOT_REG 3.0")
        waiter.offer("NOT_REG 3.0")  # the same news twice
        waiter.offer("REG 4.0")
        assert await next_state(states) == (NOT_REG, 3.0)  # the RESYNC's read sent nothing
        assert await next_state(states) == (REG, 4.0)  # and the second NOT_REG nothing either
    assert flow.reads == ["first", None, "NOT_REG", "NOT_REG", "REG"]


async def test_a_claim_seen_elsewhere_is_a_change() -> None:
    """A REG that another reader claimed (no tokens here) is sent as such, and ends it."""
    flow, waiter = Flow(LOOP), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = CLAIMED
        waiter.offer("REG 5.0")
        assert await next_state(states) == (CLAIMED, 5.0)
        assert await ended(states)


# -- resync and Redis away -----------------------------------------------------------------


async def test_a_resync_re_reads_and_sends_what_changed_meanwhile() -> None:
    flow, waiter = Flow(LOOP), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = NOT_REG  # published while the hub was reconnecting: never heard
        waiter.offer(RESYNC)
        assert await next_state(states) == (NOT_REG, None)  # noticed, not pushed: no time
    assert flow.reads == ["first", None]


async def test_a_read_that_fails_while_redis_is_away_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watching, "RETRY_READ", 0.01)
    flow, waiter = Flow(LOOP), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = REG
        flow.failures = [RedisConnectionError("refused"), Unavailable("loading"), OSError()]
        waiter.offer("REG 6.0")  # the claim's read fails three times: the browser waits on
        assert await next_state(states) == (REG, None)
        assert await ended(states)
    assert flow.reads == ["first", "REG", None, None, None]


async def test_an_overflowed_waiter_ends_the_watch_with_overflow_error() -> None:
    flow, waiter = Flow(LOOP), Waiter(SCENE, 2)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        for n in range(3):
            waiter.offer(f"NOT_REG {n}")
        with pytest.raises(OverflowError):
            await next_state(states)


# -- expiry -----------------------------------------------------------------------------------


async def test_expiry_is_noticed_by_the_waiters_own_timer() -> None:
    flow, waiter = Flow(LOOP, expires_at=time.time() + 0.2), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        assert await next_state(states) == (EXPIRED, None)  # nothing was published
        assert await ended(states)
    assert flow.reads == ["first", None]


async def test_expiry_read_before_redis_expired_the_key_looks_again() -> None:
    """Redis expires keys on its own clock: a re-read that still finds LOOP looks again
    shortly, and sends nothing meanwhile."""
    flow = Flow(LOOP, expires_at=time.time() + 0.1)
    flow.gone_at = flow.expires_at + 0.2  # after the first EXPIRY re-read, before the second
    waiter = Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        assert await next_state(states) == (EXPIRED, None)
    assert flow.reads == ["first", None, None]


async def test_a_scene_past_its_time_is_expired_at_once() -> None:
    flow, waiter = Flow(LOOP, expires_at=time.time() - 1), Waiter(SCENE, 16)
    flow.gone_at = time.time() + 0.05
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)  # Redis had not dropped it yet
        assert await next_state(states) == (EXPIRED, None)


async def test_the_qr_codes_time_running_out_while_not_reg_sends_nothing() -> None:
    """A NOT_REG scene outlives its QR code (the person is typing a phone number)."""
    flow = Flow(LOOP, expires_at=time.time() + 0.1)
    flow.gone_at = time.time() + 3600
    waiter = Recording()
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = NOT_REG
        waiter.offer("NOT_REG 1.0")
        assert await next_state(states) == (NOT_REG, 1.0)
        async with asyncio.timeout(TIMEOUT):
            await waiter.expiry.wait()  # the QR code's time is up
        flow.script = [NOT_REG, REG]  # what the expiry's read, then the next one, find
        waiter.offer("REG 2.0")
        assert await next_state(states) == (REG, 2.0)  # the EXPIRY re-read sent nothing
    assert flow.reads == ["first", "NOT_REG", None, "REG"]


@pytest.mark.xfail(
    strict=True,
    raises=TimeoutError,
    reason="a NOT_REG scene lives on after its QR code (at least RESULT_GRACE s), but the "
    "waiter's only timer is the QR code's: when the scene itself expires no one re-reads, "
    "and the socket never hears EXPIRED",
)
async def test_a_not_reg_scene_that_expires_is_pushed_expired() -> None:
    flow = Flow(LOOP, expires_at=time.time() + 0.1)
    flow.gone_at = time.time() + 0.5  # the grace Redis gave the NOT_REG scene runs out
    waiter = Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = NOT_REG
        waiter.offer("NOT_REG 1.0")
        assert await next_state(states) == (NOT_REG, 1.0)
        assert await next_state(states) == (EXPIRED, None)


async def test_an_expiry_timer_never_outlives_its_watch() -> None:
    flow, waiter = Flow(LOOP, expires_at=time.time() + 0.1), Waiter(SCENE, 16)
    async with watching_with(flow, waiter) as states:
        assert await next_state(states) == (LOOP, None)
        flow.now = NOT_REG
        waiter.offer("NOT_REG 1.0")
        assert await next_state(states) == (NOT_REG, 1.0)  # its timer is set by now
    # The watch is closed (the browser left) before the QR code's time: its timer went too.
    # Timers fire in the order of their deadlines, so one set past that time fires after it.
    later: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.3, later.set_result, None)
    async with asyncio.timeout(TIMEOUT):
        await later
    waiter.offer("marker")
    assert await waiter.next() == "marker"  # no EXPIRY was offered before it


async def test_timers_ring_in_order_and_cancelled_ones_never() -> None:
    """The waiters' timers share one loop timer: they ring in order, a cancelled one never
    rings, and the many cancelled by sockets that left early (the heap rebuilt) take no
    live one with them."""
    from wxpush.login.waiting import _call_later  # the waiters' timers, alone

    waiters = [Waiter(f"c{i}", 4) for i in range(3)]
    late = _call_later(0.06, waiters[0], "late")
    soon = _call_later(0.02, waiters[1], "soon")
    gone = [_call_later(0.04, waiters[2], "gone") for _ in range(500)]
    for alarm in gone:
        alarm.cancel()
    rang: list[str] = []

    async def first(waiter: Waiter) -> None:
        rang.append(str(await waiter.next()))

    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(first(waiters[0]), first(waiters[1]))
    assert rang == ["soon", "late"]
    waiters[2].stop()
    assert await waiters[2].next() is None  # nothing rang for the cancelled ones
    assert late and soon
