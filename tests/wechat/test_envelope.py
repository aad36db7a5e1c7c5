"""The safe-mode envelope, read by a strict grammar before anything is verified."""

from __future__ import annotations

import random

import pytest
from lxml import etree

from tests import hostile, wire
from wxpush.wechat import envelope
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.envelope import encrypt_field, fields
from wxpush.wechat.errors import ForbiddenDoctypeError, XMLError
from wxpush.wechat.messages import _PARSER

ENCRYPT = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUg=="
SAFE = (
    f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
    f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>"
).encode()
SCANCODE = (
    "<xml><ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>\n"
    "<FromUserName><![CDATA[oMgHVjngRipVsoxg6TuX3vz6glDg]]></FromUserName>\n"
    "<CreateTime>1408090502</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n"
    "<Event><![CDATA[scancode_push]]></Event>\n<EventKey><![CDATA[6]]></EventKey>\n"
    "<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>\n"
    "<ScanResult><![CDATA[1]]></ScanResult>\n</ScanCodeInfo>\n"
    f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt>\n</xml>"
).encode()
PICS = (
    "<xml><SendPicsInfo><Count>1</Count>\n<PicList><item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682"
    "a53e7b6d163e185]]></PicMd5Sum>\n</item>\n</PicList>\n</SendPicsInfo>"
    f"<Encrypt>{ENCRYPT}</Encrypt></xml>"
).encode()


WRONG_ROOT = (b"<XML><A>1</A></XML>", b"<root><A>1</A></root>")


def lxml_fields(data: bytes) -> list[tuple[str, str]]:
    root = etree.fromstring(data, _PARSER)
    return [(c.tag, c.text or "") for c in root.iterchildren(etree.Element)]


def compat_body() -> bytes:
    crypto = MessageCrypto(wire.APPID, wire.new_aes_key())
    return wire.signed(wire.event_xml("SCAN", "login:abc"), mode="compat", crypto=crypto)[1]


VALID = [
    SAFE,
    SCANCODE,
    PICS,
    SCANCODE.replace(b"\n", b"\r\n"),
    b"<xml><A>a &amp; b &lt;&gt;&quot;&apos; &#20320;&#x597D;&#x1F600;</A><B>2</B></xml>",
    b"<xml><A><![CDATA[]]]]><![CDATA[>]]></A><B>a]b]]c</B></xml>",
    b"<xml><A>x\r\ny\rz<![CDATA[p\r\nq]]>&#13;</A></xml>",
    b"<xml><A/><B></B><C /><D\n></D ></xml>",
    b"<xml >\n  <A>x<B>y</B>z</A>\n  <C>after</C>\n</xml >\n\n",
    b"<xml>stray text<A>1</A>more</xml>",
    "<xml><Content><![CDATA[你好 <!DOCTYPE html> <!ENTITY x>]]></Content></xml>".encode(),
    b'<?xml version="1.0" encoding="utf-8"?>\n' + SAFE,
    b"<?xml version='1.0' standalone='yes' ?>" + SAFE,
    b"\xef\xbb\xbf" + SAFE,
    b"<xml/>",
    b"<xml><Encrypt>" + ENCRYPT.encode() + b"</Encrypt></xml>",
]


@pytest.mark.parametrize("data", VALID)
def test_the_grammar_reads_what_lxml_reads(data: bytes) -> None:
    assert fields(data) == lxml_fields(data)


def test_a_compatible_mode_body_is_read_like_lxml_reads_it() -> None:
    body = compat_body()
    assert fields(body) == lxml_fields(body)
    assert [name for name, _ in fields(body)][-1] == "Encrypt"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"  \n",
        b"<xml>",
        b"<xml><A>1</A>",
        b"<xml><A>1</B></xml>",
        b"<xml><A>1</A></xml><xml/>",
        b"<xml/>trailing",
        b"<xml><A>]]></A></xml>",
        b"<xml><A>&undefined;</A></xml>",
        b"<xml><A>&amp</A></xml>",
        b"<xml><A>&#0;</A></xml>",
        b"<xml><A>&#x110000;</A></xml>",
        b"<xml><A>&#xD800;</A></xml>",
        b"<xml>&#1;<A>1</A></xml>",  # outside any field's text: still checked
        b"<xml><A><B>&#1;</B></A></xml>",
        b"<xml>]]><A>1</A></xml>",
        b"<xml><A><B>]]></B></A></xml>",
        b"<xml><A>\x01</A></xml>",
        b"<xml><A>\x00</A></xml>",
        b"<xml><A>\xff</A></xml>",
        b"<xml><1A>1</1A></xml>",
        b"<xml><A",
        b"<xml><A><![CDATA[open</A></xml>",
        *WRONG_ROOT,
        b"<?xml version='1.0'?><?xml version='1.0'?><xml/>",
    ],
)
def test_malformed_xml_is_refused(data: bytes) -> None:
    with pytest.raises(XMLError) as info:
        fields(data)
    assert type(info.value) is XMLError
    if data in WRONG_ROOT:  # well-formed, but not WeChat's root
        assert etree.fromstring(data, _PARSER).tag in {"XML", "root"}
    else:  # lxml refuses it too
        with pytest.raises(etree.XMLSyntaxError):
            lxml_fields(data)


