"Integration tests of metrics + evaluate on real faces with a known, painted-on lesion."
import importlib.util, json, re
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from typer.testing import CliRunner

from cyclegan_pws.cli import app, main
from cyclegan_pws.evaluate import PSNR_CAP_DB, evaluate_folder
from cyclegan_pws.io import ImageError, MissingInput
from cyclegan_pws.metrics import RandomConvFeatures, estimate_lesion_mask, image_tensor, mask_iou, mask_tensor

PWS_RGB = np.array([0.75, 0.22, 0.38])  # what a saturated port-wine stain multiplies skin colour by
# (face, crop box, blob centre and radius at 128 px): the image-left cheek of two real faces
FACES = {'astronaut': ((160, 60, 290, 190), (48, 76), 14), 'grace': ((170, 150, 370, 350), (46, 84), 15)}


def face(name, size=128):
    im = Image.fromarray(skimage.data.astronaut()) if name == 'astronaut' else \
        Image.open(matplotlib.cbook.get_sample_data('grace_hopper.jpg')).convert('RGB')
    return np.asarray(im.crop(FACES[name][0]).resize((size, size), Image.LANCZOS), dtype=np.float64)


def blob_alpha(size, centre, radius, seed):
    "Soft alpha of an irregular blob: a radius wobbling with random harmonics, a 1-px soft edge."
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    dx, dy = xx - centre[0], yy - centre[1]
    theta, r = np.arctan2(dy, dx), np.hypot(dx, dy)
    k = np.arange(1, 5)[:, None, None]
    edge = radius * (1 + (0.18 * g.random((4, 1, 1)) / k**0.5 * np.sin(k * theta + 6.283 * g.random((4, 1, 1)))).sum(0))
    return np.clip(edge - r + 0.5, 0, 1)


def lesion_case(name, seed=0, strength=1.0):
    "(clean, stained, mask) as uint8 arrays: a multiply-blended red-purple blob on a real face."
    clean = face(name)
    _, centre, radius = FACES[name]
    a = blob_alpha(clean.shape[0], centre, radius, seed)[..., None] * strength
    stained = clean * (1 - a + a * PWS_RGB)
    u8 = lambda x: np.round(x).astype(np.uint8)
    return u8(clean), u8(stained), u8((blob_alpha(clean.shape[0], centre, radius, seed) > 0.5) * 255)


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    "testB/, testB_clean/, testB_mask/ (and a half-treated pred folder) as `synth` lays them out."
    root = tmp_path_factory.mktemp('ds')
    for name in FACES:
        for seed in (0, 1):
            clean, stained, mask = lesion_case(name, seed)
            half = lesion_case(name, seed, strength=0.5)[1]
            for sub, arr in [('testB_clean', clean), ('testB', stained), ('testB_mask', mask), ('half', half)]:
                (root / sub).mkdir(exist_ok=True)
                Image.fromarray(arr).save(root / sub / f'{name}{seed}.png')
    return root


def strict_json(path):
    "metrics.json must be valid JSON: no NaN/Infinity."
    def bad(c): raise AssertionError(f'{path} holds {c}')
    return json.loads(Path(path).read_text(), parse_constant=bad)


@pytest.mark.parametrize('name', list(FACES))
def test_estimator_recovers_blob(name):
    clean, stained, mask = lesion_case(name)
    iou = mask_iou(estimate_lesion_mask(stained), mask_tensor(mask)).item()
    assert iou > 0.5, iou
    assert estimate_lesion_mask(clean).float().mean() < 0.02  # healthy face: (almost) nothing


@pytest.mark.parametrize('masks', ['testB_mask', None])
def test_untouched_scores_zero_and_clean_scores_hundred(ds, tmp_path, masks):
    mask_dir = ds / masks if masks else None
    feat = RandomConvFeatures()
    none = evaluate_folder(ds / 'testB', ds / 'testB', ds / 'testB_clean', mask_dir, out=tmp_path / 'none', feature=feat)
    full = evaluate_folder(ds / 'testB_clean', ds / 'testB', ds / 'testB_clean', mask_dir, out=tmp_path / 'full', feature=feat)
    assert abs(none['clearance_pct_mean']) < 1 and none['grade_histogram']['none (<=0%)'] == 4
    assert full['clearance_pct_mean'] > (90 if masks else 80), full
    # identical outside the lesion: infinite PSNR, written as the cap; SSIM ~1
    assert full['psnr_outside_lesion_db_mean'] == PSNR_CAP_DB
    if masks:  # an estimated mask misses the soft rim of the blob, where stained and clean differ
        assert none['psnr_outside_lesion_db_mean'] == PSNR_CAP_DB
    assert full['ssim_outside_lesion_mean'] > 0.999
    assert full['psnr_inside_lesion_vs_clean_db_mean'] == PSNR_CAP_DB and none['psnr_inside_lesion_vs_clean_db_mean'] < 25
    assert none['fid'] > full['fid'] and none['kid_mean'] > full['kid_mean']
    js = strict_json(tmp_path / 'full' / 'metrics.json')
    assert js['n_images'] == 4 and js['clearance_pct_median'] == pytest.approx(full['clearance_pct_median'])
    print(masks, {k: round(full[k], 2) for k in ['clearance_pct_mean', 'clearance_pct_colorimetric_mean',
                                                  'ssim_outside_lesion_mean', 'delta_e_before_mean', 'delta_e_after_mean']})


