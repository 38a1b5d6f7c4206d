#!/usr/bin/env bash
# The main job, with no microphone and no broker needed: sets up edgekd, then serves a bundled
# real speech clip through the bundled model into an embedded MQTT broker and shows the
# classifications arriving at a subscriber.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/edgekd demo "$@"
