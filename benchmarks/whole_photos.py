"""Removal on whole photographs, as a user hands them to `translate`: not face crops, any size and framing.

The demo's photo set is made of `prepare` crops. A user's folder usually holds whole pictures: a portrait with a
background, a large camera image, a face off centre. This benchmark draws stains (two of `06_unseen_stains`'s model,
one of `05_synth`'s) on the two photographs the dependencies ship, each framed four ways: as shipped (512 x 512
and 600 x 512), upscaled to 1024 x 1024, and cut off centre to 360 x 512. It runs `translate_folder` (the code
behind `cyclegan-pws translate`, landmarks found by MTCNN as for any photo without a JSON) and scores the results
against the clean photos with `evaluate_folder`: pooled clearance inside the drawn lesion and PSNR outside it.

    python benchmarks/whole_photos.py --run demo/run --out /tmp/whole_photos
"""
import argparse, json, time
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan_pws.evaluate import evaluate_folder
from cyclegan_pws.faces import detect_faces
from cyclegan_pws.predict import translate_folder
from cyclegan_pws.synth import synthesize_pws
from cyclegan_pws.unseen_stains import _sample_photos, draw_stain


def framings(name: str, photo: np.ndarray) -> dict[str, np.ndarray]:
    "The photo as shipped, upscaled 2x, and (the astronaut) cut off centre."
    out = {name: photo, f'{name}_big': np.asarray(Image.fromarray(photo).resize((2 * photo.shape[1], 2 * photo.shape[0]), Image.BICUBIC))}
    if name == 'astronaut': out[f'{name}_wide'] = np.ascontiguousarray(photo[40:400])
    return out


def write_set(out: Path, seed: int = 42) -> int:
    "Stained whole photos in out/in, their clean versions in out/clean, lesion masks in out/mask; returns the count."
    for d in ('in', 'clean', 'mask'): (out / d).mkdir(parents=True, exist_ok=True)
    n = 0
    for name, photo in _sample_photos():
        for stem, img in framings(name, photo).items():
            faces = detect_faces(img)
            if not faces: raise SystemExit(f'{stem}: MTCNN finds no face in the clean photo; check the faces extra (pip install -e ".[faces]")')
            lm = faces[0].landmarks                          # the stain is placed with the clean photo's landmarks
            for k in range(3):
                rng = np.random.default_rng([seed, k, len(stem)])
                stained, mask = draw_stain(img, lm, rng) if k < 2 else synthesize_pws(img, lm, rng)[:2]
                Image.fromarray(stained).save(out / 'in' / f'{stem}_{k}.png')
                Image.fromarray(img).save(out / 'clean' / f'{stem}_{k}.png')
                Image.fromarray(((mask > 0.5) * 255).astype(np.uint8)).save(out / 'mask' / f'{stem}_{k}.png')
                n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', required=True, help='a removal run folder (e.g. demo/run)')
    ap.add_argument('--out', default='whole_photos')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    out = Path(a.out)
    n = write_set(out)
    t0 = time.time()
    translate_folder(a.run, out / 'in', out / 'pred', 'B2A')
    seconds = time.time() - t0
    m = evaluate_folder(out / 'pred', out / 'in', out / 'clean', out / 'mask', out / 'report', fid=False)
    rows = [l.split(',') for l in (out / 'report' / 'per_image.csv').read_text().splitlines()]
    col = rows[0].index('clearance_pct')
    res = {'images': n, 'translate_seconds': round(seconds, 1), 'clearance_pct_pooled': round(m['clearance_pct_pooled'], 1),
           'clearance_pct_pooled_ci95': [round(v, 1) for v in m['clearance_pct_pooled_ci95']],
           'psnr_outside_lesion_db_pooled': round(m['psnr_outside_lesion_db_pooled'], 1),
           'per_image_clearance_pct': {r[0]: round(float(r[col]), 1) for r in rows[1:]}}
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
