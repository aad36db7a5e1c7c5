"""The outer document of a safe- or compatible-mode callback, read without an XML parser.

Until its ``msg_signature`` (computed over the ``Encrypt`` field) has been checked, such a
callback could come from anyone. So the field is taken out by a grammar that has no notion of
a DTD, an entity declaration or anything outside the body, never by lxml: libxml2 opens
whatever a DOCTYPE names, and a name such as a FIFO or ``/dev/ptmx`` blocks the process. Only
the payload that the signature has authenticated is given to :func:`.messages.parse_fields`.

The grammar is the shape WeChat sends, a strict subset of XML 1.0 (every document it accepts
is well-formed XML, read the same way lxml reads it)::

    document ::= XMLDecl? S? '<xml' S? '>' content '</xml' S? '>' S?    (or '<xml' S? '/>')
    XMLDecl  ::= '<?xml' S 'version' Eq V (S 'encoding' Eq E)? (S 'standalone' Eq Y)? S? '?>'
    content  ::= (element | CDSect | CharData | '&' ('lt'|'gt'|'amp'|'quot'|'apos'|CharRef) ';')*
    element  ::= '<' Name S? '>' content '</' Name S? '>' | '<' Name S? '/>'
    Name     ::= [A-Za-z_] [A-Za-z0-9_.-]*

UTF-8 only (see :mod:`.prolog`), no attributes, comments or processing instructions, at most
:data:`MAX_DEPTH` levels: WeChat's envelopes (``ToUserName`` and ``Encrypt``; in compatible
mode the plaintext fields too, some of them nested, such as ``ScanCodeInfo``) never need more.
"""

from __future__ import annotations

import re

from wxpush.wechat.errors import ForbiddenDoctypeError, XMLError
from wxpush.wechat.prolog import has_doctype, utf8_text

MAX_DEPTH = 16

# A safe-mode request body is always the same two fields, and the Encrypt text is long enough
# that a general reader spends most of its time crawling through it. This pattern accepts only
# that exact shape: ``<xml>``, a CDATA ToUserName of [A-Za-z0-9_-], a CDATA Encrypt of base64,
# ``</xml>``, whitespace between. Every document it matches is well-formed XML with no DOCTYPE,
# no entity and no comment, whose fields are exactly the two groups; anything else, however
# close, goes to the grammar.
ENVELOPE = re.compile(
    rb"<xml>[ \t\r\n]*<ToUserName><!\[CDATA\[([A-Za-z0-9_-]+)\]\]></ToUserName>[ \t\r\n]*"
    rb"<Encrypt><!\[CDATA\[([A-Za-z0-9+/]+={0,2})\]\]></Encrypt>[ \t\r\n]*</xml>[ \t\r\n]*"
)

_S = "[ \t\n]"  # XML's whitespace, once line ends are normalised
_EQ = _S + "*=" + _S + "*"


def _quoted(value: str) -> str:
    return f"(?:\"{value}\"|'{value}')"


_VERSION = _quoted(r"1\.[0-9]+")
_ENCODING = _quoted("[A-Za-z][A-Za-z0-9._-]*")  # .prolog has made sure it names UTF-8
_STANDALONE = _quoted("(?:yes|no)")
_DECL = (
    rf"<\?xml{_S}+version{_EQ}{_VERSION}(?:{_S}+encoding{_EQ}{_ENCODING})?"
    rf"(?:{_S}+standalone{_EQ}{_STANDALONE})?{_S}*\?>"
)
_NAME = "[A-Za-z_][A-Za-z0-9_.-]*"
_PROLOG = re.compile(f"(?:{_DECL})?{_S}*")
_START = re.compile(f"<({_NAME}){_S}*(/?)>")
# One token of content but a CDATA section (found with str.find: its end is the first "]]>"),
# told apart by the last group it matched: an end tag, a start tag (its last group, "/" or
# empty, always takes part), character data, a reference.
_TOKEN = re.compile(
    rf"</({_NAME}){_S}*>|<({_NAME}){_S}*(/?)>|([^<&]+)"
    r"|&(lt|gt|amp|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});"
)
_END_TAG, _START_TAG, _CHARS, _REFERENCE = 1, 3, 4, 5
_TAIL = re.compile(f"{_S}*")
# What XML has no character for: the C0 controls but tab, LF and CR, and U+FFFE and U+FFFF.
_CONTROLS = bytes(range(32)).translate(None, b"\t\n\r")
_NONCHARACTERS = ("\ufffe".encode(), "\uffff".encode())
_PREDEFINED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def encrypt_field(data: bytes) -> str:
    """The ``Encrypt`` text of a safe- or compatible-mode body, before anything is verified.

    Raises:
        ForbiddenDoctypeError: a DOCTYPE or entity declaration, in any encoding.
        XMLError: not the envelope's grammar, or no (or more than one) ``<Encrypt>``.
    """
    envelope = ENVELOPE.fullmatch(data)
    if envelope:
        return envelope[2].decode()
    found = [text for name, text in fields(data) if name == "Encrypt"]
    if len(found) != 1 or not found[0]:
        raise XMLError("<Encrypt> is missing" if not found else "one <Encrypt> is expected")
    return found[0]


