"""AES message crypto against WeChat's vector and an independent implementation.

The reference below is written on the ``cryptography`` package, a different AES library from
the pycryptodome the code uses, with the framing and the 32-byte PKCS#7 padding done by hand,
so a shared misunderstanding cannot make both sides agree.
"""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.wechat import load_vectors
from wxpush.wechat.crypto import MessageCrypto, decode_aes_key
from wxpush.wechat.errors import AppIdMismatchError, CiphertextError

VECTOR = load_vectors()["safe_mode_decrypt"]
APPID = VECTOR["appid"]
AES_KEY = VECTOR["encoding_aes_key"]
XML = VECTOR["xml"].encode()
PREFIX = VECTOR["random_prefix"].encode("ascii")  # the sample draws 16 random ASCII characters
OLD_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"


# --- the independent reference ------------------------------------------------------------


def raw_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def ref_cbc(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def ref_frame(
    xml: bytes, appid: str, *, prefix: bytes = PREFIX, length: int | None = None
) -> bytes:
    """16 random | 4-byte big-endian length | xml | appid (unpadded)."""
    size = len(xml) if length is None else length
    return prefix + size.to_bytes(4, "big") + xml + appid.encode()


def ref_pad(body: bytes) -> bytes:
    n = 32 - len(body) % 32
    return body + bytes([n]) * n


def ref_encrypt_raw(plain: bytes, encoding_aes_key: str = AES_KEY) -> str:
    """Encrypt ``plain`` exactly as given (it must already be a multiple of 32 bytes)."""
    assert len(plain) % 32 == 0
    return base64.b64encode(ref_cbc(raw_key(encoding_aes_key), plain, decrypt=False)).decode()


def ref_encrypt(xml: bytes, appid: str = APPID, encoding_aes_key: str = AES_KEY) -> str:
    return ref_encrypt_raw(ref_pad(ref_frame(xml, appid)), encoding_aes_key)


def ref_decrypt_raw(encrypted: str, encoding_aes_key: str = AES_KEY) -> bytes:
    """The padded plaintext, nothing checked."""
    return ref_cbc(raw_key(encoding_aes_key), base64.b64decode(encrypted), decrypt=True)


def ref_decrypt(encrypted: str, appid: str = APPID, encoding_aes_key: str = AES_KEY) -> bytes:
    plain = ref_decrypt_raw(encrypted, encoding_aes_key)
    n = plain[-1]
    assert 1 <= n <= 32 and plain[-n:] == bytes([n]) * n
    body = plain[:-n]
    size = int.from_bytes(body[16:20], "big")
    assert body[20 + size :] == appid.encode()
    return body[20 : 20 + size]


@pytest.fixture
def crypto() -> MessageCrypto:
    return MessageCrypto(APPID, AES_KEY)


# --- WeChat's known-answer vector ---------------------------------------------------------


def test_vector_decrypts_to_the_exact_xml(crypto: MessageCrypto) -> None:
    assert crypto.decrypt(VECTOR["encrypt"]) == XML


def test_vector_decrypts_from_bytes_too(crypto: MessageCrypto) -> None:
    assert crypto.decrypt(VECTOR["encrypt"].encode()) == XML


def test_vector_encrypt_reproduces_the_ciphertext(crypto: MessageCrypto) -> None:
    assert crypto.encrypt(XML, random_prefix=PREFIX) == VECTOR["encrypt"]


def test_vector_layout_prefix_and_padding() -> None:
    plain = ref_decrypt_raw(VECTOR["encrypt"])
    pad = VECTOR["pkcs7_pad"]
    assert plain[:16] == PREFIX
    assert int.from_bytes(plain[16:20], "big") == len(XML)
    assert plain[-1] == pad
    assert plain[-pad:] == bytes([pad]) * pad
    assert plain[-pad - len(APPID) : -pad] == APPID.encode()


def test_vector_reference_agrees() -> None:
    # The reference implementation itself reproduces the vector, so it can be trusted below.
    assert ref_decrypt(VECTOR["encrypt"]) == XML
    assert ref_encrypt(XML) == VECTOR["encrypt"]


def test_encrypt_draws_a_fresh_prefix(crypto: MessageCrypto) -> None:
    first, second = crypto.encrypt(XML), crypto.encrypt(XML)
    assert first != second
    assert crypto.decrypt(first) == crypto.decrypt(second) == XML


def test_encrypt_rejects_a_prefix_of_the_wrong_size(crypto: MessageCrypto) -> None:
    with pytest.raises(ValueError) as info:
        crypto.encrypt(XML, random_prefix=b"short")
    assert type(info.value) is ValueError


# --- 32-byte PKCS#7: every pad value 1..32 ------------------------------------------------


def xml_with_pad(pad: int) -> bytes:
    """A message whose frame needs exactly ``pad`` bytes of padding."""
    head, tail = b"<xml><Content><![CDATA[", b"]]></Content></xml>"
    fixed = 16 + 4 + len(head) + len(tail) + len(APPID)
    filler = (-(fixed + pad)) % 32 + 32  # at least 32 bytes, so every block count is exercised
    xml = head + b"a" * filler + tail
    assert (len(ref_frame(xml, APPID)) + pad) % 32 == 0
    return xml


@pytest.mark.parametrize("pad", range(1, 33))
def test_every_pad_value_round_trips(crypto: MessageCrypto, pad: int) -> None:
    xml = xml_with_pad(pad)
    ours = crypto.encrypt(xml)
    plain = ref_decrypt_raw(ours)
    assert plain[-1] == pad  # the padding really is ``pad`` (checked by the other library)
    assert plain[-pad:] == bytes([pad]) * pad
    assert crypto.decrypt(ours) == xml
    assert ref_decrypt(ours) == xml  # ours → reference
    theirs = ref_encrypt(xml)
    assert ref_decrypt_raw(theirs)[-1] == pad
    assert crypto.decrypt(theirs) == xml  # reference → ours


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 500, 4096, 65_536])
def test_sizes_round_trip_both_ways(crypto: MessageCrypto, size: int) -> None:
    xml = os.urandom(size)  # the layer is byte-transparent
    assert crypto.decrypt(ref_encrypt(xml)) == xml
    assert ref_decrypt(crypto.encrypt(xml)) == xml


