"The synthetic ground truth makes removal measurable: the evaluation on it must hit both ends of the scale."
import json

import pytest

from cyclegan_pws.evaluate import PSNR_CAP_DB, evaluate_folder
from cyclegan_pws.synth import write_synthetic_dataset


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth')
    write_synthetic_dataset(root, n=30, size=96, seed=3, test_frac=0.4, n_pairs=4)
    return root


def test_untouched_stained_images_clear_nothing(synthetic, tmp_path):
    m = evaluate_folder(synthetic / 'testB', synthetic / 'testB', clean_dir=synthetic / 'testB_clean',
                        mask_dir=synthetic / 'testB_mask', out=tmp_path, fid=False)
    assert m['n_images'] >= 8
    assert abs(m['clearance_pct_mean']) < 1 and abs(m['clearance_pct_median']) < 1
    assert json.loads((tmp_path / 'metrics.json').read_text())['n_images'] == m['n_images']
    assert (tmp_path / 'report.html').stat().st_size > 10_000


def test_clean_ground_truth_clears_the_lesion_and_keeps_the_face(synthetic, tmp_path):
    m = evaluate_folder(synthetic / 'testB_clean', synthetic / 'testB', clean_dir=synthetic / 'testB_clean',
                        mask_dir=synthetic / 'testB_mask', out=tmp_path, fid=False)
    assert m['clearance_pct_mean'] == 100 and m['grade_histogram']['76-100%'] == m['n_images'], m
    # the clinical (ring-based) measure agrees that most of the stain is gone, below its natural ceiling
    assert m['clearance_pct_colorimetric_median'] > 50, m
    assert m['psnr_outside_lesion_db_mean'] >= 40, m  # untouched outside the (soft) mask
    assert m['ssim_outside_lesion_mean'] > 0.98, m
