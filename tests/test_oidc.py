"""wxpush as an OpenID Connect provider over HTTP (SPEC §14): every endpoint and error path.

A real uvicorn server, redis-server, SQLite and PostgreSQL; the browser's part is played by
httpx (the hosted page's widget opens a scene for the request and reads it once logged in);
the relying party's part by Authlib's OAuth 2 client, and the id_token is verified here
independently with PyJWT and the server's JWKS. The flow in real Chromium through the hosted
page, with a relying-party app, is ``test_oidc_browser.py``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests import fakewechat, test_login
from tests.test_login import NEW_OPENID, Site, select_rows
from tests.util import wait_for

fake_wechat = fakewechat.fake_wechat
sms_inbox, start = test_login.sms_inbox, test_login.start

SECRET = "s3cret-of-the-shop-0001"
SHOP = "https://shop.example/auth/callback"
APP = "http://127.0.0.1:9/app/callback"
AFTER_LOGOUT = "https://shop.example/bye"


def clients_file(tmp_path: Path) -> str:
    path = tmp_path / "clients.toml"
    path.write_text(
        f"""
[[client]]
client_id = "shop"
client_secret = "{SECRET}"
redirect_uris = ["{SHOP}"]
post_logout_redirect_uris = ["{AFTER_LOGOUT}"]

