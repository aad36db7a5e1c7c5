"""The sandbox's test persons and the ids WeChat would give each of them.

A sandbox person is named by an id that is also their openid at every service account (so
the phone page's persons, such as ``oSandboxAlice000000000000001``, are who they always
were to the demo account). Everything else WeChat gives a person is derived from that id,
with no table to keep: their openid at a website app (:func:`website_openid`, a different
id per app, as on WeChat), the virtual openid of WeChat's snapshot page
(:func:`snapshot_openid`) and their one unionid (:func:`unionid_of`), the same whichever app
they reach, so the demo shows one person through all three doors.
"""

from __future__ import annotations

import base64
import hashlib
import re

from wxpush.sandbox.shapes import App

# The phone page's persons: (person id, label), ids shaped like openids.
PERSONS = (
    ("oSandboxAlice000000000000001", "Alice (new)"),
    ("oSandboxBob00000000000000002", "Bob"),
    ("oSandboxCarol0000000000000003", "Carol"),
)
PERSON = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the pages accept as a person id


def website_openid(appid: str, person: str) -> str:
    """The person's openid at the website app ``appid``: stable, 28 characters."""
    return _derived("openid", appid, person)


def snapshot_openid(appid: str, person: str) -> str:
    """The virtual openid WeChat's snapshot page gives ``person`` at ``appid``."""
    return _derived("snapshot", appid, person)


def unionid_of(person: str) -> str:
    """The person's unionid: one across every app of the sandbox, 28 characters."""
    return _derived("unionid", "", person)


def openid_at(app: App, person: str) -> str:
    """The person's openid at ``app``: the person id itself at a service account."""
    return person if app.kind == "service" else website_openid(app.appid, person)


def _derived(kind: str, appid: str, person: str) -> str:
    digest = hashlib.sha256(f"wxpush-sandbox\0{kind}\0{appid}\0{person}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode()[:27]
