"""Speed of the synthetic-data pipeline on one CPU core: faces/s, lesions/s, treatments/s, dataset items/s.

    python benchmarks/synth.py [--seconds 1.5] [--json out.json]

Prints a table and a JSON line. Each row runs its function repeatedly for about `--seconds` (after one warm-up
call) on distinct seeds and reports calls per second and milliseconds per call.
"""
from __future__ import annotations
import argparse, json, os, platform, tempfile, time

os.environ.setdefault('OMP_NUM_THREADS', '1')          # one core: numpy here is single-threaded anyway
import numpy as np

from cyclegan_pws.synth import procedural_face, synthesize_pws, simulate_treatment, write_synthetic_dataset


def rate(fn, seconds: float) -> tuple[float, int]:
    "Calls per second of fn(i) over distinct i, for about `seconds`."
    fn(10_000)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn(n); n += 1
    return n / (time.perf_counter() - t0), n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=1.5)
    ap.add_argument('--json', default=None)
    args = ap.parse_args()
    rows = []
    for size in (64, 128, 256):
        r, n = rate(lambda i: procedural_face(i, size), args.seconds)
        rows.append(('procedural_face', size, r, n))
    for size in (128, 256):
        faces = [procedural_face(i, size) for i in range(16)]
        r, n = rate(lambda i: synthesize_pws(faces[i % 16].image, faces[i % 16].landmarks, i, skin_mask=faces[i % 16].skin_mask), args.seconds)
        rows.append(('synthesize_pws (skin mask given)', size, r, n))
        r, n = rate(lambda i: synthesize_pws(faces[i % 16].image, faces[i % 16].landmarks, i), args.seconds)
        rows.append(('synthesize_pws (skin from landmarks)', size, r, n))
        lesions = [synthesize_pws(f.image, f.landmarks, i, skin_mask=f.skin_mask) for i, f in enumerate(faces)]
        r, n = rate(lambda i: simulate_treatment(lesions[i % 16][0], faces[i % 16].image, lesions[i % 16][1], sessions=1 + i % 15, rng=i), args.seconds)
        rows.append(('simulate_treatment', size, r, n))
    for size in (64, 128):
        with tempfile.TemporaryDirectory() as d:
            n_items = 40 if size == 128 else 60
            t0 = time.perf_counter(); res = write_synthetic_dataset(d, n=n_items, size=size, seed=0, n_pairs=n_items)
            dt = time.perf_counter() - t0
            items = 3 * n_items
            rows.append(('write_synthetic_dataset (A+B+pairs items)', size, items / dt, items))
            t0 = time.perf_counter(); write_synthetic_dataset(d, n=n_items, size=size, seed=0, n_pairs=n_items)
            rows.append(('  re-run, all files present (validate+skip)', size, items / (time.perf_counter() - t0), items))
    print(f"{'what':46s} {'size':>5s} {'per s':>9s} {'ms each':>9s} {'n':>5s}")
    for name, size, r, n in rows: print(f'{name:46s} {size:5d} {r:9.1f} {1000 / r:9.2f} {n:5d}')
    face128 = next(r for name, s, r, _ in rows if name == 'procedural_face' and s == 128)
    face256 = next(r for name, s, r, _ in rows if name == 'procedural_face' and s == 256)
    print(f'ratio faces/s 128 px : 256 px = {face128 / face256:.2f} (pixels x4)')
    out = {'machine': platform.processor() or platform.machine(), 'numpy': np.__version__, 'cpu_count': os.cpu_count(),
           'rows': [dict(what=name, size=s, per_s=round(r, 2), ms=round(1000 / r, 3), n=n) for name, s, r, n in rows]}
    print(json.dumps(out))
    if args.json:
        with open(args.json, 'w') as f: json.dump(out, f, indent=2)


if __name__ == '__main__':
    main()
