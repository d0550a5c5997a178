"""Speed of `cyclegan_pws.diffaugment` per policy, next to the paper's reference code.

    PYTHONPATH=. python3 benchmarks/diffaugment.py [--batch 8] [--size 256] [--repeats 5] [--threads N]
                                                   [--clock wall|cpu] [--json F]

Times one call on a (batch, 3, size, size) float32 batch in [-1, 1] at p=1, forward only and forward+backward
(gradient w.r.t. the images, as in a G update). The two implementations run interleaved, best of `--repeats`
after one warm-up, so load from other jobs on a shared machine distorts the ratios least. `paper` is Zhao et
al.'s DiffAugment_pytorch.py (mit-han-lab/data-efficient-gans, BSD-2), inlined below: no per-image p, no
clamping, index gathers instead of kornia warps. A second table times `translate_px` (one gather) against the
kornia `translate` warp (nearest `grid_sample`) it replaced, on the same shifts, for both padding modes. Prints
the tables and a JSON line.
"""
import argparse, json, platform, time

import torch
import torch.nn.functional as F

from kornia.geometry.transform import translate

from cyclegan_pws.diffaugment import diff_augment, translate_px


def warp_translate_px(x, shift, padding_mode='zeros'):
    "The previous `translate_px`: kornia's nearest-neighbour warp (grid_sample, no XLA lowering), in float32."
    return translate(x.float(), shift.float(), mode='nearest', padding_mode=padding_mode, align_corners=True).to(x.dtype)


# --- Zhao et al. 2020, DiffAugment_pytorch.py (reference, unchanged apart from formatting) ---
def _p_brightness(x): return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
def _p_saturation(x):
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + m
def _p_contrast(x):
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + m
def _p_translation(x, ratio=0.125):
    sx, sy = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, size=[x.size(0), 1, 1], device=x.device)
    ty = torch.randint(-sy, sy + 1, size=[x.size(0), 1, 1], device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(x.size(0), dtype=torch.long, device=x.device),
                                torch.arange(x.size(2), dtype=torch.long, device=x.device),
                                torch.arange(x.size(3), dtype=torch.long, device=x.device), indexing='ij')
    gx = torch.clamp(gx + tx + 1, 0, x.size(2) + 1)
    gy = torch.clamp(gy + ty + 1, 0, x.size(3) + 1)
    xp = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return xp.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)
