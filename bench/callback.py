"""Benchmark: one safe-mode WeChat callback through the pure protocol layer, ours vs wechatpy.

Per message, both sides do the work a callback handler does before any business logic:
check ``msg_signature`` over ``[token, timestamp, nonce, Encrypt]``, decrypt ``Encrypt`` and
parse the inner XML into an event object. Ours also checks the timestamp window (wechatpy does
not); wechatpy also re-parses nothing we skip. Inputs are the same bytes for both: a few
hundred distinct ``subscribe`` events from parameterised QR codes (``qrscene_login:<id>``),
encrypted with our :class:`MessageCrypto` and checked to decode identically on both sides
before anything is timed.

Run::

    python bench/callback.py                  # 400 messages, 15 rounds
    python bench/callback.py --messages 1000 --rounds 30

The process pins itself to one core (where the OS allows), warms up, then alternates rounds of
ours and wechatpy so drift in the machine's speed hits both alike, and reports the median
round. A second table splits our time into its stages.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lxml
import wechatpy
from lxml import etree
from wechatpy.crypto import WeChatCrypto

from wxpush.wechat import messages, signature
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.replies import encrypted_request

TOKEN = "spamtest"
APPID = "wx2c2769f8efd9abc2"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ACCOUNT = "gh_10f6c3c3ac5a"
WINDOW = 300


@dataclass(frozen=True, slots=True)
class Request:
    """One callback as it reaches the server: query parameters and body."""

    body: bytes
    msg_signature: str
    timestamp: str
    nonce: str


def make_requests(count: int, crypto: MessageCrypto) -> list[Request]:
    """``count`` distinct subscribe-from-QR events, each signed and encrypted like WeChat's."""
    now = int(time.time())
    requests = []
    for i in range(count):
        openid = f"oyORnuP8q7ou2gfYjqL{i:09d}"
        scene = f"login:{os.urandom(16).hex()}"
        ticket = f"gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL{i:08d}AAIEZ23sUwMEmm3sUw=="
        inner = (
            "<xml>"
            f"<ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>\n"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>\n"
            f"<CreateTime>{now - i % 5}</CreateTime>\n"
            "<MsgType><![CDATA[event]]></MsgType>\n"
            "<Event><![CDATA[subscribe]]></Event>\n"
            f"<EventKey><![CDATA[qrscene_{scene}]]></EventKey>\n"
            f"<Ticket><![CDATA[{ticket}]]></Ticket>\n"
            "</xml>"
        ).encode()
        timestamp, nonce = str(now), str(1_000_000_000 + i)
        body, msg_signature = encrypted_request(
            inner, crypto, TOKEN, to_user=ACCOUNT, timestamp=timestamp, nonce=nonce
        )
        requests.append(Request(body, msg_signature, timestamp, nonce))
    return requests


# --- the two pipelines --------------------------------------------------------------------


Handler = Callable[[Request], object]


def ours(crypto: MessageCrypto) -> Callable[[Request], messages.Message]:
    def handle(req: Request) -> messages.Message:
        encrypted = messages.parse_fields(req.body)["Encrypt"]
        signature.verify(req.msg_signature, TOKEN, req.timestamp, req.nonce, encrypted)
        return messages.parse_message(crypto.decrypt(encrypted))

    return handle


def theirs(crypto: WeChatCrypto) -> Handler:
    def handle(req: Request) -> object:
        xml = crypto.decrypt_message(req.body, req.msg_signature, req.timestamp, req.nonce)
        return wechatpy.parse_message(xml)

    return handle


def check_same(requests: Sequence[Request], mine: Handler, other: Handler) -> None:
    """Both sides must read every request as the same openid, scene and time."""
    for req in requests:
        a, b = mine(req), other(req)
        assert isinstance(a, messages.SubscribeEvent)
        assert (b.type, b.event) == ("event", "subscribe_scan")  # type: ignore[attr-defined]
        assert (a.from_user, a.scene, a.create_time) == (
            b.source,  # type: ignore[attr-defined]
            b.scene_id,  # type: ignore[attr-defined]
            b.create_time.timestamp(),  # type: ignore[attr-defined]
        )


# --- timing -------------------------------------------------------------------------------

Job = tuple[Callable[[Any], object], Sequence[Any]]


