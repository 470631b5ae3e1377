#!/usr/bin/env bash
# Make (or reuse) the project's virtual environment at ./.venv.
# The install is skipped when .venv already matches pyproject.toml and this script
# (a stamp file holds their hash), so the two quick-start commands share one venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${HILIF_VENV:-.venv}
stamp_want=$(cat pyproject.toml .ci/env.sh | sha256sum | cut -c1-16)
if [ -f "$VENV/.hilif-stamp" ] && [ "$(cat "$VENV/.hilif-stamp")" = "$stamp_want" ]; then
  echo "[env] $VENV is current (stamp $stamp_want): skipping install"
else
  echo "[env] installing into $VENV (about 2.5 minutes, 6.7 GB: torch here is a CUDA build)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  # torch first, pinned to the builds that work with torchvision on this machine.
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  # insightface hard-requires the CPU onnxruntime and opencv-python (needs libGL):
  # install it without its deps (its real needs are in pyproject), then make sure
  # onnxruntime-gpu's files are the ones in place.
  "$VENV/bin/python" -m pip install -q --no-deps "insightface>=0.7,<3" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" - <<'PY'
import importlib.util, sys
for mod in ("torch", "torchvision", "timm", "webdataset", "decord", "av", "dlib", "cv2", "onnxruntime",
            "insightface", "sklearn", "typer", "rich", "matplotlib", "hilif.pipeline", "hilif.model", "hilif.train"):
    if importlib.util.find_spec(mod) is None:
        sys.exit(f"[env] install incomplete: cannot import {mod}")
import onnxruntime
print("[env] onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
PY
  echo "$stamp_want" > "$VENV/.hilif-stamp"
fi
