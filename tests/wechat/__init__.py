"""Tests of the pure WeChat protocol layer (:mod:`wxpush.wechat`): no I/O, no servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# WeChat's published known-answer vectors live in ``shared/`` beside the repository root.
VECTORS_PATH = Path(__file__).resolve().parents[3] / "shared" / "wechat-vectors.json"


def load_vectors() -> dict[str, Any]:
    """The known-answer vectors (see ``wechat-vectors.json``)."""
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data
