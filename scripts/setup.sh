#!/usr/bin/env bash
# Set up edgekd in ./.venv on Debian, Ubuntu or Raspberry Pi OS. Idempotent.
#   scripts/setup.sh            runtime only (what the demo needs)
#   scripts/setup.sh --mic      + PyAudio for microphones (builds against PortAudio)
#   scripts/setup.sh --dev      + everything the tests need (mic, train, test tools, mosquitto)
#   --dry-run                   print what would be installed and from where; change nothing
set -euo pipefail
cd "$(dirname "$0")/.."

want_mic=0 want_dev=0 dry_run=0
for arg in "$@"; do
  case "$arg" in
    --mic) want_mic=1 ;;
    --dev) want_dev=1; want_mic=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --mic, --dev or --dry-run)" >&2; exit 2 ;;
  esac
done

torch_version=2.13.0
# PyPI's torch for x86-64 Linux is the CUDA build (about 5 GB with its nvidia-* wheels); the
# PyTorch project's own index has the CPU build (about 0.2 GB). On aarch64 PyPI's is CPU-only.
torch_cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
index_probe_s=5

# Runs a command that changes the system, or under --dry-run prints it.
run() {
  if [ "$dry_run" = 1 ]; then
    printf 'setup: would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

apt_packages=(python3 python3-venv python3-pip)
[ "$want_mic" = 1 ] && apt_packages+=(python3-dev gcc portaudio19-dev libasound2-plugins alsa-utils)
[ "$want_dev" = 1 ] && apt_packages+=(mosquitto mosquitto-clients espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox shellcheck systemd openssl)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "setup: installing Debian packages: ${missing[*]}"
  # sudo drops the caller's environment, so DEBIAN_FRONTEND goes inside the command (env), and
  # stdin is closed: a package that still asks something fails instead of waiting unseen.
  apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  run "${apt[@]}" update -qq </dev/null
  if [ "$dry_run" = 1 ]; then
    run "${apt[@]}" install -y -qq "${missing[@]}"
  else
    "${apt[@]}" install -y -qq "${missing[@]}" </dev/null >/dev/null
  fi
fi

python3 - <<'PY' || { echo "setup: edgekd needs Python 3.10 or newer" >&2; exit 2; }
import sys; sys.exit(sys.version_info < (3, 10))
PY

if [ ! -x .venv/bin/python ]; then
  run python3 -m venv .venv
  if [ "$dry_run" = 1 ]; then
    echo "setup: no .venv yet: the pip steps below would run in it"
  fi
fi
py=.venv/bin/python
[ -x "$py" ] || py=python3  # only under --dry-run, before .venv exists
if [ "$dry_run" = 1 ]; then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
else
  log=.venv/setup.log
  : > "$log"
fi

# pip's and the build's chatter goes to the log; on failure its tail is shown.
pip_install() {
  if [ "$dry_run" = 1 ]; then
    run "$py" -m pip install "$@"
    return
  fi
  if ! "$py" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: pip install $* failed (full log: $log)" >&2
    exit 1
  fi
}

# The same, returning failure instead of stopping: for a source that may be unreachable.
pip_try() {
  if [ "$dry_run" = 1 ]; then
    run "$py" -m pip install "$@"
    return
  fi
  "$py" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1
}

# Prints nothing when URL answers within index_probe_s seconds, else why not (honours the
# *_proxy variables, like pip).
unreachable() {
  "$py" - "$1" "$index_probe_s" 2>/dev/null <<'PY' || true
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()
except Exception as exc:
    print(getattr(exc, "reason", None) or exc)
PY
}

install_torch() {
  local spec="torch==$torch_version"
  if [ "$(uname -m)" = x86_64 ]; then
    local why
    why=$(unreachable "$torch_cpu_index/torch/")
    if [ -z "$why" ]; then
      echo "setup: torch $torch_version (CPU build) from $torch_cpu_index"
      # a short timeout and one retry: a flaky index falls back below instead of stalling for minutes
      if pip_try --timeout 15 --retries 1 --index-url "$torch_cpu_index" "$spec"; then
        return
      fi
      echo "setup: installing torch from $torch_cpu_index failed (log: $log)" >&2
    else
      echo "setup: PyTorch's CPU wheel index $torch_cpu_index is unreachable ($why)" >&2
    fi
    echo "setup: falling back to pip's configured index for $spec: on x86-64 PyPI serves the CUDA build" \
         "(about 5 GB) unless that index or find-links has the CPU wheel" >&2
  fi
  pip_install "$spec"
}

echo "setup: installing Python packages into .venv (log: $log)"
pip_install --upgrade pip
extras=""
editable=()
if [ "$want_dev" = 1 ]; then
  # torch first, so that the training side's range finds it installed and pulls no CUDA build
  install_torch
  extras="[mic,train,dev]"
  # the training distribution (edgekd-train) from this clone's train/: the `train` extra asks for
  # it, and pip takes this local project for that requirement instead of the package registry's
  editable=(-e ./train)
elif [ "$want_mic" = 1 ]; then
  extras="[mic]"
fi
pip_install "${editable[@]}" -e ".${extras}"
if [ "$dry_run" = 1 ]; then
  echo "setup: dry run, nothing changed"
else
  echo "setup: ready (.venv$( [ -n "$extras" ] && echo " with $extras"))"
fi
