"""XML that WeChat never sends: other encodings, and DOCTYPEs naming files, devices and FIFOs.

Each document is built from text, then encoded the way an attacker would: with or without a
byte-order mark, with an XML declaration naming the encoding (EBCDIC documents need one to be
read at all). Nothing here touches the network; the names are local paths.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import pty
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Encoding:
    """How to turn a document's text into bytes."""

    name: str  # the test id
    declared: str | None  # what the XML declaration names (None: no declaration)
    encode: Callable[[str], bytes]


def _plain(codec: str) -> Callable[[str], bytes]:
    return lambda text: text.encode(codec)


def _with_bom(bom: bytes, codec: str) -> Callable[[str], bytes]:
    return lambda text: bom + text.encode(codec)


def _utf7_escaped(text: str) -> bytes:
    # Python writes "<" and "!" directly; UTF-7 may also spell them as base64 runs, which no
    # byte search for "<!DOCTYPE" can see.
    return text.encode("utf-7").replace(b"<!", b"+ADwAIQ-")


UTF8 = [
    Encoding("utf-8", None, _plain("utf-8")),
    Encoding("utf-8-declared", "UTF-8", _plain("utf-8")),
    Encoding("utf-8-bom", "utf-8", _with_bom(codecs.BOM_UTF8, "utf-8")),
]
FOREIGN = [
    Encoding("utf-16-le-bom", "UTF-16", _with_bom(codecs.BOM_UTF16_LE, "utf-16-le")),
    Encoding("utf-16-be-bom", "UTF-16", _with_bom(codecs.BOM_UTF16_BE, "utf-16-be")),
    Encoding("utf-16-le", "UTF-16LE", _plain("utf-16-le")),
    Encoding("utf-16-be", "UTF-16BE", _plain("utf-16-be")),
    Encoding("utf-16-undeclared", None, _plain("utf-16")),
    Encoding("utf-32-le-bom", "UTF-32", _with_bom(codecs.BOM_UTF32_LE, "utf-32-le")),
    Encoding("utf-32-be", "UTF-32BE", _plain("utf-32-be")),
    Encoding("ebcdic-037", "IBM037", _plain("cp037")),
    Encoding("ebcdic-500", "IBM500", _plain("cp500")),
    Encoding("latin-1", "ISO-8859-1", _plain("latin-1")),
    Encoding("gb18030", "GB18030", _plain("gb18030")),
    Encoding("utf-7", "UTF-7", _utf7_escaped),
]


def document(body: str, encoding: Encoding, doctype: str = "") -> bytes:
    """``body`` (the ``<xml>`` element) after an optional declaration and ``doctype``."""
    declaration = ""
    if encoding.declared is not None:
        declaration = f'<?xml version="1.0" encoding="{encoding.declared}"?>\n'
    return encoding.encode(declaration + doctype + body)


# The ways a DOCTYPE names something outside the document: {target} is a file:// URL.
DTDS = {
    "system": '<!DOCTYPE xml SYSTEM "{target}">\n',
    "public": '<!DOCTYPE xml PUBLIC "-//wxpush//test//EN" "{target}">\n',
    "parameter-entity": '<!DOCTYPE xml [<!ENTITY % p SYSTEM "{target}"> %p;]>\n',
    "external-entity": '<!DOCTYPE xml [<!ENTITY e SYSTEM "{target}">]>\n',
}


def doctype(kind: str, target: Path | str) -> str:
    url = target if isinstance(target, str) else target.as_uri()
    return DTDS[kind].format(target=url)


@contextlib.contextmanager
def targets(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """What a DOCTYPE may name: a file that exists, one that does not, a FIFO with no writer
    and a terminal nobody types on (opening or reading either blocks forever). A parser that
    opened one is released on exit: the FIFO gets a writer and the terminal is hung up."""
    existing = tmp_path / "exists.dtd"
    existing.write_text('<!ENTITY e "on disk">')
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    master, tty = pty.openpty()
    try:
        yield {
            "existing": existing,
            "missing": tmp_path / "missing.dtd",
            "fifo": fifo,
            "tty": Path(os.ttyname(tty)),
        }
    finally:
        with contextlib.suppress(OSError):  # nobody opened it: nothing to release
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        os.close(master)
        os.close(tty)


def outcome(call: Callable[[], object], timeout: float) -> str:
    """What ``call()`` did (its result, or the type and text of what it raised), run in a
    daemon thread so that a call blocked in a system call fails the test instead of hanging
    the run."""
    done: list[str] = []

    def run() -> None:
        try:
            done.append(f"returned {call()!r}")
        except Exception as exc:  # the answer under test, whatever it is
            done.append(f"raised {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert done, f"still running after {timeout} s: blocked opening or reading something"
    return done[0]
