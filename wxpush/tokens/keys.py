"""The one signer of wxpush's tokens: an ES256 key in a PEM file, or an HS256 secret.

The key file is created on first start (mode 0600) when absent; ``wxpush keygen`` makes one
ahead of time. :class:`Signer` signs with the key's ``kid`` in the header and decodes with a
*fixed* algorithm list, so neither ``alg: none`` nor algorithm confusion (an HMAC keyed with
the public key) can pass. Its :meth:`Signer.jwks` is ``/.well-known/jwks.json``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wxpush.config.policy import TokenPolicy
from wxpush.errors import SettingsError

logger = logging.getLogger(__name__)

KEY_VARIABLE = "WXPUSH_JWT_KEY_FILE"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash


class Signer:
    """Signs and decodes JWTs with the policy's key (see the module docstring)."""

    def __init__(self, policy: TokenPolicy) -> None:
        self.public: ec.EllipticCurvePublicKey | None = None
        self._signing_key: ec.EllipticCurvePrivateKey | bytes
        self._verify_key: ec.EllipticCurvePublicKey | bytes
        self.algorithm: Literal["ES256", "HS256"]
        if policy.secret is not None:
            secret = policy.secret.encode("utf-8")
            if len(secret) < MIN_SECRET_BYTES:
                raise SettingsError("WXPUSH_JWT_SECRET", "must be at least 32 bytes long")
            self.algorithm, self._signing_key, self._verify_key = "HS256", secret, secret
            self.kid = hashlib.sha256(b"wxpush-kid:" + secret).hexdigest()[:16]
        else:
            key = load_or_create_signing_key(policy.key_file)
            self.public = key.public_key()
            self.algorithm, self._signing_key, self._verify_key = "ES256", key, self.public
            self.kid = _thumbprint(self.public)

    def sign(self, payload: dict[str, Any]) -> str:
        return jwt.encode(
            payload, self._signing_key, algorithm=self.algorithm, headers={"kid": self.kid}
        )

    def decode(self, token: str, **options: Any) -> dict[str, Any]:
        """``jwt.decode_complete`` with this key and algorithm only (``options`` as PyJWT's:
        ``audience``, ``issuer``, ``options``); raises :class:`jwt.PyJWTError`."""
        decoded: dict[str, Any] = jwt.decode_complete(
            token, self._verify_key, algorithms=[self.algorithm], **options
        )
        if decoded["header"].get("kid") != self.kid:
            raise jwt.InvalidTokenError("unknown kid")
        return decoded

    def jwks(self) -> dict[str, Any]:
        """The public keys for ``/.well-known/jwks.json``; none with HS256 (a secret stays one)."""
        if self.public is None:
            return {"keys": []}
        entry = {**_public_jwk(self.public), "kid": self.kid, "alg": "ES256", "use": "sig"}
        return {"keys": [entry]}


def load_or_create_signing_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """Load the ES256 key from ``path``, creating it (mode 0600) when the file is absent.

    Several workers may start together: the new file is written under a temporary name and
    hard-linked into place, which fails if another process got there first; we then load
    theirs, so every worker signs with the same key.

    Raises:
        SettingsError: the file cannot be read or written, or is not a P-256 private key.
    """
    path = Path(path)
    if not path.exists():
        try:
            _write_key(path, ec.generate_private_key(ec.SECP256R1()), overwrite=False)
            logger.info("created a new JWT signing key in %s", path)
        except FileExistsError:
            pass  # another worker created it first: use theirs
    return _read_key(path)


def generate_key_file(path: str | Path, *, force: bool = False) -> str:
    """Write a new signing key for ``wxpush keygen`` and return its ``kid``.

    Replacing the key makes every access token issued so far fail verification, so an
    existing file is only overwritten with ``force=True``.

    Raises:
        FileExistsError: the file exists and ``force`` is false.
        SettingsError: the file cannot be written.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(Path(path), key, overwrite=force)
    return _thumbprint(key.public_key())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, overwrite: bool) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created 0600 from the start (O_EXCL: never someone else's file): never readable by others.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and fails if the name exists (unlike rename)
    except FileExistsError as exc:
        raise FileExistsError(errno.EEXIST, "the key file exists", str(path)) from exc
    except OSError as exc:
        raise SettingsError(KEY_VARIABLE, f"cannot write {path}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(KEY_VARIABLE, f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        logger.warning("the JWT signing key %s is readable by other users; chmod 600 it", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        problem = f"{path} is not an unencrypted PEM private key (delete it to create a new one)"
        raise SettingsError(KEY_VARIABLE, problem) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SettingsError(KEY_VARIABLE, f"{path} is not a P-256 (ES256) private key")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    x, y = (_b64(n.to_bytes(32, "big")) for n in (numbers.x, numbers.y))
    return {"crv": "P-256", "kty": "EC", "x": x, "y": y}


def _thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(_public_jwk(public), sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())