[[client]]
client_id = "app"
redirect_uris = ["{APP}"]
door = "follow"
""",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite here; the flow on PostgreSQL is its own test (the OIDC state is all in Redis)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'people.db'}"


@pytest.fixture
def oidc(start: Callable[..., Site], tmp_path: Path) -> Site:
    return start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path), WXPUSH_REQUIRE_PHONE="false")


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(site: Site, **params: str) -> httpx.Response:
    query = {"response_type": "code", "client_id": "shop", "redirect_uri": SHOP,
             "scope": "openid", "state": "st-1", "nonce": "n-1", **params}  # fmt: skip
    return site.client.get("/oidc/authorize", params={k: v for k, v in query.items() if v})


def request_id(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    found = re.search(r'"request": "([A-Za-z0-9_-]+)"', page.text)
    assert found, page.text
    return found.group(1)


def log_in(
    site: Site, openid: str = NEW_OPENID, *, bind: bool = False, **params: str
) -> dict[str, str]:
    """The hosted page's part: a scene for the request, the person scans (and binds a phone
    when ``bind``), the page reads its redirect; returns the query the client gets."""
    rid = request_id(authorize(site, **params))
    created = site.client.post("/api/v1/scenes", json={"oidc": rid}).json()
    site.scan(created, openid)
    state = site.bind(created["scene"]) if bind else site.poll(created["scene"])
    assert state["status"] == "REG" and "access_token" not in state, state
    url = urlsplit(state["redirect"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    return query | {"_to": f"{url.scheme}://{url.netloc}{url.path}"}


def token(
    site: Site, *, auth: tuple[str, str] | None = ("shop", SECRET), **form: str
) -> httpx.Response:
    return site.client.post("/oidc/token", data=form, auth=auth)


def code_tokens(
    site: Site, openid: str = NEW_OPENID, *, bind: bool = False, **params: str
) -> dict[str, Any]:
    """A login through the hosted page and the code exchanged, as a PKCE client does."""
    verifier, challenge = pkce()
    back = log_in(site, openid, bind=bind, code_challenge=challenge, code_challenge_method="S256",
                  **params)  # fmt: skip
    public = params.get("client_id") == "app"
    answer = token(site, auth=None if public else ("shop", SECRET), grant_type="authorization_code",
                   code=back["code"], redirect_uri=params.get("redirect_uri", SHOP),
                   code_verifier=verifier, **({"client_id": "app"} if public else {}))  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + access_token}


def jwks_verified(site: Site, id_token: str, audience: str = "shop") -> dict[str, Any]:
    """The id_token checked as a relying party would: the JWKS's key by ``kid``, ES256."""
    keys = jwt.PyJWKSet.from_dict(site.client.get("/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    issuer = site.client.get("/.well-known/openid-configuration").json()["issuer"]
    claims: dict[str, Any] = jwt.decode(id_token, key, algorithms=["ES256"], audience=audience,
                                        issuer=issuer)  # fmt: skip
    return claims


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def assert_rfc(answer: httpx.Response, status: int, error: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error and body["error_description"], body
    assert "message" not in body


# -- the flow -------------------------------------------------------------------------------


def test_discovery_names_every_endpoint(oidc: Site) -> None:
    doc = oidc.client.get("/.well-known/openid-configuration").json()
    base = str(oidc.client.base_url).rstrip("/")
    assert doc["issuer"] == "wxpush"  # WXPUSH_JWT_ISSUER (set it to the public URL for OIDC)
    for name, path in [("authorization_endpoint", "/oidc/authorize"),
                       ("token_endpoint", "/oidc/token"), ("userinfo_endpoint", "/oidc/userinfo"),
                       ("jwks_uri", "/.well-known/jwks.json"),
                       ("revocation_endpoint", "/oidc/revoke"),
                       ("introspection_endpoint", "/oidc/introspect"),
                       ("end_session_endpoint", "/oidc/logout")]:  # fmt: skip
        assert doc[name] == base + path
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["scopes_supported"] == ["openid", "phone", "offline_access"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic", "client_secret_post", "none"]  # fmt: skip


def test_a_login_gives_the_client_a_code_and_the_code_its_tokens(oidc: Site) -> None:
    back = log_in(oidc, state="xyz", nonce="n-42", scope="openid")
    assert back["_to"] == SHOP and back["state"] == "xyz" and back["iss"] == "wxpush"
    assert len(back["code"]) >= 40
    answer = token(oidc, grant_type="authorization_code", code=back["code"], redirect_uri=SHOP)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid"
    assert 0 < tokens["expires_in"] <= 7200 and "refresh_token" not in tokens
    claims = jwks_verified(oidc, tokens["id_token"])
    assert claims["nonce"] == "n-42" and claims["amr"] == ["wechat_mp"]
    assert claims["at_hash"] == at_hash(tokens["access_token"])
    assert claims["auth_time"] <= claims["iat"] <= time.time() + 1
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert access["aud"] == "shop" and access["client_id"] == "shop"
    assert access["sub"] == claims["sub"] and access["scope"] == "openid"
    info = oidc.client.get("/oidc/userinfo", headers=bearer(tokens["access_token"]))
    assert info.status_code == 200 and info.json() == {"sub": claims["sub"]}
    me = oidc.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == claims["sub"]


def test_the_same_person_is_the_same_sub(oidc: Site) -> None:
    first = jwks_verified(oidc, code_tokens(oidc)["id_token"])
    second = jwks_verified(oidc, code_tokens(oidc)["id_token"])
    other = jwks_verified(oidc, code_tokens(oidc, "oAnotherPerson0000000000001")["id_token"])
    assert first["sub"] == second["sub"] != other["sub"]


def test_userinfo_gives_the_phone_only_with_the_phone_scope(
    start: Callable[..., Site], tmp_path: Path
) -> None:
    site = start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path))  # new people bind a phone
    tokens = code_tokens(site, bind=True, scope="openid phone")
    assert tokens["scope"] == "openid phone"
    info = site.client.get("/oidc/userinfo", headers=bearer(tokens["access_token"])).json()
    assert info == {"sub": info["sub"], "phone_number": "+86" + test_login.PHONE,
                    "phone_number_verified": True}  # fmt: skip
    plain = code_tokens(site, scope="openid")  # the same person, now known: no phone step
    posted = site.client.post("/oidc/userinfo", data={"access_token": plain["access_token"]})
    assert posted.status_code == 200 and posted.json() == {"sub": info["sub"]}


def test_refresh_rotates_and_a_reused_refresh_token_ends_the_login(oidc: Site) -> None:
    tokens = code_tokens(oidc, scope="openid offline_access")
    assert tokens["scope"] == "openid offline_access"
    first = tokens["refresh_token"]
    answer = token(oidc, grant_type="refresh_token", refresh_token=first)
    assert answer.status_code == 200, answer.text
    second = answer.json()
    assert second["refresh_token"] != first and second["scope"] == "openid offline_access"
    assert jwt.decode(second["access_token"], options={"verify_signature": False})["aud"] == "shop"
    assert_rfc(token(oidc, grant_type="refresh_token", refresh_token=first), 400, "invalid_grant")
    # the reuse ended the family: the newest token is dead too
    assert_rfc(token(oidc, grant_type="refresh_token", refresh_token=second["refresh_token"]),
               400, "invalid_grant")  # fmt: skip


def test_a_clients_refresh_token_works_only_at_that_client(oidc: Site) -> None:
    tokens = code_tokens(oidc, scope="openid offline_access")
    own = oidc.client.post("/api/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert own.status_code == 401  # not wxpush's own API
    public = token(oidc, auth=None, client_id="app", grant_type="refresh_token",
                   refresh_token=tokens["refresh_token"])  # fmt: skip
    assert_rfc(public, 400, "invalid_grant")
    assert (
        token(oidc, grant_type="refresh_token", refresh_token=tokens["refresh_token"]).status_code
        == 200
    )  # still unspent


def test_client_secret_post_and_a_public_client_with_pkce(oidc: Site) -> None:
    back = log_in(oidc)
    posted = oidc.client.post("/oidc/token", data={
        "grant_type": "authorization_code", "code": back["code"], "redirect_uri": SHOP,
        "client_id": "shop", "client_secret": SECRET})  # fmt: skip
    assert posted.status_code == 200, posted.text
    verifier, challenge = pkce()
    back = log_in(oidc, client_id="app", redirect_uri=APP, code_challenge=challenge,
                  code_challenge_method="S256")  # fmt: skip
    assert back["_to"] == APP
    public = token(oidc, auth=None, client_id="app", grant_type="authorization_code",
                   code=back["code"], redirect_uri=APP, code_verifier=verifier)  # fmt: skip
    assert public.status_code == 200, public.text
    assert jwks_verified(oidc, public.json()["id_token"], audience="app")["aud"] == "app"


def test_introspection_and_revocation(oidc: Site) -> None:
    tokens = code_tokens(oidc, scope="openid offline_access")
    access, refresh = tokens["access_token"], tokens["refresh_token"]

    def introspect(value: str) -> dict[str, Any]:
        answer = oidc.client.post("/oidc/introspect", data={"token": value}, auth=("shop", SECRET))
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    seen = introspect(access)
    assert (
        seen["active"] is True and seen["client_id"] == "shop" and seen["scope"] == tokens["scope"]
    )
    assert seen["token_type"] == "Bearer" and seen["exp"] > seen["iat"] and seen["sub"]
    assert introspect(refresh)["token_type"] == "refresh_token"
    assert introspect("not-a-token") == {"active": False}
    assert oidc.client.post("/oidc/revoke", data={"token": access},
                            auth=("shop", SECRET)).status_code == 200  # fmt: skip
    assert introspect(access) == {"active": False}  # at once, though its exp is hours away
    assert oidc.client.get("/oidc/userinfo", headers=bearer(access)).status_code == 401
    assert oidc.client.get("/api/v1/me", headers=bearer(access)).status_code == 401
    assert oidc.client.post("/oidc/revoke", data={"token": refresh, "token_type_hint":
                            "refresh_token"}, auth=("shop", SECRET)).status_code == 200  # fmt: skip
    assert introspect(refresh) == {"active": False}
    assert_rfc(token(oidc, grant_type="refresh_token", refresh_token=refresh), 400, "invalid_grant")
    unknown = oidc.client.post("/oidc/revoke", data={"token": "nothing"}, auth=("shop", SECRET))
    assert unknown.status_code == 200  # RFC 7009 §2.2
    public = oidc.client.post("/oidc/introspect", data={"token": access, "client_id": "app"})
    assert_rfc(public, 401, "invalid_client")


def test_rp_initiated_logout_ends_the_login_at_that_client(oidc: Site) -> None:
    tokens = code_tokens(oidc, scope="openid offline_access")
    elsewhere = code_tokens(oidc, client_id="app", redirect_uri=APP)  # the same person
    answer = oidc.client.get("/oidc/logout", params={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": AFTER_LOGOUT,
        "state": "bye-1"})  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == AFTER_LOGOUT + "?state=bye-1"
    assert_rfc(token(oidc, grant_type="refresh_token", refresh_token=tokens["refresh_token"]),
               400, "invalid_grant")  # fmt: skip
    refused = oidc.client.get("/oidc/userinfo", headers=bearer(tokens["access_token"]))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert_rfc(refused, 401, "invalid_token")
    at_app = oidc.client.get("/oidc/userinfo", headers=bearer(elsewhere["access_token"]))
    assert at_app.status_code == 200  # a logout at one client leaves the others alone
    time.sleep(1.05)  # a login after the logout's second is a new login, not a logged-out one
    again = code_tokens(oidc)
    assert (
        oidc.client.get("/oidc/userinfo", headers=bearer(again["access_token"])).status_code == 200
    )
    plain = oidc.client.get("/oidc/logout", params={"id_token_hint": again["id_token"]},
                            headers={"Accept-Language": "zh-CN"})  # fmt: skip
    assert plain.status_code == 200 and 'data-wxpush-page="logged_out"' in plain.text
    assert "已退出登录" in plain.text


@pytest.mark.parametrize(
    ("params", "hook"),
    [
        ({"id_token_hint": "not.a.jwt"}, "bad_logout"),
        ({}, "bad_logout"),
        ({"post_logout_redirect_uri": "https://evil.example/"}, "bad_post_logout_redirect_uri"),
    ],
)
def test_a_bad_logout_is_a_page_never_a_redirect(
    oidc: Site, params: dict[str, str], hook: str
) -> None:
    if "post_logout_redirect_uri" in params:
        params = {**params, "id_token_hint": code_tokens(oidc)["id_token"]}
    answer = oidc.client.get("/oidc/logout", params=params)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert f'data-wxpush-page="{hook}"' in answer.text


def test_the_flow_on_postgresql(
    start: Callable[..., Site], tmp_path: Path, postgres_db_url: str
) -> None:
    site = start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path), WXPUSH_DATABASE_URL=postgres_db_url)
    tokens = code_tokens(site, bind=True, scope="openid phone offline_access")
    info = site.client.get("/oidc/userinfo", headers=bearer(tokens["access_token"])).json()
    assert info["phone_number"] == "+86" + test_login.PHONE
    assert test_login.count_rows(postgres_db_url, "users") == 1


def test_an_issuer_that_is_not_the_public_url_is_warned_of(
    start: Callable[..., Site], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wxpush.lifespan"):
        start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path))  # the issuer is "wxpush"
    assert any("WXPUSH_JWT_ISSUER" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wxpush.lifespan"):
        start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path), WXPUSH_PUBLIC_URL="https://id.example",
              WXPUSH_JWT_ISSUER="https://id.example")  # fmt: skip
    assert not any("WXPUSH_JWT_ISSUER" in r.getMessage() for r in caplog.records)


