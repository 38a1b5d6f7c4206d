#!/usr/bin/env bash
# Install edgekd as a supervised systemd service on Raspberry Pi OS (bookworm), Debian, Ubuntu
# or a Jetson (JetPack). Idempotent: running it again updates the code and models and keeps the
# existing /etc/edgekd/config.toml. Asks nothing interactively.
#
#   sudo deploy/install.sh --broker mqtt://homeassistant.local:1883 --device-id kitchen
#   sudo deploy/install.sh --uninstall            # keeps /etc/edgekd unless --purge
#   deploy/install.sh --dry-run --root /tmp/r     # print system changes, write files under /tmp/r
#
# Options:
#   --broker URL            mqtt://host:port or mqtts://host:port (default mqtt://localhost:1883)
#   --device-id ID          topic part for this device (default: the hostname)
#   --model PATH            a model to serve (repeatable; default: every models/*-emotion.onnx here)
#   --source SRC            mic, mic:NAME-OR-INDEX (default mic)
#   --mqtt-username NAME    broker user name (stored in the config, which is root:edgekd 0640)
#   --mqtt-password-file F  file holding the broker password: copied root-only to
#                           /etc/edgekd/credentials and handed to the service as a systemd
#                           credential; never written into the unit or the config
#   --ca-file F             CA certificate for mqtts:// (copied to /etc/edgekd/)
#   --provider P            onnxruntime provider: cpu (default), cuda, tensorrt (Jetson)
#   --no-ha-discovery       leave Home Assistant MQTT discovery off (it is on by default:
#                           the device and its sensors appear in Home Assistant by themselves)
#   --metrics-port PORT     serve Prometheus metrics on 127.0.0.1:PORT (installs the metrics extra)
#   --root DIR              install under DIR instead of / (for tests and image builds)
#   --dry-run               print the commands that change the system instead of running them
#   --no-start              install and enable, but do not start or health-check
#   --uninstall [--purge]   stop, disable and remove (with --purge also config and state)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
broker="mqtt://localhost:1883"
device_id=""
models=()
source_="mic"
mqtt_user=""
password_file=""
ca_file=""
provider="cpu"
ha_discovery=true
metrics_port=""
root=""
dry_run=0
start=1
uninstall=0
purge=0

die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --broker) broker=${2:?--broker needs a URL}; shift ;;
    --device-id) device_id=${2:?--device-id needs a value}; shift ;;
    --model) models+=("${2:?--model needs a path}"); shift ;;
    --source) source_=${2:?--source needs a value}; shift ;;
    --mqtt-username) mqtt_user=${2:?}; shift ;;
    --mqtt-password-file) password_file=${2:?}; shift ;;
    --ca-file) ca_file=${2:?}; shift ;;
    --provider) provider=${2:?}; shift ;;
    --ha-discovery) ha_discovery=true ;;
    --no-ha-discovery) ha_discovery=false ;;
    --metrics-port) metrics_port=${2:?--metrics-port needs a port}; shift ;;
    --root) root=${2:?--root needs a directory}; shift ;;
    --dry-run) dry_run=1 ;;
    --no-start) start=0 ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

