"""Every error path of the OIDC provider (SPEC §14), as a client or a browser meets it.

An authorization request that cannot go back to a registered redirect URI is an HTML 400 in
words (never a redirect); other authorization errors go back to the client with ``error`` and
``state``; the token endpoint answers RFC 6749 JSON with the right status; Redis away is a 503
in the same shape, and the provider works again once Redis is back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from tests import test_oidc
from tests.conftest import RedisServer
from tests.test_login import Site
from tests.test_oidc import (
    APP,
    SECRET,
    SHOP,
    assert_rfc,
    authorize,
    clients_file,
    code_tokens,
    log_in,
    pkce,
    token,
)
from tests.util import wait_for

fake_wechat, sms_inbox, start = test_oidc.fake_wechat, test_oidc.sms_inbox, test_oidc.start
database_url, oidc = test_oidc.database_url, test_oidc.oidc


def sent_back(answer: httpx.Response) -> dict[str, str]:
    """The error a redirect hands the client (and where it goes)."""
    assert answer.status_code == 302, answer.text
    url = urlsplit(answer.headers["location"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    return query | {"_to": f"{url.scheme}://{url.netloc}{url.path}"}


# -- the authorization request --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "hook"),
    [
        ({"client_id": "nobody"}, "unknown_client"),
        ({"client_id": ""}, "unknown_client"),
        ({"redirect_uri": "https://evil.example/callback"}, "bad_redirect_uri"),
        ({"redirect_uri": SHOP + "/"}, "bad_redirect_uri"),  # exact match only
        ({"redirect_uri": ""}, "bad_redirect_uri"),
        ({"redirect_uri": APP}, "bad_redirect_uri"),  # another client's
    ],
)
def test_a_request_that_cannot_go_back_is_a_page(
    oidc: Site, params: dict[str, str], hook: str
) -> None:
    answer = (
        authorize(oidc, **params)
        if params.get("client_id", "x")
        else (oidc.client.get("/oidc/authorize", params={"redirect_uri": SHOP, "scope": "openid"}))
    )
    assert answer.status_code == 400 and "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert f'data-wxpush-page="{hook}"' in answer.text


def test_the_page_is_in_chinese_when_asked(oidc: Site) -> None:
    answer = oidc.client.get("/oidc/authorize", params={"client_id": "nobody"},
                             headers={"Accept-Language": "zh-CN,zh;q=0.9"})  # fmt: skip
    assert answer.status_code == 400 and "未在本登录服务登记" in answer.text
    page = authorize(oidc, ui_locales="zh-CN")
    assert page.status_code == 200 and "使用微信登录 shop" in page.text
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"scope": "profile email"}, "invalid_scope"),
        ({"scope": ""}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": ""}, "invalid_request"),
        ({"prompt": "none"}, "login_required"),
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge_method": "S256"}, "invalid_request"),
        ({"nonce": "n" * 256}, "invalid_request"),
        ({"request": "eyJ.x.y"}, "request_not_supported"),
    ],
)
def test_other_request_errors_go_back_to_the_client(
    oidc: Site, params: dict[str, str], error: str
) -> None:
    query = {"response_type": "code", "client_id": "shop", "redirect_uri": SHOP,
             "scope": "openid", "state": "st-9", **params}  # fmt: skip
    back = sent_back(oidc.client.get("/oidc/authorize", params=query))
    assert back["_to"] == SHOP and back["error"] == error and back["state"] == "st-9"
    assert back["error_description"] and back["iss"] == "wxpush"


def test_a_public_client_must_use_pkce_and_a_repeated_parameter_is_refused(oidc: Site) -> None:
    back = sent_back(authorize(oidc, client_id="app", redirect_uri=APP))
    assert back["error"] == "invalid_request" and "PKCE" in back["error_description"]
    repeated = oidc.client.get(
        "/oidc/authorize?response_type=code&client_id=shop&scope=openid&scope=openid"
        f"&redirect_uri={SHOP}"
    )
    assert sent_back(repeated)["error"] == "invalid_request"


def test_scenes_of_a_request_are_checked(oidc: Site) -> None:
    gone = oidc.client.post("/api/v1/scenes", json={"oidc": "A" * 32})
    assert gone.status_code == 410 and gone.json()["error"] == "oidc_request_expired"
    challenge = pkce()[1]
    page = authorize(oidc, client_id="app", redirect_uri=APP, code_challenge=challenge,
                     code_challenge_method="S256")  # fmt: skip
    rid = test_oidc.request_id(page)
    wrong = oidc.client.post("/api/v1/scenes", json={"oidc": rid, "kind": "oauth"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "kind_unavailable"  # app: follow
    assert oidc.client.post("/api/v1/scenes", json={"oidc": rid}).status_code == 201


# -- the token endpoint -------------------------------------------------------------------


def test_client_authentication_errors(oidc: Site) -> None:
    code = log_in(oidc)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": SHOP}
    wrong = token(oidc, auth=("shop", "not-the-secret-at-all"), **form)
    assert_rfc(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert_rfc(token(oidc, auth=("nobody", SECRET), **form), 401, "invalid_client")
    assert_rfc(token(oidc, auth=None, client_id="shop", **form), 401, "invalid_client")
    both = oidc.client.post("/oidc/token", data={**form, "client_secret": SECRET},
                            auth=("shop", SECRET))  # fmt: skip
    assert_rfc(both, 400, "invalid_request")
    garbled = oidc.client.post("/oidc/token", data=form, headers={"Authorization": "Basic %%%"})
    assert_rfc(garbled, 401, "invalid_client")
    # none of these spent the code: the right client still gets its tokens
    assert token(oidc, **form).status_code == 200


def test_code_errors(oidc: Site) -> None:
    verifier, challenge = pkce()
    back = log_in(oidc, code_challenge=challenge, code_challenge_method="S256")
    form = {"grant_type": "authorization_code", "code": back["code"], "redirect_uri": SHOP}
    assert_rfc(token(oidc, **form, code_verifier=pkce()[0]), 400, "invalid_grant")
    # a wrong verifier spent the code: the right one comes too late
    assert_rfc(token(oidc, **form, code_verifier=verifier), 400, "invalid_grant")
    for params, change in [
        ({}, {"redirect_uri": SHOP + "?other=1"}),
        ({}, {"code_verifier": pkce()[0]}),  # a verifier for a code issued without a challenge
    ]:
        code = log_in(oidc, **params)["code"]
        assert_rfc(token(oidc, **{**form, "code": code, **change}), 400, "invalid_grant")
    missing = log_in(oidc, code_challenge=challenge, code_challenge_method="S256")["code"]
    assert_rfc(token(oidc, **{**form, "code": missing}), 400, "invalid_grant")  # no verifier
    assert_rfc(token(oidc, **{**form, "code": "made-up"}), 400, "invalid_grant")
    other = log_in(oidc)["code"]
    public = token(oidc, auth=None, client_id="app", grant_type="authorization_code",
                   code=other, redirect_uri=SHOP)  # fmt: skip
    assert_rfc(public, 400, "invalid_grant")  # shop's code at the app


def test_a_replayed_code_revokes_what_the_first_use_gave(oidc: Site) -> None:
    verifier, challenge = pkce()
    back = log_in(oidc, scope="openid offline_access", code_challenge=challenge,
                  code_challenge_method="S256")  # fmt: skip
    form = {"grant_type": "authorization_code", "code": back["code"], "redirect_uri": SHOP,
            "code_verifier": verifier}  # fmt: skip
    first = token(oidc, **form).json()
    headers = {"Authorization": "Bearer " + first["access_token"]}
    assert oidc.client.get("/oidc/userinfo", headers=headers).status_code == 200
    assert_rfc(token(oidc, **form), 400, "invalid_grant")
    assert oidc.client.get("/oidc/userinfo", headers=headers).status_code == 401
    again = token(oidc, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert_rfc(again, 400, "invalid_grant")


def test_an_expired_code_is_refused(oidc: Site, redis_url: str) -> None:
    code = log_in(oidc)["code"]
    key = "wxpush:oidc:code:" + hashlib.sha256(code.encode()).hexdigest()
    store = redis.Redis.from_url(redis_url)
    assert 0 < store.ttl(key) <= 60  # the code lives 60 s …
    store.pexpire(key, 1)  # … and those 60 s have passed
    wait_for(lambda: not store.exists(key))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": SHOP}
    assert_rfc(token(oidc, **form), 400, "invalid_grant")


def test_grant_and_form_errors(oidc: Site) -> None:
    assert_rfc(token(oidc, grant_type="password", username="a"), 400, "unsupported_grant_type")
    assert_rfc(token(oidc), 400, "invalid_request")
    assert_rfc(token(oidc, grant_type="authorization_code"), 400, "invalid_request")
    assert_rfc(token(oidc, grant_type="refresh_token"), 400, "invalid_request")
    as_json = oidc.client.post("/oidc/token", json={"grant_type": "refresh_token"},
                               auth=("shop", SECRET))  # fmt: skip
    assert_rfc(as_json, 400, "invalid_request")
    twice = oidc.client.post("/oidc/token", content="grant_type=a&grant_type=b",
                             headers={"Content-Type": "application/x-www-form-urlencoded"},
                             auth=("shop", SECRET))  # fmt: skip
    assert_rfc(twice, 400, "invalid_request")
    huge = oidc.client.post(
        "/oidc/token",
        content="code=" + "x" * 40_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_rfc(huge, 413, "invalid_request")
    bad_utf8 = oidc.client.post(
        "/oidc/token",
        content=b"code=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_rfc(bad_utf8, 400, "invalid_request")
    assert_rfc(oidc.client.get("/oidc/userinfo"), 401, "invalid_token")
    assert_rfc(oidc.client.get("/oidc/userinfo", headers={"Authorization": "Bearer x.y.z"}),
               401, "invalid_token")  # fmt: skip
    id_token = code_tokens(oidc)["id_token"]  # an id_token is not an access token
    as_access = oidc.client.get("/oidc/userinfo", headers={"Authorization": "Bearer " + id_token})
    assert_rfc(as_access, 401, "invalid_token")
    assert_rfc(oidc.client.post("/oidc/revoke", data={}, auth=("shop", SECRET)), 400,
               "invalid_request")  # fmt: skip


def test_redis_away_is_a_503_in_the_rfc_shape_and_passes(
    start: Callable[..., Site], own_redis: RedisServer, tmp_path: Path
) -> None:
    site = start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path), WXPUSH_REDIS_URL=own_redis.url,
                 WXPUSH_REQUIRE_PHONE="false")  # fmt: skip
    code = log_in(site)["code"]
    own_redis.stop()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": SHOP}
    answer = token(site, **form)
    assert_rfc(answer, 503, "temporarily_unavailable")
    page = authorize(site)
    assert page.status_code == 503 and 'data-wxpush-page="unavailable"' in page.text
    own_redis.start()
    # the code was never spent (Redis was away): the same exchange now succeeds
    assert wait_for(lambda: token(site, **form).status_code != 503 or None)
    assert authorize(site).status_code == 200
