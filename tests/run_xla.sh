#!/usr/bin/env bash
# The XLA tests, in their own environment: torch_xla pins its torch (2.9), which must not replace the project's
# torch in the main environment. Creates the venv on first use (~4 GB download), then runs tests/test_xla.py on
# the XLA CPU backend (PJRT_DEVICE=CPU; the SPMD test starts its own 2-device process).
#   bash tests/run_xla.sh    # venv in ~/.cache/cyclegan-pws/venv-xla (or $XLA_VENV), reused across clones
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${XLA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cyclegan-pws/venv-xla}
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c "import torch_xla" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.9.0 torch-xla==2.9.0 2>&1 | grep -v -e "^WARNING: Location" || true
fi
# the package and its runtime deps; torch 2.9 already satisfies torch>=2.4, so pip keeps it
"$VENV/bin/pip" install -q --disable-pip-version-check -e . pytest 2>&1 | grep -v -e '^WARNING: Location' || true
"$VENV/bin/python" -c "import torch, torch_xla; print('xla env: torch', torch.__version__, '| torch_xla', torch_xla.__version__)"
PJRT_DEVICE=CPU exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_xla.py "$@"
