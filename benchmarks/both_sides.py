"""Removal of stains on both sides of the face: the remover's weak point, measured.

A port-wine stain is usually on one side of the face, and the remover measures a stain's colour against the
other side. Where both sides are stained it has no clean mirror to measure the stain's darkening on and falls
back on the skin around and on a typical stain's darkening. This benchmark makes such stains from a test set of
the demo's (`demo/data`, `demo/unseen_stains`): each test stain is added again as its own mirror image, on the
same clean face, so every stain lies on both sides. It scores them as `draws.py` scores a draw: `translate_folder`
(the code behind `cyclegan-pws translate`), then `evaluate_folder` against the clean faces. It scores the colour model
once more with the true lesion (the stain and its mirror) as the region, which splits what is lost between the
network that finds the stain and the colour model that takes it away.

    python benchmarks/both_sides.py --run demo/run --sets demo/data demo/unseen_stains --out /tmp/both_sides
"""
import argparse, json, shutil, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cyclegan_pws.data import read_image, to_tensor
from cyclegan_pws.evaluate import face_region, read_mask
from cyclegan_pws.metrics import bootstrap_clearance, pooled_clearance, removal_sums
from cyclegan_pws.mirror import from_log, mirror, remove_stain, to_log

from draws import score   # translate and evaluate one test set, as the draws are scored


def both_sides(stained: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, lm: dict) -> tuple[torch.Tensor, torch.Tensor]:
    "(the face with its stain layer added again as its mirror image, the union of the mask and its mirror), all (1,C,H,W)."
    layer = to_log(stained) - to_log(clean)
    mirrored = mirror(mask, lm)
    return from_log(to_log(clean) + layer + mirror(layer, lm) * (mirrored > 0.5)), torch.maximum(mask, mirrored)


def write_set(src: Path, out: Path) -> int:
    "The both-sides version of test set `src` (testB/, testB_clean/, testB_mask/) in `out`; returns the count."
    for d in ('testB', 'testB_clean', 'testB_mask'): (out / d).mkdir(parents=True, exist_ok=True)
    u8 = lambda t: Image.fromarray((t[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
    files = sorted((src / 'testB').glob('*.png'))
    for p in files:
        x = to_tensor(read_image(p))[None].float() / 255
        clean = to_tensor(read_image(src / 'testB_clean' / p.name))[None].float() / 255
        mask = read_mask(src / 'testB_mask' / p.name, (x.shape[-1], x.shape[-2])).float()
        lm = json.loads(p.with_suffix('.json').read_text())['landmarks']
        stained, union = both_sides(x, clean, mask, lm)
        u8(stained).save(out / 'testB' / p.name)
        shutil.copy(p.with_suffix('.json'), out / 'testB' / p.with_suffix('.json').name)
        shutil.copy(src / 'testB_clean' / p.name, out / 'testB_clean' / p.name)
        Image.fromarray(((union[0, 0] > 0.5).numpy() * 255).astype(np.uint8)).save(out / 'testB_mask' / p.name)
    return len(files)


def with_true_region(folder: Path) -> dict:
    "Pooled clearance (95% CI) of the colour model alone on a written set: `remove_stain` with the true lesion as the region."
    before, after = [], []
    for p in sorted((folder / 'testB').glob('*.png')):
        x = to_tensor(read_image(p))[None].float() / 255
        clean = to_tensor(read_image(folder / 'testB_clean' / p.name))[None].float() / 255
        lesion = read_mask(folder / 'testB_mask' / p.name, (x.shape[-1], x.shape[-2]))
        y = torch.round(remove_stain(x, (lesion > 0.5).float(), json.loads(p.with_suffix('.json').read_text())['landmarks']) * 255) / 255
        r = removal_sums(y, x, clean, lesion, face_region(p, *x.shape[-2:]))
        after.append(float(r['de_after'][0])); before.append(float(r['de_before'][0]))
    return {'clearance_pct_pooled': round(pooled_clearance(after, before), 1),
            'clearance_pct_pooled_ci95': [round(v, 1) for v in bootstrap_clearance(after, before)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', required=True, help='a removal run folder (e.g. demo/run)')
    ap.add_argument('--sets', nargs='+', required=True, help='test sets with testB/, testB_clean/, testB_mask/ (e.g. demo/data)')
    ap.add_argument('--out', default='both_sides')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    res = {}
    for s in map(Path, a.sets):
        out = Path(a.out) / s.name
        n = write_set(s, out)
        t0 = time.time()
        r = score(Path(a.run), out, out)
        res[s.name] = r | {'images': n, 'seconds': round(time.time() - t0, 1), 'true_region': with_true_region(out)}
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
