"""torch_xla on the XLA CPU backend (PJRT_DEVICE=CPU): training runs with no op falling back to the CPU, the number
of compiled graphs stops growing after step 2, no device->host transfer happens inside a step, and SPMD over 2
devices gives the gradients of 1.

Needs torch_xla (a separate environment: `bash tests/run_xla.sh` creates it and runs this file); skipped otherwise.
Each check runs in a fresh process (`python tests/test_xla.py MODE OUT`), since SPMD mode and device counts are
fixed per process."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
try:
    import torch_xla  # noqa: F401
    HAVE_XLA = True
except ImportError:
    HAVE_XLA = False
pytestmark = pytest.mark.skipif(not HAVE_XLA, reason='torch_xla is not importable; run `bash tests/run_xla.sh` (own venv: torch 2.8.0 + torch_xla 2.8.0, as on the Kaggle TPU image)')

STEPS, LOG_EVERY = 6, 3


def _task_and_data(spmd: bool):
    from cyclegan_pws.checkpoint import seed_everything
    from cyclegan_pws.config import CycleGANConfig, ModelConfig, TrainConfig
    from cyclegan_pws.cyclegan import CycleGAN
    # a small ResNet + PatchGAN with the seed/tiny presets' resize-conv up-sampling (NearestUp2x) and DiffAugment's
    # full default policy (translation is a gather, not grid_sample): every op must lower to XLA
    model = ModelConfig('xla-test', 'resnet', 'patch', ngf=8, n_blocks=1, upsample='resize', ndf=8, n_layers=2)
    cfg = CycleGANConfig(model=model, size=32, pool_size=4, augment='ada', policy='color,translation,cutout')
    seed_everything(0); task = CycleGAN(cfg)
    g = torch.Generator().manual_seed(0)
    A = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    B = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    ds = [{'A': a, 'B': b} for a, b in zip(A, B)]
    tc = lambda steps: TrainConfig(steps=steps, batch_size=4, log_every=LOG_EVERY, ckpt_every=LOG_EVERY * 2,
                                   device='xla', precision='bf16' if os.environ.get('XLA_TEST_BF16') else 'fp32', spmd=spmd)
    return task, ds, tc


def worker_train(out):
    "Run STEPS steps; record compiles and device->host transfers after every step."
    import torch_xla.debug.metrics as met
    from cyclegan_pws.engine import fit
    task, ds, tc = _task_and_data(spmd=os.environ.get('XLA_TEST_SPMD') == '1')
    count = lambda name: (met.metric_data(name) or (0,))[0]
    per_step = []
    def on_step(step, task):
        per_step.append({'step': step, 'compiles': count('CompileTime'), 'transfers': count('TransferFromDeviceTime')})
    res = fit(task, ds, tc(STEPS), Path(out).parent / 'run', progress=False, on_step=on_step)
    losses = [json.loads(l)['loss'] for l in (Path(out).parent / 'run' / 'log.jsonl').read_text().splitlines()]
    Path(out).write_text(json.dumps({'res': res, 'per_step': per_step, 'losses': losses,
                                     'fallbacks': sorted(met.executed_fallback_ops())}))


def worker_grads(out):
    "One step; save every gradient (on CPU) for comparison across device counts."
    from cyclegan_pws.engine import fit
    task, ds, tc = _task_and_data(spmd=True)
    grads = {}
    def on_step(step, task):
        grads.update({n: p.grad.detach().to('cpu') for n, p in task.named_parameters() if p.grad is not None})
    fit(task, ds, tc(1), Path(out).parent / 'run', progress=False, on_step=on_step)
    torch.save(grads, out)


def _run(mode, tmp_path, **env):
    out = tmp_path / f'{mode}.out'
    e = {**os.environ, 'PJRT_DEVICE': 'CPU', 'PYTHONPATH': str(ROOT), **env}
    r = subprocess.run([sys.executable, __file__, mode, str(out)], env=e, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    return json.loads(_run('train', tmp_path_factory.mktemp('xla'), CPU_NUM_DEVICES='1', XLA_TEST_SPMD='0').read_text())


def test_training_runs(trained):
    assert trained['res']['status'] == 'done' and trained['res']['step'] == STEPS
    assert all(v == v and abs(v) < 1e4 for rec in trained['losses'] for v in rec.values())  # finite
    assert trained['fallbacks'] == [], f'ops falling back to the CPU (host round trips): {trained["fallbacks"]}'


def test_compile_count_stops_growing_after_step_2(trained):
    c = {r['step']: r['compiles'] for r in trained['per_step']}
    assert c[STEPS] == c[2], f'graphs compiled per step: {c}'
    assert c[STEPS] <= 3, f'{c[STEPS]} graphs compiled (goal: <= 3)'


def test_no_host_transfer_inside_steps(trained):
    t = {r['step']: r['transfers'] for r in trained['per_step']}
    inside = [s for s in range(2, STEPS + 1) if s % LOG_EVERY and t[s] != t[s - 1]]
    assert not inside, f'device->host transfers on non-logging steps {inside}: {t}'


def test_bf16_spmd_two_devices(trained, tmp_path):
    "bf16 autocast on 2 SPMD devices: same graph discipline, losses within 2% of fp32 on 1 device."
    r = json.loads(_run('train', tmp_path, CPU_NUM_DEVICES='2', XLA_TEST_SPMD='1', XLA_TEST_BF16='1').read_text())
    c = {x['step']: x['compiles'] for x in r['per_step']}
    t = {x['step']: x['transfers'] for x in r['per_step']}
    assert c[STEPS] == c[2] <= 3, c
    assert all(t[s] == t[s - 1] for s in range(2, STEPS + 1) if s % LOG_EVERY), t
    assert r['fallbacks'] == [], f'ops falling back to the CPU under bf16 SPMD: {r["fallbacks"]}'
    for a, b in zip(r['losses'], trained['losses']):
        for k in b: assert abs(a[k] - b[k]) <= 0.02 * abs(b[k]), (k, a[k], b[k])


def _conv_bias_before_norm(task) -> set:
    "Names of conv biases directly followed by InstanceNorm: mathematically without effect, their gradient is noise."
    names = set()
    for mn, m in task.named_modules():
        if isinstance(m, torch.nn.Sequential):
            kids = list(m.named_children())
            for (a, x), (_, y) in zip(kids, kids[1:]):
                if isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(y, torch.nn.InstanceNorm2d) and x.bias is not None:
                    names.add(f'{mn}.{a}.bias' if mn else f'{a}.bias')
    return names


def _mk(d):
    d.mkdir(parents=True, exist_ok=True); return d


def test_spmd_two_devices_same_gradients_as_one(tmp_path):
    g1 = torch.load(_run('grads', _mk(tmp_path / 'one'), CPU_NUM_DEVICES='1'), weights_only=True)
    g2 = torch.load(_run('grads', _mk(tmp_path / 'two'), CPU_NUM_DEVICES='2'), weights_only=True)
    task, _, _ = _task_and_data(spmd=False)
    skip = _conv_bias_before_norm(task)
    assert g1.keys() == g2.keys() and len(g1) > 0
    worst = max((float((g1[k] - g2[k]).abs().max()), k) for k in g1 if k not in skip)
    assert worst[0] < 1e-5, f'largest gradient difference 1 vs 2 devices: {worst}'


if __name__ == '__main__':
    {'train': worker_train, 'grads': worker_grads}[sys.argv[1]](sys.argv[2])
