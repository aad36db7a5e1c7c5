"""Passive replies: built with lxml, read back exactly, plain or encrypted and signed."""

from __future__ import annotations

import time

import pytest

from tests.wechat import load_vectors
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.errors import SignatureError
from wxpush.wechat.messages import TextMessage, parse_fields, parse_message
from wxpush.wechat.replies import SUCCESS, encrypted_envelope, encrypted_request, text_reply
from wxpush.wechat.signature import verify

VECTOR = load_vectors()["safe_mode_decrypt"]
TOKEN = VECTOR["token"]
OPENID = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
ACCOUNT = "gh_10f6c3c3ac5a"
TIMESTAMP = "1800000000"
NONCE = "1320562132"

CONTENTS = [
    "Logged in",
    "",
    "a]]>b",
    "]]>",
    "]]]]>>",
    "x]]><![CDATA[y",
    "<script>alert('x')</script>",
    "</Content><MsgType>news</MsgType><Content>",
    "已登录，欢迎回来 🎉",
    "请在屏幕上完成登录]]><b>粗</b>",
    "&amp; &lt; & < > \" '",
    "  leading and trailing  ",
    "line one\nline two\ttab",
    "windows\r\nline\rends",
    "windows]]>\r\nline",
    "<!DOCTYPE html><html></html>",
    '<!ENTITY xxe SYSTEM "file:///etc/passwd">',
]


@pytest.fixture
def crypto() -> MessageCrypto:
    return MessageCrypto(VECTOR["appid"], VECTOR["encoding_aes_key"])


@pytest.mark.parametrize("content", CONTENTS)
def test_text_reply_round_trips_exactly(content: str) -> None:
    reply = text_reply(OPENID, ACCOUNT, content, now=1409735669)
    assert parse_fields(reply) == {
        "ToUserName": OPENID,
        "FromUserName": ACCOUNT,
        "CreateTime": "1409735669",
        "MsgType": "text",
        "Content": content,
    }
    msg = parse_message(reply)
    assert isinstance(msg, TextMessage)
    assert msg.content == content
    assert msg.to_user == OPENID
    assert msg.from_user == ACCOUNT
    assert msg.create_time == 1409735669


def test_text_reply_uses_cdata_like_wechat() -> None:
    reply = text_reply(OPENID, ACCOUNT, "<b>hi</b>", now=1)
    assert b"<Content><![CDATA[<b>hi</b>]]></Content>" in reply
    assert b"<CreateTime>1</CreateTime>" in reply


def test_text_reply_cannot_be_broken_out_of() -> None:
    reply = text_reply(
        OPENID, ACCOUNT, "]]></Content><MsgType>news</MsgType><Content><![CDATA[", now=1
    )
    fields = parse_fields(reply)
    assert fields["MsgType"] == "text"
    assert list(fields) == ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content"]


def test_text_reply_is_utf8_without_declaration() -> None:
    reply = text_reply(OPENID, ACCOUNT, "你好", now=1)
    assert reply.startswith(b"<xml>")
    assert "你好".encode() in reply


def test_text_reply_defaults_to_the_clock() -> None:
    before = int(time.time())
    msg = parse_message(text_reply(OPENID, ACCOUNT, "hi"))
    assert before <= msg.create_time <= int(time.time())


def test_success_is_the_bare_word() -> None:
    assert SUCCESS == b"success"


@pytest.mark.parametrize("content", ["Logged in", "a]]>b <script> 已登录"])
def test_encrypted_envelope_is_signed_and_decrypts(crypto: MessageCrypto, content: str) -> None:
    plain = text_reply(OPENID, ACCOUNT, content, now=1409735669)
    envelope = encrypted_envelope(plain, crypto, TOKEN, timestamp=TIMESTAMP, nonce=NONCE)
    fields = parse_fields(envelope)
    assert set(fields) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert fields["TimeStamp"] == TIMESTAMP
    assert fields["Nonce"] == NONCE
    verify(
        fields["MsgSignature"],
        TOKEN,
        fields["TimeStamp"],
        fields["Nonce"],
        fields["Encrypt"],
        window=300,
        now=int(TIMESTAMP),
    )
    decrypted = crypto.decrypt(fields["Encrypt"])
    assert decrypted == plain
    reply = parse_message(decrypted)
    assert isinstance(reply, TextMessage)
    assert reply.content == content


def test_encrypted_envelope_signature_covers_encrypt(crypto: MessageCrypto) -> None:
    envelope = encrypted_envelope(b"<xml/>", crypto, TOKEN, timestamp=TIMESTAMP, nonce=NONCE)
    fields = parse_fields(envelope)
    with pytest.raises(SignatureError) as info:
        verify(fields["MsgSignature"], TOKEN, fields["TimeStamp"], fields["Nonce"], window=None)
    assert type(info.value) is SignatureError
    with pytest.raises(SignatureError) as info:
        verify(fields["MsgSignature"], "other", TIMESTAMP, NONCE, fields["Encrypt"], window=None)
    assert type(info.value) is SignatureError


def test_encrypted_request_is_signed_and_decrypts(crypto: MessageCrypto) -> None:
    inner = (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1800000000</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>"
        "<EventKey><![CDATA[qrscene_login:abc]]></EventKey></xml>"
    ).encode()
    body, msg_signature = encrypted_request(
        inner, crypto, TOKEN, to_user=ACCOUNT, timestamp=TIMESTAMP, nonce=NONCE
    )
    fields = parse_fields(body)
    assert fields["ToUserName"] == ACCOUNT
    verify(msg_signature, TOKEN, TIMESTAMP, NONCE, fields["Encrypt"], window=300, now=1800000000)
    assert crypto.decrypt(fields["Encrypt"]) == inner
    event = parse_message(crypto.decrypt(fields["Encrypt"]))
    assert getattr(event, "scene", None) == "login:abc"


def test_encrypted_request_differs_each_time(crypto: MessageCrypto) -> None:
    first, _ = encrypted_request(
        b"<xml/>", crypto, TOKEN, to_user=ACCOUNT, timestamp=TIMESTAMP, nonce=NONCE
    )
    second, _ = encrypted_request(
        b"<xml/>", crypto, TOKEN, to_user=ACCOUNT, timestamp=TIMESTAMP, nonce=NONCE
    )
    assert parse_fields(first)["Encrypt"] != parse_fields(second)["Encrypt"]