def test_half_treatment_is_graded_in_the_middle(ds, tmp_path):
    r = evaluate_folder(ds / 'half', ds / 'testB', ds / 'testB_clean', ds / 'testB_mask', out=tmp_path, fid=False)
    assert 25 < r['clearance_pct_mean'] < 75, r
    assert r['grade_histogram']['26-50%'] + r['grade_histogram']['51-75%'] == 4
    assert r['fid_unavailable'].startswith('disabled')


def test_report_files_are_complete_and_self_contained(ds, tmp_path):
    evaluate_folder(ds / 'testB_clean', ds / 'testB', ds / 'testB_clean', ds / 'testB_mask', out=tmp_path,
                    feature=RandomConvFeatures())
    assert sorted(p.name for p in tmp_path.iterdir()) == ['grid.png', 'metrics.json', 'per_image.csv', 'report.html']
    page = (tmp_path / 'report.html').read_text()
    assert page.count('src="data:image/png;base64,') == 1
    text = re.sub(r'data:image/png;base64,[A-Za-z0-9+/=]+', '', page)
    assert not any(s in text for s in ['http', 'href=', '<link', '<script', 'NaN', 'inf<']), text
    assert all(f'{n}{s}.png' in page for n in FACES for s in (0, 1))
    lines = (tmp_path / 'per_image.csv').read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith('file,mask,clearance_pct,grade')
    grid = Image.open(tmp_path / 'grid.png')
    assert grid.width == 5 * 256 and grid.height > 4 * 256  # input, prediction, ground truth, change x4, regions; faces at 256 px


def test_mismatched_folders_fail_in_one_line(ds, tmp_path):
    (tmp_path / 'pred').mkdir()
    Image.new('RGB', (16, 16)).save(tmp_path / 'pred' / 'grace0.jpg')  # matched by stem, not by suffix
    with pytest.raises(MissingInput, match=r'3 of 4 images .* \(e\.g\. astronaut0\.png\)') as e:
        evaluate_folder(tmp_path / 'pred', ds / 'testB', out=tmp_path / 'r')
    assert '\n' not in str(e.value) and not (tmp_path / 'r').exists()


def test_corrupt_prediction_names_the_file(ds, tmp_path):
    pred = tmp_path / 'pred'; pred.mkdir()
    for p in (ds / 'testB').iterdir(): (pred / p.name).write_bytes(p.read_bytes())
    (pred / 'grace1.png').write_bytes((ds / 'testB' / 'grace1.png').read_bytes()[:200])  # truncated download
    with pytest.raises(ImageError, match='grace1.png'):
        evaluate_folder(pred, ds / 'testB', out=tmp_path / 'r')


@pytest.mark.skipif(importlib.util.find_spec('torch_fidelity') is not None,
                    reason='with torch-fidelity the real Inception path would try to download weights')
def test_real_inception_path_reports_why_it_is_unavailable(ds, tmp_path):
    r = evaluate_folder(ds / 'testB_clean', ds / 'testB', ds / 'testB_clean', out=tmp_path)
    assert 'fid' not in r and 'torch-fidelity' in r['fid_unavailable'].lower()
    assert strict_json(tmp_path / 'metrics.json')['fid_unavailable'] == r['fid_unavailable']


def test_cli_evaluate(ds, tmp_path, capsys):
    r = CliRunner().invoke(app, ['evaluate', '--pred', str(ds / 'testB_clean'), '--orig', str(ds / 'testB'),
                                 '--clean', str(ds / 'testB_clean'), '--mask', str(ds / 'testB_mask'),
                                 '--out', str(tmp_path / 'rep'), '--no-fid'])
    assert r.exit_code == 0, r.output
    assert '4 images | clearance 100.0% mean' in r.stdout and f'report: {tmp_path / "rep" / "report.html"}' in r.stdout
    with pytest.raises(SystemExit) as e:
        main(['evaluate', '--pred', str(tmp_path / 'missing'), '--orig', str(ds / 'testB'), '--out', str(tmp_path / 'x')])
    assert e.value.code == 2 and 'missing: folder not found' in capsys.readouterr().err


def test_fid_against_a_real_healthy_set_without_ground_truth(ds, tmp_path):
    r = evaluate_folder(ds / 'half', ds / 'testB', real_dir=ds / 'testB_clean', out=tmp_path, feature=RandomConvFeatures())
    assert r['fid_reference'] == str(ds / 'testB_clean') and r['fid'] > 0 and r['identity_reference'] == 'orig'
    assert 'psnr_inside_lesion_vs_clean_db_mean' not in r and r['mask_source'].startswith('estimated')
