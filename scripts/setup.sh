#!/usr/bin/env bash
# Set up edgekd in ./.venv on Debian, Ubuntu or Raspberry Pi OS. Idempotent.
#   scripts/setup.sh            runtime only (what the demo needs)
#   scripts/setup.sh --mic      + PyAudio for microphones (builds against PortAudio)
#   scripts/setup.sh --dev      + everything the tests need (mic, train, test tools, mosquitto)
set -euo pipefail
cd "$(dirname "$0")/.."

want_mic=0 want_dev=0
for arg in "$@"; do
  case "$arg" in
    --mic) want_mic=1 ;;
    --dev) want_dev=1; want_mic=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --mic or --dev)" >&2; exit 2 ;;
  esac
done

apt_packages=(python3 python3-venv python3-pip)
[ "$want_mic" = 1 ] && apt_packages+=(python3-dev gcc portaudio19-dev libasound2-plugins alsa-utils)
[ "$want_dev" = 1 ] && apt_packages+=(mosquitto mosquitto-clients espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox shellcheck systemd openssl)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 - <<'PY' || { echo "setup: edgekd needs Python 3.10 or newer" >&2; exit 2; }
import sys; sys.exit(sys.version_info < (3, 10))
PY

[ -x .venv/bin/python ] || python3 -m venv .venv
log=.venv/setup.log
: > "$log"
# pip's and the build's chatter goes to the log; on failure its tail is shown.
pip_install() {
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: pip install $* failed (full log: $log)" >&2
    exit 1
  fi
}
echo "setup: installing Python packages into .venv (log: $log)"
pip_install --upgrade pip
extras=""
if [ "$want_dev" = 1 ]; then
  # The CPU build of torch first, so that the `train` extra's range does not pull a CUDA build.
  pip_install "torch==2.13.0"
  extras="[mic,train,dev]"
elif [ "$want_mic" = 1 ]; then
  extras="[mic]"
fi
pip_install -e ".${extras}"
echo "setup: ready (.venv$( [ -n "$extras" ] && echo " with $extras"))"
