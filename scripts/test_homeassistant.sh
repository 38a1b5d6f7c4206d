#!/usr/bin/env bash
# Runs edgekd against a real Home Assistant (tests/integration/test_homeassistant.py).
#
# Home Assistant Core comes from the package registry into a venv of its own, cached at
# ~/.cache/edgekd-ha/<version> (EDGEKD_HA_CACHE to move it) so that only the first run installs it;
# its first start adds the requirements of the integrations it loads to that venv as well.
# It needs Python 3.13 (Home Assistant 2025.2 to 2025.4; docs/integrations.md says why this
# version): python3.13 on PATH, pyenv's newest 3.13.x, or EDGEKD_HA_BASE_PYTHON (any Python, for
# another HA_VERSION in the test). edgekd's own .venv (scripts/setup.sh --dev) runs the test; it needs
# nothing of Home Assistant's. Extra arguments go to pytest, e.g. -x -s.
set -euo pipefail
cd "$(dirname "$0")/.."

HA_VERSION=$(sed -n 's/^HA_VERSION = "\([0-9.]*\)".*/\1/p' tests/integration/test_homeassistant.py)
CACHE=${EDGEKD_HA_CACHE:-$HOME/.cache/edgekd-ha}
VENV=$CACHE/$HA_VERSION

find_python() {
    if [ -n "${EDGEKD_HA_BASE_PYTHON:-}" ]; then
        echo "$EDGEKD_HA_BASE_PYTHON"
        return
    fi
    local candidate
    local pyenv_newest
    pyenv_newest=$(printf '%s\n' "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13.*/bin/python3.13 | sort -V | tail -1)
    for candidate in "$(command -v python3.13 || true)" "$pyenv_newest"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "test_homeassistant.sh: Home Assistant $HA_VERSION needs Python 3.13; install it (pyenv install 3.13)" \
         "or set EDGEKD_HA_BASE_PYTHON=/path/to/python3.13" >&2
    exit 1
}

if ! "$VENV/bin/python" -c "import homeassistant.const as c; assert c.__version__ == '$HA_VERSION'" 2>/dev/null; then
    BASE=$(find_python)
    echo "installing Home Assistant $HA_VERSION into $VENV (once; minutes)" >&2
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$BASE" -m venv "$VENV"
    nice -n 10 "$VENV/bin/pip" install -q "homeassistant==$HA_VERSION"
fi

if [ ! -x .venv/bin/python ]; then
    scripts/setup.sh --dev
fi
export EDGEKD_HA_TEST=1 EDGEKD_HA_PYTHON="$VENV/bin/python"
exec nice -n 10 .venv/bin/python -m pytest -q -p no:cacheprovider -m homeassistant -s \
    tests/integration/test_homeassistant.py "$@"
