"""The multi-process (DDP) path on CPU: `torchrun --nproc_per_node 2` with the gloo backend. Two processes with
half the batch each must end with the weights of one process with the whole batch (gradients are averaged
across processes before every optimizer step), identical on both ranks; only rank 0 writes the run folder."""
import os, socket, subprocess, sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cyclegan_pws.checkpoint import seed_everything  # noqa: E402
from cyclegan_pws.config import TrainConfig  # noqa: E402
from cyclegan_pws.engine import Task, fit  # noqa: E402


class Regression(Task):
    "Deterministic: a linear model, mean squared error, Adam; the full-batch gradient is the mean of half-batch ones."
    networks = ('net',)
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.05)
    def optimizers(self): return {'net': self.opt}
    def step(self, batch, run):
        self.opt.zero_grad(set_to_none=True)
        with run.autocast(): loss = (self.net(batch['x']).squeeze(1) - batch['y']).pow(2).mean()
        run.backward(loss); run.step(self.opt)
        return {'mse': loss.detach()}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    return [{'x': a, 'y': a @ torch.tensor([1., -2., 3., 0.5]) + 1} for a in x]


def worker(out):
    seed_everything(0); task = Regression()
    fit(task, _data(), TrainConfig(steps=6, batch_size=8, log_every=2, ckpt_every=6, device='cpu', precision='fp32'), Path(out) / 'run', progress=False)
    rank = int(os.environ.get('RANK', '0'))
    torch.save({k: v.clone() for k, v in task.state_dict().items()}, Path(out) / f'rank{rank}.pt')


def worker_cyclegan(out):
    "Tiny CycleGAN with ADA: every rank must hold the same weights and the same augmentation probability."
    from cyclegan_pws.config import run_config
    from cyclegan_pws.cyclegan import CycleGAN
    rc = run_config('tiny', 'unused', task={'size': 32, 'pool_size': 2, 'augment': 'ada'},
                    train={'steps': 2, 'batch_size': 4, 'log_every': 1, 'ckpt_every': 2, 'device': 'cpu', 'precision': 'fp32'})
    seed_everything(0); task = CycleGAN(rc.task)
    g = torch.Generator().manual_seed(0)
    data = [{'A': torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8),
             'B': torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)} for _ in range(8)]
    task.ada.interval = 3  # no update within the 2 steps: the accumulators show what each rank counted
    fit(task, data, rc.train, Path(out) / 'run', progress=False)
    rank = int(os.environ.get('RANK', '0'))
    torch.save({k: v.clone() for k, v in task.state_dict().items() if not k.startswith('pool')}, Path(out) / f'rank{rank}.pt')


def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _env():
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    env.pop('WORLD_SIZE', None); env.pop('RANK', None)
    return env


def _torchrun(out, *args):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
                           '--master_port', str(_free_port()), __file__, str(out), *args], env=_env(), capture_output=True,
                          text=True, timeout=300)


def test_two_processes_match_one(tmp_path):
    env = _env()
    one, two = tmp_path / 'one', tmp_path / 'two'
    r = subprocess.run([sys.executable, __file__, str(one)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _torchrun(two)
    assert r.returncode == 0, r.stderr[-2000:]
    w1, r0, r1 = (torch.load(p, weights_only=True) for p in (one / 'rank0.pt', two / 'rank0.pt', two / 'rank1.pt'))
    for k in w1:
        assert torch.equal(r0[k], r1[k]), f'{k} differs between ranks'
        torch.testing.assert_close(r0[k], w1[k], rtol=1e-5, atol=1e-6)
    assert (two / 'run' / 'checkpoints' / 'step_00000006' / 'meta.json').exists()
    assert len((two / 'run' / 'log.jsonl').read_text().splitlines()) == 3  # one writer: rank 0


def test_cyclegan_ranks_agree(tmp_path):
    r = _torchrun(tmp_path, 'cyclegan')
    assert r.returncode == 0, r.stderr[-2000:]
    r0, r1 = (torch.load(tmp_path / f'rank{i}.pt', weights_only=True) for i in (0, 1))
    # ADA counted the global batch (2 steps x 2 discriminators x 4 images), not each rank's half of it...
    assert float(r0['ada.n_imgs']) == 16, float(r0['ada.n_imgs'])
    # ...so weights and ADA's statistics agree on both ranks
    for k in r0: assert torch.equal(r0[k], r1[k]), f'{k} differs between ranks'


if __name__ == '__main__':
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    (worker_cyclegan if sys.argv[2:] == ['cyclegan'] else worker)(sys.argv[1])
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
