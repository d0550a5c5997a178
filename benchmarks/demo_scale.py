"""How the demo's birthmark removal improves with training length: `run_demo` (synthetic faces, tiny residual
CycleGAN, adaptive DiffAugment) trained for several step counts on one device, each scored on the same held-out
faces against their clean ground truth. Prints a table and JSON.

    python benchmarks/demo_scale.py --device cuda --steps 1200,6000,12000    # a GPU makes long runs cheap
    python benchmarks/demo_scale.py --device cpu --steps 300 --n 40          # a quick look on a CPU

Columns: clearance (% of the lesion's redness removed, mean and median over faces), PSNR and SSIM outside the
lesion (what must stay untouched), train_s (wall time of training), s_per_step. Each step count is its own run
folder (`OUT/steps_N`), so an interrupted sweep resumes; a run that stops early is an error, never a row.
"""
import argparse, json
from pathlib import Path

from cyclegan_pws.demo import run_demo


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='demo_scale')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--steps', default='1200', help='comma-separated step counts, one run each')
    ap.add_argument('--n', type=int, default=300, help='faces per domain (the demo: 300)')
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    rows = []
    for steps in map(int, a.steps.split(',')):
        s = run_demo(Path(a.out) / f'steps_{steps}', n=a.n, size=a.size, steps=steps, batch_size=a.batch, progress=False,
                     log=lambda *_: None, device=a.device)
        h, train_s = s['headline'], s['times']['train_s']
        rows.append({'steps': steps, 'clearance_mean': round(h['clearance_pct_mean'], 1), 'clearance_median': round(h['clearance_pct_median'], 1),
                     'psnr_outside_db': round(h['psnr_outside_lesion_db_mean'], 2), 'ssim_outside': round(h['ssim_outside_lesion_mean'], 3),
                     'train_s': train_s, 's_per_step': round(train_s / steps, 4)})
        print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print(' | '.join(f'{c:>16}' for c in cols))
    for r in rows: print(' | '.join(f'{str(r[c]):>16}' for c in cols))
    res = {'device': a.device, 'n': a.n, 'size': a.size, 'batch': a.batch, 'rows': rows}
    print(json.dumps(res))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
