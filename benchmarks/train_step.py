"""Seconds per CycleGAN training iteration on this CPU (or a CUDA GPU): the `paper` preset (ResNet-9 ngf64 +
PatchGAN), batch 1, identity loss on, fp32 vs bf16/fp16 autocast and layout variants, measured side by side
(variants interleaved step by step, so machine noise hits them alike), plus achieved GFLOP/s and how far the
low-precision losses drift from fp32.

    python benchmarks/train_step.py                       # 256 and 128 px, all variants, 3 timed steps each
    python benchmarks/train_step.py --sizes 128 --steps 2 --variants fp32,bf16
    python benchmarks/train_step.py --device cuda --steps 20 --batch 8   # GPU: fp32, TF32, bf16, fp16, layouts

Columns: s_per_iter (fastest timed step; median_s too), GFLOP/s = FLOPs of one iteration (torch's flop counter)
/ s_per_iter, loss_diff_step1 = largest relative difference of any loss vs fp32 at the first step (same weights,
same batch), max_loss_diff = the same over all steps (the runs drift apart once the weights are updated), first_step_s = the
untimed first step (with `_compile` variants: compilation; it pays back after first_step_s / (s - s_compiled) steps).
bf16 variants are measured only on CPUs with native bf16 (AMX/AVX512-BF16); elsewhere PyTorch emulates bf16
convolutions at ~1/300 of the fp32 speed, and `precision='auto'` trains in fp32.

Anchors (REFERENCE.md, quiet machine): the reference implementation 7.8 s/iter at 256 fp32 (2.25 s at 128);
plain bf16 autocast 3.15 s (1.01 s). Target here: <= 1.9 s at 256, <= 0.55 s at 128.
"""
import argparse, json, time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cyclegan_pws.config import CycleGANConfig
from cyclegan_pws.cyclegan import CycleGAN
from cyclegan_pws.engine import Runner, keep_freed_memory

VARIANTS = {  # name: (precision, CycleGANConfig overrides, TF32 convs/matmuls on CUDA)
    'fp32': ('fp32', {}, False),
    'bf16': ('bf16', {}, False),
    'bf16_nchw': ('bf16', {'channels_last': False}, False),         # activations in torch's default layout
    'bf16_channels_last': ('bf16', {'channels_last': True}, False),  # channels-last on any device (bf16 on CPU: the default)
    'fp32_channels_last': ('fp32', {'channels_last': True}, False),
    'tf32': ('fp32', {}, True),                  # CUDA only: fp32 weights, TF32 tensor cores
    'fp16': ('fp16', {}, False),                 # CUDA: fp16 tensor cores + loss scaling (what a T4 gets)
    'fp16_channels_last': ('fp16', {'channels_last': True}, False),
    'bf16_compile': ('bf16', {}, False),         # the four networks through torch.compile (inductor)
    'fp32_compile': ('fp32', {}, False),
}


def make(size, variant, device='cpu', seed=0):
    prec, over, _ = VARIANTS[variant]
    task = CycleGAN(CycleGANConfig(model='paper', size=size, augment='none', **over), seed=seed).to(device)
    if variant.endswith('_compile'):
        for name in task.networks: setattr(task, name, torch.compile(getattr(task, name)))  # same parameters, compiled forward/backward
    return task, Runner(device, prec)


def batches(size, n, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{k: torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8) for k in 'AB'} for _ in range(n)]


def step_flops(size, batch=1, device='cpu') -> float:
    "FLOPs of one training iteration (2 G + 2 D, forward and backward, identity on), from torch's flop counter."
    task, run = make(size, 'fp32', device)
    with FlopCounterMode(display=False) as fc: task.step({k: v.to(device) for k, v in batches(size, 1, batch)[0].items()}, run)
    return fc.get_total_flops()


def _sync(device):
    if device == 'cuda': torch.cuda.synchronize()


def _pin(cores):
    "Move every thread of this process onto `cores` and size torch's pool to match."
    import os
    for tid in os.listdir('/proc/self/task'): os.sched_setaffinity(int(tid), cores)
    torch.set_num_threads(len(cores))


