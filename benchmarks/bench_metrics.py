"""Cost of the metrics: dilation variants for the surround ring, and one image's full evaluation.

    PYTHONPATH=. python3 benchmarks/bench_metrics.py [--sizes 128 256 1024] [--repeat 7]

Prints a table and one JSON line. Dilation variants at the ring radius `evaluate` uses (guard + width = 11% of
the shorter side): window sums from cumulative sums (what `metrics.dilate` does), a separable max-pool, one square
max-pool (up to 256 px) and kornia.morphology (at 128 px only): both visit k² neighbours per pixel.
"""
import argparse, json, time

import kornia
import torch
import torch.nn.functional as F

from cyclegan_pws.metrics import dilate, estimate_lesion_mask, face_ellipse, clearance, psnr_outside, ssim_outside


def best_of(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[128, 256, 1024])
    ap.add_argument('--repeat', type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in args.sizes:
        mask = (torch.rand(1, 1, n, n, generator=g) > 0.999)
        r = round(0.11 * n)
        k = 2 * r + 1
        t_cs = best_of(lambda: dilate(mask, r), args.repeat)
        sep = lambda: F.max_pool2d(F.max_pool2d(mask.float(), (k, 1), 1, (r, 0)), (1, k), 1, (0, r)) > 0
        t_sep = best_of(sep, args.repeat)
        t_sq = best_of(lambda: F.max_pool2d(mask.float(), k, 1, r) > 0, 1) if n <= 256 else float('nan')
        assert torch.equal(dilate(mask, r), sep())
        t_kor = best_of(lambda: kornia.morphology.dilation(mask.float(), torch.ones(k, k)), 1) if n <= 128 else float('nan')
        img = torch.rand(1, 3, n, n, generator=g)
        def one_image():
            les = estimate_lesion_mask(img)
            skin = face_ellipse(n, n)
            clearance(img, img, les, skin); psnr_outside(img, img, les); ssim_outside(img, img, les)
        t_img = best_of(one_image, args.repeat)
        rows.append({'size': n, 'ring_radius_px': r, 'dilate_cumsum_ms': 1e3 * t_cs, 'dilate_separable_maxpool_ms': 1e3 * t_sep,
                     'dilate_square_maxpool_ms': 1e3 * t_sq, 'dilate_kornia_ms': 1e3 * t_kor,
                     'separable_over_cumsum': t_sep / t_cs,
                     'evaluate_one_image_ms': 1e3 * t_img})
    print(f"{'size':>6} {'r':>4} {'cumsum':>8} {'separable':>10} {'square':>10} {'kornia':>8} {'sep/cumsum':>10} {'1 image':>9}"
          f"  (ms, best of {args.repeat}, {torch.get_num_threads()} threads)")
    for x in rows:
        print(f"{x['size']:>6} {x['ring_radius_px']:>4} {x['dilate_cumsum_ms']:>8.2f} {x['dilate_separable_maxpool_ms']:>10.2f} "
              f"{x['dilate_square_maxpool_ms']:>10.2f} {x['dilate_kornia_ms']:>8.2f} {x['separable_over_cumsum']:>10.1f} "
              f"{x['evaluate_one_image_ms']:>9.1f}")
    print(json.dumps({'benchmark': 'metrics', 'torch': torch.__version__, 'rows': rows}))


if __name__ == '__main__':
    main()
