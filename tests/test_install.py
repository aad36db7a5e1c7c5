"""What a user installs: the package carries its widget and every module, and a server
started from a folder of its own serves them.

The README's test command runs the suite on the wheel, installed non-editable into a fresh
virtualenv (``WXPUSH_TEST_INSTALLED=1``); there these tests also prove that ``wxpush`` is
imported from that installation, not from the checkout.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import httpx
import pytest

import wxpush
from tests.procs import ServerProcess, run_demo
from tests.util import TIMEOUT

CHECKOUT = Path(__file__).resolve().parents[1]
INSTALLED = os.environ.get("WXPUSH_TEST_INSTALLED") == "1"
WIDGET = {
    "/": ("text/html", "<html"),
    "/static/wxpush.js": ("text/javascript", "WxPush"),
    "/static/wxpush-doors.js": ("text/javascript", "MicroMessenger"),  # imported by wxpush.js
    "/static/wxpush-oidc.js": ("text/javascript", "wxpush-oidc"),  # the hosted OIDC page's
    "/static/wxpush.css": ("text/css", "--wxpush-accent"),
}


def assert_widget_served(base: str) -> None:
    for path, (content_type, marker) in WIDGET.items():
        answer = httpx.get(base + path, timeout=TIMEOUT)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.headers["content-type"].startswith(content_type), path
        assert marker in answer.text, path


def test_serve_from_another_folder_serves_the_widget(tmp_path: Path) -> None:
    env = {"WXPUSH_APPID": "wx1", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok"}
    server = ServerProcess(env, tmp_path).start()
    try:
        assert_widget_served(server.url)
    finally:
        server.stop()
    assert not (tmp_path / "static").exists()


def test_demo_from_another_folder_serves_the_widget(tmp_path: Path) -> None:
    with run_demo(tmp_path) as base:
        assert_widget_served(base)


def test_every_module_of_the_source_is_installed() -> None:
    """The wheel's package list names each package by hand (static/ is mapped into it):
    a new package left off the list would be missing from the installed server."""
    modules = sorted(
        ".".join(p.relative_to(CHECKOUT).with_suffix("").parts).removesuffix(".__init__")
        for p in (CHECKOUT / "wxpush").rglob("*.py")
    )
    for name in modules:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        if INSTALLED:
            assert CHECKOUT not in Path(spec.origin).resolve().parents, name


@pytest.mark.skipif(not INSTALLED, reason="the suite runs on the installed wheel in CI only")
def test_the_suite_runs_on_the_installed_package() -> None:
    location = Path(wxpush.__file__).resolve()
    assert CHECKOUT not in location.parents
    assert (location.parent / "static" / "wxpush.js").is_file()
