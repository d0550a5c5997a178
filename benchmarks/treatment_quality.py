"""Treatment prediction quality on held-out synthetic faces (issue 17): the dose-response looks against baselines.

    python benchmarks/treatment_quality.py [--pairs 150] [--size 128] [--seed 0] [--pix2pix-steps 0] [--out DIR] [--json out.json]

Writes a synthetic pairs folder (`--pairs` pairs, three doses per face), fits the looks run on its training
faces (`treat train --method looks`), optionally trains the old dose-conditioned pix2pix (`--pix2pix-steps`, tiny
preset, 64 px) as a baseline, and scores everything with `evaluate_looks` on the held-out faces (never seen: the
split is by the SHA-256 of the pre photo, which a face's three doses share). Two reference rows only a benchmark
can compute, because they use the simulator's ground truth:

- **ceiling**: the look at the true clearance rendered from the true clean face (the stain layer known exactly),
  so only the simulator's random patches differ from the true post image: no deterministic prediction from the
  pre photo does better on average;
- **simulator median**: the same renderer as the looks, at the median clearance of the simulator's own patient
  population (`synth.PATIENT_CMAX_BETA`, `PATIENT_RATE_LOGNORMAL`).

Prints a table, then one JSON line (also written to `--json`). Runs on one CPU thread.
"""
from __future__ import annotations
import argparse, contextlib, io, json, os, platform, subprocess, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
import torch

from cyclegan_pws.synth import write_synthetic_dataset, _item_rng, PATIENT_CMAX_BETA, PATIENT_RATE_LOGNORMAL
from cyclegan_pws.procedural import procedural_face, decode_srgb, encode_srgb
from cyclegan_pws.data import PairedDataset
from cyclegan_pws.metrics import image_tensor, delta_e_map, pooled_clearance
from cyclegan_pws.data import split_pairs
from cyclegan_pws.dose_response import train_looks, read_looks, DoseResponse, clearance_looks, mask_region
from cyclegan_pws.looks_eval import evaluate_looks, soft_pair_mask
from cyclegan_pws.predict import face_landmarks

torch.set_num_threads(1)
SIMULATOR = DoseResponse(*PATIENT_CMAX_BETA, *PATIENT_RATE_LOGNORMAL)


