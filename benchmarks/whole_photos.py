"""Removal on whole photographs, as a user hands them to `translate`: not face crops, any size and framing.

The demo's photo set is made of `prepare` crops. A user's folder usually holds whole pictures: a portrait with a
background, a large camera image, a face off centre. This benchmark draws stains (`--stains` of `05_synth`'s model
and as many of `06_unseen_stains`'s per photo) on the two photographs the dependencies ship, and shows each stained
photo four ways: as shipped (512 x 512 and 600 x 512), upscaled to twice that, cut off centre (the astronaut,
360 x 512), and as the face crop `prepare` makes of it (256 px, with its landmarks beside it). Every framing carries
the same stains, so the columns differ only in the framing. It runs `translate_folder` (the code behind
`cyclegan-pws translate`; the whole photos' landmarks are found by MTCNN on the stained photo, as for any photo
without a JSON) and scores each framing against its clean photos with `evaluate_folder`: pooled clearance inside
the drawn lesion and PSNR outside it, over all photos and per photograph (pooled clearance weighs every stain by its
pixels, and Grace Hopper's face fills more of her photograph than the astronaut's does, so the whole photographs'
pooled number leans towards her face and the crops' does not).

    python benchmarks/whole_photos.py --run demo/run --out /tmp/whole_photos --json whole_photos.json
"""
import argparse, json, time, warnings
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan_pws.evaluate import evaluate_folder, read_mask
from cyclegan_pws.faces import align_matrix, detect_faces, transform_points, warp_crop
from cyclegan_pws.io import atomic_write_json, read_image
from cyclegan_pws.metrics import image_tensor, pooled_clearance, removal_sums
from cyclegan_pws.predict import translate_folder
from cyclegan_pws.synth import synthesize_pws
from cyclegan_pws.unseen_stains import _sample_photos, draw_stain

from draws import headline   # the same summary of a scored set as the draws'

FRAMINGS = ('shipped', 'big', 'wide', 'crop')


def framed(img: np.ndarray, framing: str, M: np.ndarray) -> np.ndarray:
    "An image (photo, clean photo or mask, uint8 HxWx3) in one framing; `M` is the `prepare` crop's matrix."
    if framing == 'big': return np.asarray(Image.fromarray(img).resize((2 * img.shape[1], 2 * img.shape[0]), Image.BICUBIC))
    if framing == 'wide': return np.ascontiguousarray(img[40:400])
    if framing == 'crop': return np.asarray(warp_crop(img, M, 256))
    return img


def write_set(out: Path, stains: int = 10, seed: int = 42) -> int:
    "Stained photos in out/<framing>/in, their clean versions in clean/, lesion masks in mask/; returns how many stains."
    if (out / 'done.json').exists(): return json.loads((out / 'done.json').read_text())['stains']   # written before: reused
    n = 0
    for name, photo in _sample_photos():
        faces = detect_faces(photo)
        if not faces: raise SystemExit(f'{name}: MTCNN finds no face in the clean photo; check the faces extra (pip install -e ".[faces]")')
        lm = faces[0].landmarks                              # the stain is placed with the clean photo's landmarks
        M = align_matrix(lm, 256)
        for model in ('synth', 'unseen'):
            for k in range(stains):
                rng = np.random.default_rng([seed, k, model == 'synth', name == 'astronaut'])
                stained, mask = synthesize_pws(photo, lm, rng)[:2] if model == 'synth' else draw_stain(photo, lm, rng)
                mask3 = np.repeat(((np.asarray(mask) > 0.5) * 255).astype(np.uint8)[..., None], 3, 2)
                stem = f'{name}_{model}_{k:02d}'
                for framing in FRAMINGS:
                    if framing == 'wide' and name != 'astronaut': continue
                    d = out / framing
                    for sub, img in (('in', stained), ('clean', photo), ('mask', mask3)):
                        (d / sub).mkdir(parents=True, exist_ok=True)
                        Image.fromarray(framed(img, framing, M)).save(d / sub / f'{stem}.png')
                    if framing == 'crop':                    # a `prepare` crop keeps its landmarks beside it
                        atomic_write_json(d / 'in' / f'{stem}.json', {'landmarks': {q: [round(v, 2) for v in p] for q, p in transform_points(M, lm).items()},
                                                                     'size': [256, 256]})
                n += 1
    atomic_write_json(out / 'done.json', {'stains': n})
    return n


def pooled_by_photo(d: Path) -> dict:
    "Pooled clearance of each photograph's stains in framing folder `d` (in/, clean/, mask/, pred/), scored apart."
    names, before, after = [n for n, _ in _sample_photos()], {}, {}
    for f in sorted((d / 'in').glob('*.png')):
        name = next((n for n in names if f.stem.startswith(f'{n}_')), None)
        if name is None: continue
        stained = read_image(f)
        x, y, clean = image_tensor(stained), image_tensor(read_image(d / 'pred' / f.name)), image_tensor(read_image(d / 'clean' / f.name))
        s = removal_sums(y, x, clean, read_mask(d / 'mask' / f.name, stained.size))
        before.setdefault(name, []).append(float(s['de_before'][0])); after.setdefault(name, []).append(float(s['de_after'][0]))
    return {name: round(pooled_clearance(after[name], before[name]), 1) for name in before}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', required=True, help='a removal run folder (e.g. demo/run)')
    ap.add_argument('--out', default='whole_photos')
    ap.add_argument('--stains', type=int, default=10, help='stains of each model per photograph')
    ap.add_argument('--seed', type=int, default=42, help='draw of stains')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    out = Path(a.out)
    res = {'stains': write_set(out, a.stains, a.seed), 'seed': a.seed, 'framings': {}}
    for framing in FRAMINGS:
        d = out / framing
        t0 = time.time()
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            r = translate_folder(a.run, d / 'in', d / 'pred', 'B2A')
        seconds = time.time() - t0
        m = evaluate_folder(d / 'pred', d / 'in', d / 'clean', d / 'mask', d / 'report', fid=False)
        res['framings'][framing] = headline(m) | {
            'translate_seconds': round(seconds, 1),
            'face_unsure': sum('found with confidence' in str(w.message) for w in ws),   # taken below MTCNN's 0.9, with a warning
            'no_face': len(r['no_face_files']) + sum('no face found; assuming' in str(w.message) for w in ws),
            'clearance_pct_pooled_by_photo': pooled_by_photo(d)}
        f = res['framings'][framing]
        print(f"{framing:8s} {f['images']:3d} photos  clearance {f['clearance_pct_pooled']:5.1f}% "
              f"({f['clearance_pct_pooled_ci95'][0]}-{f['clearance_pct_pooled_ci95'][1]})  median {f['clearance_pct_median']:5.1f}%  "
              f"PSNR outside {f['psnr_outside_lesion_db_pooled']:5.1f} dB  faces found unsure / not found: {f['face_unsure']} / {f['no_face']}  "
              f"per photo: {', '.join(f'{k} {v}%' for k, v in f['clearance_pct_pooled_by_photo'].items())}", flush=True)
    if a.json: atomic_write_json(a.json, res)


if __name__ == '__main__':
    main()