case "$broker" in mqtt://*|mqtts://*) ;; *) die "--broker must start with mqtt:// or mqtts://, got '$broker'" ;; esac
case "$provider" in cpu|cuda|tensorrt) ;; *) die "--provider must be cpu, cuda or tensorrt, got '$provider'" ;; esac
case "$metrics_port" in "") ;; *[!0-9]*) die "--metrics-port must be a port number, got '$metrics_port'" ;; esac
[ -z "$password_file" ] || [ -r "$password_file" ] || die "cannot read --mqtt-password-file $password_file"
[ -z "$ca_file" ] || [ -r "$ca_file" ] || die "cannot read --ca-file $ca_file"
if [ -z "$root" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or use --dry-run"
fi
root=${root%/}
if [ -n "$root" ]; then mkdir -p "$root"; root=$(cd "$root" && pwd); fi

opt="$root/opt/edgekd"
etc="$root/etc/edgekd"
unit_dir="$root/etc/systemd/system"
state="$root/var/lib/edgekd"

# Commands that change the system outside --root go through this: printed under --dry-run.
sys() {
  if [ "$dry_run" = 1 ] || [ -n "$root" ]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
say() { echo "install.sh: $*"; }

if [ "$uninstall" = 1 ]; then
  sys systemctl disable --now edgekd.service || true
  rm -f "$unit_dir/edgekd.service" "$unit_dir/edgekd@.service"
  rm -rf "$unit_dir/edgekd.service.d"
  sys systemctl daemon-reload || true
  rm -rf "$opt"
  if [ "$purge" = 1 ]; then
    rm -rf "$etc" "$state"
    sys userdel edgekd || true
  fi
  say "removed edgekd$( [ "$purge" = 1 ] && echo ", its config and state" || echo "; kept $etc (use --purge to remove it)")"
  exit 0
fi

# 1. Debian packages: PortAudio and a compiler for PyAudio, libsndfile for audio files.
apt_packages=(python3 python3-venv python3-dev gcc portaudio19-dev libsndfile1 alsa-utils)
sys apt-get update -qq
sys env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}"

# 2. The service user: a system account in the audio group, no login, no home.
if ! id -u edgekd >/dev/null 2>&1 || [ -n "$root" ]; then
  sys useradd --system --no-create-home --home-dir /var/lib/edgekd --shell /usr/sbin/nologin \
    --groups audio edgekd
fi

# 3. Code: a venv with the runtime and the mic extra (onnxruntime-gpu on a Jetson by --provider).
mkdir -p "$opt/models"
sys python3 -m venv "$opt/venv"
sys "$opt/venv/bin/python" -m pip install -q --upgrade pip
extras="mic"
[ -n "$metrics_port" ] && extras="mic,metrics"
sys "$opt/venv/bin/python" -m pip install -q "${here}[${extras}]"
if [ "$provider" != cpu ]; then
  say "provider $provider: install NVIDIA's onnxruntime-gpu wheel for your JetPack into $opt/venv" \
      "(docs/deploy.md); edgekd falls back to the CPU if the provider is missing"
fi

# 4. Models.
if [ ${#models[@]} -eq 0 ]; then
  for m in "$here"/models/*-emotion.onnx; do [ -e "$m" ] && models+=("$m"); done
fi
[ ${#models[@]} -gt 0 ] || die "no models given and none found in $here/models (use --model PATH)"
installed_models=()
for m in "${models[@]}"; do
  [ -r "$m" ] || die "cannot read model $m"
  install -m 0644 "$m" "$opt/models/"
  installed_models+=("/opt/edgekd/models/$(basename "$m")")
done

# 5. Configuration: written once; later runs keep the user's edits.
mkdir -p "$etc" "$state"
if [ -n "$ca_file" ]; then install -m 0644 "$ca_file" "$etc/ca.crt"; fi
if [ ! -e "$etc/config.toml" ]; then
  {
    echo "# edgekd configuration, written by deploy/install.sh on $(date -u +%Y-%m-%d)."
    echo "# Every key is described in docs/configuration.md; restart with: systemctl restart edgekd"
    [ -n "$device_id" ] && echo "device_id = \"$device_id\""
    echo "stats_interval = 10"
    echo "provider = \"$provider\""
    echo "# Home Assistant MQTT discovery (docs/integrations.md); false to keep edgekd out of HA"
    echo "ha_discovery = $ha_discovery"
    [ -n "$metrics_port" ] && echo "metrics_port = $metrics_port                # Prometheus, on 127.0.0.1"
    echo ""
    echo "[audio]"
    echo "source = \"$source_\""
    echo ""
    echo "[defaults]"
    echo "mode = \"events\""
    echo "smoothing = 3"
    for m in "${installed_models[@]}"; do
      echo ""
      echo "[[models]]"
      echo "path = \"$m\""
    done
    echo ""
    echo "[mqtt]"
    echo "url = \"$broker\""
    [ -n "$mqtt_user" ] && echo "username = \"$mqtt_user\""
    [ -n "$ca_file" ] && echo "ca_file = \"/etc/edgekd/ca.crt\""
    [ -n "$password_file" ] && echo "# the password comes from the systemd credential mqtt-password"
    true
  } > "$etc/config.toml"
  chmod 0640 "$etc/config.toml"
  say "wrote $etc/config.toml"
else
  say "kept existing $etc/config.toml"
fi
sys chown -R root:edgekd "$root/etc/edgekd"
sys chown -R edgekd:edgekd "$root/var/lib/edgekd"

# 6. The unit, and the broker password as a systemd credential (root-only file, never in the unit).
mkdir -p "$unit_dir"
install -m 0644 "$here/systemd/edgekd.service" "$unit_dir/edgekd.service"
install -m 0644 "$here/systemd/edgekd@.service" "$unit_dir/edgekd@.service"
if [ -n "$password_file" ]; then
  mkdir -p "$etc/credentials" "$unit_dir/edgekd.service.d"
  chmod 0700 "$etc/credentials"
  install -m 0600 "$password_file" "$etc/credentials/mqtt-password"
  cat > "$unit_dir/edgekd.service.d/credentials.conf" <<'EOF'
[Service]
LoadCredential=mqtt-password:/etc/edgekd/credentials/mqtt-password
Environment=EDGEKD_MQTT__PASSWORD_FILE=%d/mqtt-password
EOF
fi
sys systemctl daemon-reload
sys systemctl enable edgekd.service

# 7. Start and wait for the retained `online` status on the broker.
if [ "$start" = 1 ]; then
  sys systemctl restart edgekd.service
  if [ "$dry_run" = 0 ] && [ -z "$root" ]; then
    say "waiting for edgekd to report online on $broker ..."
    if ! "$opt/venv/bin/edgekd" listen --config "$etc/config.toml" --wait-online 60 >/dev/null; then
      systemctl --no-pager status edgekd.service || true
      die "edgekd did not report online within 60 s: see journalctl -u edgekd"
    fi
    say "edgekd is online"
  fi
fi
say "done"
