#!/usr/bin/env bash
# The test command (README): install everything the tests need, check that notebooks, modules and README are
# in sync and clean, run the notebook tests (nbdev_test) and the integration tests (pytest).
#   bash tests/run_all.sh            # everything
#   PYTEST_ARGS="-k cli" SKIP_XLA=1 bash tests/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# 1. Environment: the active virtualenv, else a project-local one. torch 2.13.0 is the CPU build this
#    machine kind serves from local disk; the package itself accepts any torch>=2.4 (Kaggle's images).
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}" -e ".[dev]" 2>&1 \
  | grep -v -e '^WARNING: Location' -e 'Running pip as the' || true
python -c "import torch, cyclegan_pws; print('torch', torch.__version__, '| cyclegan_pws', cyclegan_pws.__version__)"
# The app's browser test drives Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test will be skipped" >&2
fi

# 2. Source of truth: exporting and cleaning the notebooks must change nothing, README must match index.ipynb.
snapshot() { find nbs cyclegan_pws -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha1sum; }
before=$(snapshot)
nbdev_export
if [ "$before" != "$(snapshot)" ]; then
  echo "FAIL: nbdev_export changed cyclegan_pws/: the modules were edited by hand or not re-exported. Run nbdev_export and commit." >&2
  diff <(echo "$before") <(snapshot) >&2 || true; exit 1
fi
nbdev_clean
if [ "$before" != "$(snapshot)" ]; then
  echo "FAIL: nbdev_clean changed nbs/: notebooks were committed with outputs or metadata. Run nbdev_clean and commit." >&2
  diff <(echo "$before") <(snapshot) >&2 || true; exit 1
fi
python .ci/render_readme.py --check

# 3. Notebook unit tests, then integration tests.
n_nbs=$(ls nbs/*.ipynb | wc -l)
nbdev_test --n_workers "${NBDEV_WORKERS:-2}" --timing
echo "notebooks: ${n_nbs} passed, 0 failed"
set +e
python -m pytest tests ${PYTEST_ARGS:-} -q -p no:cacheprovider
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi
[ $rc -eq 0 ] || exit $rc

# 4. The TPU path, on torch_xla's CPU backend, in its own environment (torch_xla 2.8.0 pins torch 2.8.0, as on Kaggle's TPU image).
#    SKIP_XLA=1 skips it (e.g. offline, where its ~4 GB first download is impossible).
if [ -z "${SKIP_XLA:-}" ]; then bash tests/run_xla.sh; fi
