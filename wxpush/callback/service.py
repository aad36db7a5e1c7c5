"""What happens to a WeChat callback: check, decode, de-duplicate, dispatch, reply.

A login scan (``subscribe`` with ``qrscene_login:{id}``, ``SCAN`` with ``login:{id}``; ``link:``
for a link scene) goes to the :class:`ScanHandler`; everything else is forwarded to
``WXPUSH_FORWARD_URL`` when set.

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

import httpx
from redis.asyncio import Redis

from wxpush.callback.dedup import DONE, PENDING, SUCCESS, XML, Once, Reply, Retried
from wxpush.callback.forward import Inbound, forward, remaining
from wxpush.callback.scan import OnceScanHandler, Scan, ScanHandler, ignore_scan
from wxpush.config.accounts import Account
from wxpush.config.policy import CallbackPolicy
from wxpush.errors import BadRequest
from wxpush.infra.pipeline import HotCommands, hot_commands
from wxpush.wechat import replies, signature
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.envelope import encrypt_field
from wxpush.wechat.messages import Message, ScanEvent, SubscribeEvent, parse_message

logger = logging.getLogger(__name__)

LOGIN_PREFIX = "login:"
LINK_PREFIX = "link:"  # a link scene's QR code (SPEC §15): a logged-in person adds this WeChat


class CallbackService:
    """Handles the callbacks of every configured account."""

    def __init__(
        self,
        accounts: Mapping[str, Account],
        policy: CallbackPolicy,
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
        self._policy = policy
        self._redis = redis
        self._hot = hot_commands(redis, hot)
        self._http = http
        self._scan_handler = scan_handler
        self._once_handler = once_handler
        self._cryptos = {
            a.name: MessageCrypto(a.appid, a.aes_key, a.aes_key_previous)
            for a in accounts.values()
            if a.aes_key
        }

    def verify_url(self, account: Account, query: Mapping[str, str]) -> str:
        """GET: WeChat's URL check. Returns ``echostr`` when the signature holds."""
        sig, ts, nonce = (_param(query, n) for n in ("signature", "timestamp", "nonce"))
        echostr = _param(query, "echostr")
        signature.verify(sig, account.token, ts, nonce, window=self._policy.timestamp_window)
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
        q, window = inbound.query, self._policy.timestamp_window
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
        if scene is None and self._policy.forward_url is None:
            return SUCCESS  # no side effect and always the same answer: nothing to remember
        digest = hashlib.sha1(message.dedup_key.encode()).hexdigest()
        # A scan's key carries its scene's hash tag: on a cluster it is on the scene's slot,
        # where the scan's script claims it (SPEC §17)
        tagged = "" if scene is None else "{" + scene[0] + "}:"
        once = Once(f"wxpush:dedup:{tagged}{account.name}:{digest}", self._policy.dedup_seconds)
        if scene is not None and self._once_handler is not None:
            assert isinstance(message, SubscribeEvent | ScanEvent)
            scan = Scan(account, message.from_user, scene[0], message, link=scene[1])
            outcome = await self._once_handler(scan, once)
            if outcome is None:
                return SUCCESS  # unknown, expired or already resolved: nothing to do
            if isinstance(outcome, Retried):
                return await self._retry(account, once.key, inbound, outcome.stored)
            reply = self._scan_reply(account, message, outcome.text, encrypted)
        else:
            if not await self._redis.set(once.key, PENDING, nx=True, ex=once.ttl):
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
            if isinstance(stored, bytes) and stored[:1] == DONE:
                return Reply.decode(stored)
            if stored is None or remaining(inbound) < 0.1:
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
            scan = Scan(account, message.from_user, scene[0], message, link=scene[1])
            text = await self._scan_handler(scan)
            return self._scan_reply(account, message, text, encrypted)
        return await forward(self._http, self._policy.forward_url, inbound)


def _login_scene(message: Message) -> tuple[str, bool] | None:
    """The scene id a scan is of, and whether it is a link scene's."""
    if not isinstance(message, SubscribeEvent | ScanEvent) or message.scene is None:
        return None
    for prefix, link in ((LOGIN_PREFIX, False), (LINK_PREFIX, True)):
        if message.scene.startswith(prefix) and len(message.scene) > len(prefix):
            return message.scene[len(prefix) :], link
    return None


def _param(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise BadRequest(f"The query parameter {name!r} is missing.", code="missing_parameter")
    return value