def test_a_clients_token_reads_the_person_but_cannot_change_the_account(
    oidc: Site, database_url: str
) -> None:
    tokens = code_tokens(oidc)
    sub = jwks_verified(oidc, tokens["id_token"])["sub"]
    client = bearer(tokens["access_token"])
    assert oidc.client.get("/api/v1/me", headers=client).json()["id"] == sub
    for method, path in (("POST", "/api/v1/me/identities"), ("DELETE", "/api/v1/me"),
                         ("DELETE", "/api/v1/me/identities/1")):  # fmt: skip
        answer = oidc.client.request(method, path, headers=client)
        assert answer.status_code == 403 and answer.json()["error"] == "client_token", answer.text

    def login_rows() -> list[tuple[Any, ...]]:
        query = f"SELECT event, door, client_id FROM audit WHERE user_id = '{sub}'"
        return [r for r in select_rows(database_url, query) if r[0] == "login"]

    assert wait_for(login_rows) == [("login", "follow", "shop")]  # the hand-over names its client
    own = oidc.new_scene()
    oidc.scan(own, NEW_OPENID)
    mine = bearer(oidc.poll(own["scene"])["access_token"])
    assert oidc.client.delete("/api/v1/me", headers=mine).status_code == 204
    assert_rfc(oidc.client.get("/oidc/userinfo", headers=client), 401, "invalid_token")
