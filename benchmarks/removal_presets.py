"""The removal presets that GPU and TPU runs start from (`seed`, `paper`), trained within a time budget and scored on
the demo's three test sets: held-out faces, stains of the model training never used, photographs.

Issue 12 expects a GPU run of these presets to reach >= 95% pooled clearance. Their full lengths (8,000 and 20,000
steps of batch 32) are Kaggle-session budgets. Here each preset first times `--probe` steps, then trains as many
steps as fit in `--budget` seconds (at most its own; fewer when `--deadline` says everything must end sooner), its
schedule compressed to that length: the numbers say what a short run reaches, not the preset's ceiling. Presets train side by side, one process each (one GPU is shared; the
remover's networks are small and its data work runs on the host), on one synthetic dataset written once.

    python benchmarks/removal_presets.py --device cuda --presets seed,paper --budget 200 --json rp.json
    python benchmarks/removal_presets.py --device cuda --budget 600 --deadline 540   # on a lent GPU: done in 9 minutes
    python benchmarks/removal_presets.py --device cpu --presets demo --budget 30 --n 40 --probe 12   # the code path, on a CPU

Prints one row per preset and set (identity, the input returned, first), with the steps trained and their seconds;
each preset's folder keeps its run, its reports and its grid of worst cases.
"""
import argparse, json, os, subprocess, sys, time
from dataclasses import replace
from pathlib import Path

from cyclegan_pws.config import run_config
from cyclegan_pws.evaluate import SET_KEYS, evaluate_run
from cyclegan_pws.remover import run_library, train_remover

from removal_quality import identity_rows, test_sets   # the same data and test sets as the side-by-side benchmark

SHOWN = ('clearance_pct_pooled', 'clearance_pct_pooled_ci95', 'clearance_pct_median', 'psnr_outside_lesion_db_pooled',
         'psnr_outside_lesion_face_db_pooled')


def step_seconds(rc, library, out: Path, probe: int) -> float:
    "Seconds per training step of `rc`, timed over the later steps of a `probe`-step run."
    marks = {}
    probe_rc = replace(rc, train=replace(rc.train, steps=probe, log_every=probe, ckpt_every=probe))
    train_remover(probe_rc, out, progress=False, library=library, on_step=lambda step, task: marks.__setitem__(step, time.perf_counter()))
    first = probe // 3                                           # the first steps pick kernels and fill caches
    return (marks[probe] - marks[first]) / (probe - first)


EVAL_S = 90   # kept for scoring the three sets when training is cut to a deadline


