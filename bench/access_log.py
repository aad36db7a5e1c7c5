"""What one access line costs a request: wxpush's (``wxpush.web.access``) against uvicorn's.

``wxpush serve`` turns uvicorn's access log off and writes its own line (the route, never
the path or query) from a wrapper around the app. This times, in CPU time of the thread, a
trivial ASGI answer (``200 success``, as to a WeChat callback) run four ways, round-robin:
bare; as ``App`` runs it with the access log off (``WXPUSH_LOG_LEVEL=warning``: one level
check); through :func:`wxpush.web.access.logged` at INFO; and bare plus the line uvicorn's
httptools protocol writes for it at INFO (with the callback's signed query string). Both
loggers write through uvicorn's formatters to ``/dev/null``.

    python bench/access_log.py            # --rounds 300 --batch 200, pinned to the last core
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from uvicorn.logging import AccessFormatter, DefaultFormatter
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from wxpush.web import access

QUERY = (
    b"signature=6955f8d74f7c8f66cb624c6dd51229cb2d8be77e&timestamp=1796187973&nonce=7093518960"
    b"&openid=oNewPerson000000000000000001&encrypt_type=aes"
    b"&msg_signature=0e47d9576d6b50fa480b521763a7da45738af187"
)
Job = Callable[[dict[str, object]], Awaitable[None]]


def scope() -> dict[str, object]:
    return {
        "type": "http", "method": "POST", "path": "/wechat/default/callback",
        "query_string": QUERY, "client": ("127.0.0.1", 50000), "root_path": "",
        "http_version": "1.1", access.ROUTE: "/wechat/{account}/callback",
    }  # fmt: skip


async def answer(scope: object, receive: object, send: Callable[..., Awaitable[None]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"success"})


async def send(message: object) -> None:
    return None


async def receive() -> dict[str, object]:
    return {}


def loggers() -> tuple[logging.Logger, logging.Logger]:
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    ours, theirs = logging.getLogger("wxpush.access"), logging.getLogger("uvicorn.access")
    uvicorn_format = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    for logger, formatter in (
        (ours, DefaultFormatter("%(levelprefix)s %(name)s: %(message)s")),
        (theirs, AccessFormatter(uvicorn_format)),
    ):
        handler = logging.StreamHandler(sink)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.propagate = False
    return ours, theirs


def jobs(uvicorn_log: logging.Logger) -> dict[str, Job]:
    async def bare(s: dict[str, object]) -> None:
        await answer(s, receive, send)

    async def dispatch(s: object, receive: object, send: Callable[..., Awaitable[None]]) -> None:
        await answer(s, receive, send)  # App._dispatch: one more frame than before

    async def off(s: dict[str, object]) -> None:  # App.__call__ with INFO off
        if s["type"] == "http" and access.enabled():
            await access.logged(dispatch, s, receive, send)  # not reached: INFO is off
        else:
            await dispatch(s, receive, send)

    async def ours(s: dict[str, object]) -> None:
        await access.logged(dispatch, s, receive, send)

    async def uvicorns(s: dict[str, object]) -> None:  # as httptools_impl writes it
        await answer(s, receive, send)
        uvicorn_log.info('%s - "%s %s HTTP/%s" %d', get_client_addr(s), s["method"],  # type: ignore[arg-type]
                         get_path_with_query_string(s), s["http_version"], 200)  # type: ignore[arg-type]  # fmt: skip

    return {"bare": bare, "wxpush, log off": off, "wxpush.access line": ours,
            "uvicorn's access line": uvicorns}  # fmt: skip


async def run(rounds: int, batch: int) -> None:
    ours, theirs = loggers()
    for name, level, wanted in (("warning", logging.WARNING, ("bare", "wxpush, log off")),
                                ("info", logging.INFO, ("bare", "wxpush.access line",
                                                        "uvicorn's access line"))):  # fmt: skip
        ours.setLevel(level)
        theirs.setLevel(level)
        chosen = {k: v for k, v in jobs(theirs).items() if k in wanted}
        times: dict[str, list[float]] = {k: [] for k in chosen}
        for _ in range(rounds):
            for key, job in chosen.items():
                started = time.thread_time()
                for _ in range(batch):
                    await job(scope())
                times[key].append((time.thread_time() - started) / batch * 1e6)
        print(f"\nWXPUSH_LOG_LEVEL={name}: µs per request, {rounds} rounds of {batch}")
        print("| way | median | best |\n|---|---:|---:|")
        for key, values in times.items():
            print(f"| {key} | {statistics.median(values):.2f} | {min(values):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    asyncio.run(run(args.rounds, args.batch))


if __name__ == "__main__":
    main()