@pytest.mark.parametrize(
    "data",
    [
        b"<xml><!-- a comment --><Encrypt>QUJD</Encrypt></xml>",
        b"<xml><?pi data?><Encrypt>QUJD</Encrypt></xml>",
        b'<xml><Encrypt id="1">QUJD</Encrypt></xml>',
        b'<xml a="1"><Encrypt>QUJD</Encrypt></xml>',
        b"<xml><ns:Encrypt xmlns:ns='u'>QUJD</ns:Encrypt></xml>",
        "<xml><名>1</名><Encrypt>QUJD</Encrypt></xml>".encode(),
        b"<!-- first --><xml><Encrypt>QUJD</Encrypt></xml>",
        b"<xml><Encrypt>QUJD</Encrypt></xml><!-- last -->",
        b"<xml>" + b"<A>" * envelope.MAX_DEPTH + b"</A>" * envelope.MAX_DEPTH + b"</xml>",
    ],
)
def test_well_formed_xml_beyond_wechats_shape_is_refused(data: bytes) -> None:
    lxml_fields(data)  # XML, but nothing WeChat sends
    with pytest.raises(XMLError) as info:
        fields(data)
    assert type(info.value) is XMLError


@pytest.mark.parametrize("kind", sorted(hostile.DTDS))
@pytest.mark.parametrize("encoding", hostile.UTF8 + hostile.FOREIGN, ids=lambda e: e.name)
def test_a_doctype_in_any_encoding_is_forbidden(encoding: hostile.Encoding, kind: str) -> None:
    body = SAFE.decode()
    data = hostile.document(body, encoding, hostile.doctype(kind, "file:///etc/passwd"))
    with pytest.raises(ForbiddenDoctypeError):
        encrypt_field(data)


@pytest.mark.parametrize(
    "data",
    [
        b'<xml><!DOCTYPE xml SYSTEM "file:///etc/passwd"><Encrypt>QUJD</Encrypt></xml>',
        b'<xml><Encrypt>QUJD</Encrypt></xml><!DOCTYPE xml SYSTEM "file:///etc/passwd">',
        b'<xml><!ENTITY e SYSTEM "file:///etc/passwd"><Encrypt>QUJD</Encrypt></xml>',
    ],
)
def test_a_doctype_anywhere_is_forbidden(data: bytes) -> None:
    with pytest.raises(ForbiddenDoctypeError):
        encrypt_field(data)


@pytest.mark.parametrize("encoding", hostile.FOREIGN, ids=lambda e: e.name)
def test_an_envelope_in_another_encoding_is_bad_xml(encoding: hostile.Encoding) -> None:
    with pytest.raises(XMLError) as info:
        encrypt_field(hostile.document(SAFE.decode(), encoding))
    assert type(info.value) is XMLError


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<xml><ToUserName>gh</ToUserName></xml>", "missing"),
        (b"<xml><Encrypt/></xml>", "expected"),
        (b"<xml><Encrypt></Encrypt></xml>", "expected"),
        (b"<xml><Encrypt>QUJD</Encrypt><Encrypt>QUJE</Encrypt></xml>", "expected"),
        (b"<xml><A><Encrypt>QUJD</Encrypt></A></xml>", "missing"),  # not a field of <xml>
    ],
)
def test_one_non_empty_encrypt_field_is_required(data: bytes, message: str) -> None:
    with pytest.raises(XMLError, match=message) as info:
        encrypt_field(data)
    assert type(info.value) is XMLError


def test_encrypt_comes_out_of_every_shape() -> None:
    assert encrypt_field(SAFE) == ENCRYPT
    assert encrypt_field(SCANCODE) == ENCRYPT
    assert encrypt_field(PICS) == ENCRYPT
    body = compat_body()
    assert encrypt_field(body) == dict(lxml_fields(body))["Encrypt"]


def test_the_canonical_envelope_needs_no_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_grammar(data: bytes) -> list[tuple[str, str]]:
        raise AssertionError("the canonical envelope is matched at once")

    monkeypatch.setattr(envelope, "fields", no_grammar)
    assert encrypt_field(SAFE) == ENCRYPT
    indented = SAFE.replace(b"<xml><", b"<xml>\n    <").replace(b"><Encrypt", b">\n    <Encrypt")
    assert encrypt_field(indented.replace(b"</xml>", b"\n</xml>\n")) == ENCRYPT


def test_whatever_the_grammar_accepts_lxml_reads_the_same() -> None:
    # Mutations of valid envelopes: the grammar may refuse XML lxml would read, never the
    # other way round, and what it reads it reads as lxml does.
    rng = random.Random(20240611)
    alphabet = [*"<>/&;![]-?= \r\n\"'xA#", "<![CDATA[", "]]>", "&amp;", "&#1;", "</A>", "<A>"]
    accepted = 0
    for _ in range(4000):
        data = rng.choice(VALID).decode("utf-8", errors="replace")
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) + 1)
            j = min(len(data), i + rng.randint(0, 3))
            data = data[:i] + rng.choice([*alphabet, ""]) + data[j:]
        raw = data.encode()
        try:
            read = fields(raw)
        except XMLError:
            continue
        accepted += 1
        assert read == lxml_fields(raw), raw
    assert accepted > 100  # the mutations do not all break the document
