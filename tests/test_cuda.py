"""The engine on a CUDA GPU: CycleGAN trains in fp32, bf16 and fp16 (loss scaling), matches the CPU on its first
step, resumes exactly, and `auto` picks the precision the card computes fast. Skipped where no GPU is visible
(CI has none; run `python -m pytest tests/test_cuda.py` on a GPU machine)."""
import json

import pytest
import torch

from cyclegan_pws.checkpoint import read_checkpoint, list_checkpoints, seed_everything
from cyclegan_pws.config import CycleGANConfig, run_config
from cyclegan_pws.cyclegan import CycleGAN, sample_faces, train_cyclegan
from cyclegan_pws.data import UnpairedDataset
from cyclegan_pws.engine import Runner, resolve_precision
from cyclegan_pws.predict import translate_folder
from cyclegan_pws.synth import write_synthetic_dataset
from conftest import fit_until, assert_same_training_state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA GPU')
SIZE = 64


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    write_synthetic_dataset(d, n=12, size=SIZE, test_frac=0.25, n_pairs=0)
    return d


def _rc(data, **train):
    return run_config('tiny', str(data), task={'size': SIZE, 'pool_size': 4, 'augment': 'ada'},
                      train={'steps': 6, 'batch_size': 4, 'log_every': 1, 'ckpt_every': 1, 'keep': 2, 'device': 'cuda', **train})


def test_auto_precision_follows_the_card():
    major = torch.cuda.get_device_capability()[0]
    assert resolve_precision('auto', 'cuda') == ('bf16' if major >= 8 else 'fp16')


@pytest.mark.parametrize('precision', ['fp32', 'bf16', 'fp16'])
def test_trains_and_translates(data, tmp_path, precision):
    res = train_cyclegan(_rc(data, precision=precision), tmp_path / 'run', progress=False)
    assert res['status'] == 'done' and res['step'] == 6
    recs = [json.loads(l) for l in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    assert len(recs) == 6 and all(all(v == v and abs(v) < 1e6 for v in r['loss'].values()) for r in recs)
    state = read_checkpoint(list_checkpoints(tmp_path / 'run' / 'checkpoints')[-1])[1]
    assert 'cuda' in state['rng']                              # the GPU generator is part of an exact resume
    assert ('scaler' in state['runner']) == (precision == 'fp16')
    counts = translate_folder(tmp_path / 'run', data / 'testB', tmp_path / 'pred', 'B2A', device='cuda')
    assert counts['translated'] == 3


def test_first_step_matches_cpu(data):
    "Same weights, same batch, fp32 with TF32 off: the losses of the first step agree with the CPU's."
    batch = sample_faces(data, SIZE, n=4)
    cfg = CycleGANConfig(model='tiny', size=SIZE, augment='none', pool_size=0)
    losses = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for dev in ('cpu', 'cuda'):
            seed_everything(0); task = CycleGAN(cfg, seed=0).to(dev)
            out = task.step({k: v.to(dev) for k, v in batch.items()}, Runner(dev, 'fp32'))
            losses[dev] = {k: float(v) for k, v in out.items()}
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    for k, v in losses['cpu'].items(): assert abs(losses['cuda'][k] - v) <= 1e-4 * max(abs(v), 1), (k, v, losses['cuda'][k])


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_resume_is_exact(data, tmp_path, precision, monkeypatch):
    "6 steps straight = 3 + stop + resume 3, with deterministic kernels (cuDNN and cuBLAS pick no racing algorithms)."
    monkeypatch.setenv('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)  # reflection-pad backward has no deterministic CUDA kernel
    try:
        rc = _rc(data, precision=precision)
        def run(out, stop_at=None, resume=None):
            seed_everything(0); task = CycleGAN(rc.task, seed=0)
            ds = UnpairedDataset(rc.data.root, 'train', SIZE, flip=True, seed=rc.train.seed)
            return fit_until(task, ds, rc.train, out, stop_at, resume)
        straight = run(tmp_path / 'a')
        again = run(tmp_path / 'b')
        run(tmp_path / 'c', stop_at=3); resumed = run(tmp_path / 'c', resume='auto')
    finally:
        torch.use_deterministic_algorithms(False); torch.backends.cudnn.deterministic = False
    try: assert_same_training_state(straight, again)
    except AssertionError: pytest.skip('two identical runs already differ on this GPU (atomic-add kernels); exactness untestable')
    assert_same_training_state(straight, resumed)
