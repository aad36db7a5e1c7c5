"""Sorted-SHA1 signatures: WeChat's vectors, constant-time refusal, the timestamp window."""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.wechat import load_vectors
from wxpush.wechat.errors import SignatureError, StaleTimestampError
from wxpush.wechat.signature import check_timestamp, sign, verify

VECTORS = load_vectors()
PLAIN = VECTORS["signature_plaintext_mode"]
SAFE = VECTORS["safe_mode_decrypt"]

TOKEN = "spamtest"
NONCE = "1320562132"
NOW = 1_800_000_000


def test_plaintext_mode_vector_verifies() -> None:
    verify(PLAIN["signature"], PLAIN["token"], PLAIN["timestamp"], PLAIN["nonce"], window=None)


def test_plaintext_mode_vector_sign_matches() -> None:
    assert sign(PLAIN["token"], PLAIN["timestamp"], PLAIN["nonce"]) == PLAIN["signature"]


def test_sign_is_sha1_of_sorted_parts() -> None:
    parts = ("b", "c", "a")
    assert sign(*parts) == hashlib.sha1(b"abc").hexdigest()


def test_safe_mode_msg_signature_vector_verifies() -> None:
    verify(
        SAFE["msg_signature"],
        SAFE["token"],
        SAFE["timestamp"],
        SAFE["nonce"],
        SAFE["encrypt"],
        window=None,
    )


def test_safe_mode_vector_needs_the_encrypt_part() -> None:
    with pytest.raises(SignatureError) as info:
        verify(SAFE["msg_signature"], SAFE["token"], SAFE["timestamp"], SAFE["nonce"], window=None)
    assert type(info.value) is SignatureError


def test_vector_is_stale_under_the_default_window() -> None:
    # The vector was signed in 2024: with the real clock and the default window it is a replay.
    with pytest.raises(StaleTimestampError):
        verify(PLAIN["signature"], PLAIN["token"], PLAIN["timestamp"], PLAIN["nonce"])


def test_uppercase_hex_signature_verifies() -> None:
    verify(
        PLAIN["signature"].upper(), PLAIN["token"], PLAIN["timestamp"], PLAIN["nonce"], window=None
    )


@pytest.mark.parametrize(
    "signature",
    [
        "0" * 40,
        "",
        "899cf89e464efb63f54ddac96b0a0a235f53aa79",  # last digit changed
        "899cf89e464efb63f54ddac96b0a0a235f53aa7",  # one digit short
        "899cf89e464efb63f54ddac96b0a0a235f53aa78 ",
    ],
)
def test_wrong_signature_raises(signature: str) -> None:
    with pytest.raises(SignatureError) as info:
        verify(signature, PLAIN["token"], PLAIN["timestamp"], PLAIN["nonce"], window=None)
    assert type(info.value) is SignatureError


def test_wrong_token_raises() -> None:
    with pytest.raises(SignatureError) as info:
        verify(PLAIN["signature"], "BBBBB", PLAIN["timestamp"], PLAIN["nonce"], window=None)
    assert type(info.value) is SignatureError


@pytest.mark.parametrize(
    "signature", ["é" * 40, "899cf89e464efb63f54ddac96b0a0a235f53aa7８", "签名"]
)
def test_non_ascii_signature_raises_signature_error(signature: str) -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str; that must not escape as a 500.
    with pytest.raises(SignatureError) as info:
        verify(signature, PLAIN["token"], PLAIN["timestamp"], PLAIN["nonce"], window=None)
    assert type(info.value) is SignatureError


def _signed(timestamp: str) -> str:
    return sign(TOKEN, timestamp, NONCE)


@pytest.mark.parametrize("offset", [301, -301, 3600, -86400])
def test_stale_timestamp_raises(offset: int) -> None:
    timestamp = str(NOW - offset)
    with pytest.raises(StaleTimestampError):
        verify(_signed(timestamp), TOKEN, timestamp, NONCE, window=300, now=NOW)


@pytest.mark.parametrize("offset", [0, 1, -1, 299, 300, -300])
def test_timestamp_within_window_passes(offset: int) -> None:
    timestamp = str(NOW - offset)
    verify(_signed(timestamp), TOKEN, timestamp, NONCE, window=300, now=NOW)


def test_default_window_uses_the_clock() -> None:
    timestamp = str(int(time.time()))
    verify(_signed(timestamp), TOKEN, timestamp, NONCE)


def test_signature_is_checked_before_the_timestamp() -> None:
    # A forged request learns nothing about the window: a bad signature is a plain SignatureError.
    timestamp = str(NOW - 3600)
    with pytest.raises(SignatureError) as info:
        verify("0" * 40, TOKEN, timestamp, NONCE, window=300, now=NOW)
    assert type(info.value) is SignatureError


@pytest.mark.parametrize("timestamp", ["", "abc", "1.5e9", "0x6b49d200", "17140370 59"])
def test_non_numeric_timestamp_raises(timestamp: str) -> None:
    with pytest.raises(StaleTimestampError):
        verify(_signed(timestamp), TOKEN, timestamp, NONCE, window=300, now=NOW)


def test_check_timestamp_directly() -> None:
    check_timestamp(str(NOW), window=0, now=NOW)
    with pytest.raises(StaleTimestampError):
        check_timestamp(str(NOW + 1), window=0, now=NOW)
    with pytest.raises(StaleTimestampError):
        check_timestamp("soon", window=300, now=NOW)
