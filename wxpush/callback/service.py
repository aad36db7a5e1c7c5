"""What happens to a WeChat callback: check, decode, de-duplicate, dispatch, reply.

A login scan (``subscribe`` with ``qrscene_login:{id}``, ``SCAN`` with ``login:{id}``) goes to
the :class:`ScanHandler`; everything else is forwarded to ``WXPUSH_FORWARD_URL`` when set.

WeChat gives up on an answer after 5 s and re-sends the event up to three times. So the whole
answer is bounded by :data:`DEADLINE` (forwarding gets what is left of it), and every event is
claimed once across processes in Redis: the first delivery does the work and stores its
reply, a retry gets that same reply back and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
from redis.asyncio import Redis

from wxpush.clients import outbound
from wxpush.config.settings import Account, Settings
from wxpush.errors import BadRequest
from wxpush.infra.pipeline import HotCommands, hot_commands
from wxpush.wechat import replies, signature
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.envelope import encrypt_field
from wxpush.wechat.messages import Message, ScanEvent, SubscribeEvent, parse_message

logger = logging.getLogger(__name__)

DEADLINE = 4.0  # seconds from receipt to answer; WeChat gives up at 5 s, network included
LOGIN_PREFIX = "login:"
_PENDING = b"P"
_DONE = b"R"


@dataclass(frozen=True, slots=True)
class Scan:
    """A login QR code was scanned (and the account followed, for ``subscribe``)."""

    account: Account
    openid: str
    scene_id: str
    event: SubscribeEvent | ScanEvent


class ScanHandler(Protocol):
    """Resolves a login scan; returns the passive reply text, or ``None`` for ``success``."""

    async def __call__(self, scan: Scan) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Once:
    """An event's de-dup key, for a handler that claims it in the same Redis script as its
    own change: the first delivery takes it (holding ``marker`` until its reply is stored),
    a retry finds it taken."""

    key: str
    ttl: int
    marker: bytes = _PENDING


@dataclass(frozen=True, slots=True)
class Claimed:
    """The scan changed something and claimed its key; ``text`` is the passive reply
    (``None`` for ``success``)."""

    text: str | None


@dataclass(frozen=True, slots=True)
class Retried:
    """The key was taken: a retry of an event already handled. ``stored`` is what the key
    holds (the first delivery's reply, or its marker while that is still being made)."""

    stored: bytes


class OnceScanHandler(Protocol):
    """Resolves a login scan and claims its :class:`Once` key atomically with the change, so
    that a scan costs one Redis round trip. Returns ``None`` when the scan could change
    nothing (an unknown, expired or resolved scene): nothing is claimed or stored."""

    async def __call__(self, scan: Scan, once: Once) -> Claimed | Retried | None: ...


async def ignore_scan(scan: Scan) -> str | None:
    """The default handler until the login core plugs in: answers ``success``."""
    return None


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    content_type: str

    def encode(self) -> bytes:
        return _DONE + self.content_type.encode() + b"\n" + self.body

    @classmethod
    def decode(cls, stored: bytes) -> Reply:
        content_type, _, body = stored[1:].partition(b"\n")
        return cls(body, content_type.decode())


SUCCESS = Reply(replies.SUCCESS, "text/plain; charset=utf-8")
XML = "application/xml; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One POSTed callback, as received."""

    query: Mapping[str, str]
    raw_query: str
    body: bytes
    received: float  # time.monotonic() at receipt


class CallbackService:
    """Handles the callbacks of every configured account."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: Redis,
        http: httpx.AsyncClient,
        hot: HotCommands | None = None,
        scan_handler: ScanHandler = ignore_scan,
        once_handler: OnceScanHandler | None = None,
    ) -> None:
        """Login scans go to ``once_handler`` when given (the login flow: it claims the
        de-dup key itself), else to ``scan_handler`` after a claim of our own. ``hot``
        (default ``redis``) carries the stored replies."""
        self._settings = settings
        self._redis = redis
        self._hot = hot_commands(redis, hot)
        self._http = http
        self._scan_handler = scan_handler
        self._once_handler = once_handler
        self._cryptos = {
            a.name: MessageCrypto(a.appid, a.aes_key, a.aes_key_previous)
            for a in settings.accounts.values()
            if a.aes_key
        }

    def verify_url(self, account: Account, query: Mapping[str, str]) -> str:
        """GET: WeChat's URL check. Returns ``echostr`` when the signature holds."""
        sig, ts, nonce = (_param(query, n) for n in ("signature", "timestamp", "nonce"))
        echostr = _param(query, "echostr")
        signature.verify(sig, account.token, ts, nonce, window=self._settings.timestamp_window)
        return echostr

    async def handle(self, account: Account, inbound: Inbound) -> Reply:
        """POST: verify, decode, de-duplicate and answer one callback."""
        message, encrypted = self._decode(account, inbound)
        return await self._once(account, message, inbound, encrypted)

    # -- decoding ---------------------------------------------------------------------------

    def _decode(self, account: Account, inbound: Inbound) -> tuple[Message, bool]:
        """The message, once its signature holds: nothing of a body is given to the XML
        parser before then. A plaintext callback's signature covers only the query (a
        signed query seen once can carry any body until its timestamp goes stale), so its
        body meets the hardened parser alone; a safe-mode body is checked against
        ``msg_signature`` first, its ``Encrypt`` read by a grammar that cannot open anything
        (:mod:`wxpush.wechat.envelope`), and only the decrypted payload is parsed."""
        q, window = inbound.query, self._settings.timestamp_window
        ts, nonce = _param(q, "timestamp"), _param(q, "nonce")
        if q.get("encrypt_type", "raw") != "aes":
            signature.verify(_param(q, "signature"), account.token, ts, nonce, window=window)
            return parse_message(inbound.body), False
        crypto = self._cryptos.get(account.name)
        if crypto is None:
            raise BadRequest(
                "This account has no EncodingAESKey configured, so safe mode cannot be used.",
                code="aes_key_missing",
            )
        msg_sig = _param(q, "msg_signature")
        encrypt = encrypt_field(inbound.body)
        signature.verify(msg_sig, account.token, ts, nonce, encrypt, window=window)
        return parse_message(crypto.decrypt(encrypt)), True

    def _scan_reply(
        self, account: Account, message: Message, text: str | None, encrypted: bool
    ) -> Reply:
        """A passive text reply, in the mode the callback came in (replies use the current
        key); ``success`` without ``text``."""
        if text is None:
            return SUCCESS
        body = replies.text_reply(message.from_user, message.to_user, text)
        if encrypted:
            body = replies.encrypted_envelope(
                body,
                self._cryptos[account.name],
                account.token,
                timestamp=str(int(time.time())),
                nonce=str(secrets.randbelow(10**10)),
            )
        return Reply(body, XML)

    # -- de-duplication ---------------------------------------------------------------------

    async def _once(
        self, account: Account, message: Message, inbound: Inbound, encrypted: bool
    ) -> Reply:
        scene = _login_scene(message)
        if scene is None and self._settings.forward_url is None:
            return SUCCESS  # no side effect and always the same answer: nothing to remember
        digest = hashlib.sha1(message.dedup_key.encode()).hexdigest()
        once = Once(f"wxpush:dedup:{account.name}:{digest}", self._settings.dedup_seconds)
        if scene is not None and self._once_handler is not None:
            assert isinstance(message, SubscribeEvent | ScanEvent)
            scan = Scan(account, message.from_user, scene, message)
            outcome = await self._once_handler(scan, once)
            if outcome is None:
                return SUCCESS  # unknown, expired or already resolved: nothing to do
            if isinstance(outcome, Retried):
                return await self._retry(account, once.key, inbound, outcome.stored)
            reply = self._scan_reply(account, message, outcome.text, encrypted)
        else:
            if not await self._redis.set(once.key, _PENDING, nx=True, ex=once.ttl):
                return await self._retry(account, once.key, inbound, None)
            try:
                reply = await self._dispatch(account, message, inbound, encrypted)
            except BaseException:
                await self._redis.delete(once.key)  # let WeChat's retry try again
                raise
        await self._hot.set(once.key, reply.encode(), ex=once.ttl)
        return reply

    async def _retry(
        self, account: Account, key: str, inbound: Inbound, stored: bytes | None
    ) -> Reply:
        """A retry: wait (within the deadline) for the first delivery's reply and repeat it
        (``stored``: what the claim already read, if it did)."""
        logger.info("callback retry de-duplicated (account %s)", account.name)
        while True:
            if stored is None:
                stored = await self._hot.get(key)
            if isinstance(stored, bytes) and stored[:1] == _DONE:
                return Reply.decode(stored)
            if stored is None or _remaining(inbound) < 0.1:
                return SUCCESS
            await asyncio.sleep(0.05)
            stored = None  # look again

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(
        self, account: Account, message: Message, inbound: Inbound, encrypted: bool
    ) -> Reply:
        scene = _login_scene(message)
        if scene is not None:
            assert isinstance(message, SubscribeEvent | ScanEvent)
            text = await self._scan_handler(Scan(account, message.from_user, scene, message))
            return self._scan_reply(account, message, text, encrypted)
        return await self._forward(inbound)

    async def _forward(self, inbound: Inbound) -> Reply:
        url = self._settings.forward_url
        if url is None:
            return SUCCESS
        target = f"{url}?{inbound.raw_query}" if inbound.raw_query else url
        timeout = _remaining(inbound)
        try:
            async with asyncio.timeout(timeout):
                answer = await outbound.post(
                    self._http,
                    target,
                    content=inbound.body,
                    headers={"Content-Type": "text/xml; charset=utf-8"},
                    timeout=timeout,
                )
        except (TimeoutError, httpx.HTTPError) as exc:
            logger.warning("forward to WXPUSH_FORWARD_URL failed: %s", type(exc).__name__)
            return SUCCESS
        if not answer.is_success:
            logger.warning("forward to WXPUSH_FORWARD_URL answered HTTP %d", answer.status_code)
            return SUCCESS
        content_type = answer.headers.get("content-type", "text/plain; charset=utf-8")
        return Reply(answer.content or replies.SUCCESS, content_type)


def _login_scene(message: Message) -> str | None:
    if not isinstance(message, SubscribeEvent | ScanEvent):
        return None
    scene = message.scene
    if scene is None or not scene.startswith(LOGIN_PREFIX):
        return None
    return scene[len(LOGIN_PREFIX) :] or None


def _remaining(inbound: Inbound) -> float:
    return max(0.0, DEADLINE - (time.monotonic() - inbound.received))


def _param(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise BadRequest(f"The query parameter {name!r} is missing.", code="missing_parameter")
    return value
