"""Birthmark removal, measured honestly: methods side by side on the same faces, several training seeds each.

Every method trains on the same synthetic dataset (the demo's: 300 + 300 faces at 256 px, 15% held out) and is
scored on three test sets it never trained on, against the clean faces:

  held_out_faces  the held-out PWS faces (the training stain model, new identities);
  unseen_stains   the same clean faces with stains of a model training never used (`06_unseen_stains`);
  photos          two real photographs (skimage's astronaut, matplotlib's Grace Hopper) with both kinds of stain.

Methods: `identity` (the input returned: 0% clearance, the untouched face), `removal` (the mask-guided remover,
the `demo` removal preset), `previous` (the demo's residual CycleGAN recipe before it, its `previous` preset) and
`reference` (the published CycleGAN recipe, ResNet generator + PatchGAN, LSGAN, at tiny widths: `reference`).

Per method and set: pooled clearance (1 - total ΔE to the clean face after / before, over all lesion pixels) with its
bootstrap 95% interval, the median, PSNR outside the lesion (whole image and face oval), the worst face, and the share
of the set's healthy faces (held-out clean faces; the photos' clean crops) visibly changed when they are put through
the method too (ΔE > 2.3 on the face; a remover should leave them alone); then the mean and standard deviation over
seeds. Every run folder is kept under OUT and resumed, so an interrupted
benchmark continues where it stopped.

    python benchmarks/removal_quality.py --out /tmp/rq --seeds 0,1,2                  # 24 min on 2 AMX Xeon cores
    python benchmarks/removal_quality.py --methods identity,removal --seeds 0 --n 60   # a quick look
"""
import argparse, json, statistics, time
from pathlib import Path

from cyclegan_pws.config import run_config
from cyclegan_pws.cyclegan import train_cyclegan
from cyclegan_pws.evaluate import SET_KEYS, evaluate_folder, evaluate_run, face_change
from cyclegan_pws.remover import train_remover
from cyclegan_pws.synth import write_synthetic_dataset
from cyclegan_pws.unseen_stains import write_photo_set, write_unseen_set

METHODS = {'removal': ('removal', 'demo', train_remover), 'previous': ('cyclegan', 'previous', train_cyclegan),
           'reference': ('cyclegan', 'reference', train_cyclegan)}
SHOWN = ('clearance_pct_pooled', 'clearance_pct_pooled_ci95', 'clearance_pct_median', 'psnr_outside_lesion_db_pooled',
         'psnr_outside_lesion_face_db_pooled', 'healthy_changed_pct')


def test_sets(out: Path, n: int, size: int) -> tuple[Path, dict]:
    "The training data and the three test sets (written once; the seed of the data is fixed, only training seeds vary)."
    data = out / 'data'
    write_synthetic_dataset(data, n, size=size, seed=0, test_frac=0.15, n_pairs=0, progress=False)
    write_unseen_set(data / 'testB_clean', out / 'unseen_stains', seed=0)
    write_photo_set(out / 'photos', size=size, seed=0)
    return data, {'held_out_faces': data, 'unseen_stains': out / 'unseen_stains', 'photos': out / 'photos'}


def identity_rows(sets: dict, out: Path) -> dict:
    "Scores of returning the input unchanged."
    rows = {}
    for name, folder in sets.items():
        m = evaluate_folder(folder / 'testB', folder / 'testB', folder / 'testB_clean', folder / 'testB_mask', out=out / name, fid=False)
        rows[name] = {k: m[k] for k in SET_KEYS if k in m}
        if (folder / 'testA').is_dir():   # measured, not assumed: the input against itself
            rows[name]['healthy_changed_pct'] = face_change(folder / 'testA', folder / 'testA')['face_changed_pct_pooled']
    return rows


