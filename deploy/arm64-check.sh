#!/usr/bin/env bash
# Proof that the runtime works on arm64 (Raspberry Pi OS 12 / Jetson) without owning one:
# a Debian bookworm arm64 root file system under qemu user emulation, the runtime installed
# there from arm64 wheels only, and `edgekd info`, `classify` and `bench` run with the shipped
# models. The labels must agree with this machine's (x86-64) run. Timings under emulation mean
# nothing; correctness does.
#
#   sudo deploy/arm64-check.sh [--root DIR] [--out DIR] [--onnxruntime VERSION]
#
# onnxruntime: 1.28 and newer crash (SIGSEGV) at import under Debian 12's qemu-user 7.2, while
# 1.24.4 runs; whether real Cortex-A72/A76 hardware is affected is not known here. The check
# therefore pins --onnxruntime (default 1.24.4, within the runtime's `onnxruntime>=1.17`).
#
# Needs: qemu-user-static, debootstrap, binfmt_misc (see ../shared/docs/recipes.md), root, the
# Debian and Python package registries, and .venv set up here (scripts/setup.sh). The root file
# system (~5 min to make) is kept in --root and reused. Writes --out/report.md and the arm64
# package set (--out/arm64-freeze.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=/var/tmp/edgekd-arm64/root
out="$here/docs/arm64"
ort_version=1.24.4
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --onnxruntime) ort_version=${2:?}; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "arm64-check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
die() { echo "arm64-check.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (chroot and mounts need it)"
for tool in debootstrap qemu-aarch64-static; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install qemu-user-static debootstrap"
done
x86=$here/.venv/bin/edgekd
[ -x "$x86" ] || die "set up .venv first: scripts/setup.sh"

# binfmt_misc lets the kernel hand arm64 binaries to qemu.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi

if [ ! -x "$root/usr/bin/python3" ]; then
  echo "== debootstrap bookworm arm64 into $root (about 5 minutes)"
  debootstrap --arch=arm64 --include=python3,python3-venv,python3-pip bookworm "$root" \
    http://deb.debian.org/debian
fi
[ "$(chroot "$root" uname -m)" = aarch64 ] || die "$root does not run as aarch64"
pyver=$(chroot "$root" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

echo "== arm64 wheels for Python $pyver"
work="$root/root/edgekd-check"
rm -rf "$work"
mkdir -p "$work/wheels" "$work/models" "$work/clips"
"$here/.venv/bin/python" -m pip wheel -q --no-deps -w "$work/wheels" "$here"
"$here/.venv/bin/python" - "$here/pyproject.toml" > "$work/requirements.txt" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if "python_version < '3.11'" not in d))
PY
echo "onnxruntime==$ort_version" >> "$work/requirements.txt"
"$here/.venv/bin/python" -m pip download -q --only-binary=:all: \
  --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --platform linux_aarch64 -d "$work/wheels" -r "$work/requirements.txt"

cp "$here"/models/*.onnx "$work/models/"
clips=(/usr/share/sounds/alsa/Front_Center.wav "$here"/edgekd/assets/*.flac "$here"/edgekd/assets/*.wav)
for c in "${clips[@]}"; do [ -e "$c" ] && cp "$c" "$work/clips/"; done

echo "== install in the arm64 root (no index: arm64 wheels only)"
for fs in proc sys dev; do mountpoint -q "$root/$fs" || mount --bind "/$fs" "$root/$fs"; done
trap 'for fs in proc sys dev; do umount "$root/$fs" 2>/dev/null || true; done' EXIT
chroot "$root" env -u PIP_FIND_LINKS sh -c 'rm -rf /opt/v && python3 -m venv /opt/v && /opt/v/bin/pip install -q --no-index --find-links /root/edgekd-check/wheels -r /root/edgekd-check/requirements.txt edgekd'
mkdir -p "$out"
chroot "$root" /opt/v/bin/pip freeze > "$out/arm64-freeze.txt"

echo "== run"
arm=(chroot "$root" /opt/v/bin/edgekd)
report="$out/report.md"
{
  echo "# arm64 check"
  echo
  echo "Made by \`deploy/arm64-check.sh\` on $(date -u +%Y-%m-%dT%H:%MZ): Debian bookworm arm64 root under"
  echo "qemu-user-static $(qemu-aarch64-static --version | head -1 | awk '{print $3}') on $(uname -m), Python $pyver, onnxruntime $ort_version,"
  echo "runtime installed from arm64 wheels only (package set in arm64-freeze.txt)."
  echo
  echo "| model | clip | x86-64 label (score) | arm64 label (score) | agree |"
  echo "|---|---|---|---|---|"
} > "$report"
fail=0
for m in "$work"/models/*.onnx; do
  name=$(basename "$m")
  "${arm[@]}" info "/root/edgekd-check/models/$name" > /dev/null || { echo "info failed on arm64 for $name"; fail=1; }
  for c in "$work"/clips/*; do
    cname=$(basename "$c")
    a=$("${arm[@]}" classify --json --model "/root/edgekd-check/models/$name" "/root/edgekd-check/clips/$cname")
    x=$("$x86" classify --json --model "$m" "$c")
    read -r al as < <(echo "$a" | python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); print(d["label"], round(d["score"],4))')
    read -r xl xs < <(echo "$x" | python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); print(d["label"], round(d["score"],4))')
    agree=yes
    if [ "$al" != "$xl" ]; then agree=NO; fail=1; fi
    echo "| $name | $cname | $xl ($xs) | $al ($as) | $agree |" >> "$report"
  done
done
arm_models=()
for m in "$work"/models/*.onnx; do arm_models+=("/root/edgekd-check/models/$(basename "$m")"); done
{
  echo
  echo "\`edgekd bench\` on arm64 (emulated: the timings are meaningless, the run is the proof):"
  echo
  echo '```'
} >> "$report"
# onnxruntime cannot name qemu's CPU vendor and says so once per session: keep that out of the report
if ! "${arm[@]}" bench --windows 20 --warmup 2 --no-peak --no-memory -q "${arm_models[@]}" >> "$report" 2> "$work/bench.err"; then
  grep -v "cpuid_info warning" "$work/bench.err" >> "$report"
  echo "bench failed on arm64" >> "$report"
  fail=1
fi
echo '```' >> "$report"
cat "$report"
[ "$fail" = 0 ] || die "arm64 disagrees with x86-64 or a command failed (see $report)"
echo "arm64 check passed"
