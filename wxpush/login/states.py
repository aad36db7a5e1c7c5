"""The states of a scene (SPEC §2) and the body every channel answers with.

The names and numbers are the seed design's: ``EXPIRED(1) LOOP(2) REG(3) NOT_REG(4)``, and
``CONFLICT(5)``: a link scene's end when the WeChat identity is another person's (SPEC §15).
"""

from __future__ import annotations

from typing import Any, Literal

Status = Literal["LOOP", "REG", "NOT_REG", "EXPIRED", "CONFLICT"]
CODES: dict[str, int] = {"EXPIRED": 1, "LOOP": 2, "REG": 3, "NOT_REG": 4, "CONFLICT": 5}
FINAL = frozenset({"REG", "EXPIRED", "CONFLICT"})
LINKED = {"status": "REG", "code": 3, "linked": True}  # a link scene's end: no tokens
TAKEN = {"status": "CONFLICT", "code": 5, "error": "identity_taken"}


def status_body(status: str) -> dict[str, Any]:
    """``{"status", "code"}``: the start of every answer about a scene."""
    return {"status": status, "code": CODES[status]}


def hands_over(state: dict[str, Any]) -> bool:
    """Does ``state`` carry a login — tokens, or an OIDC request's redirect with its code? One
    that reaches no one must be given back (:meth:`~wxpush.login.flow.LoginFlow.give_back`)."""
    return "refresh_token" in state or "redirect" in state
