"CycleGAN through the engine on CPU: exact resume, bf16, SIGTERM, damaged checkpoints (tiny preset, 32 px)."
import json, os, signal, subprocess, sys, time, warnings
from pathlib import Path

import pytest

from cyclegan_pws.checkpoint import seed_everything, list_checkpoints
from cyclegan_pws.config import run_config
from cyclegan_pws.cyclegan import CycleGAN, train_cyclegan
from cyclegan_pws.synth import write_synthetic_dataset
from conftest import fit_until, assert_same_training_state

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    write_synthetic_dataset(d, n=6, size=32, test_frac=0.2, n_pairs=0)
    return d


def _rc(data, steps=4, **train):
    # pool of 2 with batch 2: the pool is full after step 1, so later steps swap images (random, on the state)
    return run_config('tiny', str(data), task={'size': 32, 'pool_size': 2, 'augment': 'ada'},
                      train={'steps': steps, 'batch_size': 2, 'log_every': 1, 'ckpt_every': 1, 'keep': 2, 'precision': 'fp32', **train})


def _train(rc, out, stop_at=None, resume=None):
    from cyclegan_pws.data import UnpairedDataset
    seed_everything(rc.train.seed); task = CycleGAN(rc.task, seed=rc.train.seed)
    ds = UnpairedDataset(rc.data.root, 'train', 32, flip=True, seed=rc.train.seed)
    return fit_until(task, ds, rc.train, out, stop_at, resume)


@pytest.mark.parametrize('precision', ['fp32', 'bf16', 'fp16'])
def test_resume_is_bit_identical(data, tmp_path, precision):
    rc = _rc(data, precision=precision)  # 4 steps > 1 epoch (3 steps): the resume crosses an epoch boundary
    straight = _train(rc, tmp_path / 'a')
    _train(rc, tmp_path / 'b', stop_at=2)
    resumed = _train(rc, tmp_path / 'b', resume='auto')
    assert_same_training_state(straight, resumed)


def test_bf16_on_cpu_steps_channels_last(data):
    "bf16 on a CPU runs channels-last by default: the same networks and step as the default layout, to bf16 rounding."
    import torch
    from cyclegan_pws.config import CycleGANConfig
    from cyclegan_pws.engine import Runner
    g = torch.Generator().manual_seed(0)
    # two images with very different statistics: a norm that mixed the batch's images would show
    x = torch.cat([torch.rand(1, 3, 32, 32, generator=g) * 0.2 - 0.9, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1])
    task = CycleGAN(CycleGANConfig(model='tiny', size=32), seed=0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y_cl, y = task.G_BA(x.contiguous(memory_format=torch.channels_last)), task.G_BA(x)
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and (y_cl.float() - y.float()).abs().max() <= 1e-2
    batch = {k: (torch.rand(2, 3, 32, 32, generator=g) * torch.tensor([60., 255.]).view(2, 1, 1, 1)).to(torch.uint8) for k in 'AB'}
    run, losses = Runner('cpu', 'bf16'), {}
    for cl in (None, False):
        t = CycleGAN(CycleGANConfig(model='tiny', size=32, pool_size=2, channels_last=cl), seed=0)
        assert t.memory_format(run) == (torch.channels_last if cl is None else torch.contiguous_format)
        losses[cl] = {k: float(v) for k, v in t.step(batch, run).items()}
        w = t.G_BA.model[1].weight  # the stem's 7x7 convolution's: the weights follow the run's layout
        assert (w.is_contiguous(memory_format=torch.channels_last), w.is_contiguous()) == ((True, False) if cl is None else (False, True))
    assert task.memory_format(Runner('cpu', 'fp32')) == torch.contiguous_format  # fp32: the default layout
    for k, v in losses[False].items(): assert abs(losses[None][k] - v) <= 0.01 * abs(v) + 1e-3, (k, losses)


def test_damaged_newest_checkpoint_falls_back(data, tmp_path):
    rc = _rc(data, steps=3)
    _train(rc, tmp_path, stop_at=2)
    cks = list_checkpoints(tmp_path / 'checkpoints')
    assert [c.name for c in cks] == ['step_00000001', 'step_00000002']
    (cks[-1] / 'weights.safetensors').write_bytes(b'truncated')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        _train(rc, tmp_path, resume='auto')
    assert any('damaged' in str(x.message) for x in w)
    log = [json.loads(l) for l in (tmp_path / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in log] == [1, 2, 3]  # resumed from step 1: the log after it was rewritten


def test_kaggle_input_checkpoint_is_found(data, tmp_path, monkeypatch):
    rc = _rc(data, steps=2)
    _train(rc, tmp_path / 'kaggle' / 'prev-kernel' / 'run', stop_at=1)
    monkeypatch.setenv('CYCLEGAN_PWS_KAGGLE_INPUT', str(tmp_path / 'kaggle'))
    out = tmp_path / 'new'
    _train(rc, out, resume='auto')
    assert [r['step'] for r in map(json.loads, (out / 'log.jsonl').read_text().splitlines())] == [2]


def test_sigterm_saves_and_exits_cleanly(data, tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    cmd = [sys.executable, '-c', 'from cyclegan_pws.cli import main; main()', 'train', '--data', str(data),
           '--out', str(tmp_path), '--preset', 'tiny', '--size', '32', '--steps', '1000', '--batch', '2',
           '--log-every', '1', '--ckpt-every', '1', '--precision', 'fp32', '--no-progress']
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (tmp_path / 'checkpoints').is_dir() and time.time() - t0 < 120: time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert 'stopped at step' in out and 'SIGTERM' in out
    assert 'train: stopped' in out


def test_nonfinite_loss_names_the_step(data, tmp_path):
    rc = run_config('tiny', str(data), task={'size': 32, 'lr_g': 1e30, 'lr_d': 1e30},
                    train={'steps': 6, 'batch_size': 2, 'log_every': 1, 'ckpt_every': 1, 'precision': 'fp32'})
    with pytest.raises(RuntimeError, match=r'step \d+: (loss \w+ is (nan|inf)|weights are NaN/Inf)'):
        train_cyclegan(rc, tmp_path, progress=False)
