"""WeChat's AES message crypto (safe and compatible modes), both ways.

Payload layout: ``16 random bytes | 4-byte big-endian length | XML | appid``, PKCS#7-padded to
**32-byte** blocks (pad values 1–32), AES-256-CBC with ``key = b64decode(EncodingAESKey + "=")``
and ``IV = key[:16]``.

Speed: building a pycryptodome cipher costs more than decrypting a whole message, and a CBC
cipher object is single-use. CBC *decryption* is parallel by construction —
``P[i] = D(C[i]) xor C[i-1]`` with ``C[-1] = IV`` — so each key keeps one stateless ECB cipher
for the life of the process, decrypts all blocks in one call, and the chaining is one XOR of
two big integers. Encryption (replies only) is sequential and uses a fresh CBC cipher.

During an EncodingAESKey change WeChat may still use the previous key for a while; both
decrypt, replies use the current one.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad

from wxpush.wechat.errors import AppIdMismatchError, CiphertextError

BLOCK = 32  # WeChat pads to 32-byte blocks, not AES's 16
_LENGTH = struct.Struct(">I")
_AES_KEY_CHARS = re.compile(r"[A-Za-z0-9+/]{43}")


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """Decode a 43-character EncodingAESKey into the 32-byte AES key.

    Raises:
        ValueError: the key is not 43 characters of base64.
    """
    if not _AES_KEY_CHARS.fullmatch(encoding_aes_key):
        raise ValueError("an EncodingAESKey is 43 characters of base64 (A-Z a-z 0-9 + /)")
    return base64.b64decode(encoding_aes_key + "=")


class _Key:
    """One AES key with its reusable ECB cipher (decryption only)."""

    __slots__ = ("ecb", "iv", "key")

    def __init__(self, encoding_aes_key: str) -> None:
        self.key = decode_aes_key(encoding_aes_key)
        self.iv = self.key[:16]
        self.ecb = AES.new(self.key, AES.MODE_ECB)

    def cbc_decrypt(self, data: bytes) -> bytes:
        blocks = self.ecb.decrypt(data)
        chain = self.iv + data[:-16]
        n = len(data)
        return (int.from_bytes(blocks, "big") ^ int.from_bytes(chain, "big")).to_bytes(n, "big")


class MessageCrypto:
    """Encrypts and decrypts one account's messages.

    Args:
        appid: the account's appid; a payload naming another one is refused.
        aes_key: the current EncodingAESKey.
        previous_aes_key: the previous EncodingAESKey, still accepted while WeChat switches.
    """

    __slots__ = ("_appid", "_keys")

    def __init__(self, appid: str, aes_key: str, previous_aes_key: str | None = None) -> None:
        self._appid = appid.encode()
        self._keys = [_Key(aes_key)]
        if previous_aes_key and previous_aes_key != aes_key:
            self._keys.append(_Key(previous_aes_key))

    def decrypt(self, encrypted: str | bytes) -> bytes:
        """Return the XML inside an ``Encrypt`` value.

        Raises:
            CiphertextError: bad base64, length, padding or framing under every key.
            AppIdMismatchError: the payload decrypts but names another appid.
        """
        try:
            data = binascii.a2b_base64(encrypted, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise CiphertextError("Encrypt is not valid base64") from exc
        if not data or len(data) % BLOCK:
            raise CiphertextError("ciphertext length is not a multiple of 32 bytes")
        error: CiphertextError | None = None
        for key in self._keys:
            try:
                return self._open(key.cbc_decrypt(data))
            except CiphertextError as exc:
                # A key that got as far as the appid is the right key: report that, not the
                # bad padding the other key produced.
                if error is None or isinstance(exc, AppIdMismatchError):
                    error = exc
        assert error is not None
        raise error

    def _open(self, plain: bytes) -> bytes:
        try:
            body = unpad(plain, BLOCK)
        except ValueError as exc:
            raise CiphertextError("bad padding") from exc
        if len(body) < 20:
            raise CiphertextError("payload too short")
        (length,) = _LENGTH.unpack_from(body, 16)
        end = 20 + length
        if end > len(body):
            raise CiphertextError("payload length field is out of range")
        if body[end:] != self._appid:
            raise AppIdMismatchError("payload belongs to another appid")
        return body[20:end]

    def encrypt(self, xml: bytes, *, random_prefix: bytes | None = None) -> str:
        """Encrypt ``xml`` into an ``Encrypt`` value (base64 text) with the current key."""
        prefix = os.urandom(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise ValueError("random_prefix must be 16 bytes")
        payload = pad(prefix + _LENGTH.pack(len(xml)) + xml + self._appid, BLOCK)
        key = self._keys[0]
        cipher = AES.new(key.key, AES.MODE_CBC, key.iv)
        return base64.b64encode(cipher.encrypt(payload)).decode("ascii")
