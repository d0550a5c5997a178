"""Where a CycleGAN training iteration spends its time: torch.profiler's table of the costliest ops (self time) for
one `paper`-preset step on this CPU or GPU, after warm-up steps. Prints the table and writes JSON.

    python benchmarks/profile_step.py --size 256 --precision bf16 --threads 2
"""
import argparse, json

import torch
from torch.profiler import ProfilerActivity, profile

from cyclegan_pws.cyclegan import CycleGAN, CycleGANConfig
from cyclegan_pws.engine import Runner


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--precision', default='bf16')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--top', type=int, default=25)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    task = CycleGAN(CycleGANConfig(model='paper', size=a.size, augment='none'), seed=0).to(a.device)
    run = Runner(a.device, a.precision)
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randint(0, 256, (1, 3, a.size, a.size), generator=g, dtype=torch.uint8).to(a.device) for k in 'AB'}
    for _ in range(a.warmup): task.step(batch, run); run.end_step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == 'cuda' else [])
    with profile(activities=acts) as prof:
        task.step(batch, run); run.end_step()
        if a.device == 'cuda': torch.cuda.synchronize()
    key = 'self_cuda_time_total' if a.device == 'cuda' else 'self_cpu_time_total'
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events)
    rows = [{'op': e.key, 'self_ms': round(getattr(e, key) / 1e3, 1), 'share': round(getattr(e, key) / total, 3), 'calls': e.count}
            for e in events[:a.top]]
    print(f"{'op':<48} {'self_ms':>9} {'share':>6} {'calls':>6}")
    for r in rows: print(f"{r['op'][:48]:<48} {r['self_ms']:>9} {r['share']:>6} {r['calls']:>6}")
    res = {'size': a.size, 'precision': a.precision, 'device': a.device, 'threads': torch.get_num_threads(),
           'total_self_ms': round(total / 1e3, 1), 'top': rows}
    print(json.dumps(res))
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
