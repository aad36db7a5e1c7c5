"""The errors of the OpenID Connect endpoints, in RFC 6749's words (SPEC §14).

Each is a :class:`~wxpush.errors.WxpushError` whose ``code`` is the RFC's ``error`` and whose
message is its ``error_description``; the web layer answers it as
``{"error", "error_description"}`` (RFC 6749 §5.2), never in §3's shape.
"""

from __future__ import annotations

from wxpush.errors import WxpushError


class OAuthError(WxpushError):
    """An RFC 6749 error: ``code`` is its ``error``; ``status`` 400 unless given."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message, code=code)
        self.status = status  # type: ignore[misc]


def invalid_request(message: str) -> OAuthError:
    return OAuthError("invalid_request", message)


def invalid_grant(message: str) -> OAuthError:
    return OAuthError("invalid_grant", message)


def invalid_client(message: str) -> OAuthError:
    """401 with a Basic challenge (RFC 6749 §5.2)."""
    error = OAuthError("invalid_client", message, status=401)
    error.headers["WWW-Authenticate"] = 'Basic realm="wxpush"'
    return error


def invalid_token(
    message: str = "The access token is missing, invalid, expired or revoked.",
) -> OAuthError:
    """401 with a Bearer challenge (RFC 6750 §3)."""
    error = OAuthError("invalid_token", message, status=401)
    error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return error


class PageError(Exception):
    """An authorization request that cannot go back to its client (an unknown client, a
    redirect URI not registered): answered as an HTML page in words, never a redirect."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class RedirectError(OAuthError):
    """An authorization error that goes back to the client's redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, code: str, message: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(code, message)
        self.redirect_uri = redirect_uri
        self.state = state
