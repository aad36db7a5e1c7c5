"""Prometheus metrics, one registry per app (nothing is created at import time)."""

from __future__ import annotations

import time

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """What an operator watches: logins by stage, callbacks by outcome, WeChat calls."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.scenes_created = Counter(
            "wxpush_scenes_created", "Scenes (QR codes) created", ["account"], registry=r
        )
        self.transitions = Counter(
            "wxpush_scene_transitions", "Scene state changes, by new status", ["status"],
            registry=r,
        )  # fmt: skip
        self.callbacks = Counter(
            "wxpush_callbacks", "WeChat callbacks, by outcome", ["outcome"], registry=r
        )
        self.wechat_calls = Counter(
            "wxpush_wechat_api_calls", "Calls to WeChat's API", ["path", "outcome"], registry=r
        )
        self.wechat_latency = Histogram(
            "wxpush_wechat_api_seconds", "Latency of WeChat API calls", ["path"], registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip

        self.waiters = Gauge(
            "wxpush_waiters",
            "Browsers waiting on a scene, by transport",
            ["transport"],
            registry=r,
        )
        self.push_latency = Histogram(
            "wxpush_push_latency_seconds",
            "Scene change published → frame sent",
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.hub_reconnects = Counter(
            "wxpush_hub_reconnects", "Reconnections of the Redis pub/sub listener", registry=r
        )

    def http_hooks(self) -> dict[str, list[object]]:
        """httpx event hooks that time every call to WeChat (by path, never the query)."""

        async def started(request: httpx.Request) -> None:
            request.extensions["wxpush_started"] = time.perf_counter()

        async def finished(response: httpx.Response) -> None:
            started_at = response.request.extensions.get("wxpush_started")
            path = response.request.url.path
            if started_at is not None:
                self.wechat_latency.labels(path).observe(time.perf_counter() - started_at)
            outcome = "ok" if response.is_success else f"http_{response.status_code}"
            self.wechat_calls.labels(path, outcome).inc()

        return {"request": [started], "response": [finished]}