def run_batch(func: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Seconds per item for one pass over ``items`` (the garbage collector stays on)."""
    start = time.perf_counter()
    for item in items:
        func(item)
    return (time.perf_counter() - start) / len(items)


def measure(jobs: dict[str, Job], rounds: int, batch: int) -> dict[str, tuple[float, float]]:
    """``(median, best)`` seconds per item of each job.

    Each round runs every job over one short batch of the inputs, jobs interleaved and the
    batch moving on through the inputs, so a burst of noise from a shared machine spoils a few
    short batches of both sides rather than one long run of one side.
    """
    for func, items in jobs.values():  # warm-up: lazy imports, caches, the allocator
        run_batch(func, items)
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for r in range(rounds):
        for name, (func, items) in jobs.items():
            start = r * batch % len(items)
            samples[name].append(run_batch(func, items[start : start + batch]))
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def our_stages(requests: Sequence[Request], crypto: MessageCrypto) -> dict[str, Job]:
    """Each stage of :func:`ours` alone, fed with the previous stage's outputs."""
    encrypts = [messages.parse_fields(r.body)["Encrypt"] for r in requests]

    def check(item: tuple[Request, str]) -> None:
        req, encrypted = item
        signature.verify(req.msg_signature, TOKEN, req.timestamp, req.nonce, encrypted)

    return {
        "envelope parse (lxml, parse_fields)": (messages.parse_fields, [r.body for r in requests]),
        "SHA-1 verify + timestamp window": (check, list(zip(requests, encrypts, strict=True))),
        "base64 + AES-CBC decrypt + unpad/unframe": (crypto.decrypt, encrypts),
        "inner parse (lxml → dataclass)": (
            messages.parse_message,
            [crypto.decrypt(e) for e in encrypts],
        ),
    }


def their_stages(requests: Sequence[Request], crypto: WeChatCrypto) -> dict[str, Job]:
    def decrypt(req: Request) -> str:
        return str(crypto.decrypt_message(req.body, req.msg_signature, req.timestamp, req.nonce))

    return {
        "wechatpy decrypt_message (xmltodict + verify + decrypt)": (decrypt, list(requests)),
        "wechatpy parse_message (xmltodict → object)": (
            wechatpy.parse_message,
            [decrypt(r) for r in requests],
        ),
    }


# --- report -------------------------------------------------------------------------------


def pin(cpu: int) -> str:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400, help="distinct events (400)")
    parser.add_argument("--rounds", type=int, default=200, help="timed batches per job (200)")
    parser.add_argument("--batch", type=int, default=50, help="messages per batch (50)")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to (0)")
    args = parser.parse_args(argv)

    pinned = pin(args.cpu)
    crypto = MessageCrypto(APPID, AES_KEY)
    their_crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    requests = make_requests(args.messages, crypto)
    mine, other = ours(crypto), theirs(their_crypto)
    check_same(requests, mine, other)

    jobs: dict[str, Job] = {"ours": (mine, requests), "wechatpy": (other, requests)}
    stages = our_stages(requests, crypto)
    jobs |= stages | their_stages(requests, their_crypto)
    results = measure(jobs, args.rounds, args.batch)

    print(
        f"callback (pure protocol): {args.messages} distinct messages, {args.rounds} interleaved "
        f"batches of {args.batch} per job; Python {platform.python_version()}, "
        f"lxml {lxml.__version__} (libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}), "
        f"wechatpy {wechatpy.__version__}; {os.cpu_count()} CPUs, {pinned}\n"
    )
    print("| per message | median µs | best µs | messages/s (median) |")
    print("|---|---:|---:|---:|")
    for name in ("ours", "wechatpy"):
        median, best = results[name]
        print(f"| {name} | {us(median)} | {us(best)} | {1 / median:,.0f} |")
    (ours_median, ours_best), (their_median, their_best) = results["ours"], results["wechatpy"]
    print(
        f"| **ratio ours/wechatpy (throughput)** | **{their_median / ours_median:.2f}×** "
        f"| **{their_best / ours_best:.2f}×** | |\n"
    )

    print("| stage | median µs | share of ours |")
    print("|---|---:|---:|")
    for name in stages:
        print(f"| {name} | {us(results[name][0])} | {results[name][0] / ours_median:.0%} |")
    stage_sum = sum(results[name][0] for name in stages)
    print(f"| sum of our stages (whole pipeline: {us(ours_median)}) | {us(stage_sum)} | |")
    for name in jobs.keys() - stages.keys() - {"ours", "wechatpy"}:
        print(f"| {name} | {us(results[name][0])} | |")


if __name__ == "__main__":
    main()
