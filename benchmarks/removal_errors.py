"""Where the remover's lost clearance comes from: each factor of its colour model swapped for the truth, one at a time.

The remover takes away, in each connected part of its region, a layer `density × (direction + k·grey)` in
log-linear RGB (`mirror.stain_layer`): the stain's chroma `direction` and darkening `k` are fitted per part, the
`density` per pixel, all against the other side of the face. On a test set with clean faces every factor can be
read off exactly (the stained face minus its clean face, in log-linear RGB), so replacing one estimate with its
true value shows what that estimate costs (one row replaces the light's left/right difference, which `k` is
measured net of, with the clean face's own). Each row is scored twice: with the region the trained network
predicts, and with the true lesion mask as the region.

    python benchmarks/removal_errors.py --run demo/run --sets demo/photos demo/unseen_stains demo/data

`demo/data` is read from its `testB`, `testB_clean` and `testB_mask` folders, as the other sets are. The first
row is checked against the shipped `mirror.remove_stain` (same pixels), so the decomposition explains the
remover that ships, not a re-implementation of it. Also printed: the fitted `k` against the true one per set
(mean signed error; the remover fits `k` too weak when it is negative).
"""
import argparse, json, time
from pathlib import Path

import numpy as np
import torch

from cyclegan_pws.data import read_image, to_tensor
from cyclegan_pws.evaluate import face_region, read_mask
from cyclegan_pws.metrics import bootstrap_clearance, pooled_clearance, removal_sums
from cyclegan_pws.mirror import (STAIN_LIKE, StainColour, _sides, blur, chroma, face_oval, fit_stain_colour, luma, masked_blur,
                                 mirror, part_density, region_parts, remove_stain, stain_likeness, subtract_layer, to_log)
from cyclegan_pws.predict import load_predictor

ROWS = {  # name: (true direction, true k, true density, the light measured on the clean face)
    'as shipped': (False, False, False, False),
    'light from the clean face': (False, False, False, True),
    'true k': (False, True, False, False),
    'true direction': (True, False, False, False),
    'true colour (direction and k)': (True, True, False, False),
    'true density': (False, False, True, False),
    'true colour and density': (True, True, True, False),
}


def true_k(t: torch.Tensor, part: torch.Tensor, colour: StainColour) -> float:
    "The darkening per unit of density along `colour`'s direction that the true layer `t` shows in `part`."
    d = (colour.unit * chroma(t)).sum(1, keepdim=True)
    return min(0.0, float((luma(t) * d * part).sum() / (d * d * part).sum().clamp_min(1e-6)))


def clean_light(clean: torch.Tensor, lm: dict) -> torch.Tensor:
    "The light's left/right luminance difference (1,1,H,W) on the clean face, smoothed as `fit_stain_colour` smooths its estimate."
    H, W = clean.shape[-2:]
    zc = to_log(clean)
    diff = luma(zc) - luma(blur(mirror(zc, lm), 2 * H / 256))
    return masked_blur(diff, face_oval(lm, H, W).to(clean), 0.06 * H)


def layer(x, clean, alpha, lm, true_dir: bool, true_k_: bool, true_density: bool, light: bool) -> tuple[torch.Tensor, list]:
    "`mirror.stain_layer` at the image's own resolution, with the chosen factors read off the clean face; and (fitted k, true k) per part."
    t = to_log(x) - to_log(clean)
    labels, n = region_parts(alpha)
    whole = (alpha > 0.5).to(x)
    parts = []
    for i in range(1, n + 1):
        part = (labels == i).to(x)
        if part.sum() == 0: continue
        colour = fit_stain_colour(x, part, lm, whole=whole, shading=clean_light(clean, lm) if light else None)
        if stain_likeness(colour) >= STAIN_LIKE: parts.append((i, colour, part))
    measured = [(c.k / float(c.direction.norm()), float(p.sum())) for _, c, p in parts if c.measured]   # darkening per unit of chroma
    z, zm, am, skin = _sides(x, alpha, lm)
    cz, czm = chroma(z), chroma(zm)
    out, ks = torch.zeros_like(x), []
    for i, colour, part in parts:
        if not colour.measured and measured: colour.k = float(colour.direction.norm()) * sum(k * s for k, s in measured) / sum(s for _, s in measured)
        ks.append((colour.k, true_k(t, part, colour), float(part.sum())))
        if true_dir:
            direction = (chroma(t) * part).sum((2, 3), keepdim=True) / part.sum()
            new = StainColour(direction, 0.0, colour.reference, colour.measured)
            # the fitted darkening, per unit of density along the new direction: the same luminance for the same stain
            new.k = colour.k / max(float((new.unit * colour.direction).sum()), 1e-3)
            colour = new
        if true_k_: colour.k = true_k(t, part, colour)
        a = alpha * (labels == i).to(x)
        d = (colour.unit * chroma(t)).sum(1, keepdim=True).clamp_min(0) if true_density else part_density(cz, czm, am, colour, a, skin)
        out = out + a * d * colour.change
    return out, ks


