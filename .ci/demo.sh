#!/usr/bin/env bash
# The quick start's main job on the embedded demo data, end to end on a CPU:
#   hilif-prep demo -> hilif-prep extract -> hilif-train (stage 1 + stage 2) -> hilif-eval (test split)
# Run it through `bash .ci/quickstart.sh demo` (which makes the venv first).
# Everything lands in $HILIF_DEMO_DIR (default demo/); a re-run starts again from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${HILIF_DEMO_DIR:-demo}
Q=${HILIF_DEMO_QUALITY:-c23}
WORKERS=${HILIF_DEMO_WORKERS:-2}
mkdir -p "$D"
start=$(date +%s)
stamp() { echo "[demo] $(( $(date +%s) - start ))s: $*"; }

stamp "1/4 making the demo dataset (FF++ layout, libx264, $Q only) in $D/data"
# only the quality trained on: its videos are byte-identical to those of a run that encodes both
hilif-prep demo --out "$D/data" --quality "$Q" --overwrite

stamp "2/4 extracting aligned faces ($Q, dlib) into $D/shards"
hilif-prep extract --dataset demo --root "$D/data" --quality "$Q" --out "$D/shards" --workers "$WORKERS" --overwrite
hilif-prep inspect "$D/shards"

stamp "3/4 two-stage training of the demo preset into $D/run"
rm -rf "$D/run"
# the demo preset carries its CPU recipe (epochs, steps, batch, lr); HILIF_TRAIN_ARGS adds or overrides options
hilif-train --shards "$D/shards" --preset demo --out "$D/run" ${HILIF_TRAIN_ARGS:-}

stamp "4/4 evaluating the best stage-2 checkpoint on the test split"
hilif-eval --checkpoint "$D/run/stage2/best.pt" --shards "$D/shards" --split test --out "$D/eval"
stamp "done: report $D/eval, ROC curve and plots there; contact sheet $D/shards/contact_sheet.png"
