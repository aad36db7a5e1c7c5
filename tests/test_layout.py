"""The house rules of the package, drawn from its imports (README "Architecture").

Data flows one way: ``web → oidc / callback / login → people / tokens / sms → infra / clients``,
with ``config`` (read by the edges: app, lifespan, cli, web) and ``wechat`` (the pure protocol,
importing nothing of ours) to the side. No domain package imports Starlette, ``web`` or the
process settings; no package imports one above it; no cycle; no module much over 300 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wxpush"
DOMAIN = ("callback", "login", "people", "tokens", "sms", "oidc")
# Each package and the packages it may import (besides itself, wechat and errors).
ALLOWED: dict[str, set[str]] = {
    "wechat": set(),
    "errors": set(),
    "infra": set(),
    "clients": {"infra", "config.accounts"},
    "realtime": {"infra", "uvicorn"},  # the WebSocket protocol is uvicorn's, made lean
    "people": {"infra", "sms.phone"},
    "tokens": {"infra", "config.policy"},
    "sms": {"infra", "clients", "config.policy"},
    "callback": {"infra", "clients", "config.accounts", "config.policy"},
    "login": {
        "infra",
        "clients",
        "callback.dedup",
        "callback.scan",
        "people",
        "tokens",
        "sms",
        "realtime",
        "config.accounts",
        "config.policy",
    },
    "oidc": {"infra", "people", "tokens", "config.clients"},
    "config": {"infra", "config"},
}
EDGES = (
    "app", "lifespan", "cli", "cli_users", "checks", "server", "web", "sandbox", "__main__",
    "__init__",
)  # fmt: skip
MAX_LINES = 320


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__").removesuffix("__init__") or "__init__"
        yield name, path


def imports_of(path: Path) -> Iterator[str]:
    """Every module of ours (``wxpush.``-less) and every ``starlette`` import in ``path``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("wxpush."):
                yield name.removeprefix("wxpush.")
            elif name.split(".")[0] in ("starlette", "uvicorn"):
                yield name.split(".")[0]


def _package(module: str) -> str:
    return module.split(".")[0]


def _allowed(importer: str, imported: str) -> bool:
    top = _package(importer)
    target = _package(imported)
    if target in (top, "wechat", "errors") and top != "wechat":
        return True
    if top == "wechat":
        return target == "wechat"
    rules = ALLOWED[top]
    return any(imported == r or imported.startswith(r + ".") or target == r for r in rules)


LAYERED = [(name, path) for name, path in modules() if _package(name) not in EDGES]


@pytest.mark.parametrize(("name", "path"), LAYERED, ids=[name for name, _ in LAYERED])
def test_imports_flow_one_way(name: str, path: Path) -> None:
    wrong = sorted(
        {imported for imported in imports_of(path) if not _allowed(name, imported)}
        - set(_known_packages_and_their_own(name))
    )
    assert not wrong, f"wxpush.{name} may not import {wrong}"


def _known_packages_and_their_own(name: str) -> list[str]:
    # "from wxpush.login import scenes" yields both "login" and "login.scenes": the bare
    # package name of an allowed submodule is not an import of the package's other parts.
    return [p for p in ALLOWED.get(_package(name), set()) if "." in p] + [
        p.split(".")[0] for p in ALLOWED.get(_package(name), set()) if "." in p
    ]


def test_no_domain_module_imports_starlette_web_or_the_settings() -> None:
    offenders = {
        name: bad
        for name, path in modules()
        if _package(name) in (*DOMAIN, "errors", "infra", "clients", "wechat")
        and (
            bad := [
                i
                for i in imports_of(path)
                if i in ("starlette", "uvicorn")
                or _package(i) in ("web", "app", "lifespan", "cli", "server")
                or i.startswith("config.settings")
            ]
        )
    }
    assert not offenders


def test_packages_have_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in modules():
        top = _package(name)
        for imported in imports_of(path):
            target = _package(imported)
            if target not in (top, "starlette", "uvicorn"):
                graph.setdefault(top, set()).add(target)

    def reach(start: str, seen: set[str]) -> set[str]:
        for nxt in graph.get(start, set()) - seen:
            seen.add(nxt)
            reach(nxt, seen)
        return seen

    cyclic = sorted(top for top in graph if top in reach(top, set()))
    assert not cyclic, {top: sorted(graph[top]) for top in cyclic}


def test_no_module_is_much_over_300_lines() -> None:
    long = {
        name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long
