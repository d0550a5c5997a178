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


def rate(fn, seconds: float) -> tuple[float, float, int]:
    "Calls per second of fn(i) over distinct i, for about `seconds`: by wall clock and by this process's CPU time."
    fn(10_000)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn(n); n += 1
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0), n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=1.5)
    ap.add_argument('--json', default=None)
    args = ap.parse_args()
    rows = []
    for size in (64, 128, 256):
        rows.append(('procedural_face', size, *rate(lambda i: procedural_face(i, size), args.seconds)))
    for size in (128, 256):
        faces = [procedural_face(i, size) for i in range(16)]
        rows.append(('synthesize_pws (skin mask given)', size,
                     *rate(lambda i: synthesize_pws(faces[i % 16].image, faces[i % 16].landmarks, i, skin_mask=faces[i % 16].skin_mask), args.seconds)))
        rows.append(('synthesize_pws (skin from the photo)', size,
                     *rate(lambda i: synthesize_pws(faces[i % 16].image, faces[i % 16].landmarks, i), args.seconds)))
        lesions = [synthesize_pws(f.image, f.landmarks, i, skin_mask=f.skin_mask) for i, f in enumerate(faces)]
        rows.append(('simulate_treatment', size,
                     *rate(lambda i: simulate_treatment(lesions[i % 16][0], faces[i % 16].image, lesions[i % 16][1], sessions=1 + i % 15, rng=i), args.seconds)))
    for size in (64, 128):
        with tempfile.TemporaryDirectory() as d:
            n_items = 40 if size == 128 else 60
            items = 3 * n_items
            t0, c0 = time.perf_counter(), time.process_time()
            write_synthetic_dataset(d, n=n_items, size=size, seed=0, n_pairs=n_items)
            rows.append(('write_synthetic_dataset (A+B+pairs items)', size, items / (time.perf_counter() - t0), items / (time.process_time() - c0), items))
            t0, c0 = time.perf_counter(), time.process_time()
            write_synthetic_dataset(d, n=n_items, size=size, seed=0, n_pairs=n_items)
            rows.append(('  re-run, all files present (validate+skip)', size, items / (time.perf_counter() - t0), items / (time.process_time() - c0), items))
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'one process; load average {load:.1f} on {os.cpu_count()} cores (CPU-time rates are less sensitive to sharing)')
    print(f"{'what':46s} {'size':>5s} {'per s':>9s} {'per CPU s':>10s} {'ms each':>9s} {'n':>5s}")
    for name, size, r, rc, n in rows: print(f'{name:46s} {size:5d} {r:9.1f} {rc:10.1f} {1000 / r:9.2f} {n:5d}')
    face = {s: rc for name, s, r, rc, _ in rows if name == 'procedural_face'}
    print(f'ratio faces per CPU s, 128 px : 256 px = {face[128] / face[256]:.2f} (4x the pixels)')
    out = {'machine': platform.processor() or platform.machine(), 'numpy': np.__version__, 'cpu_count': os.cpu_count(), 'load_avg': load,
           'rows': [dict(what=name.strip(), size=s, per_s=round(r, 2), per_cpu_s=round(rc, 2), ms=round(1000 / r, 3), n=n)
                    for name, s, r, rc, n in rows]}
    print(json.dumps(out))
    if args.json:
        with open(args.json, 'w') as f: json.dump(out, f, indent=2)


if __name__ == '__main__':
    main()