def run_preset(preset: str, data: Path, sets: dict, out: Path, budget: float, device: str, probe: int, workers: int,
               end_at: float = float('inf')) -> list[dict]:
    "Train `preset` for what fits in `budget` seconds (and before `end_at`, less EVAL_S) and score it on every set; one row per set."
    rc = run_config(preset, str(data), kind='removal', train={'device': device, 'seed': 0, 'num_workers': workers})
    preset_steps, t = rc.train.steps, time.time()
    library = run_library(rc)
    library_s, t = time.time() - t, time.time()
    print(f'{preset}: stain library of {len(library[0])} stains in {library_s:.0f} s', flush=True)
    s_step = step_seconds(rc, library, out / 'probe', probe)
    probe_s, t = time.time() - t, time.time()
    budget = min(budget, end_at - time.time() - EVAL_S)
    steps = max(probe, min(preset_steps, int(budget / s_step) // 50 * 50))
    print(f'{preset}: {s_step:.3f} s/step (batch {rc.train.batch_size}) -> {steps} steps', flush=True)
    rc = replace(rc, train=replace(rc.train, steps=steps))
    result = train_remover(rc, out / 'run', progress=False, library=library)
    train_s = time.time() - t
    if result['status'] != 'done': raise SystemExit(f'{out}/run stopped at step {result["step"]}')
    extra = {k: v for k, v in sets.items() if k != 'held_out_faces'}
    m = evaluate_run(out / 'run', data, out / 'eval', fid=False, export=False, device=device, sets=extra)['metrics']
    common = {'preset': preset, 'steps': steps, 'preset_steps': preset_steps,
              'batch': rc.train.batch_size, 's_per_step': round(s_step, 4), 'library_s': round(library_s, 1),
              'probe_s': round(probe_s, 1), 'train_s': round(train_s, 1), 'eval_s': round(time.time() - t - train_s, 1)}
    by_set = {'held_out_faces': {k: m[k] for k in SET_KEYS if k in m}, **m['sets']}
    return [{**common, 'set': s, **r} for s, r in by_set.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='removal_presets')
    ap.add_argument('--presets', default='seed,paper')
    ap.add_argument('--budget', type=float, default=200, help='training seconds per preset, after a timing probe')
    ap.add_argument('--deadline', type=float, default=None,
                    help=f'seconds from the start by which everything ends: training is cut to fit, {EVAL_S} s kept for scoring')
    ap.add_argument('--probe', type=int, default=40, help='steps timed first')
    ap.add_argument('--n', type=int, default=600, help='faces per domain')
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--workers', type=int, default=2, help='data-loading processes per preset')
    ap.add_argument('--json', default=None)
    ap.add_argument('--one', default=None, help=argparse.SUPPRESS)   # internal: this process trains one preset
    ap.add_argument('--end-at', type=float, default=float('inf'), help=argparse.SUPPRESS)   # internal: the deadline, as a time.time()
    a = ap.parse_args()
    out = Path(a.out)
    if a.device == 'cuda' and not _gpu_name(a.device): raise SystemExit('--device cuda: no CUDA GPU is visible here')
    if a.one:                                                       # a child: the data and sets are written already
        sets = {k: Path(v) for k, v in json.loads((out / 'sets.json').read_text()).items()}
        rows = run_preset(a.one, sets['held_out_faces'], sets, out / a.one, a.budget, a.device, a.probe, a.workers, a.end_at)
        (out / a.one / 'rows.json').write_text(json.dumps(rows, indent=2))
        for r in rows: print(json.dumps({k: r.get(k) for k in ('preset', 'set', 'steps', 's_per_step', 'train_s', *SHOWN)}))
        return
    t = time.time()
    end_at = [] if a.deadline is None else ['--end-at', str(t + a.deadline)]
    data, sets = test_sets(out, a.n, a.size)
    print(f'data and test sets in {time.time() - t:.0f} s', flush=True)
    (out / 'sets.json').write_text(json.dumps({k: str(v) for k, v in sets.items()}))
    rows = [{'preset': 'identity', 'set': s, **r} for s, r in identity_rows(sets, out / 'identity').items()]
    presets = a.presets.split(',')
    threads = str(max(1, (os.cpu_count() or 2) // len(presets) - a.workers))
    env = {**os.environ, 'OMP_NUM_THREADS': threads}
    children = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], '--one', p, *end_at], env=env) for p in presets]
    failed = [p for p, c in zip(presets, children) if c.wait() != 0]
    for p in presets:
        if p not in failed: rows += json.loads((out / p / 'rows.json').read_text())
    cols = ['preset', 'set', 'steps', 'train_s', *SHOWN, 'worst']
    cell = lambda x: f'{x:.1f}' if isinstance(x, float) else '-'.join(f'{v:.1f}' for v in x) if isinstance(x, list) else str(x)
    print(' | '.join(cols))
    for r in rows:
        worst = min((w['clearance_pct'] for w in r.get('worst', []) if w['clearance_pct'] is not None), default=None)
        print(' | '.join(cell(x) for x in [r['preset'], r['set'], r.get('steps'), r.get('train_s'), *(r.get(k) for k in SHOWN), worst]))
    res = {'device': a.device, 'gpu': _gpu_name(a.device), 'n': a.n, 'size': a.size, 'budget_s': a.budget, 'failed': failed, 'rows': rows}
    if a.json: Path(a.json).write_text(json.dumps(res, indent=2))
    if failed: raise SystemExit(f'presets that failed: {", ".join(failed)} (their output is above)')


def _gpu_name(device: str):
    if device != 'cuda': return None
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


if __name__ == '__main__':
    main()
