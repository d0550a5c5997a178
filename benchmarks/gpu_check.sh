#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run, for a GPU lent for a few minutes: the CUDA tests, this project's
# training step against the reference implementation's on the same GPU (batch 1 and the largest batch both fit), and
# the removal presets trained within a time budget and scored on the three test sets. OUT gets one log, the JSON
# of each benchmark and the grids of the removal runs (few files: what a lent machine sends back is limited).
#   bash benchmarks/gpu_check.sh OUT [REF]    # REF: a checkout of junyanz/pytorch-CycleGAN-and-pix2pix
#   BUDGET=600 bash benchmarks/gpu_check.sh /tmp/gpu /tmp/cyclegan-ref   # a longer removal run
#   SKIP_TESTS=1 SIZES=256 PRESETS=seed N=300 BUDGET=60 OVERHEAD=150 bash benchmarks/gpu_check.sh /tmp/gpu  # ~5 min
# BUDGET: training seconds per removal preset; OVERHEAD: the seconds its part gets beyond that (data, stain
# libraries, the timing probe, evaluation); SKIP_TESTS=1 leaves the CUDA tests out.
# The defaults need about nine minutes, inside one 10-minute command. On an H200 (2026-12-04) the CUDA tests took
# 41 s and the removal part's overhead over 150 s, hence 300. Each part has its own time limit and runs even when
# an earlier one failed; the exit status says whether all passed.
set -u
cd "$(dirname "$0")/.."
out=${1:?give an output folder}; ref=${2:-}
budget=${BUDGET:-180} presets=${PRESETS:-seed,paper} n=${N:-600}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
part() {  # part NAME SECONDS COMMAND...: run COMMAND with a time limit, its output to OUT/log.txt and to the screen
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$out/log.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$out/log.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc" | tee -a "$out/log.txt"; [ "$rc" = 0 ] || status=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc; } 2>&1 | tee "$out/log.txt"

[ -n "${SKIP_TESTS:-}" ] || part cuda_tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
refarg=(); [ -n "$ref" ] && refarg=(--ref "$ref")
part vs_reference_b1 120 python3 benchmarks/vs_reference.py "${refarg[@]}" --device cuda --sizes "${SIZES:-256,128}" --batches 1 \
  --steps 30 --warmup 3 --json "$out/vs_reference_b1.json"
part vs_reference_max 150 python3 benchmarks/vs_reference.py "${refarg[@]}" --device cuda --sizes 256 --batches max \
  --max-batch 128 --steps 6 --warmup 2 --json "$out/vs_reference_max.json"
limit=$((budget + ${OVERHEAD:-300}))   # the benchmark cuts its training to end 20 s inside this
part removal_presets $limit python3 benchmarks/removal_presets.py --device cuda --presets "$presets" \
  --n "$n" --budget "$budget" --deadline $((limit - 20)) --out /tmp/removal_presets --json "$out/removal_presets.json"
for p in ${presets//,/ }; do for s in '' photos; do
  g=/tmp/removal_presets/$p/eval/${s:+$s/}grid.png; [ -f "$g" ] && cp "$g" "$out/grid_$p${s:+_$s}.png"; done; done
exit $status