def fields(data: bytes) -> list[tuple[str, str]]:
    """The ``<xml>`` root's children as ``(tag, text)``, in order; ``text`` is what lxml calls
    the element's ``text`` (up to its first child element).

    Raises:
        ForbiddenDoctypeError: a DOCTYPE or entity declaration, in any encoding.
        XMLError: ``data`` does not follow the grammar.
    """
    text = utf8_text(data).replace("\r\n", "\n").replace("\r", "\n")
    try:
        if not _xml_characters_only(data):
            raise XMLError("a character XML does not allow")
        return _read(text)
    except XMLError as exc:
        if has_doctype(text):
            raise ForbiddenDoctypeError("DOCTYPE and entity declarations are not accepted") from exc
        raise


def _xml_characters_only(data: bytes) -> bool:
    """Looked for in the (valid UTF-8) bytes, which spell each of them one way only and are
    faster to scan than text."""
    if len(data.translate(None, _CONTROLS)) < len(data):
        return False
    return not any(nonchar in data for nonchar in _NONCHARACTERS)


def _read(text: str) -> list[tuple[str, str]]:
    prolog = _PROLOG.match(text)
    root = _START.match(text, prolog.end() if prolog else 0)
    if root is None or root[1] != "xml":
        raise XMLError("the envelope must be an <xml> element")
    pos, found = (root.end(), []) if root[2] else _content(text, root.end())
    if not _TAIL.fullmatch(text, pos):
        raise XMLError("content after the <xml> element")
    return found


def _content(text: str, pos: int) -> tuple[int, list[tuple[str, str]]]:
    """Read the root's content from ``pos`` through its end tag: (the position after it,
    the fields). A field's text is its character data up to its first child element."""
    found: list[tuple[str, str]] = []
    open_tags = ["xml"]
    parts: list[str] = []  # the open field's text
    reading = False  # still in that text: the field has had no child element yet
    while open_tags:
        if text.startswith("<![CDATA[", pos):
            end = text.find("]]>", pos + 9)
            if end < 0:
                raise XMLError("unterminated CDATA section")
            if reading:
                parts.append(text[pos + 9 : end])
            pos = end + 3
            continue
        token = _TOKEN.match(text, pos)
        if token is None:
            raise XMLError("malformed envelope")
        pos, kind = token.end(), token.lastindex or 0
        if kind == _START_TAG:
            if len(open_tags) >= MAX_DEPTH:
                raise XMLError("elements nested too deeply")
            name, empty = token[2], token[3]
            if len(open_tags) == 1 and empty:
                found.append((name, ""))
            elif len(open_tags) == 1:
                parts, reading = [], True
            else:
                reading = False
            if not empty:
                open_tags.append(name)
        elif kind == _END_TAG:
            if token[1] != open_tags.pop():
                raise XMLError("mismatched end tag")
            if len(open_tags) == 1:
                found.append((token[1], "".join(parts)))
            reading = False
        else:  # character data, checked wherever it stands, kept in a field's text
            piece = _reference(token[kind]) if kind == _REFERENCE else token[kind]
            if kind == _CHARS and "]]>" in piece:
                raise XMLError("']]>' outside a CDATA section")
            if reading:
                parts.append(piece)
    return pos, found


def _reference(name: str) -> str:
    if name in _PREDEFINED:
        return _PREDEFINED[name]
    code = int(name[2:], 16) if name.startswith("#x") else int(name[1:])
    if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD:
        return chr(code)
    if 0x10000 <= code <= 0x10FFFF:
        return chr(code)
    raise XMLError("a character reference XML does not allow")
