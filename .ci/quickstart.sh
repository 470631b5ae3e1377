#!/usr/bin/env bash
# The README's two quick-start commands:
#   bash .ci/quickstart.sh demo   install, then demo data -> extract -> two-stage training -> evaluation
#   bash .ci/quickstart.sh test   install, then the test suite (this is what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
case "$what" in
  demo|test) ;;
  *) echo "usage: bash .ci/quickstart.sh demo|test" >&2; exit 2 ;;
esac
bash .ci/env.sh
source .venv/bin/activate
if [ "$what" = test ]; then
  exec python -m pytest -q tests
fi
exec bash .ci/demo.sh
