"""The OpenAPI 3.1 description served at ``/openapi.json``.

Written by hand to say what the code does (a test checks that every route of the app is
described here and nothing else is).
"""

from __future__ import annotations

from typing import Any

from wxpush import __version__
from wxpush.web import openapi_oidc, openapi_people

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "Bad input", 401: "Not authenticated", 403: "Refused", 404: "Unknown",
             408: "The body did not arrive in time", 409: "Conflict with the current state",
             410: "Expired", 413: "Body too large",
             429: "Rate-limited (see Retry-After)", 502: "An upstream failed",
             503: "Redis or the database is down"}  # fmt: skip
    return {str(s): _json(_ERROR, words[s]) for s in (*statuses, 503)}


_SCENE = {"name": "scene", "in": "path", "required": True, "schema": {"type": "string"}}
_STATE = {"$ref": "#/components/schemas/SceneState"}
_TOKENS = {"$ref": "#/components/schemas/Tokens"}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


_STR = {"type": "string"}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/scenes": {
        "post": {
            "summary": "Start a login through one of WeChat's doors (a scene)",
            "description": (
                "kind follow (default): the service account's QR code; website: the Open "
                "Platform's QR code through WxLogin.js; oauth: a page opened inside WeChat "
                "goes to authorize_url. The redirect doors' scenes live at most 600 s. Errors: "
                "bad_kind, kind_unavailable, unknown_account, bad_return_to, "
                "oidc_request_expired (410)."
            ),
            "requestBody": _body(
                {
                    "account": {**_STR, "description": "the service account or website app"},
                    "kind": {"type": "string", "enum": ["follow", "website", "oauth"]},
                    "return_to": {
                        **_STR,
                        "description": "redirect doors: where the person is sent back (an "
                        "URL on an allowed origin); the widget there resumes the scene",
                    },
                    "oidc": {
                        **_STR,
                        "description": "the hosted OIDC page's request id: the scene logs in "
                        "for it, and its REG state carries redirect (to the client, with a "
                        "code) instead of tokens",
                    },
                },
                [],
            ),
            "responses": {
                "201": _json({"$ref": "#/components/schemas/NewScene"}, "Created"),
                **_errors(400, 408, 410, 413, 429, 502),
            },
        }
    },
    "/api/v1/scenes/{scene}": {
        "get": {
            "summary": "The scene's state; the first read of REG carries the tokens",
            "parameters": [_SCENE],
            "responses": {"200": _json(_STATE, "State")},
        }
    },
    "/api/v1/scenes/{scene}/wait": {
        "get": {
            "summary": "Long-poll: answers as soon as the state is no longer LOOP",
            "parameters": [
                _SCENE,
                {
                    "name": "timeout",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 55, "default": 25},
                },
            ],
            "responses": {"200": _json(_STATE, "State"), **_errors(400)},
        }
    },
    "/api/v1/scenes/{scene}/qr.svg": {
        "get": {
            "summary": "The QR code as SVG, rendered locally",
            "parameters": [_SCENE],
            "responses": {
                "200": {"description": "SVG", "content": {"image/svg+xml": {}}},
                **_errors(404),
            },
        }
    },
    "/api/v1/scenes/{scene}/qr.png": {
        "get": {
            "summary": "The QR code as PNG, rendered locally",
            "parameters": [_SCENE],
            "responses": {
                "200": {"description": "PNG", "content": {"image/png": {}}},
                **_errors(404),
            },
        }
    },
    "/api/v1/scenes/{scene}/sms": {
        "post": {
            "summary": "Send an SMS code to bind a phone (scene must be NOT_REG)",
            "parameters": [_SCENE],
            "requestBody": _body({"phone": _STR}, ["phone"]),
            "responses": {
                "202": _json(
                    {"type": "object", "properties": {"resend_in": {"type": "integer"}}}, "Sent"
                ),
                **_errors(400, 403, 404, 408, 409, 410, 413, 429, 502),
            },
        }
    },
    "/api/v1/scenes/{scene}/bind": {
        "post": {
            "summary": "Check the SMS code, bind the phone and log in",
            "parameters": [_SCENE],
            "requestBody": _body({"phone": _STR, "code": _STR}, ["phone", "code"]),
            "responses": {
                "200": _json(_TOKENS, "Logged in"),
                **_errors(400, 403, 404, 408, 409, 410, 413),
            },
        }
    },
    "/api/v1/token/refresh": {
        "post": {
            "summary": "Trade a refresh token for a new pair (the old one is spent)",
            "requestBody": _body({"refresh_token": _STR}, ["refresh_token"]),
            "responses": {"200": _json(_TOKENS, "New pair"), **_errors(400, 401, 408, 413)},
        }
    },
    "/api/v1/logout": {
        "post": {
            "summary": "Revoke a refresh token and its whole family",
            "requestBody": _body({"refresh_token": _STR}, ["refresh_token"]),
            "responses": {"204": {"description": "Logged out"}, **_errors(400, 408, 413)},
        }
    },
    "/.well-known/jwks.json": {
        "get": {
            "summary": "Public keys of the access-token signer",
            "responses": {"200": _json({"type": "object"}, "JWKS")},
        }
    },
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
    },
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}},
    "/readyz": {
        "get": {
            "summary": "Readiness: Redis and the database answer (and the Redis mode: "
            "single, sentinel or embedded)",
            "responses": {"200": {"description": "Ready"}, **_errors()},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Text format", "content": {"text/plain": {}}}},
        }
    },
    "/wechat/{name}/oauth/redirect": {
        "get": {
            "summary": "Where WeChat sends the browser back from a redirect door",
            "description": (
                "Consumes the one-time state, exchanges the code and moves the scene as a "
                "scan does. Answers an HTML page in words (zh/en by Accept-Language), or 303 "
                "to the scene's return_to. Failures are pages: 400 state_invalid, declined, "
                "snapshot_user, invalid_code; 502 WeChat's errcode; 503."
            ),
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": _STR},
                {"name": "code", "in": "query", "required": False, "schema": _STR},
                {"name": "state", "in": "query", "required": True, "schema": _STR},
            ],
            "responses": {
                "200": {"description": "Logged in (a page)", "content": {"text/html": {}}},
                "303": {"description": "Logged in: back to return_to"},
                **{
                    s: {"description": d, "content": {"text/html": {}}}
                    for s, d in (
                        ("400", "Refused (a page)"),
                        ("502", "WeChat refused"),
                        ("503", "Redis or the database is down"),
                    )
                },
            },
        }
    },
    "/wechat/{account}/callback": {
        "parameters": [{"name": "account", "in": "path", "required": True, "schema": _STR}],
        "get": {
            "summary": "WeChat's URL verification (echoes echostr)",
            "responses": {"200": {"description": "echostr"}, **_errors(400, 403, 404)},
        },
        "post": {
            "summary": "WeChat's event push (plaintext, compatible or safe mode)",
            "responses": {
                "200": {"description": "A passive reply or 'success'"},
                **_errors(400, 403, 404, 408, 413),
            },
        },
    },
}

