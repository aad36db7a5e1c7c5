"""The de-duplication of WeChat's retries: the key an event claims once, and what it holds.

WeChat re-sends an unanswered event up to three times. The first delivery claims the event's
key in Redis, holding :data:`PENDING` until its reply is made, then the :class:`Reply`
itself (``R`` + content type + body), so that a retry, on any process, gets the same answer
byte for byte and changes nothing. A handler that changes state claims the key in the same
Redis script as its change (:class:`Once`), and answers :class:`Claimed` or
:class:`Retried`.
"""

from __future__ import annotations

from dataclasses import dataclass

from wxpush.wechat import replies

PENDING = b"P"  # the key is claimed, its reply is still being made
DONE = b"R"  # the key holds the reply


@dataclass(frozen=True, slots=True)
class Once:
    """An event's de-dup key, for a handler that claims it in the same Redis script as its
    own change: the first delivery takes it (holding ``marker`` until its reply is stored),
    a retry finds it taken."""

    key: str
    ttl: int
    marker: bytes = PENDING


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


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    content_type: str

    def encode(self) -> bytes:
        return DONE + self.content_type.encode() + b"\n" + self.body

    @classmethod
    def decode(cls, stored: bytes) -> Reply:
        content_type, _, body = stored[1:].partition(b"\n")
        return cls(body, content_type.decode())


SUCCESS = Reply(replies.SUCCESS, "text/plain; charset=utf-8")
XML = "application/xml; charset=utf-8"
