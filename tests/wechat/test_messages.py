"""Hardened XML parsing into frozen dataclasses, dispatched by a registry."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import NoReturn

import pytest
from lxml import etree

from tests import hostile
from wxpush.wechat import messages
from wxpush.wechat.errors import ForbiddenDoctypeError, XMLError
from wxpush.wechat.messages import (
    _PARSER,
    ClickEvent,
    ImageMessage,
    Message,
    ScanEvent,
    SubscribeEvent,
    TextMessage,
    Unknown,
    UnsubscribeEvent,
    ViewEvent,
    _NoExternals,
    parse_fields,
    parse_message,
)

ACCOUNT = "gh_10f6c3c3ac5a"
OPENID = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
TICKET = (
    "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJ"
    "AAIEZ23sUwMEmm3sUw=="
)


def doc(msg_type: str, *fields: tuple[str, str], create_time: str = "1409735668") -> bytes:
    """A message as WeChat sends it: CDATA strings, bare numbers, one field per line."""
    lines = [
        f"<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>",
        f"<FromUserName><![CDATA[{OPENID}]]></FromUserName>",
        f"<CreateTime>{create_time}</CreateTime>",
        f"<MsgType><![CDATA[{msg_type}]]></MsgType>",
    ]
    for tag, value in fields:
        text = value if value.isdigit() else f"<![CDATA[{value}]]>"
        lines.append(f"<{tag}>{text}</{tag}>")
    return ("<xml>" + "\n".join(lines) + "\n</xml>").encode()


def event(name: str, *fields: tuple[str, str]) -> bytes:
    return doc("event", ("Event", name), *fields)


SUBSCRIBE_QR = event("subscribe", ("EventKey", "qrscene_login:abc"), ("Ticket", TICKET))


# --- the registered classes ---------------------------------------------------------------


def test_subscribe_from_qr_code() -> None:
    msg = parse_message(SUBSCRIBE_QR)
    assert isinstance(msg, SubscribeEvent)
    assert msg.to_user == ACCOUNT
    assert msg.from_user == OPENID
    assert msg.create_time == 1409735668
    assert msg.msg_type == "event"
    assert msg.event == "subscribe"
    assert msg.event_key == "qrscene_login:abc"
    assert msg.ticket == TICKET
    assert msg.scene == "login:abc"


def test_plain_subscribe_has_no_scene() -> None:
    msg = parse_message(event("subscribe"))
    assert isinstance(msg, SubscribeEvent)
    assert msg.scene is None
    assert msg.event_key == ""
    assert msg.ticket is None


def test_subscribe_with_empty_event_key_has_no_scene() -> None:
    # WeChat sends an empty <EventKey> for a follow from search.
    msg = parse_message(event("subscribe", ("EventKey", "")))
    assert isinstance(msg, SubscribeEvent)
    assert msg.scene is None


def test_subscribe_with_an_unprefixed_key_has_no_scene() -> None:
    msg = parse_message(event("subscribe", ("EventKey", "login:abc")))
    assert isinstance(msg, SubscribeEvent)
    assert msg.scene is None


def test_scan() -> None:
    msg = parse_message(event("SCAN", ("EventKey", "login:abc"), ("Ticket", TICKET)))
    assert isinstance(msg, ScanEvent)
    assert msg.event == "SCAN"
    assert msg.scene == "login:abc"
    assert msg.ticket == TICKET
    assert msg.from_user == OPENID


def test_unsubscribe() -> None:
    msg = parse_message(event("unsubscribe", ("EventKey", "")))
    assert isinstance(msg, UnsubscribeEvent)
    assert msg.event == "unsubscribe"
    assert msg.from_user == OPENID
    assert msg.create_time == 1409735668


def test_click() -> None:
    msg = parse_message(event("CLICK", ("EventKey", "V1001_TODAY_MUSIC")))
    assert isinstance(msg, ClickEvent)
    assert msg.event == "CLICK"
    assert msg.event_key == "V1001_TODAY_MUSIC"


def test_view() -> None:
    msg = parse_message(
        event("VIEW", ("EventKey", "https://example.com/a?b=1&c=2"), ("MenuId", "7"))
    )
    assert isinstance(msg, ViewEvent)
    assert msg.event == "VIEW"
    assert msg.event_key == "https://example.com/a?b=1&c=2"
    assert msg.menu_id == "7"


def test_text() -> None:
    msg = parse_message(doc("text", ("Content", "你好 <b>&amp;"), ("MsgId", "6054768590064713728")))
    assert isinstance(msg, TextMessage)
    assert msg.content == "你好 <b>&amp;"
    assert msg.msg_id == 6054768590064713728
    assert msg.msg_type == "text"


def test_image() -> None:
    msg = parse_message(
        doc(
            "image",
            ("PicUrl", "http://mmbiz.qpic.cn/x/0"),
            ("MediaId", "media_id_1"),
            ("MsgId", "1234567890123456"),
        )
    )
    assert isinstance(msg, ImageMessage)
    assert msg.pic_url == "http://mmbiz.qpic.cn/x/0"
    assert msg.media_id == "media_id_1"
    assert msg.msg_id == 1234567890123456


def test_parse_fields_reads_top_level_text() -> None:
    fields = parse_fields(SUBSCRIBE_QR)
    assert fields == {
        "ToUserName": ACCOUNT,
        "FromUserName": OPENID,
        "CreateTime": "1409735668",
        "MsgType": "event",
        "Event": "subscribe",
        "EventKey": "qrscene_login:abc",
        "Ticket": TICKET,
    }


def test_comments_are_skipped() -> None:
    fields = parse_fields(b"<xml><!-- note --><A>1</A><?pi x?></xml>")
    assert fields == {"A": "1"}


@pytest.mark.parametrize(
    "data",
    [
        SUBSCRIBE_QR,
        SUBSCRIBE_QR + b"\n",
        SUBSCRIBE_QR + b"<!-- after the root -->",
        b"<xml><A><![CDATA[" + b"x" * 300 + b"]]></A><B>2</B></xml>",
        b"<xml><A><![CDATA[\xe4\xbd\xa0\xe5\xa5\xbd]]>\r\n</A><B/></xml>",
        b"<xml><A>a]]b</A><B><![CDATA[]]]]><![CDATA[>]]></B></xml>",
    ],
)
def test_parse_fields_agrees_with_a_plain_lxml_parse(data: bytes) -> None:
    # parse_fields gives lxml a blank tail for speed; the fields must not change.
    root = etree.fromstring(data)
    assert parse_fields(data) == {c.tag: c.text or "" for c in root if isinstance(c.tag, str)}


ENCRYPT = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUg=="


@pytest.mark.parametrize(
    "data",
    [
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>".encode(),
        # As WeChat's documentation prints it: indented, one field per line.
        f"<xml>\n    <ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>\n"
        f"    <Encrypt><![CDATA[{ENCRYPT}]]></Encrypt>\n</xml>\n".encode(),
        f"<xml>\r\n<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>\r\n"
        f"<Encrypt><![CDATA[{ENCRYPT[:-2]}]]></Encrypt>\r\n</xml>".encode(),
        f"<xml><ToUserName><![CDATA[wx2c2769f8efd9abc2]]></ToUserName>"
        f"<Encrypt><![CDATA[{ENCRYPT[:-1]}]]></Encrypt></xml>".encode(),
    ],
)
def test_envelope_fast_path_agrees_with_lxml(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {c.tag: c.text for c in etree.fromstring(data)}

    def no_tree(*args: object) -> None:
        raise AssertionError("a canonical envelope needs no tree")

    monkeypatch.setattr(etree, "fromstring", no_tree)
    assert parse_fields(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        # Near misses of the envelope's shape: lxml reads them, with the same answers.
        f"<xml><Encrypt><![CDATA[{ENCRYPT}]]></Encrypt>"
        f"<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName></xml>".encode(),
        f"<xml><ToUserName>{ACCOUNT}</ToUserName><Encrypt>{ENCRYPT}</Encrypt></xml>".encode(),
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt><MsgType>event</MsgType></xml>".encode(),
        f"<xml><ToUserName><![CDATA[公众号]]></ToUserName>"
        f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>".encode(),
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<Encrypt><![CDATA[{ENCRYPT}]]>&amp;</Encrypt></xml>".encode(),
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><!-- c -->"
        f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>".encode(),
    ],
)
def test_envelope_near_misses_go_through_lxml(data: bytes) -> None:
    assert parse_fields(data) == {
        c.tag: c.text for c in etree.fromstring(data).iterchildren(etree.Element)
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt></xml>",
            ForbiddenDoctypeError,
        ),
        (
            b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt>",
            XMLError,
        ),
        (
            b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt></xml>"
            b"<xml/>",
            XMLError,
        ),
        (
            b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[QU\x00JD]]></Encrypt></xml>",
            XMLError,
        ),
    ],
)
def test_malformed_envelopes_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse_fields(data)
    assert type(info.value) is error


# --- Unknown keeps everything -------------------------------------------------------------


def test_location_message_is_unknown_with_all_fields() -> None:
    fields = [
        ("Location_X", "23.134521"),
        ("Location_Y", "113.358803"),
        ("Scale", "20"),
        ("Label", "位置信息"),
        ("MsgId", "1234567890123456"),
    ]
    data = doc("location", *fields)
    msg = parse_message(data)
    assert type(msg) is Unknown
    assert msg.msg_type == "location"
    assert msg.event is None
    assert dict(msg.fields) == parse_fields(data)
    assert dict(msg.fields)["Label"] == "位置信息"
    assert msg.dedup_key == f"1234567890123456|{OPENID}|1409735668"


def test_unregistered_event_is_unknown_with_all_fields() -> None:
    data = event("TEMPLATESENDJOBFINISH", ("MsgID", "200163836"), ("Status", "success"))
    msg = parse_message(data)
    assert type(msg) is Unknown
    assert msg.msg_type == "event"
    assert msg.event == "TEMPLATESENDJOBFINISH"
    assert dict(msg.fields) == parse_fields(data)
    assert dict(msg.fields)["Status"] == "success"
    assert dict(msg.fields)["MsgID"] == "200163836"


def test_unknown_event_dedup_key() -> None:
    msg = parse_message(event("LOCATION", ("Latitude", "23.1"), ("EventKey", "k")))
    assert type(msg) is Unknown
    assert msg.dedup_key == f"{OPENID}|1409735668|LOCATION|k"


def test_event_names_are_case_sensitive() -> None:
    # WeChat spells them exactly; a lower-case "scan" is not SCAN.
    assert type(parse_message(event("scan", ("EventKey", "login:abc")))) is Unknown


# --- de-duplication keys ------------------------------------------------------------------


def test_event_dedup_key_has_from_user_create_time_event_and_key() -> None:
    msg = parse_message(SUBSCRIBE_QR)
    assert msg.dedup_key == f"{OPENID}|1409735668|subscribe|qrscene_login:abc"
    # A retry is the same document again: same key.
    assert parse_message(SUBSCRIBE_QR).dedup_key == msg.dedup_key


@pytest.mark.parametrize(
    "other",
    [
        event("subscribe", ("EventKey", "qrscene_login:abd"), ("Ticket", TICKET)),
        event("SCAN", ("EventKey", "qrscene_login:abc"), ("Ticket", TICKET)),
        doc("event", ("Event", "subscribe"), ("EventKey", "qrscene_login:abc"), create_time="1"),
        SUBSCRIBE_QR.replace(OPENID.encode(), b"oOther"),
    ],
)
def test_event_dedup_key_changes_with_each_part(other: bytes) -> None:
    assert parse_message(other).dedup_key != parse_message(SUBSCRIBE_QR).dedup_key


def test_events_without_event_key_dedup_by_event() -> None:
    assert parse_message(event("unsubscribe")).dedup_key == f"{OPENID}|1409735668|unsubscribe|"


def test_event_dedup_key_ignores_the_ticket() -> None:
    other = event("subscribe", ("EventKey", "qrscene_login:abc"), ("Ticket", "another"))
    assert parse_message(other).dedup_key == parse_message(SUBSCRIBE_QR).dedup_key


def test_text_dedup_key_has_msg_id_from_user_create_time() -> None:
    msg = parse_message(doc("text", ("Content", "hi"), ("MsgId", "6054768590064713728")))
    assert msg.dedup_key == f"6054768590064713728|{OPENID}|1409735668"
    other = parse_message(doc("text", ("Content", "hi"), ("MsgId", "6054768590064713729")))
    assert other.dedup_key != msg.dedup_key


def test_image_dedup_key_has_msg_id() -> None:
    msg = parse_message(doc("image", ("MediaId", "m"), ("MsgId", "42")))
    assert msg.dedup_key == f"42|{OPENID}|1409735668"


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["ToUserName", "FromUserName", "CreateTime", "MsgType"])
def test_missing_required_field_raises(missing: str) -> None:
    fields = parse_fields(SUBSCRIBE_QR)
    del fields[missing]
    data = ("<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</xml>").encode()
    with pytest.raises(XMLError) as info:
        parse_message(data)
    assert type(info.value) is XMLError
    assert missing in str(info.value)


@pytest.mark.parametrize("empty", ["ToUserName", "FromUserName", "CreateTime", "MsgType"])
def test_empty_required_field_raises(empty: str) -> None:
    data = SUBSCRIBE_QR
    start, end = data.index(f"<{empty}>".encode()), data.index(f"</{empty}>".encode())
    data = data[:start] + f"<{empty}>".encode() + data[end:]
    with pytest.raises(XMLError) as info:
        parse_message(data)
    assert type(info.value) is XMLError


@pytest.mark.parametrize("create_time", ["soon", "1409735668.5", "0x10", "١٢٣abc"])
def test_non_numeric_create_time_raises(create_time: str) -> None:
    with pytest.raises(XMLError) as info:
        parse_message(doc("event", ("Event", "subscribe"), create_time=create_time))
    assert type(info.value) is XMLError


def test_non_numeric_msg_id_raises() -> None:
    with pytest.raises(XMLError) as info:
        parse_message(doc("text", ("Content", "hi"), ("MsgId", "abc")))
    assert type(info.value) is XMLError


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"not xml",
        b"<xml><ToUserName>a</xml>",
        b"<xml>",
        b"<xml></xml><xml></xml>",
        b"<xml><A>&undefined;</A></xml>",
        b"<xml><A>\xff\xfe</A></xml>",  # not UTF-8
        SUBSCRIBE_QR[:-3],
    ],
)
def test_malformed_xml_raises(data: bytes) -> None:
    with pytest.raises(XMLError) as info:
        parse_message(data)
    assert type(info.value) is XMLError


@pytest.mark.parametrize(
    "data", [b"<root><MsgType>text</MsgType></root>", b"<XML/>", b"<ns:xml xmlns:ns='u'/>"]
)
def test_root_must_be_xml(data: bytes) -> None:
    with pytest.raises(XMLError, match="root") as info:
        parse_fields(data)
    assert type(info.value) is XMLError


def _passwd_marker() -> str:
    try:
        with open("/etc/passwd", encoding="utf-8") as f:
            return f.readline().split(":", 1)[0] + ":"
    except OSError:
        return "root:"


XXE = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    b"<xml><ToUserName>&xxe;</ToUserName><FromUserName>&xxe;</FromUserName>"
    b"<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content></xml>"
)


@pytest.mark.parametrize(
    "data",
    [
        XXE,
        XXE.decode().encode("utf-16"),  # the byte scan cannot see it: the parsed doctype can
        XXE.replace(b"<!DOCTYPE xml [", b"<!DOCTYPE xml SYSTEM 'file:///etc/passwd' ["),
    ],
)
def test_xxe_is_refused_without_leaking(data: bytes) -> None:
    with pytest.raises(ForbiddenDoctypeError) as info:
        parse_message(data)
    marker = _passwd_marker()
    seen: BaseException | None = info.value
    while seen is not None:  # the whole chain, as a traceback in a log would show it
        assert marker not in str(seen)
        assert marker not in repr(seen)
        seen = seen.__cause__ or seen.__context__


def test_the_parser_itself_resolves_no_entities() -> None:
    # Defence in depth: were a DOCTYPE ever to get past the refusals above, the parser would
    # still leave external entities unresolved.
    root = etree.fromstring(XXE, _PARSER)
    assert _passwd_marker() not in etree.tostring(root, encoding="unicode")
    assert root.findtext("ToUserName") in ("", None)


def test_doctype_without_declaration_is_refused() -> None:
    with pytest.raises(ForbiddenDoctypeError):
        parse_message(XXE[XXE.index(b"<!DOCTYPE") :])


@pytest.mark.parametrize(
    "data",
    [
        b'<xml><!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/passwd">]><A>&a;</A></xml>',
        b'<xml/><!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/passwd">]>',
        b'<xml><A>&a;</A></xml><!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/passwd">]>',
        b'<xml><!ENTITY a SYSTEM "file:///etc/passwd"><A>&a;</A></xml>',
    ],
)
def test_doctype_after_the_root_starts_is_malformed(data: bytes) -> None:
    # A DOCTYPE may only stand before the root element; anywhere else it is a syntax error.
    with pytest.raises(XMLError) as info:
        parse_fields(data)
    assert type(info.value) is XMLError
    assert _passwd_marker() not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "<!DOCTYPE html><html><body>hi</body></html>",
        '<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>&xxe;',
        '<!ENTITY lol "lol">',
    ],
)
def test_doctype_text_in_a_message_is_just_text(content: str) -> None:
    # A person may send "<!DOCTYPE html>" to the account; WeChat wraps it in CDATA.
    msg = parse_message(doc("text", ("Content", content), ("MsgId", "1")))
    assert isinstance(msg, TextMessage)
    assert msg.content == content


def _billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    return (
        f"<?xml version='1.0'?><!DOCTYPE xml [{''.join(entities)}]>"
        "<xml><ToUserName>&lol9;</ToUserName><FromUserName>a</FromUserName>"
        "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol9;</Content></xml>"
    ).encode()


@pytest.fixture
def no_lxml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any document that reaches lxml fails the test: refused before parsing, nothing expands."""

    def fromstring(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("the document reached lxml")

    monkeypatch.setattr(messages.etree, "fromstring", fromstring)


def test_billion_laughs_is_refused_before_parsing(no_lxml: None) -> None:
    with pytest.raises(ForbiddenDoctypeError) as info:
        parse_message(_billion_laughs())
    assert type(info.value) is ForbiddenDoctypeError


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_billion_laughs_in_another_encoding_is_refused_before_parsing(
    encoding: str, no_lxml: None
) -> None:
    # The byte scan for "<!DOCTYPE" cannot see a UTF-16/32 document; the encoding check sees
    # the DOCTYPE in it, and the document never reaches lxml.
    declared = f"version='1.0' encoding='{encoding}'"
    data = _billion_laughs().decode().replace("version='1.0'", declared).encode(encoding)
    with pytest.raises(ForbiddenDoctypeError) as info:
        parse_message(data)
    assert type(info.value) is ForbiddenDoctypeError


# --- other encodings, and DOCTYPEs that name what must never be opened --------------------

HOSTILE_BODY = (
    "<xml><ToUserName>&e;</ToUserName><FromUserName>o</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&e;</Content></xml>"
)
EVERY_ENCODING = hostile.UTF8 + hostile.FOREIGN


@pytest.mark.parametrize("encoding", hostile.UTF8, ids=lambda e: e.name)
def test_utf8_with_a_declaration_or_bom_is_read(encoding: hostile.Encoding) -> None:
    msg = parse_message(hostile.document(doc("text", ("Content", "你好")).decode(), encoding))
    assert isinstance(msg, TextMessage)
    assert msg.content == "你好"


@pytest.mark.parametrize("encoding", hostile.FOREIGN, ids=lambda e: e.name)
def test_a_message_in_another_encoding_is_bad_xml(encoding: hostile.Encoding) -> None:
    # WeChat only sends UTF-8; nothing else reaches lxml, which would read the declared one.
    data = hostile.document(doc("text", ("Content", "hi"), ("MsgId", "1")).decode(), encoding)
    with pytest.raises(XMLError) as info:
        parse_message(data)
    assert type(info.value) is XMLError


@pytest.mark.parametrize("kind", sorted(hostile.DTDS))
@pytest.mark.parametrize("encoding", EVERY_ENCODING, ids=lambda e: e.name)
def test_a_doctype_is_forbidden_in_every_encoding(encoding: hostile.Encoding, kind: str) -> None:
    data = hostile.document(HOSTILE_BODY, encoding, hostile.doctype(kind, "file:///etc/passwd"))
    with pytest.raises(ForbiddenDoctypeError):
        parse_fields(data)


@pytest.mark.parametrize("kind", sorted(hostile.DTDS))
@pytest.mark.parametrize("encoding", EVERY_ENCODING, ids=lambda e: e.name)
def test_the_answer_is_the_same_whatever_exists_on_disk(
    encoding: hostile.Encoding, kind: str, tmp_path: Path
) -> None:
    # The oracle: an existing file was answered bad_xml and a missing one
    # doctype_forbidden, and a FIFO or a terminal froze the parser.
    with hostile.targets(tmp_path) as targets:
        documents = {
            name: hostile.document(HOSTILE_BODY, encoding, hostile.doctype(kind, target))
            for name, target in targets.items()
        }
        answers = {
            name: hostile.outcome(partial(parse_fields, data), timeout=2)
            for name, data in documents.items()
        }
    assert set(answers.values()) == {
        "raised ForbiddenDoctypeError: DOCTYPE and entity declarations are not accepted"
    }, answers


@pytest.mark.parametrize("kind", sorted(hostile.DTDS))
@pytest.mark.parametrize("codec", ["utf-8", "utf-16", "utf-32"])
def test_the_parser_itself_opens_nothing(codec: str, kind: str, tmp_path: Path) -> None:
    # Defence in depth, below the refusals: a DOCTYPE handed straight to the parser loads no
    # DTD and no entity, in any encoding, whatever its name points at.
    with hostile.targets(tmp_path) as targets:
        answers = set()
        for target in targets.values():
            text = hostile.doctype(kind, target) + "<xml><A>&e;</A></xml>"
            answers.add(hostile.outcome(partial(_read, text.encode(codec)), timeout=2))
    assert len(answers) == 1, answers
    assert "on disk" not in answers.pop()


def _read(data: bytes) -> str:
    root = etree.fromstring(data, _PARSER)
    return etree.tostring(root, encoding="unicode")


@pytest.mark.parametrize("kind", ["system", "public"])
def test_the_resolver_never_falls_back_to_libxml2s_loader(kind: str, tmp_path: Path) -> None:
    # A parser told to load DTDs still gets none from the resolver: it refuses rather than
    # return None, which would hand the name to libxml2's own loader.
    parser = etree.XMLParser(load_dtd=True, no_network=True)
    parser.resolvers.add(_NoExternals())
    with hostile.targets(tmp_path) as targets:
        documents = [(hostile.doctype(kind, t) + "<xml/>").encode() for t in targets.values()]
        answers = {
            hostile.outcome(partial(etree.fromstring, data, parser), timeout=2)
            for data in documents
        }
    assert answers == {"raised ForbiddenDoctypeError: external DTDs and entities are never loaded"}


def test_an_entity_declaration_without_a_doctype_is_refused_as_one() -> None:
    # Malformed XML too, but what it tries is an entity: refused as such (doctype_forbidden),
    # before any parser sees it.
    with pytest.raises(ForbiddenDoctypeError) as info:
        parse_message(b'<!ENTITY a "b"><xml/>')
    assert type(info.value) is ForbiddenDoctypeError


# --- immutability -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        SUBSCRIBE_QR,
        event("SCAN", ("EventKey", "login:abc")),
        event("unsubscribe"),
        event("CLICK", ("EventKey", "k")),
        event("VIEW", ("EventKey", "https://example.com")),
        doc("text", ("Content", "hi"), ("MsgId", "1")),
        doc("image", ("MediaId", "m"), ("MsgId", "1")),
        doc("location", ("Label", "x")),
    ],
)
def test_messages_are_frozen(data: bytes) -> None:
    msg = parse_message(data)
    assert isinstance(msg, Message)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.from_user = "oAttacker"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.create_time = 0  # type: ignore[misc]
    assert msg.from_user == OPENID
