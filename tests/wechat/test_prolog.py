"""Only UTF-8 reaches the XML parser; a DOCTYPE is seen in every encoding."""

from __future__ import annotations

import pytest

from tests import hostile
from wxpush.wechat.errors import ForbiddenDoctypeError, XMLError
from wxpush.wechat.prolog import utf8_text

BODY = "<xml><Content><![CDATA[hello]]></Content></xml>"
DOCTYPE = '<!DOCTYPE xml SYSTEM "file:///etc/passwd">'


@pytest.mark.parametrize("encoding", hostile.UTF8, ids=lambda e: e.name)
def test_utf8_is_read_as_text(encoding: hostile.Encoding) -> None:
    assert utf8_text(hostile.document(BODY, encoding)).endswith(BODY)


@pytest.mark.parametrize("declared", ["utf8", "UTF-8", "Utf-8"])
def test_every_spelling_of_utf8_is_utf8(declared: str) -> None:
    data = f"<?xml version='1.0' encoding='{declared}'?>{BODY}".encode()
    assert utf8_text(data).endswith(BODY)


@pytest.mark.parametrize("encoding", hostile.FOREIGN, ids=lambda e: e.name)
def test_any_other_encoding_is_refused_as_bad_xml(encoding: hostile.Encoding) -> None:
    with pytest.raises(XMLError) as info:
        utf8_text(hostile.document(BODY, encoding))
    assert type(info.value) is XMLError


@pytest.mark.parametrize("encoding", hostile.UTF8 + hostile.FOREIGN, ids=lambda e: e.name)
@pytest.mark.parametrize("keyword", ["DOCTYPE", "ENTITY"])
def test_a_doctype_in_another_encoding_is_forbidden(
    encoding: hostile.Encoding, keyword: str
) -> None:
    # The byte search callers do for UTF-8 cannot see these; the refusal must.
    declaration = DOCTYPE if keyword == "DOCTYPE" else '<!ENTITY e "x">'
    data = hostile.document(BODY, encoding, declaration)
    if encoding in hostile.UTF8:
        utf8_text(data)  # UTF-8 is text; the caller's byte search finds its DOCTYPE
        assert f"<!{keyword}".encode() in data
    else:
        with pytest.raises(ForbiddenDoctypeError):
            utf8_text(data)


@pytest.mark.parametrize(
    "data",
    [
        b"<xml>\x00</xml>",  # NUL is no XML character in any encoding but a wide one
        b"<xml>\xff</xml>",  # not UTF-8
        b'<?xml version="1.0" encoding="x-no-such-encoding"?><xml/>',
        b'<?xml version="1.0" encoding="rot13"?><xml/>',  # a codec, but not of text
        b'<?xml version="1.0" encoding="utf-8-sig"?><xml/>',
        b'<?xml version="1.0" encoding=""?><xml/>',
        b"\xff\xfe\x00\x00<\x00\x00\x00",  # a UTF-32 BOM and a lone "<"
    ],
)
def test_what_is_not_plain_utf8_is_bad_xml(data: bytes) -> None:
    with pytest.raises(XMLError) as info:
        utf8_text(data)
    assert type(info.value) is XMLError


def test_a_doctype_under_an_unknown_encoding_is_still_seen() -> None:
    data = b'<?xml version="1.0" encoding="x-no-such"?><!DOCTYPE xml><xml/>'
    with pytest.raises(ForbiddenDoctypeError):
        utf8_text(data)


def test_a_doctype_in_utf16_without_bom_or_declaration_is_seen() -> None:
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        with pytest.raises(ForbiddenDoctypeError):
            utf8_text(f"{DOCTYPE}{BODY}".encode(codec))
