#!/usr/bin/env bash
# Idempotent environment setup: Debian packages, .venv at the repo root, pinned
# Python packages, and Horovod built from source against the installed TF.
# Fast (a few checks) when everything is already in place.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
HOROVOD_VERSION=0.28.1
log() { echo "[setup] $*" >&2; }

apt_packages=(libopenmpi-dev openmpi-bin cmake g++ make bzip2)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$PY" ]; then
  PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  log "creating $VENV with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV"
fi

# The stamp covers both files: a changed pin in either reinstalls.
req_hash="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$req_hash" ]; then
  log "installing requirements.txt and requirements-test.txt"
  "$PY" -m pip install -q --upgrade pip setuptools wheel
  "$PY" -m pip install -q -r "$ROOT/requirements.txt"
  # Test-only (transformers + the CPU torch on disk); requirements.txt's pins hold.
  "$PY" -m pip install -q -r "$ROOT/requirements-test.txt" -c "$ROOT/requirements.txt"
  echo "$req_hash" > "$stamp"
fi

if ! "$PY" -c "import horovod.tensorflow" >/dev/null 2>&1; then
  # pip caches the wheel it builds, so a fresh .venv with the same TF reuses it.
  log "building horovod==$HOROVOD_VERSION from source against TensorFlow (~10 min the first time)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  MAKEFLAGS="-j$(nproc)" \
    "$PY" -m pip install -q --no-build-isolation "horovod==$HOROVOD_VERSION"
fi
