"""Tests of the pure WeChat protocol layer (:mod:`wxpush.wechat`): no I/O, no servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# WeChat's published known-answer vectors, kept in the repository (a copy of the contract's
# ``wechat-vectors.json``) so the tests run from a clone alone.
VECTORS_PATH = Path(__file__).resolve().parent / "vectors.json"


def load_vectors() -> dict[str, Any]:
    """The known-answer vectors (see ``vectors.json``)."""
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data
