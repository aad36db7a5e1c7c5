"""Hardened parsing of WeChat's XML into frozen dataclasses.

The parser never resolves entities, loads a DTD or touches the network, and refuses huge
trees. WeChat never sends a DOCTYPE, so any document carrying one is refused before lxml
sees it (no XXE, no billion laughs: the refusal costs one substring search), and so is any
document not in UTF-8, the only encoding WeChat uses (in any other, a DOCTYPE would not show
to that search; see :mod:`.prolog`). A document that starts with its ``<xml>`` root, as
WeChat's all do, is UTF-8 and has no prolog, so no room for a DOCTYPE: it skips both checks,
and "<!DOCTYPE" in its text is just text. Whatever gets past them still cannot make libxml2
open anything: the parser reads UTF-8 whatever a document declares, and its resolver refuses
every external entity or DTD instead of handing it to libxml2's loader.

Messages are built through a registry keyed by ``(MsgType, Event)``; anything not registered
becomes :class:`Unknown`, which keeps every top-level field, so nothing WeChat adds later is
lost on the way to a forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeVar

from lxml import etree

from wxpush.wechat.envelope import ENVELOPE
from wxpush.wechat.errors import ForbiddenDoctypeError, XMLError
from wxpush.wechat.prolog import utf8_text


class _NoExternals(etree.Resolver):
    """Refuses every external DTD or entity libxml2 asks for. Returning ``None`` (or
    ``resolve_empty``) would let lxml fall back to libxml2's own loader, which opens files and
    FIFOs; an exception stops the parse, and lxml re-raises it from ``fromstring``."""

    def resolve(self, system_url: str, public_id: str, context: object = None) -> NoReturn:
        raise ForbiddenDoctypeError("external DTDs and entities are never loaded")


def _parser() -> etree.XMLParser:
    # No ``collect_ids=False``: with libxml2 before 2.15, lxml implements it by setting a bit
    # of libxml2's ``loadsubset``, and a non-zero ``loadsubset`` makes libxml2 load the
    # external DTD a DOCTYPE names, whatever ``load_dtd`` says. lxml exposes no way to set
    # XML_PARSE_NO_XXE; the resolver below is what stands in for it.
    parser = etree.XMLParser(
        encoding="utf-8",  # never what the document declares: WeChat only sends UTF-8
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        dtd_validation=False,
        attribute_defaults=False,
    )
    parser.resolvers.add(_NoExternals())
    return parser


_PARSER = _parser()

# Within the last 250 bytes of its input, libxml2 (2.14) tries to grow its input buffer on every
# character it reads, which doubles the cost of a document as small as WeChat's (most of it in
# the CDATA sections WeChat wraps every string in). Whitespace after the root element is part
# of XML's grammar (``Misc``), so the same document with a blank tail parses to the same tree,
# about 40% faster. Only a document starting ``<xml`` gets the tail: it has no BOM and no XML
# declaration, so it is UTF-8 and an ASCII space is a space in it.
_TAIL = b" " * 256

Fields = Mapping[str, str]


def parse_fields(data: bytes) -> dict[str, str]:
    """Parse ``<xml>…</xml>`` into its top-level ``{tag: text}`` pairs.

    Raises:
        ForbiddenDoctypeError: the document carries a DOCTYPE.
        XMLError: the document is not well-formed or its root is not ``<xml>``.
    """
    envelope = ENVELOPE.fullmatch(data)  # a safe-mode body (or reply): no tree needed
    if envelope:
        return {"ToUserName": envelope[1].decode(), "Encrypt": envelope[2].decode()}
    # A document whose root element starts at its first byte has no prolog, so nowhere for a
    # DOCTYPE to be: "<!DOCTYPE" further on is text in a CDATA section (a person may well send
    # "<!DOCTYPE html>" to the account) or a syntax error lxml reports. WeChat's all start so.
    prolog_free = data.startswith(b"<xml")
    if prolog_free:
        data += _TAIL
    else:
        utf8_text(data)  # refuses any other encoding, and a DOCTYPE in it
        if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
            raise ForbiddenDoctypeError("DOCTYPE and entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLError("malformed XML") from exc
    except ValueError as exc:  # e.g. a str with an encoding declaration
        raise XMLError("malformed XML") from exc
    if not prolog_free:
        docinfo: Any = root.getroottree().docinfo  # lxml-stubs type it loosely
        if docinfo.doctype:  # defence in depth: the checks above leave none to find
            raise ForbiddenDoctypeError("DOCTYPE is not accepted")
    if root.tag != "xml":
        raise XMLError("root element must be <xml>")
    # iterchildren(Element) skips comments and processing instructions.
    return {child.tag: child.text or "" for child in root.iterchildren(etree.Element)}


@dataclass(frozen=True, slots=True)
class Message:
    """Fields every message and event carries."""

    to_user: str
    from_user: str
    create_time: int
    msg_type: str

    @property
    def dedup_key(self) -> str:
        """What identifies a retry of this message (WeChat re-sends unanswered ones)."""
        return f"{self.from_user}|{self.create_time}|{self.msg_type}"

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Event(Message):
    event: str

    @property
    def dedup_key(self) -> str:
        key = getattr(self, "event_key", "")
        return f"{self.from_user}|{self.create_time}|{self.event}|{key}"


@dataclass(frozen=True, slots=True)
class SubscribeEvent(Event):
    """Follow. From a parameterised QR code it carries ``qrscene_<scene>`` and a ticket."""

    event_key: str = ""
    ticket: str | None = None

    PREFIX: ClassVar[str] = "qrscene_"

    @property
    def scene(self) -> str | None:
        """The QR scene string, or ``None`` for a follow that did not come from a QR code."""
        if self.event_key.startswith(self.PREFIX):
            return self.event_key[len(self.PREFIX) :]
        return None

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {"event_key": fields.get("EventKey", ""), "ticket": fields.get("Ticket")}


@dataclass(frozen=True, slots=True)
class ScanEvent(Event):
    """A follower scanned a parameterised QR code; ``EventKey`` is the bare scene."""

    event_key: str = ""
    ticket: str | None = None

    @property
    def scene(self) -> str | None:
        return self.event_key or None

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {"event_key": fields.get("EventKey", ""), "ticket": fields.get("Ticket")}


@dataclass(frozen=True, slots=True)
class UnsubscribeEvent(Event):
    """Unfollow."""


@dataclass(frozen=True, slots=True)
class ClickEvent(Event):
    """A click on a menu button of type ``click``."""

    event_key: str = ""

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {"event_key": fields.get("EventKey", "")}


@dataclass(frozen=True, slots=True)
class ViewEvent(Event):
    """A click on a menu link; ``event_key`` is the URL."""

    event_key: str = ""
    menu_id: str | None = None

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {"event_key": fields.get("EventKey", ""), "menu_id": fields.get("MenuId")}


@dataclass(frozen=True, slots=True)
class _UserMessage(Message):
    msg_id: int = 0

    @property
    def dedup_key(self) -> str:
        return f"{self.msg_id}|{self.from_user}|{self.create_time}"


@dataclass(frozen=True, slots=True)
class TextMessage(_UserMessage):
    content: str = ""

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {"msg_id": _int(fields, "MsgId", 0), "content": fields.get("Content", "")}


@dataclass(frozen=True, slots=True)
class ImageMessage(_UserMessage):
    pic_url: str = ""
    media_id: str = ""

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {
            "msg_id": _int(fields, "MsgId", 0),
            "pic_url": fields.get("PicUrl", ""),
            "media_id": fields.get("MediaId", ""),
        }


@dataclass(frozen=True, slots=True)
class Unknown(Message):
    """Any message or event without a class of its own; keeps every top-level field."""

    event: str | None = None
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def dedup_key(self) -> str:
        f = dict(self.fields)
        if "MsgId" in f:
            return f"{f['MsgId']}|{self.from_user}|{self.create_time}"
        return f"{self.from_user}|{self.create_time}|{self.event}|{f.get('EventKey', '')}"

    @classmethod
    def _extra(cls, fields: Fields) -> dict[str, Any]:
        return {"event": fields.get("Event"), "fields": tuple(fields.items())}


M = TypeVar("M", bound=type[Message])
_REGISTRY: dict[tuple[str, str | None], type[Message]] = {}


def register(msg_type: str, event: str | None = None) -> Callable[[M], M]:
    """Class decorator: parse ``(MsgType, Event)`` into the decorated class."""

    def decorate(cls: M) -> M:
        _REGISTRY[(msg_type, event)] = cls
        return cls

    return decorate


register("event", "subscribe")(SubscribeEvent)
register("event", "SCAN")(ScanEvent)
register("event", "unsubscribe")(UnsubscribeEvent)
register("event", "CLICK")(ClickEvent)
register("event", "VIEW")(ViewEvent)
register("text")(TextMessage)
register("image")(ImageMessage)


def _int(fields: Fields, name: str, default: int | None = None) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        if default is None:
            raise XMLError(f"<{name}> is missing")
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise XMLError(f"<{name}> is not a number") from exc


def _required(fields: Fields, name: str) -> str:
    value = fields.get(name)
    if not value:
        raise XMLError(f"<{name}> is missing")
    return value


def message_from_fields(fields: Fields) -> Message:
    """Build the dataclass for already-parsed fields (see :func:`parse_fields`)."""
    msg_type = _required(fields, "MsgType")
    event = fields.get("Event") if msg_type == "event" else None
    cls = _REGISTRY.get((msg_type, event), Unknown)
    common: dict[str, Any] = {
        "to_user": _required(fields, "ToUserName"),
        "from_user": _required(fields, "FromUserName"),
        "create_time": _int(fields, "CreateTime"),
        "msg_type": msg_type,
    }
    if issubclass(cls, Event):
        common["event"] = event or ""
    common.update(cls._extra(fields))
    return cls(**common)


def parse_message(data: bytes) -> Message:
    """Parse one message or event (plaintext XML) into its dataclass.

    Raises:
        XMLError: malformed, forbidden or incomplete XML.
    """
    return message_from_fields(parse_fields(data))
