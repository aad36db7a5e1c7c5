"""Bad input from browsers and clients: always a 400-class JSON error, never a 500 or a hang.

Each case here once answered a 500 with a traceback (and dropped the keep-alive connection),
or held the connection open forever.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests import fakewechat
from tests.test_login import Site, assert_error, sms_inbox, start
from tests.util import TIMEOUT

fake_wechat = fakewechat.fake_wechat
__all__ = ["fake_wechat", "sms_inbox", "start"]  # fixtures of the login tests, reused here

SCENE = "/api/v1/scenes/" + "A" * 22
JSON_ROUTES = [
    "/api/v1/scenes",
    SCENE + "/sms",
    SCENE + "/bind",
    "/api/v1/token/refresh",
    "/api/v1/logout",
]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'people.db'}"


@pytest.fixture
def site(start) -> Site:  # type: ignore[no-untyped-def]
    return start(WXPUSH_BODY_TIMEOUT_SECONDS="1")


DEEP = [  # deeper than Python's recursion limit, within the 16 KiB a JSON body may have
    b"[" * 8_000 + b"]" * 8_000,
    b'{"a":' * 2_500 + b"1" + b"}" * 2_500,
    b'{"phone":' + b'[{"a":' * 2_000,  # and not even closed
]


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_deeply_nested_json_is_a_400(site: Site, route: str) -> None:
    for body in DEEP:
        answer = site.client.post(route, content=body, headers={"Content-Type": "application/json"})
        assert_error(answer, 400, "invalid_json")
    # the connection survived: the same client is answered normally
    assert site.client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("/api/v1/token/refresh", "refresh_token"),
        ("/api/v1/logout", "refresh_token"),
        ("/api/v1/scenes", "account"),
        (SCENE + "/sms", "phone"),
        (SCENE + "/bind", "phone"),
        (SCENE + "/bind", "code"),
    ],
)
def test_a_lone_surrogate_is_not_text(site: Site, route: str, field: str) -> None:
    def body(value: bytes) -> bytes:
        fields = {"phone": b'"13800138000"', "code": b'"123456"', field: value}
        return b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in fields.items()) + b"}"

    for escaped in (rb'"\ud800"', rb'"\udfff"', rb'"x\udc00y"', rb'"\ud800\ud800"'):
        answer = site.client.post(route, content=body(escaped))
        assert_error(answer, 400, "invalid_field")
    # json.loads lets a surrogate encoded as raw bytes through too; other bad UTF-8 is not JSON
    assert_error(site.client.post(route, content=body(b'"\xed\xa0\x80"')), 400, "invalid_field")
    assert_error(site.client.post(route, content=body(b'"\xff\xfe"')), 400, "invalid_json")


@pytest.mark.parametrize(
    "body",
    [
        {"account": None},
        {"account": 7},
        {"account": ["default"]},
        {"account": {"name": "default"}},
    ],
)
def test_account_must_be_a_string_when_given(site: Site, body: dict[str, object]) -> None:
    assert_error(site.client.post("/api/v1/scenes", json=body), 400, "invalid_field")


def test_a_null_field_is_refused_not_taken_as_missing(site: Site) -> None:
    for route, body in [
        (SCENE + "/sms", {"phone": None}),
        (SCENE + "/bind", {"phone": "13800138000", "code": None}),
        ("/api/v1/token/refresh", {"refresh_token": None}),
    ]:
        assert_error(site.client.post(route, json=body), 400, "invalid_field")
    assert_error(site.client.post(SCENE + "/sms", json={}), 400, "missing_field")


TIMEOUTS = ["²", "٣", "¹⁰", "1" * 4301, "0" * 4301 + "5", "-1", "1.5", "0", "56", " 5", "5 ", ""]


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=[repr(t[:8]) for t in TIMEOUTS])
def test_wait_timeout_must_be_ascii_seconds_in_range(site: Site, timeout: str) -> None:
    created = site.new_scene()
    answer = site.client.get(f"/api/v1/scenes/{created['scene']}/wait", params={"timeout": timeout})
    assert_error(answer, 400, "invalid_timeout")


def test_a_code_of_other_digits_is_invalid(site: Site) -> None:
    created = site.new_scene()
    site.scan(created, "oOtherDigits0000000000000001")
    scene = created["scene"]
    site.send_code(scene)
    for code in ("１２３４５６", "٣٣٣٣٣٣", "²²²²²²"):
        answer = site.client.post(
            f"/api/v1/scenes/{scene}/bind", json={"phone": "13800138000", "code": code}
        )
        assert_error(answer, 400, "invalid_code")


def _stalled_request(base: str, head: bytes, sent_body: bytes) -> tuple[bytes, float]:
    """Send ``head`` and part of a body, then nothing; return the whole answer (read until the
    server closes) and the seconds it took."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT * 2) as sock:
        began = time.monotonic()
        sock.sendall(head + sent_body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - began


@pytest.mark.parametrize(
    "path",
    ["/api/v1/scenes", "/api/v1/token/refresh", "/wechat/default/callback?timestamp=1&nonce=2"],
)
def test_a_stalled_body_is_answered_408_and_closed(site: Site, path: str) -> None:
    base = str(site.client.base_url).rstrip("/")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    answer, took = _stalled_request(base, head, b'{"acc')
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    assert b'"error":"body_timeout"' in rest
    assert b"connection: close" in rest.lower()
    assert took < TIMEOUT  # the 1 s body timeout, not forever


def test_a_chunked_body_that_stalls_is_answered_408(site: Site) -> None:
    base = str(site.client.base_url).rstrip("/")
    head = b"POST /api/v1/logout HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, _ = _stalled_request(base, head, b'5\r\n{"ref\r\n')
    assert answer.startswith(b"HTTP/1.1 408 "), answer
