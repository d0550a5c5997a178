"Translate and export a real (tiny, 32 px, 2-step) CycleGAN run: any image size, bad inputs, ONNX/TorchScript parity, model card, CLI."
import contextlib, io, json, shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from cyclegan_pws.cli import app
from cyclegan_pws.checkpoint import CheckpointError
from cyclegan_pws.config import run_config
from cyclegan_pws.cyclegan import train_cyclegan
from cyclegan_pws.data import to_float
from cyclegan_pws.export import export_generators
from cyclegan_pws.io import UserError, sha256_file
from cyclegan_pws.models import build_generator
from cyclegan_pws.predict import load_predictor, translate_folder
from cyclegan_pws.synth import write_synthetic_dataset

onnxruntime = pytest.importorskip('onnxruntime')
pytestmark = pytest.mark.filterwarnings('ignore:.*torch.jit.load.* is deprecated:DeprecationWarning')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A real run folder: tiny preset, 32 px, 2 steps, a checkpoint after each."
    d = tmp_path_factory.mktemp('export')
    write_synthetic_dataset(d / 'data', n=6, size=32, n_pairs=0)
    rc = run_config('tiny', str(d / 'data'), task={'size': 32},
                    train={'steps': 2, 'batch_size': 2, 'log_every': 1, 'ckpt_every': 1, 'keep': 2})
    with contextlib.redirect_stdout(io.StringIO()): train_cyclegan(rc, d / 'run', progress=False)
    return d / 'run'


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
    (run / 'metrics.json').write_text(json.dumps({'clearance_pct_mean': 12.5, 'n_images': 3}))
    out = tmp_path_factory.mktemp('exported')
    return out, export_generators(run, out)


def load_generator(run_or_checkpoint, direction='B2A'):
    "(generator, training size) of a run, through the predictor every caller uses."
    tr = load_predictor(run_or_checkpoint, 'cyclegan', direction)
    return tr.net, tr.size


def _u8(path) -> torch.Tensor: return torch.from_numpy(np.asarray(Image.open(path).convert('RGB')).copy()).permute(2, 0, 1)


def _detail(x: torch.Tensor) -> float:
    "Mean absolute horizontal + vertical pixel difference: how much fine detail an image holds."
    x = x.float()
    return float((x[:, 1:] - x[:, :-1]).abs().mean() + (x[:, :, 1:] - x[:, :, :-1]).abs().mean())


def test_load_generator_reads_safetensors_only(run, tmp_path):
    copy = tmp_path / 'run'; shutil.copytree(run, copy)
    for ck in (copy / 'checkpoints').iterdir(): (ck / 'state.pt').unlink()  # the pickle-based state is never read
    g, size = load_generator(copy, 'B2A')
    assert size == 32 and not g.training
    ref = build_generator('tiny')
    assert not torch.equal(ref.state_dict()['model.1.weight'], g.state_dict()['model.1.weight'])


def test_damaged_newest_checkpoint_falls_back(run, tmp_path):
    copy = tmp_path / 'run'; shutil.copytree(run, copy)
    newest = copy / 'checkpoints' / 'step_00000002' / 'weights.safetensors'
    newest.write_bytes(newest.read_bytes()[:-10])  # truncated
    with pytest.warns(UserWarning, match='step_00000002'): g, _ = load_generator(copy)
    old, _ = load_generator(copy / 'checkpoints' / 'step_00000001')
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), old.state_dict().values()))
    with pytest.raises(CheckpointError, match='checksum mismatch') as e: load_generator(newest.parent)
    assert '\n' not in str(e.value) and str(newest) in str(e.value)


