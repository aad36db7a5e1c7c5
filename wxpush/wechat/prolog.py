"""What may reach an XML parser: UTF-8 documents only, and never a DOCTYPE in any encoding.

WeChat sends UTF-8 and nothing else, with no DOCTYPE. A search for ``<!DOCTYPE`` in the raw
bytes only sees an ASCII-compatible document: in UTF-16 or UTF-32 every character carries NUL
bytes, in EBCDIC the letters are other bytes, and a declaration may name any encoding libxml2
knows. So a document is first classified: UTF-8 (no BOM but UTF-8's, no NUL byte, valid UTF-8,
no other encoding declared) goes on to the parser; anything else is refused without parsing.
The refusal still says whether it carries a DOCTYPE, found by decoding it the way its BOM, its
NUL pattern, its EBCDIC signature or its declaration says (and with every NUL byte dropped,
which shows any UTF-16/32 byte order): ``doctype_forbidden`` for a DOCTYPE in any encoding,
``bad_xml`` for the rest. All of it looks only at the bytes, so the answer can never depend on
what exists on the server's disk.
"""

from __future__ import annotations

import codecs
import re

from wxpush.wechat.errors import ForbiddenDoctypeError, XMLError

UTF8_BOM = codecs.BOM_UTF8
_MARKUP = ("<!DOCTYPE", "<!ENTITY")  # what opens a DTD: WeChat sends neither

# The encoding pseudo-attribute of an ASCII-compatible XML declaration (XML 1.0 §4.3.3).
_DECLARED = re.compile(
    rb"(?:\xef\xbb\xbf)?[ \t\r\n]*<\?xml[ \t\r\n][^>]*?encoding[ \t\r\n]*=[ \t\r\n]*"
    rb"(?:\"([^\"]*)\"|'([^']*)')"
)

# Byte-order marks, then the first four bytes of "<?xm" or whitespace without one (XML 1.0
# Appendix F), and the codec each implies. The UTF-32 BOMs come first: FF FE 00 00 also
# starts with UTF-16's FF FE.
_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF16_LE, "utf-16"),
)
_BY_ZEROS = {  # which of the first four bytes are NUL, without a BOM
    "000x": ("utf-32-be",),
    "x000": ("utf-32-le",),
    "0x0x": ("utf-16-be",),
    "x0x0": ("utf-16-le",),
}
_EBCDIC = b"\x4c\x6f\xa7\x94"  # "<?xm" in every EBCDIC code page
_EBCDIC_CODECS = ("cp037", "cp500", "cp1140", "cp273", "cp1026")


def utf8_text(data: bytes) -> str:
    """``data`` as text, when it is a UTF-8 document (a UTF-8 BOM is dropped).

    Raises:
        ForbiddenDoctypeError: not UTF-8, and a DOCTYPE or ENTITY declaration shows in it.
        XMLError: not UTF-8 (another encoding declared, a BOM, NUL bytes, invalid UTF-8).
    """
    declared = _declared(data)
    utf8 = declared is None or _codec(declared) == "utf-8"
    if utf8 and b"\x00" not in data and not any(data.startswith(bom) for bom, _ in _BOMS):
        try:
            return data.removeprefix(UTF8_BOM).decode("utf-8")
        except UnicodeDecodeError:
            pass
    if foreign_doctype(data, declared):
        raise ForbiddenDoctypeError("DOCTYPE and entity declarations are not accepted")
    raise XMLError("only UTF-8 documents are accepted")


def has_doctype(text: str) -> bool:
    """Whether ``text`` holds a DOCTYPE or ENTITY declaration (or text that looks like one)."""
    return any(markup in text for markup in _MARKUP)


def foreign_doctype(data: bytes, declared: str | None = None) -> bool:
    """Whether a DOCTYPE shows in ``data`` read in any encoding it may be in."""
    readings = [data.replace(b"\x00", b"").decode("latin-1")]
    for codec in _guesses(data, declared):
        try:
            readings.append(data.decode(codec, errors="replace"))
        except (LookupError, UnicodeError):  # a bytes-to-bytes codec, or one without "replace"
            continue
    return any(has_doctype(text) for text in readings)


def _guesses(data: bytes, declared: str | None) -> list[str]:
    guesses = [codec for bom, codec in _BOMS if data.startswith(bom)][:1]
    zeros = "".join("0" if byte == 0 else "x" for byte in data[:4])
    guesses += _BY_ZEROS.get(zeros, ())
    if data.startswith(_EBCDIC):
        guesses += _EBCDIC_CODECS
    codec = _codec(declared) if declared is not None else None
    if codec is not None:
        guesses.append(codec)
    return guesses


def _declared(data: bytes) -> str | None:
    match = _DECLARED.match(data)
    if match is None:
        return None
    return (match[1] if match[1] is not None else match[2]).decode("latin-1")


def _codec(name: str) -> str | None:
    """Python's name for an encoding, or ``None`` when Python does not know it."""
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):  # unknown, or a NUL in the name
        return None