def score_set(folder: Path, remover, check: bool = True) -> dict:
    "Pooled clearance (predicted region, true region) per row of `ROWS`, and the fitted k's mean signed error, on one test set."
    sums = {(row, reg): {} for row in ROWS for reg in ('predicted', 'true')}
    k_err, checked = [], False
    for p in sorted((folder / 'testB').glob('*.png')):
        u8 = to_tensor(read_image(p)); x = u8[None].float() / 255
        clean = to_tensor(read_image(folder / 'testB_clean' / p.name))[None].float() / 255
        lesion = read_mask(folder / 'testB_mask' / p.name, (x.shape[-1], x.shape[-2]))
        lm = json.loads(p.with_suffix('.json').read_text())['landmarks']
        if x.shape[-2] > 256: raise SystemExit(f'{p}: {x.shape[-2]} px high; the remover measures colour at up to 256 px and so does '
                                               'this decomposition, at the image\'s own size: give a set of faces 256 px high or less')
        face = face_region(p, *x.shape[-2:])
        regions = {'predicted': remover.region(u8, lm), 'true': lesion.float()}
        for reg, alpha in regions.items():
            for row, flags in ROWS.items():
                lay, ks = layer(x, clean, alpha, lm, *flags)
                y = subtract_layer(x, lay)
                if check and not checked and row == 'as shipped' and reg == 'predicted':
                    shipped = remove_stain(x, alpha, lm)
                    if not torch.allclose(y, shipped, atol=1e-5):
                        raise SystemExit(f'{p}: the decomposition does not reproduce mirror.remove_stain; update this benchmark')
                    checked = True
                if row == 'as shipped' and reg == 'true': k_err += ks
                y = torch.round(y * 255) / 255                        # scored as the PNG that `translate` writes
                for k, v in removal_sums(y, x, clean, lesion, face).items(): sums[(row, reg)].setdefault(k, []).append(float(v[0]))
    out = {}
    for (row, reg), s in sums.items():
        lo, hi = bootstrap_clearance(s['de_after'], s['de_before'])
        out.setdefault(row, {})[reg] = {'clearance_pct_pooled': round(pooled_clearance(s['de_after'], s['de_before']), 1),
                                        'ci95': [round(lo, 1), round(hi, 1)]}
    e = np.array([[f, t, w] for f, t, w in k_err]) if k_err else np.zeros((0, 3))
    out['k'] = {'parts': len(e), 'fitted_mean': round(float(e[:, 0].mean()), 3) if len(e) else None,
                'true_mean': round(float(e[:, 1].mean()), 3) if len(e) else None,
                'mean_signed_error': round(float((e[:, 0] - e[:, 1]).mean()), 3) if len(e) else None,
                'mean_abs_error': round(float(np.abs(e[:, 0] - e[:, 1]).mean()), 3) if len(e) else None}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', required=True, help='a removal run folder (e.g. demo/run)')
    ap.add_argument('--sets', nargs='+', required=True, help='test sets with testB/, testB_clean/, testB_mask/ and landmarks')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    remover = load_predictor(a.run, 'removal')
    results, t0 = {}, time.time()
    for s in map(Path, a.sets):
        if not (s / 'testB_clean').is_dir(): raise SystemExit(f'{s}: no testB_clean/ beside testB/; give a set with clean faces (e.g. demo/photos)')
        results[s.name] = score_set(s, remover)
    print(f'pooled clearance, % (predicted region / true lesion as region); {time.time() - t0:.0f} s')
    names = list(results)
    print(f'| factor taken from the truth | ' + ' | '.join(names) + ' |')
    print('|---|' + '---|' * len(names))
    for row in ROWS:
        cells = [f"{results[n][row]['predicted']['clearance_pct_pooled']:.1f} / {results[n][row]['true']['clearance_pct_pooled']:.1f}" for n in names]
        print(f'| {row} | ' + ' | '.join(cells) + ' |')
    for n in names: print(f"{n}: fitted k {results[n]['k']}")
    if a.json: Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
