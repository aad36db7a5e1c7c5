#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs the checks:
# ruff (lint and format), mypy --strict on wxpush/, and pytest. Extra arguments go to pytest.
#
# The tests run against what a user installs: the wheel is built from this checkout and
# installed, non-editable, into a fresh virtualenv outside it; pytest runs from that
# virtualenv with the checkout appended to sys.path (so `import wxpush` is the installed
# package, and the servers the tests start run from temporary folders). WXPUSH_TEST_VENV
# names a virtualenv to reuse instead (quicker for development; it is still reinstalled).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=${WXPUSH_TEST_VENV:-$work/venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() {  # quiet, without the warnings of a machine's unreachable extra indexes
    "$venv/bin/python" -m pip -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location" || true; }
}
echo "== wheel"
pip wheel --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/wxpush-*.whl)
pip install --force-reinstall --no-deps "$wheel"
pip install "$wheel[test]"
echo "installed $(basename "$wheel") into $venv"

echo "== ruff"
"$venv/bin/ruff" check wxpush tests bench
"$venv/bin/ruff" format --check wxpush tests bench
echo "== mypy"
"$venv/bin/mypy"
echo "== pytest"
export WXPUSH_TEST_INSTALLED=1
"$venv/bin/pytest" --import-mode=append "$@"
