"""Benchmark: one safe-mode WeChat callback through the pure protocol layer, ours vs wechatpy.

Per message, both sides do the work a callback handler does before any business logic: parse
the envelope, check ``msg_signature`` over ``[token, timestamp, nonce, Encrypt]``, decrypt
``Encrypt`` and parse the inner XML into an event object. Ours also checks the timestamp window
(wechatpy has none). Both get the same bytes: a few hundred distinct ``subscribe`` events from
parameterised QR codes (``qrscene_login:<id>``), encrypted with our :class:`MessageCrypto`,
checked to decode to the same openid, scene and time on both sides before anything is timed.

Run::

    python bench/callback.py                   # 400 messages, 200 batches of 50 per job
    python bench/callback.py --cpu 1 --rounds 400

The process pins itself to one core (where the OS allows) and warms up for a second. Then each
round runs every job over one short batch, jobs interleaved, so a burst of noise on a shared
machine spoils a few short batches of every job rather than one long run of one side. It
reports the median batch, the best one (the least disturbed: the usual figure for CPU-bound
code, as ``timeit`` advises) and the median of the per-round ratios (each round's batches ran
back to back, at the same machine speed). Times are CPU time of the thread. A second table
times each stage of ours alone; a stage run in a tight loop keeps its code in the CPU's caches,
so the stages add up to less than the pipeline.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lxml
import wechatpy
from lxml import etree
from wechatpy.crypto import WeChatCrypto

# Measure the checkout this script sits in, not whichever one ``pip install -e`` last pointed at.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wxpush.wechat import envelope, messages, signature
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
        encrypted = envelope.encrypt_field(req.body)
        signature.verify(
            req.msg_signature, TOKEN, req.timestamp, req.nonce, encrypted, window=WINDOW
        )
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
    """CPU seconds per item for one pass over ``items`` (the garbage collector stays on).

    CPU time, not wall time: on a shared machine the wall clock also counts the time other
    processes hold this core, which says nothing about the cost of a message.
    """
    start = time.thread_time()
    for item in items:
        func(item)
    return (time.thread_time() - start) / len(items)


def measure(jobs: dict[str, Job], rounds: int, batch: int, warmup: float) -> dict[str, list[float]]:
    """CPU seconds per item of each job, one sample per round, rounds interleaved."""
    deadline = time.perf_counter() + warmup  # lazy imports, caches, allocator, CPU clock
    while time.perf_counter() < deadline:
        for func, items in jobs.values():
            run_batch(func, items[:batch])
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for r in range(rounds):
        for name, (func, items) in jobs.items():
            start = r * batch % len(items)
            samples[name].append(run_batch(func, items[start : start + batch]))
    return samples


def our_stages(requests: Sequence[Request], crypto: MessageCrypto) -> dict[str, Job]:
    """Each stage of :func:`ours` alone, fed with the previous stage's outputs."""
    encrypts = [envelope.encrypt_field(r.body) for r in requests]

    def check(item: tuple[Request, str]) -> None:
        req, encrypted = item
        signature.verify(
            req.msg_signature, TOKEN, req.timestamp, req.nonce, encrypted, window=WINDOW
        )

    return {
        "envelope (encrypt_field)": (envelope.encrypt_field, [r.body for r in requests]),
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
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up (1)")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to (0)")
    args = parser.parse_args(argv)

    pinned = pin(args.cpu)
    assert Path(messages.__file__).is_relative_to(Path(__file__).resolve().parents[1])
    crypto = MessageCrypto(APPID, AES_KEY)
    their_crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    requests = make_requests(args.messages, crypto)
    mine, other = ours(crypto), theirs(their_crypto)
    check_same(requests, mine, other)

    stages, theirs_split = our_stages(requests, crypto), their_stages(requests, their_crypto)
    jobs: dict[str, Job] = {"ours": (mine, requests), "wechatpy": (other, requests)}
    samples = measure(jobs | stages | theirs_split, args.rounds, args.batch, args.warmup)
    median = {name: statistics.median(v) for name, v in samples.items()}
    best = {name: min(v) for name, v in samples.items()}
    # Each round's two batches ran back to back, at the same machine speed: their ratio is the
    # fairest comparison on a machine whose speed drifts.
    paired = statistics.median(
        theirs_ / ours_ for ours_, theirs_ in zip(samples["ours"], samples["wechatpy"], strict=True)
    )

    print(
        f"callback (pure protocol): {args.messages} distinct messages, {args.rounds} interleaved "
        f"batches of {args.batch} per job, CPU time; Python {platform.python_version()}, "
        f"lxml {lxml.__version__} (libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}), "
        f"wechatpy {wechatpy.__version__}; {os.cpu_count()} CPUs, {pinned}\n"
    )
    print("| per message | median µs | best µs | messages/s (median) | messages/s (best) |")
    print("|---|---:|---:|---:|---:|")
    for name in jobs:
        print(
            f"| {name} | {us(median[name])} | {us(best[name])} "
            f"| {1 / median[name]:,.0f} | {1 / best[name]:,.0f} |"
        )
    print(
        f"| **ours/wechatpy throughput** | **{median['wechatpy'] / median['ours']:.2f}×** "
        f"| **{best['wechatpy'] / best['ours']:.2f}×** | paired by round: **{paired:.2f}×** | |\n"
    )

    print("| stage (timed alone) | median µs | best µs | share of ours (best) |")
    print("|---|---:|---:|---:|")
    for name in stages:
        print(
            f"| {name} | {us(median[name])} | {us(best[name])} | {best[name] / best['ours']:.0%} |"
        )
    median_sum = sum(median[name] for name in stages)
    best_sum = sum(best[name] for name in stages)
    print(
        f"| sum of our stages | {us(median_sum)} | {us(best_sum)} | {best_sum / best['ours']:.0%} |"
    )
    for name in theirs_split:
        print(f"| {name} | {us(median[name])} | {us(best[name])} | |")


if __name__ == "__main__":
    main()
