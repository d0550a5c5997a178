"""The treatment predictors on CPU. The dose-response looks (`treat train`'s default): what issue 17 asks of them on
held-out synthetic faces, and the `treat` commands end to end. The pix2pix model: what must hold after a short
training (predicted clearance grows with dose; beats "return the pre image" and "blend toward the mean post
image" inside the lesion), exact resume, its `treat` commands, and pairing problems of a real-pairs folder."""
import json, shutil

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cyclegan_pws.cli import app
from cyclegan_pws.data import PairedDataset
from cyclegan_pws.checkpoint import seed_everything
from cyclegan_pws.config import run_config

from cyclegan_pws.synth import write_synthetic_dataset
from cyclegan_pws.evaluate import evaluate_treatment
from cyclegan_pws.looks_eval import evaluate_looks
from cyclegan_pws.dose_response import train_looks, read_looks
from cyclegan_pws.data import split_pairs
from cyclegan_pws.treatment import PairSubset, Treatment, train_treatment
from conftest import fit_until, assert_same_training_state

# The smallest setting found to pass with margin: 64 px synthetic pairs (series of 3 doses per face), tiny preset.
# 400 steps gave a monotone but flat dose response (19 -> 21 -> 22% at 1/5/10 sessions); 800 steps 8 -> 16 -> 20%.
N_PAIRS, STEPS, BATCH = 100, 800, 8
# One intra-op thread: on a CPU shared with other processes two OpenMP threads made a step ~30x slower here.
torch.set_num_threads(1)


# The dose-response looks on the setting of benchmarks/treatment_quality.py: 150 pairs of 128 px (50 faces x 3 doses),
# ~20 s. Measured there on a Xeon (seed 0; 102 train, 48 held out): typical look 63.0% of the change (oracle 65.5%,
# error ratio 1.07), at the true clearance 78.4% (the simulator's own ceiling, true clean face at the true clearance:
# 83.3%), band coverage 0.79, every face's look moves further with more sessions.
# Pairs are split by the hash of the pre image's bytes, and the synthetic faces' pixels differ in the last bit between
# CPUs (AVX2 and AMX round some maths differently), so another CPU holds out other faces (39 pairs on an AMD EPYC):
# the fixture checks what the split must be, whole faces and about a fifth held out.
@pytest.fixture(scope='module')
def looks_metrics(tmp_path_factory):
    root = tmp_path_factory.mktemp('looks')
    write_synthetic_dataset(root / 'data', n=1, size=128, seed=0, n_pairs=150)
    fit = train_looks(root / 'data' / 'pairs', root / 'run')
    n_test = fit['n_test']
    assert fit['fit_seconds'] < 30 and fit['n_train'] + n_test == 150 and n_test % 3 == 0 and 24 <= n_test <= 54, fit
    return evaluate_looks(root / 'run', root / 'data' / 'pairs', root / 'report'), root


def test_looks_realise_the_change_like_the_population_oracle(looks_metrics):
    m, _ = looks_metrics
    assert m['faces_shared_with_training'] == 0 and m['realised_pre_pct'] == 0.0
    assert m['realised_typical_pct'] >= 60, m['realised_typical_pct']                 # issue 17: >= 60% (pix2pix: 32%)
    assert m['error_ratio_to_oracle'] <= 1.2, m['error_ratio_to_oracle']
    assert m['realised_typical_no_mask_pct'] >= 55, m['realised_typical_no_mask_pct']  # a photo without a mask
    # the poor and good responders are further from the typical outcome than the typical look
    assert m['realised_poor_p10_pct'] < m['realised_typical_pct'] and m['realised_good_p90_pct'] < m['realised_typical_pct']


def test_look_at_true_clearance_is_close_to_the_simulators_ceiling(looks_metrics):
    m, _ = looks_metrics  # issue 17 asks 85%; no deterministic look exceeds ~83% here (the benchmark's ceiling row)
    assert m['realised_at_true_clearance_pct'] >= 75, m['realised_at_true_clearance_pct']
    assert m['realised_at_true_clearance_pct'] > m['realised_oracle_median_pct'] + 10


def test_band_is_calibrated_and_looks_rise_with_sessions(looks_metrics):
    m, _ = looks_metrics
    assert 0.7 <= m['band_coverage'] <= 0.9, m['band_coverage']
    assert m['monotone_frac'] == 1.0 and m['labels_rise_with_sessions']
    curve = [m['dose_response'][k]['p50'] for k in ('1', '5', '10')]
    assert curve[0] < curve[1] < curve[2], curve
    assert [k for k, v in m['targets'].items() if not v] == ['true_clearance_realises_85pct'], m['targets']


