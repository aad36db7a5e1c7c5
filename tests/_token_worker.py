"""One process of the cross-process token test: N concurrent QR codes through WeChatAPI.

Usage: ``python -m tests._token_worker FAKE_URL REDIS_URL GO_FILE COUNT``. Prints ``ready``,
waits until GO_FILE exists (so that every worker starts together), then prints a JSON list
of the tickets it got.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

from tests.fakewechat import APPID, SECRET
from wxpush.clients.wechat import WeChatAPI
from wxpush.config.accounts import Account
from wxpush.infra.redis_client import open_redis


async def main(base_url: str, redis_url: str, go: Path, count: int) -> list[str]:
    account = Account(name="default", appid=APPID, secret=SECRET, token="faketoken")
    redis = open_redis(redis_url)
    async with httpx.AsyncClient(timeout=10) as http:
        api = WeChatAPI(account, http=http, redis=redis, base_url=base_url)
        await redis.ping()  # connected before the start line, so the race is on the token
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never told to go")
            await asyncio.sleep(0.002)
        qrs = await asyncio.gather(*(api.create_qrcode(f"login:{i}", 300) for i in range(count)))
    await redis.aclose()
    return [qr.ticket for qr in qrs]


if __name__ == "__main__":
    url, redis_url, go, count = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(url, redis_url, Path(go), int(count)))), flush=True)
