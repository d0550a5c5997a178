"Integration tests of the synthetic dataset writer and the `synth` command (slower than the notebook's unit tests)."
import csv, hashlib, json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan_pws.io import image_files, read_image
from cyclegan_pws.synth import LANDMARK_KEYS, write_synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth') / 'ds'
    res = write_synthetic_dataset(root, n=10, size=64, seed=7, test_frac=0.3, n_pairs=8)
    return root, res


def test_layout_and_counts(dataset):
    root, res = dataset
    expect = {'trainA': 7, 'testA': 3, 'trainB': 7, 'testB': 3, 'testB_clean': 3, 'testB_mask': 3, 'pairs/pre': 8, 'pairs/post': 8, 'pairs/mask': 8}
    assert {k: len(image_files(root / k)) for k in expect} == expect
    assert res['written'] == 28
    man = json.loads((root / 'synth_manifest.json').read_text())
    assert man['complete'] and man['args']['seed'] == 7 and man['counts']['pairs'] == 8


def test_every_image_reads_back_with_landmarks(dataset):
    root, _ = dataset
    for folder in ('trainA', 'testA', 'trainB', 'testB', 'testB_clean', 'pairs/pre', 'pairs/post'):
        for p in image_files(root / folder):
            assert read_image(p).size == (64, 64)
            meta = json.loads(p.with_suffix('.json').read_text())
            assert set(meta['landmarks']) == set(LANDMARK_KEYS) and meta['size'] == [64, 64]
            assert all(0 < c < 64 for xy in meta['landmarks'].values() for c in xy)


def test_masks_match_the_difference_between_stained_and_clean(dataset):
    root, _ = dataset
    for p in image_files(root / 'testB'):
        stained, clean = np.asarray(Image.open(p)), np.asarray(Image.open(root / 'testB_clean' / p.name))
        mask = np.asarray(Image.open(root / 'testB_mask' / p.name))
        assert mask.ndim == 2 and mask.dtype == np.uint8
        changed = (stained != clean).any(-1)
        assert not changed[mask == 0].any()                      # only the lesion differs
        assert changed[mask > 200].mean() > 0.5


def test_pair_masks_cover_what_treatment_changed(dataset):
    root, _ = dataset
    for p in image_files(root / 'pairs' / 'pre'):
        pre, post = np.asarray(Image.open(p)), np.asarray(Image.open(root / 'pairs' / 'post' / p.name))
        mask = np.asarray(Image.open(root / 'pairs' / 'mask' / p.name))
        assert mask.ndim == 2 and mask.dtype == np.uint8 and (mask > 127).any()
        assert not (pre != post).any(-1)[mask == 0].any()


def test_doses_csv(dataset):
    root, _ = dataset
    rows = list(csv.DictReader(open(root / 'pairs' / 'doses.csv')))
    assert [r['file'] for r in rows] == [p.name for p in image_files(root / 'pairs' / 'pre')]
    assert all(1 <= int(r['sessions']) <= 15 and 0 <= float(r['clearance']) <= 1 for r in rows)


def test_same_arguments_same_bytes_in_a_fresh_folder(dataset, tmp_path):
    root, _ = dataset
    write_synthetic_dataset(tmp_path / 'again', n=10, size=64, seed=7, test_frac=0.3, n_pairs=8)
    assert digest(tmp_path / 'again') == digest(root)


def test_interrupted_run_resumes(tmp_path):
    full = tmp_path / 'full'; write_synthetic_dataset(full, n=4, size=48, seed=1, n_pairs=3)
    part = tmp_path / 'part'; write_synthetic_dataset(part, n=4, size=48, seed=1, n_pairs=3)
    for p in list((part / 'trainA').iterdir())[:3] + list((part / 'pairs' / 'post').iterdir())[:2]: p.unlink()
    (part / 'pairs' / 'doses.csv').unlink()
    lines = (part / 'pairs' / 'doses.jsonl').read_text().splitlines()
    (part / 'pairs' / 'doses.jsonl').write_text('\n'.join(lines[:-1]) + '\n' + lines[-1][:10])   # torn last record
    with pytest.warns(UserWarning, match='torn last line'):
        res = write_synthetic_dataset(part, n=4, size=48, seed=1, n_pairs=3)
    assert 0 < res['written'] < 11
    assert digest(part) == digest(full)


def test_cli_writes_and_reports_bad_options_in_one_line(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, '-c', 'from cyclegan_pws.cli import main; main()', *a],
                                    capture_output=True, text=True, cwd=ROOT)
    r = run('synth', '--out', str(tmp_path / 'cli'), '--n', '2', '--size', '32', '--pairs', '1')
    assert r.returncode == 0, r.stderr
    assert 'trainA 2, testA 0, trainB 2, testB 0, pairs 1' in r.stdout
    r = run('synth', '--out', str(tmp_path / 'bad'), '--n', '2', '--size', '8')
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and 'size=8' in r.stderr