def bench(size, variants, steps, warmup=1, device='cpu', batch=1, pin=None):
    tasks = {v: make(size, v, device) for v in variants}
    data = [{k: x.to(device) for k, x in b.items()} for b in batches(size, warmup + steps, batch)]
    times = {v: [] for v in variants}
    first_s = {}  # the first step of each variant: oneDNN's kernel choice, torch.compile's compilation
    losses = {v: [] for v in variants}
    for i, b in enumerate(data):
        if i == warmup and pin: _pin(pin)  # compiled and warmed up on every core, timed on the pinned ones
        for v in variants:  # interleaved: each variant sees the same batches and the same machine load
            task, run = tasks[v]
            if device == 'cuda': torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = VARIANTS[v][2]
            torch.manual_seed(i)  # the pool's random draws are the same for every variant
            _sync(device); t = time.perf_counter()
            out = task.step(b, run); run.end_step(); _sync(device)
            dt = time.perf_counter() - t
            losses[v].append({k: float(x) for k, x in out.items()})
            if i >= warmup: times[v].append(dt)
            elif i == 0: first_s[v] = dt
    return times, losses, first_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='256,128')
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1, help='untimed steps first (cuDNN picks its algorithms then)')
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--variants', default=None, help='comma-separated names of VARIANTS (default: what the hardware does fast)')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--pin', default=None, help='cores to time on after the warm-up, e.g. 0,1 (compile on all cores, time on two)')
    ap.add_argument('--json', default=None, help='also write the results here')
    a = ap.parse_args()
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if a.variants: variants = a.variants.split(',')
    elif a.device == 'cuda': variants = ['fp32', 'tf32', 'bf16', 'fp16', 'bf16_channels_last', 'fp16_channels_last']
    # without AMX/AVX512-BF16, bf16 convs are emulated (~300x slower than fp32): measuring them is pointless
    else: variants = ['fp32', 'bf16_nchw', 'bf16'] if native_bf16 else ['fp32', 'fp32_channels_last']
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as the engine does on CPU (denormal Adam moments slow later steps ~5x)
    if a.device == 'cpu': keep_freed_memory()  # as `start_run` does on CPU (activations reuse freed pages)
    rows = []
    for size in map(int, a.sizes.split(',')):
        flops = step_flops(size, a.batch, a.device)
        pin = set(map(int, a.pin.split(','))) if a.pin else None
        times, losses, first_s = bench(size, variants, a.steps, a.warmup, a.device, a.batch, pin)
        pick = min if a.device == 'cpu' else (lambda ts: sorted(ts)[len(ts) // 2])  # CPU: least disturbed step; GPU: median
        base = pick(times[variants[0]])
        for v in variants:
            s = pick(times[v])
            rel = lambda lv, lf: max(abs(lv[k] - lf[k]) / max(abs(lf[k]), 1e-8) for k in lf)
            first = rel(losses[v][0], losses['fp32'][0]) if 'fp32' in losses else None  # same weights, same batch
            drift = max(rel(lv, lf) for lv, lf in zip(losses[v], losses['fp32'])) if 'fp32' in losses else None
            rows.append({'size': size, 'batch': a.batch, 'variant': v, 's_per_iter': round(s, 3), 'median_s': round(sorted(times[v])[len(times[v]) // 2], 3),
                         'speedup_vs_' + variants[0]: round(base / s, 2), 'gflop_per_iter': round(flops / 1e9, 1),
                         'gflops': round(flops / 1e9 / s, 1), 'loss_diff_step1': None if first is None else round(first, 5),
                         'max_loss_diff': None if drift is None else round(drift, 4),
                         'first_step_s': round(first_s[v], 2) if v in first_s else None})
    cols = list(rows[0])
    print(' | '.join(f'{c:>14}' for c in cols))
    for r in rows: print(' | '.join(f'{str(r[c]):>14}' for c in cols))
    res = {'torch': torch.__version__, 'device': a.device, 'threads': torch.get_num_threads(), 'steps': a.steps, 'pinned': a.pin,
           'cpu': torch.backends.cpu.get_cpu_capability(), 'native_bf16': native_bf16, 'rows': rows,
           'gpu': torch.cuda.get_device_name() if a.device == 'cuda' else None}
    print(json.dumps(res))
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
