"""How fast does `cyclegan_pws.data` feed the trainer? Loader images/s, cold decode vs uint8 cache.

    PYTHONPATH=. python benchmarks/data_loader.py [--n 256] [--batch 8] [--workers 2] [--json out.json]

Builds a procedural unpaired dataset in a temp dir (random crops of skimage's photos, saved as 256x256 PNGs
like `cyclegan-pws prepare` writes), then times one warm epoch (after a warm-up epoch, so worker start-up is
excluded) of `make_loader` for each variant at training sizes 128 and 256. Images/s counts A and B images.
Runs in about a minute on 2 CPU cores.
"""
import argparse, json, platform, tempfile, time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

from cyclegan_pws.data import UnpairedDataset, make_loader, set_epoch


def make_dataset(root: Path, n: int, src_size: int = 256, seed: int = 0):
    "n PNGs per domain: random crops of a few natural photos, resized to src_size."
    rng = np.random.default_rng(seed)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    for d in 'AB':
        (root / f'train{d}').mkdir(parents=True)
        for i in range(n):
            p = photos[rng.integers(len(photos))]
            s = int(rng.integers(min(p.shape[:2]) // 2, min(p.shape[:2])))
            y, x = rng.integers(0, p.shape[0] - s + 1), rng.integers(0, p.shape[1] - s + 1)
            Image.fromarray(p[y:y + s, x:x + s]).resize((src_size, src_size), Image.BICUBIC).save(root / f'train{d}' / f'{i:04d}.png')


def time_epoch(ds, batch, workers) -> float:
    "Images per second (A+B) over one warm epoch."
    dl = make_loader(ds, batch, seed=0, num_workers=workers)
    for _ in set_epoch(dl, 0): pass             # warm-up epoch: worker start-up, page cache
    t = time.perf_counter(); n = 0
    for b in set_epoch(dl, 1): n += b['A'].shape[0] + b['B'].shape[0]
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=128, help='images per domain')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--json', type=Path, default=None, help='also write the results here')
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        root = Path(t) / 'ds'; make_dataset(root, a.n)
        for size in (128, 256):
            cold = UnpairedDataset(root, size=size, flip=True)
            rows.append(dict(size=size, variant='decode, 0 workers', img_s=time_epoch(cold, a.batch, 0)))
            rows.append(dict(size=size, variant=f'decode, {a.workers} workers', img_s=time_epoch(cold, a.batch, a.workers)))
            t0 = time.perf_counter()
            hot = UnpairedDataset(root, size=size, flip=True, cache=True, cache_dir=Path(t) / 'cache')
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            UnpairedDataset(root, size=size, flip=True, cache=True, cache_dir=Path(t) / 'cache')
            reload = time.perf_counter() - t0
            rows.append(dict(size=size, variant='uint8 cache, 0 workers', img_s=time_epoch(hot, a.batch, 0),
                             cache_build_s=build, cache_reload_s=reload))
    for size in (128, 256):
        base = next(r['img_s'] for r in rows if r['size'] == size)
        for r in rows:
            if r['size'] == size: r['vs_decode_0w'] = r['img_s'] / base
    print(f'data loader, {a.n} images/domain, 256 px PNG sources, batch {a.batch}, torch {torch.__version__}, '
          f'{platform.processor() or platform.machine()}')
    print(f'{"size":>4}  {"variant":26s} {"images/s":>9}  {"x decode":>8}  cache build / reload')
    for r in rows:
        extra = f'{r["cache_build_s"]:.2f} s / {r["cache_reload_s"]:.2f} s' if 'cache_build_s' in r else ''
        print(f'{r["size"]:>4}  {r["variant"]:26s} {r["img_s"]:9.0f}  {r["vs_decode_0w"]:7.1f}x  {extra}')
    res = {'n_per_domain': a.n, 'batch': a.batch, 'rows': [{k: round(v, 3) if isinstance(v, float) else v
                                                            for k, v in r.items()} for r in rows]}
    print(json.dumps(res))
    if a.json: a.json.write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