def test_non_ascii_xml_round_trips(crypto: MessageCrypto) -> None:
    xml = "<xml><Content><![CDATA[你好，世界 🌏]]></Content></xml>".encode()
    assert crypto.decrypt(ref_encrypt(xml)) == xml
    assert ref_decrypt(crypto.encrypt(xml)) == xml


# --- malformed ciphertext -----------------------------------------------------------------


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64!!",
        "abc",  # truncated: base64 needs its padding
        "YWJj=ZGVm",  # data after padding (refused in strict mode)
        "Y W J j",
        "密文",
        VECTOR["encrypt"][:-1],
        VECTOR["encrypt"] + "A",
    ],
)
def test_bad_base64_raises(crypto: MessageCrypto, encrypted: str) -> None:
    with pytest.raises(CiphertextError) as info:
        crypto.decrypt(encrypted)
    assert type(info.value) is CiphertextError


@pytest.mark.parametrize("size", [0, 16, 31, 33, 48, 304])
def test_length_not_a_multiple_of_32_raises(crypto: MessageCrypto, size: int) -> None:
    with pytest.raises(CiphertextError) as info:
        crypto.decrypt(base64.b64encode(os.urandom(size)).decode())
    assert type(info.value) is CiphertextError


def _flip_last_plaintext_byte(encrypted: str, xor: int) -> str:
    """CBC malleability: XOR a byte of block n-1 to XOR the same byte of plaintext block n."""
    data = bytearray(base64.b64decode(encrypted))
    data[-17] ^= xor
    return base64.b64encode(bytes(data)).decode()


