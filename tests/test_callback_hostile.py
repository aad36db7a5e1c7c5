"""Hostile callbacks against a real ``wxpush serve``: DOCTYPEs naming files, devices and FIFOs,
in every encoding and in every mode. The server is a process of its own, so a regression that
freezes it fails these tests (each request has a timeout) and is killed, instead of hanging
the run.

Issue 10 item 1: a safe-mode body ``<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE xml
SYSTEM "file:///dev/ptmx"><xml/>`` with any ``msg_signature`` froze the server, and the answer
told whether a named file existed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests import hostile, wire
from tests.conftest import RedisServer
from tests.procs import ServerProcess
from tests.util import TIMEOUT
from wxpush.wechat.crypto import MessageCrypto

AES_KEY = wire.new_aes_key()
CRYPTO = MessageCrypto(wire.APPID, AES_KEY)
PATH = "/wechat/default/callback"
ISSUE_BODY = (
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE xml SYSTEM "file:///dev/ptmx"><xml/>'
).encode("utf-16")
EVERY_ENCODING = hostile.UTF8 + hostile.FOREIGN
Build = Callable[[str], tuple[dict[str, str], bytes]]  # a document's prolog → (query, body)


@pytest.fixture(scope="module")
def server(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("hostile")
    env = {
        "WXPUSH_APPID": wire.APPID,
        "WXPUSH_APPSECRET": "secret",
        "WXPUSH_TOKEN": wire.TOKEN,
        "WXPUSH_AES_KEY": AES_KEY,
        "WXPUSH_REDIS_URL": redis_server.url,
        "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'wxpush.db'}",
        "WXPUSH_JWT_KEY_FILE": str(workdir / "jwt.pem"),
        "WXPUSH_WECHAT_API_BASE": "http://127.0.0.1:9",
    }
    process = ServerProcess(env, workdir).start()
    yield process
    process.stop(signal.SIGKILL)  # a frozen server does not stop on SIGTERM


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        yield client
        # whatever the test sent, the server still answers
        assert client.get("/healthz").status_code == 200


def _text(xml: bytes) -> str:
    return xml.decode()


def builders(encoding: hostile.Encoding, body: str = "") -> dict[str, Build]:
    """How each mode carries a document with ``prolog`` (a DOCTYPE, or nothing) in
    ``encoding``: ``body`` is the plaintext ``<xml>`` (a SCAN event when empty)."""
    event = body.encode() or wire.event_xml("SCAN", "login:hostile")

    def plain(prolog: str) -> tuple[dict[str, str], bytes]:
        # A replayed query string: the signature covers token, timestamp and nonce only.
        params, _ = wire.signed(b"")
        return params, hostile.document(_text(event), encoding, prolog)

    def envelope(mode: wire.Mode, good: bool) -> Build:
        def build(prolog: str) -> tuple[dict[str, str], bytes]:
            params, body = wire.signed(event, mode=mode, crypto=CRYPTO)
            if not good:
                params["msg_signature"] = "0" * 40
            return params, hostile.document(_text(body), encoding, prolog)

        return build

    def inside(prolog: str) -> tuple[dict[str, str], bytes]:
        # In the ciphertext: authenticated by a good msg_signature, then parsed.
        return wire.signed(hostile.document(_text(event), encoding, prolog), mode="safe",
                           crypto=CRYPTO)  # fmt: skip

    return {
        "plaintext": plain,
        "compatible": envelope("compat", good=True),
        "safe": envelope("safe", good=True),
        "safe-bad-signature": envelope("safe", good=False),
        "safe-inside-ciphertext": inside,
    }


MODES = list(builders(hostile.UTF8[0]))
HOSTILE_EVENT = (
    "<xml><ToUserName>&e;</ToUserName><FromUserName>o</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>event</MsgType><Event>SCAN</Event>"
    "<EventKey>login:x</EventKey></xml>"
)


def answer(client: httpx.Client, params: dict[str, str], body: bytes) -> tuple[int, str]:
    response = client.post(PATH, params=params, content=body)
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("encoding", EVERY_ENCODING, ids=lambda e: e.name)
@pytest.mark.parametrize("mode", MODES)
def test_a_doctype_is_forbidden_the_same_whatever_it_names(
    client: httpx.Client, mode: str, encoding: hostile.Encoding, tmp_path: Path
) -> None:
    build = builders(encoding, HOSTILE_EVENT)[mode]
    answers: dict[tuple[str, str], tuple[int, str]] = {}
    with hostile.targets(tmp_path) as targets:
        targets["ptmx"] = Path("/dev/ptmx")  # the issue's own
        for kind in hostile.DTDS:
            for name, target in targets.items():
                params, body = build(hostile.doctype(kind, target))
                answers[kind, name] = answer(client, params, body)
    assert set(answers.values()) == {(400, "doctype_forbidden")}, answers


@pytest.mark.parametrize("encoding", hostile.FOREIGN, ids=lambda e: e.name)
@pytest.mark.parametrize("mode", MODES)
def test_a_callback_in_another_encoding_is_bad_xml(
    client: httpx.Client, mode: str, encoding: hostile.Encoding
) -> None:
    # WeChat only sends UTF-8. A well-formed event in UTF-16 was read (and a UTF-16
    # envelope parsed before its signature was checked); now nothing but UTF-8 is.
    params, body = builders(encoding)[mode]("")
    assert answer(client, params, body) == (400, "bad_xml")


@pytest.mark.parametrize("encoding", hostile.UTF8, ids=lambda e: e.name)
@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe", "safe-inside-ciphertext"])
def test_utf8_with_a_declaration_or_bom_still_reaches_the_scan_handler(
    client: httpx.Client, mode: str, encoding: hostile.Encoding
) -> None:
    params, body = builders(encoding)[mode]("")
    response = client.post(PATH, params=params, content=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"msg_signature": "0" * 40}, 403, "bad_signature"),
        ({}, 400, "missing_parameter"),
    ],
)
def test_a_well_formed_envelope_is_checked_against_msg_signature_first(
    client: httpx.Client, query: dict[str, str], status: int, code: str
) -> None:
    # The ciphertext carries a DOCTYPE naming a FIFO: with a bad (or no) msg_signature it
    # is never decrypted nor parsed.
    hostile_payload = hostile.document(HOSTILE_EVENT, hostile.FOREIGN[0],
                                       hostile.doctype("system", "file:///dev/ptmx"))  # fmt: skip
    params, body = wire.signed(hostile_payload, mode="safe", crypto=CRYPTO)
    del params["msg_signature"]
    assert answer(client, params | query, body) == (status, code)


def test_the_issues_request_is_refused_and_the_server_keeps_answering(
    server: ServerProcess,
) -> None:
    # Four such requests froze a two-worker server for good; send more than that at once and
    # watch /healthz meanwhile and after.
    async def attack() -> tuple[list[tuple[int, str]], list[int]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:

            async def one(signature: str) -> tuple[int, str]:
                params = {**wire.signed(b"")[0], "encrypt_type": "aes"}
                params["msg_signature"] = signature
                response = await client.post(PATH, params=params, content=ISSUE_BODY)
                return response.status_code, response.json()["error"]

            async def health() -> list[int]:
                statuses = []
                for _ in range(10):
                    statuses.append((await client.get("/healthz")).status_code)
                return statuses

            *answers, statuses = await asyncio.gather(
                *(one(f"{i:040x}") for i in range(8)), health()
            )
            return answers, statuses  # type: ignore[return-value]

    answers, statuses = asyncio.run(attack())
    assert set(answers) == {(400, "doctype_forbidden")}
    assert set(statuses) == {200}
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/healthz").status_code == 200
        params, body = wire.signed(wire.event_xml("SCAN", "login:after"), mode="safe",
                                   crypto=CRYPTO)  # fmt: skip
        assert client.post(PATH, params=params, content=body).status_code == 200