def _p_cutout(x, ratio=0.5):
    cs = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    ox = torch.randint(0, x.size(2) + (1 - cs[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    oy = torch.randint(0, x.size(3) + (1 - cs[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(x.size(0), dtype=torch.long, device=x.device),
                                torch.arange(cs[0], dtype=torch.long, device=x.device),
                                torch.arange(cs[1], dtype=torch.long, device=x.device), indexing='ij')
    gx = torch.clamp(gx + ox - cs[0] // 2, min=0, max=x.size(2) - 1)
    gy = torch.clamp(gy + oy - cs[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)
_PAPER = {'color': [_p_brightness, _p_saturation, _p_contrast], 'translation': [_p_translation], 'cutout': [_p_cutout]}
def paper_diff_augment(x, policy):
    for name in policy.split(','):
        for f in _PAPER[name]: x = f(x)
    return x
# ---


CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def call_ms(fn, x, backward, clock=time.perf_counter):
    "Milliseconds of one `fn(x)` (plus `.sum().backward()` when `backward`) on `clock`."
    xi = x.detach().requires_grad_(backward)
    t0 = clock()
    y = fn(xi)
    if backward: y.sum().backward()
    return (clock() - t0) * 1e3


def best_ms(fns, x, backward, repeats, clock=time.perf_counter):
    "Best ms of each of `fns` over `repeats` rounds after one warm-up; calls interleave so load hits all alike."
    times = [[] for _ in fns]
    for i in range(repeats + 1):
        for t, fn in zip(times, fns):
            ms = call_ms(fn, x, backward, clock)
            if i: t.append(ms)
    return [min(t) for t in times]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch', type=int, default=8); ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--repeats', type=int, default=5); ap.add_argument('--json', default=None)
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s choice)')
    ap.add_argument('--clock', choices=list(CLOCKS), default='wall',
                    help="'cpu' = this process's CPU time: with --threads 1 it ignores time lost to other jobs")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    policies = ['color', 'translation', 'cutout', 'affine', 'color,translation,cutout']
    rows = []
    for pol in policies:
        row = {'policy': pol}
        for bw in (False, True):
            key = 'fwd_bwd' if bw else 'fwd'
            fns = [lambda t: diff_augment(t, pol, 1.0, gen)]
            if all(n in _PAPER for n in pol.split(',')): fns.append(lambda t: paper_diff_augment(t, pol))
            ms = best_ms(fns, x, bw, a.repeats, CLOCKS[a.clock]) + [None]
            row[f'ours_{key}_ms'], row[f'paper_{key}_ms'] = ms[0], ms[1]
        rows.append(row)
    shift = torch.randint(-a.size // 8, a.size // 8 + 1, (a.batch, 2), generator=torch.Generator().manual_seed(1))
    trans_rows = []
    for pm in ('zeros', 'reflection'):
        assert torch.equal(translate_px(x, shift, pm), warp_translate_px(x, shift, pm))    # same pixels, bit for bit
        row = {'padding_mode': pm}
        for bw in (False, True):
            key = 'fwd_bwd' if bw else 'fwd'
            fns = [lambda t: translate_px(t, shift, pm), lambda t: warp_translate_px(t, shift, pm)]
            row[f'gather_{key}_ms'], row[f'warp_{key}_ms'] = best_ms(fns, x, bw, a.repeats, CLOCKS[a.clock])
        trans_rows.append(row)
    f = lambda v: f'{v:8.1f}' if v is not None else '       -'
    r = lambda o, p: f'{o / p:6.2f}x' if p else '      -'
    print(f'DiffAugment, batch {a.batch}x3x{a.size}x{a.size} float32, p=1, {platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}; {a.clock} ms per call, best of {a.repeats}')
    print(f'{"policy":26} {"ours fwd":>8} {"paper":>8} {"ratio":>7} | {"ours f+b":>8} {"paper":>8} {"ratio":>7}')
    for w in rows:
        print(f'{w["policy"]:26} {f(w["ours_fwd_ms"])} {f(w["paper_fwd_ms"])} {r(w["ours_fwd_ms"], w["paper_fwd_ms"])} | '
              f'{f(w["ours_fwd_bwd_ms"])} {f(w["paper_fwd_bwd_ms"])} {r(w["ours_fwd_bwd_ms"], w["paper_fwd_bwd_ms"])}')
    print(f'\ntranslate_px (gather) vs the kornia warp it replaced, same shifts (up to 1/8 of the size each way)')
    print(f'{"padding":26} {"gather":>8} {"warp":>8} {"ratio":>7} | {"gth f+b":>8} {"warp f+b":>8} {"ratio":>7}')
    for w in trans_rows:
        print(f'{w["padding_mode"]:26} {f(w["gather_fwd_ms"])} {f(w["warp_fwd_ms"])} {r(w["gather_fwd_ms"], w["warp_fwd_ms"])} | '
              f'{f(w["gather_fwd_bwd_ms"])} {f(w["warp_fwd_bwd_ms"])} {r(w["gather_fwd_bwd_ms"], w["warp_fwd_bwd_ms"])}')
    result = {'batch': a.batch, 'size': a.size, 'threads': torch.get_num_threads(), 'clock': a.clock, 'torch': torch.__version__,
              'repeats': a.repeats, 'rows': rows, 'translate_px': trans_rows}
    print(json.dumps(result))
    if a.json:
        with open(a.json, 'w') as fh: json.dump(result, fh, indent=1)


if __name__ == '__main__': main()