@pytest.mark.parametrize("new_pad", [0, 3, 33, 0x80, 0xFF])
def test_bad_padding_after_tampering_raises(crypto: MessageCrypto, new_pad: int) -> None:
    # The vector ends ``…abc2 \x02\x02``; turning the last byte into ``new_pad`` is bad padding
    # (0 and >32 out of range; 3 claims a third ``\x03`` byte that is really ``2``).
    tampered = _flip_last_plaintext_byte(VECTOR["encrypt"], VECTOR["pkcs7_pad"] ^ new_pad)
    assert ref_decrypt_raw(tampered)[-1] == new_pad
    with pytest.raises(CiphertextError) as info:
        crypto.decrypt(tampered)
    assert type(info.value) is CiphertextError


@pytest.mark.parametrize("position", [-1, -2, -16, -17, -32])
def test_tampered_last_block_raises(crypto: MessageCrypto, position: int) -> None:
    # Any change to the last two blocks is refused: mostly as bad padding, sometimes (when the
    # garbled last byte happens to be a valid pad value) as a frame that no longer ends in the
    # appid. Never a message.
    data = base64.b64decode(VECTOR["encrypt"])
    for xor in range(1, 256):
        tampered = bytearray(data)
        tampered[position] ^= xor
        with pytest.raises(CiphertextError):
            crypto.decrypt(base64.b64encode(bytes(tampered)).decode())


def _frame_with_pad_byte(value: int, count: int) -> str:
    """A frame ending in ``count`` copies of ``value``, encrypted by the reference."""
    body = ref_frame(b"<xml/>", APPID)
    xml = b"<xml>" + b"x" * ((-(len(body) + count)) % 32) + b"</xml>"
    body = ref_frame(xml, APPID)
    body += b"\x00" * ((-(len(body) + count)) % 32)
    return ref_encrypt_raw(body + bytes([value]) * count)


@pytest.mark.parametrize(("value", "count"), [(0, 1), (0, 32), (33, 33), (33, 1), (64, 64)])
def test_out_of_range_pad_value_raises(crypto: MessageCrypto, value: int, count: int) -> None:
    with pytest.raises(CiphertextError) as info:
        crypto.decrypt(_frame_with_pad_byte(value, count))
    assert type(info.value) is CiphertextError


def test_inconsistent_pad_bytes_raise(crypto: MessageCrypto) -> None:
    body = ref_frame(XML, APPID)
    body += b"\x00" * ((-(len(body) + 4)) % 32)
    encrypted = ref_encrypt_raw(body + b"\x01\x04\x04\x04")
    with pytest.raises(CiphertextError) as info:
        crypto.decrypt(encrypted)
    assert type(info.value) is CiphertextError


def test_wrong_appid_raises_app_id_mismatch() -> None:
    with pytest.raises(AppIdMismatchError):
        MessageCrypto("wx0000000000000000", AES_KEY).decrypt(VECTOR["encrypt"])


def test_payload_for_another_appid_raises_app_id_mismatch(crypto: MessageCrypto) -> None:
    with pytest.raises(AppIdMismatchError):
        crypto.decrypt(ref_encrypt(XML, appid="wx1111111111111111"))


def test_appid_prefix_is_not_enough(crypto: MessageCrypto) -> None:
    with pytest.raises(AppIdMismatchError):
        crypto.decrypt(ref_encrypt(XML, appid=APPID[:-1]))
    with pytest.raises(AppIdMismatchError):
        crypto.decrypt(ref_encrypt(XML, appid=APPID + "0"))


@pytest.mark.parametrize("extra", [len(APPID) + 1, len(APPID) + 32, 100, 2**32 - 1 - len(XML)])
def test_length_field_beyond_payload_raises(crypto: MessageCrypto, extra: int) -> None:
    encrypted = ref_encrypt_raw(ref_pad(ref_frame(XML, APPID, length=len(XML) + extra)))
    with pytest.raises(CiphertextError) as info:
        crypto.decrypt(encrypted)
    assert type(info.value) is CiphertextError  # a framing error, not an appid mismatch


