"""Where a CycleGAN training iteration spends its time: torch.profiler's table of the costliest ops (self time) for
one `paper`-preset step on this CPU or GPU, after warm-up steps. Prints the table and writes JSON.

    python benchmarks/profile_step.py --size 256 --precision bf16 --threads 2
    python benchmarks/profile_step.py --size 128 --shapes --top 40     # one row per op and input shapes (which layer)
"""
import argparse, json

import torch
from torch.profiler import ProfilerActivity, profile

from cyclegan_pws.engine import keep_freed_memory
from train_step import batches, make  # the same network and batch as the step benchmark


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--precision', default='bf16')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--top', type=int, default=25)
    ap.add_argument('--shapes', action='store_true', help='group by input shapes too (tells the layers apart)')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    if a.device == 'cpu': keep_freed_memory()  # as `start_run` does on CPU
    task, run = make(a.size, a.precision, a.device)  # fp32, bf16 and fp16 are also the benchmark's variant names
    batch = {k: v.to(a.device) for k, v in batches(a.size, 1)[0].items()}
    for _ in range(a.warmup): task.step(batch, run); run.end_step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == 'cuda' else [])
    with profile(activities=acts, record_shapes=a.shapes) as prof:
        task.step(batch, run); run.end_step()
        if a.device == 'cuda': torch.cuda.synchronize()
    key = 'self_cuda_time_total' if a.device == 'cuda' else 'self_cpu_time_total'
    events = sorted(prof.key_averages(group_by_input_shape=a.shapes), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events)
    rows = [{'op': e.key + (f' {e.input_shapes}' if a.shapes else ''), 'self_ms': round(getattr(e, key) / 1e3, 1), 'share': round(getattr(e, key) / total, 3), 'calls': e.count}
            for e in events[:a.top]]
    w = 110 if a.shapes else 48
    print(f"{'op':<{w}} {'self_ms':>9} {'share':>6} {'calls':>6}")
    for r in rows: print(f"{r['op'][:w]:<{w}} {r['self_ms']:>9} {r['share']:>6} {r['calls']:>6}")
    res = {'size': a.size, 'precision': a.precision, 'device': a.device, 'threads': torch.get_num_threads(),
           'total_self_ms': round(total / 1e3, 1), 'top': rows}
    print(json.dumps(res))
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