def test_looks_cli_train_predict_evaluate(looks_metrics, tmp_path):
    m, root = looks_metrics
    pairs, runner = root / 'data' / 'pairs', CliRunner()
    r = runner.invoke(app, ['treat', 'train', '--data', str(pairs), '--out', str(tmp_path / 'run')])
    assert r.exit_code == 0 and 'dose response fitted' in r.stdout, r.output
    assert read_looks(tmp_path / 'run')['dose_response'] == read_looks(root / 'run')['dose_response']   # the same fit
    photo = tmp_path / 'photo.jpg'
    Image.open(pairs / 'pre' / 'P_00000.png').resize((150, 120)).save(photo)
    r = runner.invoke(app, ['treat', 'predict', '--checkpoint', str(tmp_path / 'run'), '--in', str(photo), '--sessions', '1,10',
                            '--out', str(tmp_path / 'pred')])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / 'pred').iterdir()) == [
        'photo_looks.json', 'photo_s1.png', 'photo_s10.png', 'photo_s10_p10.png', 'photo_s10_p90.png', 'photo_s1_p10.png', 'photo_s1_p90.png']
    assert Image.open(tmp_path / 'pred' / 'photo_s10_p90.png').size == (150, 120)
    assert json.loads((tmp_path / 'pred' / 'photo_looks.json').read_text())['region'] == 'asymmetry'
    r = runner.invoke(app, ['treat', 'evaluate', '--checkpoint', str(tmp_path / 'run'), '--data', str(pairs), '--out', str(tmp_path / 'rep')])
    assert r.exit_code == 0 and f"typical look {m['realised_typical_pct']:.1f}%" in r.stdout and 'band holds' in r.stdout, r.output


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp('treat') / 'data'
    write_synthetic_dataset(root, n=1, size=64, seed=0, n_pairs=N_PAIRS)
    return root / 'pairs'


@pytest.fixture(scope='module')
def metrics(pairs, tmp_path_factory):
    run = tmp_path_factory.mktemp('run')
    rc = run_config('tiny', str(pairs), kind='treatment', train={'steps': STEPS, 'batch_size': BATCH, 'log_every': 50,
                                                     'ckpt_every': STEPS, 'precision': 'fp32', 'seed': 0})
    res = train_treatment(rc, run, progress=False)
    assert res['status'] == 'done' and res['n_test'] >= 10
    report = run / 'report'
    return evaluate_treatment(run, pairs, report, sessions=(1, 5, 10)), report


def test_predicted_clearance_grows_with_dose(metrics):
    m, _ = metrics
    curve = [m['dose_response'][k] for k in ('1', '5', '10')]
    assert curve[0] < curve[1] < curve[2], curve
    assert m['monotone_mean'] and m['monotone_frac'] >= 0.6, m['monotone_frac']  # most faces, not only the mean


def test_beats_both_baselines_inside_the_lesion(metrics):
    m, _ = metrics
    ours, pre, blend = (m[f'psnr_lesion{k}_db_mean'] for k in ('', '_pre_baseline', '_blend_baseline'))
    assert ours > pre and ours > blend, (ours, pre, blend)
    assert m['beats_baselines']


def test_clearance_error_beats_predicting_no_change(metrics):
    m, _ = metrics  # "return the pre image" predicts 0% clearance: its error is the mean |true clearance|
    assert m['clearance_mae_pct'] < abs(m['clearance_true_pct_mean']), (m['clearance_mae_pct'], m['clearance_true_pct_mean'])


def test_report_is_written(metrics):
    m, report = metrics
    assert json.loads((report / 'metrics.json').read_text())['n_images'] == m['n_images']
    rows = (report / 'per_pair.csv').read_text().splitlines()
    assert len(rows) == m['n_images'] + 1 and 'clearance_s10_pct' in rows[0]
    assert Image.open(report / 'dose_strip.png').width == 6 * 128  # pre, 1, 5, 10, at the true dose, true post
    assert 'Laser treatment prediction' in (report / 'report.html').read_text()


@pytest.fixture(scope='module')
def small_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp('small') / 'data'
    write_synthetic_dataset(root, n=1, size=64, seed=1, n_pairs=8)
    return root / 'pairs'


def _train(rc, out, stop_at=None, resume=None):
    seed_everything(rc.train.seed)
    task = Treatment(rc.task, seed=rc.train.seed)
    ds = PairedDataset(rc.data.root, 64, flip=True, seed=rc.train.seed)
    train = PairSubset(ds, split_pairs(ds, rc.task.test_frac)['train'])
    return fit_until(task, train, rc.train, out, stop_at, resume), len(train)