_STATUS = {"type": "string", "enum": ["LOOP", "REG", "NOT_REG", "EXPIRED", "CONFLICT"]}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": _STR, "message": _STR}},
    "NewScene": {"type": "object", "properties": {
        "scene": _STR, "status": _STATUS, "code": {"type": "integer"},
        "kind": {"type": "string", "enum": ["follow", "website", "oauth"]}, "qr_url": _STR,
        "qr_image": _STR, "authorize_url": _STR, "wxlogin_script": _STR,
        "wxlogin": {"type": "object", "properties": {
            "appid": _STR, "scope": _STR, "redirect_uri": _STR, "state": _STR,
            "self_redirect": {"type": "boolean"}}},
        "expires_in": {"type": "integer"}, "expires_at": _STR,
        "ws_url": _STR, "wait_url": _STR}},
    "SceneState": {"type": "object", "required": ["status", "code"], "properties": {
        "status": _STATUS, "code": {"type": "integer"}, "claimed": {"type": "boolean"},
        "expires_in": {"type": "integer"}, "access_token": _STR, "token_type": _STR,
        "refresh_token": _STR, "user": {"$ref": "#/components/schemas/UserRef"},
        "redirect": {**_STR, "description": "an OIDC request's scene: on to the client"},
        "linked": {"type": "boolean", "description": "a link scene's REG: no tokens"},
        "error": {**_STR, "description": "CONFLICT: identity_taken"}}},
    "Tokens": {"type": "object", "properties": {
        "status": _STATUS, "code": {"type": "integer"}, "access_token": _STR,
        "token_type": _STR, "expires_in": {"type": "integer"}, "refresh_token": _STR,
        "user": {"$ref": "#/components/schemas/UserRef"}}},
    "UserRef": {"type": "object", "properties": {"id": _STR, "new": {"type": "boolean"}}},
}  # fmt: skip


def document() -> dict[str, Any]:
    """The whole OpenAPI document (the WebSocket ``/ws/v1/scenes/{scene}`` is in SPEC §3;
    OpenAPI 3.1 has no way to describe one)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "wxpush", "version": __version__,
                 "description": "WeChat login (service-account QR, website QR, in-WeChat) "
                                "with instant push."},
        "paths": {**PATHS, **openapi_people.PATHS, **openapi_oidc.PATHS},
        "components": {
            "schemas": {**SCHEMAS, **openapi_people.SCHEMAS, **openapi_oidc.SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"},
                                "clientBasic": {"type": "http", "scheme": "basic"}},
        },
    }  # fmt: skip
