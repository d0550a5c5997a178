#!/usr/bin/env bash
# The XLA tests on the TPU image's versions, torch 2.8.0 + torch_xla 2.8.0 (Kaggle/docker-python tpu/config.txt), in
# their own environment: torch_xla pins its torch, which must not replace the project's torch in the main one.
#   IMAGE: a stand-in for Kaggle's TPU image, what it ships that matters here: torch, torch_xla, numpy, pillow,
#          matplotlib, OpenCV (pip --target; ~4 GB the first time, PyPI's torch being the CUDA build);
#   VENV:  IMAGE (through a .pth file) + this package and pytest: runs tests/test_xla.py on the XLA CPU backend,
#          then the kernel test of tests/test_kaggle.py, which builds the wheels `kaggle push` uploads (PyPI), makes a
#          fresh environment from IMAGE and runs the pushed kernel there twice with pip's network off.
#   bash tests/run_xla.sh    # both in ~/.cache/cyclegan-pws (or $XLA_IMAGE, $XLA_VENV), reused across clones
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.8.0 TORCH_XLA=2.8.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cyclegan-pws
IMAGE=${XLA_IMAGE:-$CACHE/xla-image-$TORCH_XLA}
VENV=${XLA_VENV:-$CACHE/venv-xla-$TORCH_XLA}
quiet() { grep -v -e '^WARNING: Location' -e 'Running pip as the' -e 'WARNING: Target directory' || true; }
if [ ! -f "$IMAGE/.complete" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$IMAGE" "torch==$TORCH" "torch-xla==$TORCH_XLA" \
    numpy pillow matplotlib "opencv-python-headless<5" 2>&1 | quiet
  touch "$IMAGE/.complete"
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$IMAGE" > "$SITE/kaggle_tpu_image.pth"
# the package and its runtime deps; the image's torch 2.8 satisfies torch>=2.4, so pip keeps it
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[faces,export]" pytest 2>&1 | quiet
"$VENV/bin/python" -c "import torch, torch_xla; print('xla env: torch', torch.__version__, '| torch_xla', torch_xla.__version__)"
export PJRT_DEVICE=CPU CYCLEGAN_PWS_TPU_IMAGE="$IMAGE"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_xla.py "$@"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_kaggle.py -k tpu_image "$@"