def reference_rows(pairs: Path, looks_run: Path, seed: int, size: int, doses_per_face: int = 3) -> dict:
    "Realised share (%) of the ceiling (true clean face, true clearance) and of the simulator-median look, on the held-out pairs."
    info = read_looks(looks_run)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ds = PairedDataset(pairs, size=None)
    err = {'ceiling': [], 'simulator_median': []}; change = []
    for i in split_pairs(ds, info['test_frac'])['test']:
        name = ds.names[i]; s, c = ds.doses[i]
        pre_u8, post_u8 = ds.pre.load(i), ds.post.load(i)
        mask = soft_pair_mask(ds, i, pre_u8)
        rng = _item_rng(seed, 'P', int(name[2:7]) // doses_per_face)                # the face the simulator drew for this pair
        clean = procedural_face(int(rng.integers(2**31)), size).image
        pre = pre_u8.permute(1, 2, 0).numpy()
        ideal = np.where((mask[0, 0] > 0).numpy()[..., None], encode_srgb(decode_srgb(pre) ** (1 - c) * decode_srgb(clean) ** c), pre)
        lm = face_landmarks(pre_u8, ds.pre.files[i])
        med = clearance_looks(pre_u8, mask_region(mask), lm, [float(SIMULATOR.quantiles([s], [50])[0, 0])])[0]
        P, Q, L = image_tensor(pre_u8), image_tensor(post_u8), mask_region(mask)
        e = lambda y: float((delta_e_map(y, Q) * L).sum())
        err['ceiling'].append(e(image_tensor(torch.from_numpy(np.ascontiguousarray(ideal)).permute(2, 0, 1))))
        err['simulator_median'].append(e(image_tensor(med)))
        change.append(e(P))
    return {k: pooled_clearance(v, change) for k, v in err.items()}


def cpu_name() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
                     if l.startswith('Model name'))
    except Exception: return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--pairs', type=int, default=150)
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--pix2pix-steps', type=int, default=0, help='0: no pix2pix baseline; 800: the run issue 17 measured')
    ap.add_argument('--out', default=None, help='work folder (default: a temporary one)')
    ap.add_argument('--json', default=None)
    args = ap.parse_args()
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix='treatment_quality_'))
    t, c0, T = {}, time.process_time(), time.perf_counter()
    t0 = time.perf_counter()
    write_synthetic_dataset(work / 'data', n=1, size=args.size, seed=args.seed, n_pairs=args.pairs)
    pairs = work / 'data' / 'pairs'
    t['data_s'] = time.perf_counter() - t0; t0 = time.perf_counter()
    fit = train_looks(pairs, work / 'looks')
    t['fit_s'] = time.perf_counter() - t0; t0 = time.perf_counter()
    baseline = None
    if args.pix2pix_steps:
        from cyclegan_pws.config import run_config
        from cyclegan_pws.treatment import train_treatment
        rc = run_config('tiny', str(pairs), kind='treatment', train={'steps': args.pix2pix_steps, 'batch_size': 8, 'log_every': 50,
                                                        'ckpt_every': args.pix2pix_steps, 'precision': 'fp32', 'seed': 0})
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            train_treatment(rc, work / 'pix2pix', progress=False)
        baseline = work / 'pix2pix'
        t['pix2pix_train_s'] = time.perf_counter() - t0; t0 = time.perf_counter()
    m = evaluate_looks(work / 'looks', pairs, work / 'report', baseline=baseline)
    t['evaluate_s'] = time.perf_counter() - t0; t0 = time.perf_counter()
    ref = reference_rows(pairs, work / 'looks', args.seed, args.size)
    t['reference_s'] = time.perf_counter() - t0
    t['total_wall_s'] = time.perf_counter() - T; t['total_cpu_s'] = time.process_time() - c0

    f = lambda v: '–' if v is None else f'{v:6.1f}%'
    print(f"treatment quality: {m['n_images']} held-out pairs ({m['faces_shared_with_training']} faces shared with the "
          f"{fit['n_train']} training pairs), {args.size} px, seed {args.seed}; CPU: {cpu_name()}")
    print(f"{'prediction at the pair':44s} realised share of the pre -> post change")
    for label, k in [('pre photo', 'realised_pre_pct'), ('typical look (p50, true sessions)', 'realised_typical_pct'),
                     ('poor responder look (p10)', 'realised_poor_p10_pct'), ('good responder look (p90)', 'realised_good_p90_pct'),
                     ('population-median oracle (held-out fit)', 'realised_oracle_median_pct'),
                     ('typical look, region estimated (no mask)', 'realised_typical_no_mask_pct'),
                     ('look at the true clearance', 'realised_at_true_clearance_pct'),
                     ('look at the true clearance, no mask', 'realised_at_true_clearance_no_mask_pct'),
                     (f'pix2pix tiny, {args.pix2pix_steps} steps', 'realised_pix2pix_pct')]:
        if k in m: print(f'  {label:42s} {f(m[k])}')
    print(f"  {'simulator-median look (true population)':42s} {f(ref['simulator_median'])}")
    print(f"  {'ceiling: true clean face, true clearance':42s} {f(ref['ceiling'])}")
    print(f"error ratio typical / oracle {m['error_ratio_to_oracle']:.3f} | 10-90% band coverage {m['band_coverage']:.3f} | "
          f"clearance MAE {m['clearance_mae_pct']:.1f} points (oracle {m['oracle_clearance_mae_pct']:.1f}) | measured clearance "
          f"rises with sessions for {100 * m['monotone_frac']:.0f}% of faces (colorimetric metrics.clearance: "
          f"{100 * m['monotone_colorimetric_frac']:.0f}%)")
    print('targets: ' + ', '.join(f"{k} {'PASS' if v else 'MISS'}" for k, v in m['targets'].items()))
    print('times: ' + ', '.join(f'{k} {v:.1f}' for k, v in t.items()))
    keep = {k: v for k, v in m.items() if k not in ('fit', 'oracle_fit', 'problems')}
    out = {'args': vars(args), 'cpu': cpu_name(), 'torch_threads': torch.get_num_threads(), 'fit': fit['dose_response'].to_dict(),
           **keep, 'realised_ceiling_pct': ref['ceiling'], 'realised_simulator_median_pct': ref['simulator_median'], 'times': t}
    line = json.dumps(out, sort_keys=True)
    print(line)
    if args.json: Path(args.json).write_text(line + '\n')


if __name__ == '__main__':
    main()