def test_translate_folder_any_size(run, tmp_path):
    src = tmp_path / 'in'; src.mkdir()
    faces = sorted((Path(run_config_root(run)) / 'trainB').glob('*.png'))[:3]
    for p in faces: shutil.copy(p, src / p.name)
    photo = skimage.data.astronaut()[40:340, 120:320]  # 200x300, not square, far above the model's 32 px
    Image.fromarray(photo).save(src / 'astronaut.png')
    (src / 'truncated.png').write_bytes((src / faces[0].name).read_bytes()[:60])
    with pytest.warns(UserWarning, match='truncated.png'):
        r = translate_folder(run, src, tmp_path / 'out', batch_size=2)
    assert (r['translated'], r['resized'], r['skipped']) == (4, 1, 1)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == sorted([p.stem + '.png' for p in faces] + ['astronaut.png'])
    # 32-px crops: what the generator makes of them (within one grey level: a batch of 2 and a batch of 1 take
    # different convolution kernels on some CPUs, which round differently)
    g, _ = load_generator(run)
    with torch.no_grad(): want = ((g(to_float(_u8(faces[0]))[None])[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert (_u8(tmp_path / 'out' / faces[0].name).int() - want.int()).abs().max() <= 1
    # the big photo: full size back, its fine detail kept (a plain upsampling of the 32-px output would lose it)
    inp, out = torch.from_numpy(photo.copy()).permute(2, 0, 1), _u8(tmp_path / 'out' / 'astronaut.png')
    assert out.shape == inp.shape
    small = F.interpolate(to_float(inp)[None], size=(32, 32), mode='bilinear', antialias=True)
    with torch.no_grad(): naive = F.interpolate(g(small), size=inp.shape[-2:], mode='bilinear')[0]
    naive = ((naive.clamp(-1, 1) + 1) * 127.5).round()
    assert _detail(out) > 0.7 * _detail(inp) > 2 * _detail(naive), (_detail(out), _detail(inp), _detail(naive))


def run_config_root(run) -> str: return json.loads((run / 'config.json').read_text())['data']['root']


def test_export_files_match_pytorch(run, exported):
    out, card = exported
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1  # batch 3: the batch axis is dynamic
    for d in ('A2B', 'B2A'):
        g, _ = load_generator(run, d)
        with torch.no_grad(): eager = g(x)
        sess = onnxruntime.InferenceSession(str(out / f'generator_{d}.onnx'), providers=['CPUExecutionProvider'])
        ort = torch.from_numpy(sess.run(None, {'image': x.numpy()})[0])
        assert (ort - eager).abs().max() < 1e-3
        with torch.no_grad(): ts = torch.jit.load(str(out / f'generator_{d}.torchscript.pt'))(x)
        # traced, instance norm runs ATen's kernel; eager on CPU, the same function as a group norm (11_models): last-bit differences
        torch.testing.assert_close(ts, eager, rtol=0, atol=1e-5)
        from safetensors.torch import load_file
        g2 = build_generator('tiny'); g2.load_state_dict(load_file(str(out / f'generator_{d}.safetensors'))); g2.eval()
        with torch.no_grad(): assert torch.equal(g2(x), eager)
        assert card['checks'][d]['onnxruntime_max_abs_diff'] < 1e-3


def test_model_card(run, exported):
    out, card = exported
    assert json.loads((out / 'model_card.json').read_text()) == card
    assert card['step'] == 2 and card['config']['task']['model'] == 'tiny' and card['config']['train']['steps'] == 2
    assert card['data_counts'] == {'trainA': 5, 'trainB': 5, 'testA': 1, 'testB': 1}
    assert card['metrics'] == {'clearance_pct_mean': 12.5, 'n_images': 3}
    assert card['input']['shape'] == ['batch', 3, 32, 32] and card['onnx_opset'] == 17
    assert len(card['files']) == 6
    for name, f in card['files'].items():
        assert f['bytes'] == (out / name).stat().st_size and f['sha256'] == sha256_file(out / name)
    assert not list(out.glob('.*.tmp'))  # atomic writes leave no temp files


def test_cli(run, tmp_path):
    runner = CliRunner()
    src = Path(run_config_root(run)) / 'testB'
    r = runner.invoke(app, ['translate', '--checkpoint', str(run), '--direction', 'B2A', '--in', str(src),
                            '--out', str(tmp_path / 'out'), '--batch-size', '8', '--device', 'cpu'])
    assert r.exit_code == 0 and 'translate B2A: 1 images' in r.stdout, r.output
    r = runner.invoke(app, ['translate', '--checkpoint', str(run), '--direction', 'sideways', '--in', str(src), '--out', str(tmp_path / 'o')])
    assert isinstance(r.exception, UserError) and 'B2A' in str(r.exception)
    r = runner.invoke(app, ['export', '--checkpoint', str(run), '--out', str(tmp_path / 'ex')])
    assert r.exit_code == 0 and 'max abs diff' in r.stdout and (tmp_path / 'ex' / 'generator_B2A.onnx').exists(), r.output
    r = runner.invoke(app, ['export', '--checkpoint', str(tmp_path / 'missing'), '--out', str(tmp_path / 'ex2')])
    assert isinstance(r.exception, UserError) and 'no such run folder' in str(r.exception)
