"""How much the demo's removal numbers depend on the draw of test faces: one trained network, fresh draws.

The README's headline is one draw of 45 held-out faces, 45 stains of the unseen model and 40 photo stains, and a
pooled clearance is moved a lot by its few largest stains. This benchmark writes more draws with the demo's settings
(`write_synthetic_dataset` with another seed, its own unseen-model stains and photo stains, as `cyclegan-pws demo`
writes its own; and stains of a third model, `paint_stain`, a wine colour painted over the skin, on the same
held-out faces and on the photographs) and scores the same network on each, with the code behind
`cyclegan-pws translate` and `evaluate`. It prints every draw, then per set the mean, lowest and highest pooled
clearance over the draws and how many draws meet the removal issue's targets (85% on held-out faces and on the
unseen model, 70% on photographs, 35 dB outside the lesion; the painted stains are held to the same). Seed 0 is the
demo's own draw. Only the test faces are scored; the draws' training faces are written (the same call makes both)
and never used.

    python benchmarks/draws.py --run demo/run --seeds 0 11 12 13 14 15 16 --out /tmp/draws --json draws.json

A draw already written under `--out` is reused, so a stopped run continues where it was.
"""
import argparse, json, statistics, time
from pathlib import Path

from cyclegan_pws.config import DemoConfig
from cyclegan_pws.evaluate import evaluate_folder
from cyclegan_pws.io import UserError, atomic_write_json
from cyclegan_pws.predict import translate_folder
from cyclegan_pws.synth import write_synthetic_dataset
from cyclegan_pws.unseen_stains import paint_stain, write_photo_set, write_unseen_set

TARGETS = {'held_out_faces': 85.0, 'unseen_stains': 85.0, 'photos': 70.0,    # pooled clearance, %
           'painted_stains': 85.0, 'painted_photos': 70.0}
PSNR_TARGET = 35.0                                                          # dB outside the lesion, pooled


def write_draw(root: Path, seed: int) -> dict:
    "The test sets of one draw under `root` (written once: a finished draw leaves `root/done.json`); photos where they could be made."
    sets = {'held_out_faces': root / 'data', 'unseen_stains': root / 'unseen_stains', 'photos': root / 'photos',
            'painted_stains': root / 'painted_stains', 'painted_photos': root / 'painted_photos'}
    c = DemoConfig()
    if not (root / 'done.json').exists():
        write_synthetic_dataset(sets['held_out_faces'], c.n, size=c.size, seed=seed, test_frac=c.test_frac, n_pairs=0)
        write_unseen_set(sets['held_out_faces'] / 'testB_clean', sets['unseen_stains'], seed=seed)
        try: write_photo_set(sets['photos'], size=c.size, seed=seed)
        except UserError as e: print(f'draw {seed}: no photo set ({e})')   # as the demo: photos need the faces extra
        atomic_write_json(root / 'done.json', {'seed': seed})
    # the painted stains came later: written beside a draw made before them (each file once)
    write_unseen_set(sets['held_out_faces'] / 'testB_clean', sets['painted_stains'], seed=seed, draw=paint_stain)
    if (sets['photos'] / 'testB').is_dir(): write_photo_set(sets['painted_photos'], size=c.size, n=20, seed=seed, models=('painted',))
    return {name: folder for name, folder in sets.items() if (folder / 'testB').is_dir()}


def headline(m: dict) -> dict:
    "Pooled clearance (95% CI), median, PSNR outside the lesion and the worst faces, from `evaluate_folder`'s summary `m`."
    return {'images': m['n_images'], 'clearance_pct_pooled': round(m['clearance_pct_pooled'], 1),
            'clearance_pct_pooled_ci95': [round(v, 1) for v in m['clearance_pct_pooled_ci95']],
            'clearance_pct_median': round(m['clearance_pct_median'], 1),
            'psnr_outside_lesion_db_pooled': round(m['psnr_outside_lesion_db_pooled'], 1), 'worst': m.get('worst', [])[:3]}


def score(run: Path, folder: Path, out: Path) -> dict:
    "`headline` of `run` on one test set (testB/, testB_clean/, testB_mask/), translated into out/pred."
    translate_folder(run, folder / 'testB', out / 'pred', 'B2A')
    return headline(evaluate_folder(out / 'pred', folder / 'testB', folder / 'testB_clean', folder / 'testB_mask', out=out / 'report', fid=False))


def summary(draws: dict) -> dict:
    "Per set: mean, lowest and highest pooled clearance over the draws, and the draws that meet the targets."
    out = {}
    for name, target in TARGETS.items():
        rows = [d[name] for d in draws.values() if name in d]
        c = [r['clearance_pct_pooled'] for r in rows]
        if not c: continue
        out[name] = {'draws': len(c), 'mean': round(statistics.mean(c), 1), 'lowest': min(c), 'highest': max(c),
                     'meet_target': sum(r['clearance_pct_pooled'] >= target and r['psnr_outside_lesion_db_pooled'] >= PSNR_TARGET
                                        for r in rows), 'target': target}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', required=True, help='a removal run folder (e.g. demo/run)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[11, 12, 13, 14, 15, 16], help='one draw per seed (the demo draws seed 0)')
    ap.add_argument('--out', default='draws')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    run, out, draws = Path(a.run), Path(a.out), {}
    for seed in a.seeds:
        t0 = time.time()
        sets = write_draw(out / f'draw_{seed}', seed)
        draws[seed] = {name: score(run, folder, out / f'draw_{seed}' / 'scored' / name) for name, folder in sets.items()}
        print(f'draw {seed} ({time.time() - t0:.0f} s): ' + '; '.join(
            f"{name} {r['clearance_pct_pooled']}% ({r['clearance_pct_pooled_ci95'][0]}-{r['clearance_pct_pooled_ci95'][1]}), "
            f"median {r['clearance_pct_median']}%, {r['psnr_outside_lesion_db_pooled']} dB" for name, r in draws[seed].items()), flush=True)
    res = {'run': str(run), 'draws': {str(k): v for k, v in draws.items()}, 'summary': summary(draws)}
    for name, s in res['summary'].items():
        print(f"{name}: mean {s['mean']}%, lowest {s['lowest']}%, highest {s['highest']}%; "
              f"{s['meet_target']} of {s['draws']} draws meet {s['target']:.0f}% and {PSNR_TARGET:.0f} dB")
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