@pytest.mark.parametrize('precision', ['fp32', 'bf16', 'fp16'])
def test_resume_is_bit_identical(small_pairs, tmp_path, precision):
    rc = run_config('tiny', str(small_pairs), kind='treatment', train={'steps': 4, 'batch_size': 2, 'log_every': 1, 'ckpt_every': 1,
                                                           'keep': 2, 'precision': precision})
    straight, n_train = _train(rc, tmp_path / 'a')
    assert n_train // 2 < 4  # the 4 steps cross an epoch boundary (new flips and order after resuming)
    _train(rc, tmp_path / 'b', stop_at=2)
    resumed, _ = _train(rc, tmp_path / 'b', resume='auto')
    assert_same_training_state(straight, resumed)


def test_cli_train_predict_evaluate(small_pairs, tmp_path):
    runner = CliRunner()
    run, pred, report = tmp_path / 'run', tmp_path / 'pred', tmp_path / 'report'
    r = runner.invoke(app, ['treat', 'train', '--data', str(small_pairs), '--out', str(run), '--method', 'pix2pix', '--preset', 'tiny', '--steps', '2',
                            '--batch', '2', '--log-every', '1', '--ckpt-every', '2', '--precision', 'fp32', '--no-progress'])
    assert r.exit_code == 0, r.output
    assert 'treat train: done at step 2' in r.stdout
    photo = tmp_path / 'photo.jpg'
    Image.open(small_pairs / 'pre' / 'P_00000.png').resize((150, 120)).save(photo)
    r = runner.invoke(app, ['treat', 'predict', '--checkpoint', str(run), '--in', str(photo), '--sessions', '1,5,10',
                            '--out', str(pred), '--device', 'cpu'])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in pred.iterdir()) == ['photo_s1.png', 'photo_s10.png', 'photo_s5.png']
    assert Image.open(pred / 'photo_s5.png').size == (150, 120)
    r = runner.invoke(app, ['treat', 'evaluate', '--checkpoint', str(run), '--data', str(small_pairs), '--out', str(report),
                            '--device', 'cpu'])
    assert r.exit_code == 0, r.output
    assert 'held-out pairs | lesion PSNR' in r.stdout and (report / 'report.html').exists()
    # a CycleGAN run (or anything that is not a treatment run) is refused with one line, exit code 2
    cfg = json.loads((run / 'config.json').read_text()); cfg.pop('kind')
    (run / 'config.json').write_text(json.dumps(cfg))
    from cyclegan_pws.cli import main
    with pytest.raises(SystemExit) as e: main(['treat', 'predict', '--checkpoint', str(run), '--in', str(photo), '--out', str(pred)])
    assert e.value.code == 2


def test_real_pairs_folder_problems_are_reported(small_pairs, tmp_path):
    "A clinic's folder: a size mismatch, a photo without its partner and a mixed-up patient each get one line."
    clinic = tmp_path / 'clinic'
    for side in ('pre', 'post'): shutil.copytree(small_pairs / side, clinic / side, ignore=shutil.ignore_patterns('*.json'))
    rows = (small_pairs / 'doses.csv').read_text().splitlines()
    (clinic / 'doses.csv').write_text('\n'.join(r.rsplit(',', 1)[0] + ',' for r in rows) + '\n')  # sessions only
    Image.open(clinic / 'post' / 'P_00001.png').resize((80, 80)).save(clinic / 'post' / 'P_00001.png')
    (clinic / 'post' / 'P_00002.png').unlink()
    shutil.copy(small_pairs / 'post' / 'P_00000.png', clinic / 'post' / 'P_00005.png')  # another patient's photo
    r = CliRunner().invoke(app, ['treat', 'train', '--data', str(clinic), '--out', str(tmp_path / 'run'), '--method', 'pix2pix', '--preset', 'tiny',
                                 '--steps', '1', '--batch', '2', '--log-every', '1', '--ckpt-every', '1', '--precision', 'fp32',
                                 '--no-progress'])
    assert r.exit_code == 0, r.output
    problems = [l for l in r.output.splitlines() if l.startswith('treat train: pairing problem:')]
    assert problems[:2] == ['treat train: pairing problem: pre/P_00002.png: no post/P_00002.png',
                            'treat train: pairing problem: P_00001.png: pre is 64x64, post is 80x80'], problems
    assert len(problems) == 3 and problems[2].startswith('treat train: pairing problem: P_00005.png: pre and post look like '
                                                         'different faces'), problems
    assert '3 pairing problems' in r.stdout
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['problems'] == [p.split(': ', 2)[2] for p in problems]
