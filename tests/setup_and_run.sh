#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs the checks:
# ruff (lint and format), mypy --strict on wxpush/, and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
# Chromium for the widget tests (Playwright drives the system browser; nothing is downloaded)
command -v chromium >/dev/null || need_apt+=(chromium)
# PostgreSQL for the tests that run on it (Debian keeps initdb off PATH, tests/pg.py finds it)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
python3 -m ruff check wxpush tests bench
python3 -m ruff format --check wxpush tests bench
echo "== mypy"
python3 -m mypy
echo "== pytest"
python3 -m pytest "$@"
