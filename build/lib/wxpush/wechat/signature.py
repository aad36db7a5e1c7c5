"""WeChat's sorted-SHA1 signatures.

``signature = sha1("".join(sorted([token, timestamp, nonce])))`` signs callbacks and URL
verification; safe mode adds the ``Encrypt`` text to the list (``msg_signature``). Checks
compare in constant time and refuse timestamps outside a window, so a captured request cannot
be replayed hours later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from wxpush.wechat.errors import SignatureError, StaleTimestampError


def sign(*parts: str) -> str:
    """Return WeChat's signature of ``parts``: SHA-1 hex of the sorted, joined strings."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def check_timestamp(timestamp: str, *, window: int, now: float | None = None) -> None:
    """Raise :class:`StaleTimestampError` unless ``timestamp`` is within ``window`` s of now."""
    try:
        stamp = int(timestamp)
    except ValueError as exc:
        raise StaleTimestampError("timestamp is not a number") from exc
    current = time.time() if now is None else now
    if abs(current - stamp) > window:
        raise StaleTimestampError("timestamp outside the accepted window")


def verify(
    signature: str,
    token: str,
    timestamp: str,
    nonce: str,
    *extra: str,
    window: int | None = 300,
    now: float | None = None,
) -> None:
    """Check a signature made with ``token`` over ``timestamp``, ``nonce`` and ``extra``.

    Args:
        signature: the hex digest WeChat sent (``signature`` or ``msg_signature``).
        extra: further signed parts (the ``Encrypt`` text in safe mode).
        window: accepted clock difference in seconds; ``None`` skips the check (for
            known-answer vectors whose timestamps are years old).
        now: the current time, injectable for tests.

    Raises:
        SignatureError: the signature does not match.
        StaleTimestampError: it matches, but the timestamp is outside the window.
    """
    expected = sign(token, timestamp, nonce, *extra)
    if not signature.isascii() or not hmac.compare_digest(expected, signature.lower()):
        raise SignatureError("signature does not match")
    if window is not None:
        check_timestamp(timestamp, window=window, now=now)