def test_payload_shorter_than_its_header_raises(crypto: MessageCrypto) -> None:
    for body in (b"", PREFIX, PREFIX + b"\x00\x00\x00"):
        with pytest.raises(CiphertextError) as info:
            crypto.decrypt(ref_encrypt_raw(ref_pad(body)))
        assert type(info.value) is CiphertextError


# --- key rotation -------------------------------------------------------------------------


def test_previous_key_decrypts_both_and_encrypts_with_the_new() -> None:
    rotating = MessageCrypto(APPID, AES_KEY, previous_aes_key=OLD_AES_KEY)
    old_message = ref_encrypt(XML, encoding_aes_key=OLD_AES_KEY)
    new_message = ref_encrypt(XML, encoding_aes_key=AES_KEY)
    assert rotating.decrypt(old_message) == XML
    assert rotating.decrypt(new_message) == XML
    assert rotating.decrypt(VECTOR["encrypt"]) == XML

    reply = rotating.encrypt(XML)
    assert ref_decrypt(reply, encoding_aes_key=AES_KEY) == XML
    assert MessageCrypto(APPID, AES_KEY).decrypt(reply) == XML
    with pytest.raises(CiphertextError) as info:
        MessageCrypto(APPID, OLD_AES_KEY).decrypt(reply)
    assert type(info.value) is CiphertextError


def test_without_previous_key_old_messages_fail() -> None:
    with pytest.raises(CiphertextError) as info:
        MessageCrypto(APPID, AES_KEY).decrypt(ref_encrypt(XML, encoding_aes_key=OLD_AES_KEY))
    assert type(info.value) is CiphertextError


def test_previous_key_equal_to_current_is_harmless() -> None:
    assert MessageCrypto(APPID, AES_KEY, previous_aes_key=AES_KEY).decrypt(VECTOR["encrypt"]) == XML


def test_wrong_appid_under_the_previous_key_is_reported_as_such() -> None:
    rotating = MessageCrypto(APPID, AES_KEY, previous_aes_key=OLD_AES_KEY)
    encrypted = ref_encrypt(XML, appid="wx1111111111111111", encoding_aes_key=OLD_AES_KEY)
    with pytest.raises(AppIdMismatchError):
        rotating.decrypt(encrypted)


def test_garbage_under_both_keys_raises() -> None:
    rotating = MessageCrypto(APPID, AES_KEY, previous_aes_key=OLD_AES_KEY)
    other = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
    with pytest.raises(CiphertextError) as info:
        rotating.decrypt(ref_encrypt(XML, encoding_aes_key=other))
    assert type(info.value) is CiphertextError


# --- EncodingAESKey -----------------------------------------------------------------------


def test_decode_aes_key_gives_32_bytes() -> None:
    key = decode_aes_key(AES_KEY)
    assert len(key) == 32
    assert key == raw_key(AES_KEY)


@pytest.mark.parametrize(
    "bad",
    [
        AES_KEY[:-1],  # 42 characters
        AES_KEY + "H",  # 44 characters
        AES_KEY + "=",  # 44 with padding
        "",
        AES_KEY[:-1] + "-",  # urlsafe alphabet
        AES_KEY[:-1] + "_",
        AES_KEY[:-1] + "=",
        AES_KEY[:-1] + "é",
        AES_KEY[:-1] + " ",
        AES_KEY[:-1] + "\n",
        AES_KEY + "\n",
    ],
)
def test_decode_aes_key_rejects(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_aes_key(bad)
    assert type(info.value) is ValueError
    with pytest.raises(ValueError) as info:
        MessageCrypto(APPID, bad)
    assert type(info.value) is ValueError