def trained_rows(method: str, seed: int, data: Path, sets: dict, out: Path, steps, device: str) -> tuple[dict, float]:
    "Train `method` with `seed` (resuming a run already there) and score it on every set; (rows, training seconds)."
    kind, preset, train = METHODS[method]
    rc = run_config(preset, str(data), kind=kind, train={'seed': seed, 'steps': steps, 'device': device})
    t = time.time()
    result = train(rc, out / 'run', resume='auto', progress=False)
    train_s = time.time() - t
    log = out / 'run' / 'log.jsonl'
    if log.exists():  # the run's own clock, which a resumed run carries over (this call alone may only have evaluated)
        train_s = max(train_s, json.loads(log.read_text().splitlines()[-1]).get('time', 0.0))
    if result['status'] != 'done': raise SystemExit(f'{out}/run stopped at step {result["step"]}; run again to resume')
    extra = {k: v for k, v in sets.items() if k != 'held_out_faces'}
    m = evaluate_run(out / 'run', data, out / 'eval', fid=False, export=False, device=device, sets=extra)['metrics']
    rows = {'held_out_faces': {k: m[k] for k in (*SET_KEYS, 'healthy') if k in m}, **m['sets']}
    for r in rows.values():   # the set's healthy faces put through the method: how much of them it changed
        if h := r.pop('healthy', None): r['healthy_changed_pct'] = h['face_changed_pct_pooled']
    return rows, train_s


def summary(rows: list[dict]) -> list[dict]:
    "Mean and standard deviation over seeds of each method's numbers on each set."
    out = []
    for method in dict.fromkeys(r['method'] for r in rows):
        for s in dict.fromkeys(r['set'] for r in rows):
            rs = [r for r in rows if r['method'] == method and r['set'] == s]
            stat = lambda k: [r[k] for r in rs if r.get(k) is not None]
            row = {'method': method, 'set': s, 'seeds': len(rs)}
            for k in ('clearance_pct_pooled', 'clearance_pct_median', 'psnr_outside_lesion_db_pooled', 'psnr_outside_lesion_face_db_pooled',
                      'healthy_changed_pct'):
                v = stat(k)
                row[k] = round(statistics.mean(v), 1) if v else None
                row[k + '_sd'] = round(statistics.stdev(v), 1) if len(v) > 1 else None
            row['worst_clearance_pct'] = min((w['clearance_pct'] for r in rs for w in r.get('worst', []) if w['clearance_pct'] is not None), default=None)
            out.append(row)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='removal_quality')
    ap.add_argument('--methods', default='identity,removal,previous,reference')
    ap.add_argument('--seeds', default='0,1,2', help='training seeds, one run per method and seed')
    ap.add_argument('--n', type=int, default=300, help='faces per domain (the demo: 300)')
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--steps', type=int, default=None, help="training steps of every method (default: each preset's)")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    out = Path(a.out)
    data, sets = test_sets(out, a.n, a.size)
    rows = []
    for method in a.methods.split(','):
        if method == 'identity':
            runs = [(None, identity_rows(sets, out / 'identity'), 0.0)]
        else:
            if method not in METHODS: raise SystemExit(f'method {method!r} unknown; use identity or one of {", ".join(METHODS)}')
            runs = [(seed, *trained_rows(method, seed, data, sets, out / f'{method}_seed{seed}', a.steps, a.device))
                    for seed in map(int, a.seeds.split(','))]
        for seed, by_set, train_s in runs:
            for s, r in by_set.items():
                rows.append({'method': method, 'seed': seed, 'set': s, 'train_s': round(train_s, 1), **r})
                print(json.dumps({k: rows[-1][k] for k in ('method', 'seed', 'set', 'train_s', *SHOWN) if k in rows[-1]}), flush=True)
    table = summary(rows)
    cols = ['method', 'set', 'seeds', 'clearance_pct_pooled', 'clearance_pct_pooled_sd', 'clearance_pct_median',
            'psnr_outside_lesion_db_pooled', 'psnr_outside_lesion_face_db_pooled', 'worst_clearance_pct', 'healthy_changed_pct']
    print(' | '.join(cols))
    for r in table: print(' | '.join(str(r[c]) for c in cols))
    res = {'n': a.n, 'size': a.size, 'seeds': a.seeds, 'device': a.device, 'summary': table, 'rows': rows}
    if a.json: Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
