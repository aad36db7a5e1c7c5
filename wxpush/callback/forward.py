"""Forwarding: every event that is not a login scan goes to ``WXPUSH_FORWARD_URL``.

The receiver gets WeChat's query string and body as they came (so it can check WeChat's
signature itself), and its answer is relayed to WeChat, within what is left of the
callback's :data:`DEADLINE`; a receiver that fails or hangs gets the person ``success``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from wxpush.callback.dedup import SUCCESS, Reply
from wxpush.clients import outbound
from wxpush.wechat import replies

logger = logging.getLogger(__name__)

DEADLINE = 4.0  # seconds from receipt to answer; WeChat gives up at 5 s, network included


@dataclass(frozen=True, slots=True)
class Inbound:
    """One POSTed callback, as received."""

    query: Mapping[str, str]
    raw_query: str
    body: bytes
    received: float  # time.monotonic() at receipt


def remaining(inbound: Inbound) -> float:
    """Seconds left of the callback's :data:`DEADLINE`."""
    return max(0.0, DEADLINE - (time.monotonic() - inbound.received))


async def forward(http: httpx.AsyncClient, url: str | None, inbound: Inbound) -> Reply:
    """POST ``inbound`` to ``url`` and relay the answer (``success`` on any failure)."""
    if url is None:
        return SUCCESS
    target = f"{url}?{inbound.raw_query}" if inbound.raw_query else url
    timeout = remaining(inbound)
    try:
        async with asyncio.timeout(timeout):
            answer = await outbound.post(
                http,
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
