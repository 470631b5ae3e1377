#!/usr/bin/env bash
# Make (or reuse) the project's virtual environment at ./.venv.
# The install is skipped when .venv already matches pyproject.toml and this script
# (a stamp file holds their hash), so the two quick-start commands share one venv.
# Every pip call is constrained (-c) to the exact versions in .ci/constraints.txt, so every
# machine running the quick start gets the same numpy, OpenCV, PyAV, dlib, timm, torch, ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${HILIF_VENV:-.venv}
CONSTRAINTS=.ci/constraints.txt
stamp_want=$(cat pyproject.toml .ci/env.sh "$CONSTRAINTS" | sha256sum | cut -c1-16)
if [ -f "$VENV/.hilif-stamp" ] && [ "$(cat "$VENV/.hilif-stamp")" = "$stamp_want" ]; then
  echo "[env] $VENV is current (stamp $stamp_want): skipping install"
else
  echo "[env] installing into $VENV (about 2.5 minutes, 6.7 GB: torch here is a CUDA build)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  log="$VENV/install.log"
  pipi() {  # quiet pip; on failure show the end of the log and stop
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "$@" >>"$log" 2>&1; then
      grep -v "^WARNING: Location" "$log" | tail -n 30 >&2
      echo "[env] pip install $* failed; full log: $log" >&2
      exit 1
    fi
  }
  # torch first (its version, like every other one, comes from the constraints file).
  pipi torch torchvision
  pipi -e ".[dev]"
  # insightface hard-requires the CPU onnxruntime and opencv-python (needs libGL):
  # install it without its deps (its real needs are in pyproject), so that
  # onnxruntime-gpu's files stay the ones in place.
  pipi --no-deps insightface
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
