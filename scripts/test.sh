#!/usr/bin/env bash
# Sets up everything the tests need (Debian packages, .venv with all extras) and runs them.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# Tests that use the recorded corpora find them in ../shared/data or $EDGEKD_DATA; without them
# those tests are skipped and the rest still run.
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
