"""The people routes of ``/openapi.json`` (SPEC §15), merged by :mod:`.openapi`."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_ERROR = {"$ref": "#/components/schemas/Error"}
_CLIENT_TOKEN = (403, "client_token: an OIDC client's access token cannot change the account")
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*pairs: tuple[int, str]) -> dict[str, Any]:
    every = (*pairs, (401, "invalid_token: no, a bad, expired or revoked access token, or the "
                           "person no longer exists"),
             (503, "Redis or the database is down"))  # fmt: skip
    return {str(status): _json(_ERROR, words) for status, words in every}


PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/me": {
        "get": {
            "summary": "Who the access token belongs to, with their WeChat identities",
            "security": _BEARER,
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Me"}, "The user"),
                **_errors(),
            },
        },
        "delete": {
            "summary": "Erase me: the user, identities and refresh tokens are deleted",
            "description": "Access tokens are refused inside wxpush at once (a site that "
            "checks them offline sees them until their exp). The audit log keeps its rows "
            "with the user id only.",
            "security": _BEARER,
            "responses": {"204": {"description": "Erased"}, **_errors(_CLIENT_TOKEN)},
        },
    },
    "/api/v1/me/identities": {
        "post": {
            "summary": "Link another WeChat identity: a scene of purpose link",
            "description": "The same request and answer as POST /api/v1/scenes (any door). "
            "The identity that completes it is attached to the bearer's user: the final "
            'state is {"status":"REG","code":3,"linked":true} (no tokens), or '
            '{"status":"CONFLICT","code":5,"error":"identity_taken"} when it belongs to '
            "another user (nothing moves).",
            "security": _BEARER,
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "account": _STR,
                                "kind": {"type": "string", "enum": ["follow", "website", "oauth"]},
                                "return_to": _STR,
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _json({"$ref": "#/components/schemas/NewScene"}, "The link scene"),
                **_errors(
                    _CLIENT_TOKEN,
                    (400, "bad_kind, kind_unavailable, unknown_account, bad_return_to"),
                    (429, "scene_rate_limited (Retry-After)"),
                ),
            },
        }
    },
    "/api/v1/me/identities/{identity}": {
        "delete": {
            "summary": "Unlink one of my identities",
            "security": _BEARER,
            "parameters": [
                {"name": "identity", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "responses": {
                "204": {"description": "Unlinked"},
                **_errors(
                    _CLIENT_TOKEN,
                    (404, "identity_not_found (none of mine)"),
                    (409, "last_identity: no other identity and no phone to log in with"),
                ),
            },
        }
    },
}

SCHEMAS: dict[str, Any] = {
    "Me": {"type": "object", "properties": {
        "id": _STR, "phone": {"type": ["string", "null"], "description": "masked"},
        "identities": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "provider": {"type": "string",
                                                    "enum": ["wechat_mp", "wechat_open"]},
            "appid": _STR, "openid_hint": {**_STR, "description": "its last 4 characters"},
            "linked_at": _STR}}}}},
}  # fmt: skip
