"""Where a scene opened for an OIDC authorization request goes once claimed (SPEC §14).

The login flow knows nothing of OIDC: a scene that carries a request id is handed to a
:class:`Handover` (:class:`wxpush.oidc.provider.Provider`) instead of minting tokens.
"""

from __future__ import annotations

from typing import Any, Protocol

from wxpush.people.audit import Origin


class Handover(Protocol):
    async def hand_over(
        self, request_id: str, user_id: str, *, amr: str, mark: str, origin: Origin
    ) -> dict[str, Any]:
        """The claimer's answer (``{"redirect": …}``); ``mark`` is the claim's. Writes the
        login's audit row (``origin``, with the request's client)."""
        ...

    async def mark_of(self, redirect: str) -> str | None:
        """A hand-over that reached no one, undone: the mark of its claim (to release)."""
        ...
