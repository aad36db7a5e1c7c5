"""A login scan, as the callback hands it to the login core, and the handlers that take it.

The callback layer knows that an event is a scan of a login QR code; what the scan means
(whose scene, which person) is the login core's. It plugs in as an :class:`OnceScanHandler`
(claiming the event's de-dup key in its own Redis script), or, for tests of the callback
layer alone, as a plain :class:`ScanHandler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wxpush.callback.dedup import Claimed, Once, Retried
from wxpush.config.accounts import Account
from wxpush.wechat.messages import ScanEvent, SubscribeEvent


@dataclass(frozen=True, slots=True)
class Scan:
    """A login QR code was scanned (and the account followed, for ``subscribe``)."""

    account: Account
    openid: str
    scene_id: str
    event: SubscribeEvent | ScanEvent
    link: bool = False  # a link scene's QR code (``link:{id}``), not a login's


class ScanHandler(Protocol):
    """Resolves a login scan; returns the passive reply text, or ``None`` for ``success``."""

    async def __call__(self, scan: Scan) -> str | None: ...


class OnceScanHandler(Protocol):
    """Resolves a login scan and claims its :class:`Once` key atomically with the change, so
    that a scan costs one Redis round trip. Returns ``None`` when the scan could change
    nothing (an unknown, expired or resolved scene): nothing is claimed or stored."""

    async def __call__(self, scan: Scan, once: Once) -> Claimed | Retried | None: ...


async def ignore_scan(scan: Scan) -> str | None:
    """The default handler until the login core plugs in: answers ``success``."""
    return None
