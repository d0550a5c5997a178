"""How the demo's birthmark removal improves with training length: the `cyclegan-pws demo` recipe (synthetic
faces, tiny residual CycleGAN, adaptive DiffAugment) trained for several step counts on one device, each scored
on the same held-out faces against their clean ground truth. Prints a table and JSON.

    python benchmarks/demo_scale.py --device cuda --steps 1200,6000          # a GPU makes long runs cheap
    python benchmarks/demo_scale.py --device cpu --steps 300 --n 40          # a quick look on a CPU

Columns: clearance (% of the lesion's redness removed, mean and median over faces), PSNR and SSIM outside the
lesion (what must stay untouched), train_s (wall time of training), s_per_step.
"""
import argparse, json, time
from dataclasses import replace
from pathlib import Path

from cyclegan_pws.cyclegan import train_cyclegan
from cyclegan_pws.demo import demo_config
from cyclegan_pws.evaluate import evaluate_folder, translate_folder
from cyclegan_pws.synth import write_synthetic_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='demo_scale')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--steps', default='1200', help='comma-separated step counts, one run each')
    ap.add_argument('--n', type=int, default=300, help='faces per domain (the demo: 300)')
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--precision', default='fp32')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    out = Path(a.out); data = out / 'data'
    write_synthetic_dataset(data, a.n, size=a.size, seed=0, test_frac=0.15, n_pairs=0, progress=False)
    rows = []
    for steps in map(int, a.steps.split(',')):
        rc = demo_config(data, a.size, steps, a.batch)
        rc = replace(rc, train=replace(rc.train, device=a.device, precision=a.precision, log_every=100, ckpt_every=1000))
        run = out / f'run_{steps}'
        t = time.time(); res = train_cyclegan(rc, run, resume='auto', progress=False); train_s = time.time() - t
        if res['status'] != 'done':  # stopped by a signal or time budget: a half-trained model is not this row
            print(f"steps {steps}: training {res['status']} at step {res['step']}; not scored (run again to resume)", flush=True)
            break
        translate_folder(run, data / 'testB', out / f'pred_{steps}', 'B2A', device=a.device)
        m = evaluate_folder(out / f'pred_{steps}', data / 'testB', data / 'testB_clean', data / 'testB_mask', out=out / f'report_{steps}', fid=False)
        rows.append({'steps': steps, 'clearance_mean': round(m['clearance_pct_mean'], 1), 'clearance_median': round(m['clearance_pct_median'], 1),
                     'psnr_outside_db': round(m['psnr_outside_lesion_db_mean'], 2), 'ssim_outside': round(m['ssim_outside_lesion_mean'], 3),
                     'train_s': round(train_s, 1), 's_per_step': round(train_s / steps, 4)})
        print(json.dumps(rows[-1]), flush=True)
    if not rows: return
    cols = list(rows[0])
    print(' | '.join(f'{c:>16}' for c in cols))
    for r in rows: print(' | '.join(f'{str(r[c]):>16}' for c in cols))
    res = {'device': a.device, 'n': a.n, 'size': a.size, 'batch': a.batch, 'precision': a.precision, 'rows': rows}
    print(json.dumps(res))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
