"""The app's cold start and per-photo latency on this machine, per generator preset.

    PYTHONPATH=. python benchmarks/app_latency.py [--repeats 3] [--presets tiny,seed,paper] [--no-cold] [--json out.json]

Cold start: `cyclegan-pws app --checkpoint RUN` in a fresh Python process (imports, checkpoint loading, Gradio
page and server) until the page answers HTTP 200; the run is a 2-step tiny CycleGAN on synthetic faces.
Per photo: `app.process_photo` on a 512x512 photo with a port-wine stain (the astronaut, stained by
`synth.synthesize_pws`), split into face crop (MTCNN + alignment), removal (generator at the preset's size,
then the upsampled change added to the 256 px crop) and clearance (lesion estimate + ΔE); median ms over
`--repeats`. Generators are freshly initialised: the time does not depend on the weights' values.
"""
import argparse, contextlib, io, json, platform, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request
from pathlib import Path

import skimage.data
import torch

from cyclegan_pws.app import process_photo
from cyclegan_pws.data import to_tensor
from cyclegan_pws.faces import FaceConfig, crop_face, detect_faces
from cyclegan_pws.metrics import clearance, estimate_lesion_mask, image_tensor
from cyclegan_pws.models import build_generator
from cyclegan_pws.predict import Translator
from cyclegan_pws.synth import synthesize_pws, write_synthetic_dataset

SIZES = {'tiny': 64, 'seed': 256, 'paper': 256}


def timed(f, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t)
    return out, 1000 * statistics.median(ts)


def cold_start(tmp: Path, timeout: float = 120) -> float:
    "Seconds from starting `cyclegan-pws app` to the page answering HTTP 200."
    from cyclegan_pws.config import run_config
    from cyclegan_pws.cyclegan import train_cyclegan
    write_synthetic_dataset(tmp / 'data', n=4, size=64, n_pairs=0)
    rc = run_config('tiny', str(tmp / 'data'), task={'size': 64}, train={'steps': 2, 'batch_size': 2, 'log_every': 1, 'ckpt_every': 2})
    with contextlib.redirect_stdout(io.StringIO()): train_cyclegan(rc, tmp / 'run', progress=False)
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    cmd = [sys.executable, '-c', 'from cyclegan_pws.cli import main; main()', 'app', '--checkpoint', str(tmp / 'run'),
           '--port', str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=1) as r:
                    if r.status == 200: return time.perf_counter() - t0
            except OSError: time.sleep(0.05)
        raise RuntimeError('the app did not answer within the timeout')
    finally:
        proc.send_signal(signal.SIGINT); proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--presets', default='tiny,seed,paper')
    ap.add_argument('--no-cold', action='store_true', help='Skip the cold-start measurement.')
    ap.add_argument('--json')
    a = ap.parse_args()
    torch.manual_seed(0)
    astro = skimage.data.astronaut()
    photo, _, _ = synthesize_pws(astro, detect_faces(astro)[0].landmarks, rng=3, stage='purple', intensity=1.0)
    crop, crop_ms = timed(lambda: crop_face(photo, FaceConfig(size=256)), a.repeats)
    before = to_tensor(crop.image)
    _, measure_ms = timed(lambda: clearance(image_tensor(before), image_tensor(before), estimate_lesion_mask(before)), a.repeats)
    rows = []
    for name in a.presets.split(','):
        remove = Translator(build_generator(name), SIZES[name])
        remove(before)  # warm-up
        _, remove_ms = timed(lambda: remove(before), a.repeats)
        _, total_ms = timed(lambda: process_photo(photo, remove), a.repeats)
        rows.append(dict(preset=name, size=SIZES[name], crop_ms=crop_ms, remove_ms=remove_ms, clearance_ms=measure_ms,
                         total_ms=total_ms))
    res = dict(machine=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads(), rows=rows)
    if not a.no_cold:
        with tempfile.TemporaryDirectory() as d: res['cold_start_s'] = cold_start(Path(d))
    print(f"{'preset':8}{'size':>6}{'crop ms':>10}{'remove ms':>11}{'clearance ms':>14}{'total ms':>10}")
    for r in rows:
        print(f"{r['preset']:8}{r['size']:>6}{r['crop_ms']:>10.0f}{r['remove_ms']:>11.0f}{r['clearance_ms']:>14.0f}{r['total_ms']:>10.0f}")
    if 'cold_start_s' in res: print(f"cold start (`cyclegan-pws app` to HTTP 200): {res['cold_start_s']:.1f} s")
    print(json.dumps(res))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
