"""The OpenID Connect routes of ``/openapi.json`` (SPEC §14), merged by :mod:`.openapi`.

Their errors are RFC 6749's ``{"error", "error_description"}``, not the API's shape; the
browser pages (``/oidc/authorize``, ``/oidc/logout``) answer HTML and redirects.
"""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_OAUTH_ERROR = {"$ref": "#/components/schemas/OAuthError"}
_FORM = "application/x-www-form-urlencoded"
_CLIENT_AUTH: list[dict[str, list[str]]] = [
    {"clientBasic": []},
    {},
]  # client_secret_basic, or the form (post / none)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {_FORM: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "RFC 6749 error (invalid_request, invalid_grant, unsupported_grant_type, …)",
             401: "invalid_client (WWW-Authenticate: Basic) or invalid_token (Bearer)",
             413: "Form too large"}  # fmt: skip
    out = {str(s): _json(_OAUTH_ERROR, words[s]) for s in statuses}
    out["503"] = _json(_OAUTH_ERROR, "temporarily_unavailable: Redis or the database is down")
    return out


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": _STR}}}


_AUTHORIZE_PARAMS = [
    {"name": name, "in": "query", "required": required, "schema": _STR, "description": words}
    for name, required, words in [
        ("response_type", True, "code"),
        ("client_id", True, "a [[client]] of the accounts file"),
        ("redirect_uri", True, "one of the client's redirect_uris, exactly"),
        ("scope", True, "openid, and phone / offline_access"),
        ("state", False, "returned to the client as given"),
        ("nonce", False, "put in the id_token"),
        ("code_challenge", False, "PKCE S256 (required of a public client)"),
        ("code_challenge_method", False, "S256"),
        ("prompt", False, "none: login_required (no silent login)"),
        ("ui_locales", False, "zh or en for the page"),
    ]
]
_LOGOUT_PARAMS = [
    {"name": name, "in": "query", "required": name == "id_token_hint", "schema": _STR}
    for name in ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")
]
_AUTHORIZE = {
    "summary": "OIDC authorization: the hosted WeChat login page",
    "description": (
        "An unknown client or an unregistered redirect_uri: an HTML 400, never a redirect. "
        "Other errors: 302 to redirect_uri with error, error_description, state, iss. Else the "
        "hosted page (the widget on the client's door), which goes on to "
        "redirect_uri?code&state&iss once the person is logged in."
    ),
    "parameters": _AUTHORIZE_PARAMS,
    "responses": {"200": _page("The hosted login page"), "302": {"description": "An error "
                  "back to the client"}, "400": _page("The request cannot go back to a client"),
                  "503": _page("Redis is down")},
}  # fmt: skip
_LOGOUT = {
    "summary": "OIDC RP-initiated logout",
    "description": (
        "Ends the person's refresh tokens at the id_token_hint's client and refuses their "
        "access tokens there from now; 303 to the registered post_logout_redirect_uri (with "
        "state), or a page in words."
    ),
    "parameters": _LOGOUT_PARAMS,
    "responses": {"200": _page("Logged out"), "303": {"description": "To the client"},
                  "400": _page("A bad id_token_hint or post_logout_redirect_uri")},
}  # fmt: skip
_USERINFO = {
    "summary": "OIDC userinfo: sub, and the phone with the phone scope",
    "security": [{"bearer": []}],
    "responses": {"200": _json({"$ref": "#/components/schemas/UserInfo"}, "Claims"),
                  **_errors(401)},
}  # fmt: skip

PATHS: dict[str, dict[str, Any]] = {
    "/.well-known/openid-configuration": {
        "get": {"summary": "OIDC discovery", "responses": {"200": _json({"type": "object"},
                "The provider's metadata")}},
    },
    "/oidc/authorize": {"get": _AUTHORIZE, "post": {**_AUTHORIZE, "parameters": [],
                        "summary": "OIDC authorization, the parameters as a form"}},
    "/oidc/token": {"post": {
        "summary": "OIDC token: authorization_code (with PKCE) and refresh_token grants",
        "security": _CLIENT_AUTH,
        "requestBody": _form({"grant_type": {"enum": ["authorization_code", "refresh_token"]},
                              "code": _STR, "redirect_uri": _STR, "code_verifier": _STR,
                              "refresh_token": _STR, "scope": _STR, "client_id": _STR,
                              "client_secret": _STR}, ["grant_type"]),
        "responses": {"200": _json({"$ref": "#/components/schemas/OIDCTokens"}, "Tokens"),
                      **_errors(400, 401, 413)},
    }},
    "/oidc/userinfo": {"get": _USERINFO, "post": _USERINFO},
    "/oidc/revoke": {"post": {
        "summary": "RFC 7009 revocation of a refresh or access token (200 for a known client)",
        "security": _CLIENT_AUTH,
        "requestBody": _form({"token": _STR, "token_type_hint": _STR}, ["token"]),
        "responses": {"200": {"description": "Revoked, or nothing to revoke"},
                      **_errors(400, 401)},
    }},
    "/oidc/introspect": {"post": {
        "summary": "RFC 7662 introspection (a confidential client)",
        "security": [{"clientBasic": []}, {}],
        "requestBody": _form({"token": _STR, "token_type_hint": _STR}, ["token"]),
        "responses": {"200": _json({"type": "object", "required": ["active"], "properties": {
            "active": {"type": "boolean"}, "sub": _STR, "client_id": _STR,
            "exp": {"type": "integer"}, "iat": {"type": "integer"}, "scope": _STR,
            "token_type": _STR}}, "What the token is"), **_errors(400, 401)},
    }},
    "/oidc/logout": {"get": _LOGOUT, "post": {**_LOGOUT, "parameters": []}},
}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "OAuthError": {"type": "object", "required": ["error", "error_description"],
                   "properties": {"error": _STR, "error_description": _STR}},
    "OIDCTokens": {"type": "object", "properties": {
        "access_token": _STR, "token_type": _STR, "expires_in": {"type": "integer"},
        "id_token": _STR, "scope": _STR, "refresh_token": _STR}},
    "UserInfo": {"type": "object", "required": ["sub"], "properties": {
        "sub": _STR, "phone_number": _STR, "phone_number_verified": {"type": "boolean"}}},
}  # fmt: skip
