"""This project's CycleGAN training step side by side with the reference implementation's own
`CycleGANModel.optimize_parameters` (junyanz/pytorch-CycleGAN-and-pix2pix): the same networks (ResNet-9 ngf64
generators, 70x70 PatchGAN discriminators, instance norm), batch 1, LSGAN, identity loss on, pool of 50, in one
process, interleaved step by step (noise on a shared machine hits every variant alike).

    git clone https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix /tmp/cyclegan-ref
    python benchmarks/vs_reference.py --ref /tmp/cyclegan-ref                      # CPU, 128 and 256 px
    python benchmarks/vs_reference.py --ref /tmp/cyclegan-ref --sizes 128 --steps 5 --json vs_ref.json
    python benchmarks/vs_reference.py --ref /tmp/cyclegan-ref --device cuda --steps 20 --batches 1,max
    git archive main cyclegan_pws | tar -x -C /tmp/before     # this project at another commit, for before/after rows
    python benchmarks/vs_reference.py --ref /tmp/cyclegan-ref --baseline /tmp/before

Variants (rows):
- `ref_fp32`: the reference's `optimize_parameters()`, as its `train.py` calls it;
- `ref_autocast`: the same, wrapped in plain `torch.autocast` (bf16; fp16 on GPUs older than Ampere): the one-line
  change anyone would try first. On a CPU without native bf16 (no AMX/AVX512-BF16) it is left out;
- `project_fp32`, `project_<bf16|fp16>`: this project's `CycleGAN.step` under its `Runner` (what `train` runs);
- `baseline_fp32`, `baseline_<bf16|fp16>` with `--baseline PATH`: the same from another checkout of this project
  (imported under another name, so both run in one process).
Without `--ref` the reference cannot be imported: the script says so and times this project's own networks called
in the reference's order (`refnets_fp32`, `refnets_autocast`: 6 generator and 6 discriminator calls, a list pool)
instead. The reference's code is read from your checkout, never copied into this repository.

`--batches`: images per step (the reference trains with 1); `max` is the largest power of two up to `--max-batch` at which
one step of every variant fits in the GPU's memory (each tried from the top, halving on out-of-memory).

Every row runs in this one process with what `train` sets up on a CPU: denormals flushed to zero and glibc keeping
freed memory for reuse (`keep_freed_memory`), which speed up the reference's steps as much as this project's.

Columns: size, batch, s_per_iter (fastest timed step, the least disturbed; median_s too), x_ref_fp32 and x_ref_autocast = how many
times faster than those rows, GFLOP/s = FLOPs of one iteration (torch's flop counter, convolutions and matmuls) /
s_per_iter. On CUDA the steps are synchronised before and after timing; `--device cuda` needs a visible GPU.
"""
import argparse, contextlib, io, itertools, json, os, random, sys, tempfile, time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from cyclegan_pws.config import CycleGANConfig
from cyclegan_pws.cyclegan import CycleGAN
from cyclegan_pws.data import to_float
from cyclegan_pws.engine import Runner, keep_freed_memory
from cyclegan_pws.losses import d_loss, g_loss
from cyclegan_pws.models import n_params


def low_precision(device: str):
    "The autocast dtype worth timing here (None: none is fast on this hardware)."
    if device == 'cuda': return torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def reference_options(device: str, checkpoints: str) -> SimpleNamespace:
    "The reference's training options for `train.py --model cycle_gan` with its defaults (batch 1, pool 50, identity 0.5)."
    return SimpleNamespace(
        isTrain=True, gpu_ids=[0] if device == 'cuda' else [], device=torch.device(device), checkpoints_dir=checkpoints,
        name='vs_reference', preprocess='resize_and_crop', resize_or_crop='resize_and_crop', input_nc=3, output_nc=3,
        ngf=64, ndf=64, netG='resnet_9blocks', netD='basic', n_layers_D=3, norm='instance', no_dropout=True,
        init_type='normal', init_gain=0.02, lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5, pool_size=50,
        gan_mode='lsgan', no_lsgan=False, lr=0.0002, beta1=0.5, direction='AtoB', model='cycle_gan', batch_size=1,
        continue_train=False, verbose=False, lr_policy='linear', epoch_count=1, n_epochs=100, n_epochs_decay=100,
        niter=100, niter_decay=100, load_iter=0, epoch='latest')


class Reference:
    "The reference's CycleGANModel, imported from the checkout at `path`; `step(batch)` = set_input + optimize_parameters."
    def __init__(self, path: str, device: str, autocast_dtype=None):
        if path not in sys.path: sys.path.insert(0, path)
        from models.cycle_gan_model import CycleGANModel  # the reference's own code, from the user's clone
        self.device, self.dtype, self.tmp = device, autocast_dtype, tempfile.TemporaryDirectory()
        opt = reference_options(device, self.tmp.name)
        with contextlib.redirect_stdout(io.StringIO()):
            self.model = CycleGANModel(opt)
            self.model.setup(opt)                             # as its train.py does: nets onto the GPU, schedulers
        self.params = {n: n_params(getattr(self.model, 'net' + n)) for n in ('G_A', 'D_A')}

    def step(self, batch: dict):
        self.model.set_input({'A': to_float(batch['A']), 'B': to_float(batch['B']), 'A_paths': ['a'], 'B_paths': ['b']})
        with torch.autocast(self.device, dtype=self.dtype, enabled=self.dtype is not None):
            self.model.optimize_parameters()


class RefOrder:
    "This project's networks called in the reference's order (4 G calls, 2 identity calls, D on real and fake separately)."
    def __init__(self, size: int, device: str, autocast_dtype=None):
        t = CycleGAN(CycleGANConfig(model='paper', size=size, augment='none'), seed=0).to(device)
        self.nets, self.device, self.dtype = t, device, autocast_dtype
        self.opt_G = torch.optim.Adam(itertools.chain(t.G_AB.parameters(), t.G_BA.parameters()), lr=2e-4, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(itertools.chain(t.D_A.parameters(), t.D_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        self.pools = ([], [])
        self.params = {'G_A': n_params(t.G_AB), 'D_A': n_params(t.D_A)}

    def _pool(self, pool: list, x):
        "The reference's list pool: fill to 50, then with probability 1/2 swap for a random stored image."
        if len(pool) < 50: pool.append(x.detach().clone()); return x.detach()
        if random.uniform(0, 1) > 0.5:
            i = random.randint(0, 49); old = pool[i].clone(); pool[i] = x.detach().clone(); return old
        return x.detach()

    def step(self, batch: dict):
        t, ac = self.nets, lambda: torch.autocast(self.device, dtype=self.dtype, enabled=self.dtype is not None)
        A, B = to_float(batch['A']), to_float(batch['B'])
        with ac():
            fB = t.G_AB(A); rA = t.G_BA(fB); fA = t.G_BA(B); rB = t.G_AB(fA)
            for p in itertools.chain(t.D_A.parameters(), t.D_B.parameters()): p.requires_grad_(False)
            self.opt_G.zero_grad()
            l1 = torch.nn.functional.l1_loss
            loss = (l1(t.G_AB(B), B) * 5 + l1(t.G_BA(A), A) * 5 + g_loss(t.D_B(fB)) + g_loss(t.D_A(fA))
                    + l1(rA, A) * 10 + l1(rB, B) * 10)
            loss.backward(); self.opt_G.step()
            for p in itertools.chain(t.D_A.parameters(), t.D_B.parameters()): p.requires_grad_(True)
            self.opt_D.zero_grad()
            d_loss(t.D_B(B), t.D_B(self._pool(self.pools[1], fB))).backward()
            d_loss(t.D_A(A), t.D_A(self._pool(self.pools[0], fA))).backward()
            self.opt_D.step()


def import_baseline(path: str) -> SimpleNamespace:
    "The `cyclegan_pws` package of another checkout at `path`, imported as `cyclegan_pws_baseline` (its imports are relative)."
    import importlib, importlib.util
    pkg = os.path.join(path, 'cyclegan_pws')
    spec = importlib.util.spec_from_file_location('cyclegan_pws_baseline', os.path.join(pkg, '__init__.py'), submodule_search_locations=[pkg])
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    m = lambda name: importlib.import_module(f'cyclegan_pws_baseline.{name}')
    return SimpleNamespace(CycleGAN=m('cyclegan').CycleGAN, CycleGANConfig=m('config').CycleGANConfig, Runner=m('engine').Runner)


class Project:
    "This project's training step (`CycleGAN.step` under a `Runner`), as `cyclegan-pws train` runs it (or `lib`'s)."
    def __init__(self, size: int, device: str, precision: str, lib=None):
        lib = lib or SimpleNamespace(CycleGAN=CycleGAN, CycleGANConfig=CycleGANConfig, Runner=Runner)
        self.task = lib.CycleGAN(lib.CycleGANConfig(model='paper', size=size, augment='none'), seed=0).to(device)
        self.run = lib.Runner(device, precision)
        self.params = {'G_A': n_params(self.task.G_AB), 'D_A': n_params(self.task.D_A)}

    def step(self, batch: dict):
        self.task.step(batch, self.run); self.run.end_step()


def _sync(device):
    if device == 'cuda': torch.cuda.synchronize()


def make_variants(size: int, device: str, ref: str | None, baseline=None) -> dict:
    "name -> an object with `step(batch)`, as the hardware allows."
    lp = low_precision(device)
    lp_name = {torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(lp)
    v = {}
    if ref:
        v['ref_fp32'] = Reference(ref, device)
        if lp: v['ref_autocast'] = Reference(ref, device, lp)
    else:
        v['refnets_fp32'] = RefOrder(size, device)
        if lp: v['refnets_autocast'] = RefOrder(size, device, lp)
    if baseline:
        v['baseline_fp32'] = Project(size, device, 'fp32', baseline)
        if lp: v[f'baseline_{lp_name}'] = Project(size, device, lp_name, baseline)
    v['project_fp32'] = Project(size, device, 'fp32')
    if lp: v[f'project_{lp_name}'] = Project(size, device, lp_name)
    return v


def iteration_flops(variant, batch) -> float:
    "FLOPs of one step of `variant` (torch's flop counter)."
    with FlopCounterMode(display=False) as fc: variant.step(batch)
    return fc.get_total_flops()


def random_batches(n: int, batch: int, size: int, device: str, seed: int = 0) -> list[dict]:
    "`n` batches of random uint8 images A and B, (batch, 3, size, size), on `device`."
    g = torch.Generator().manual_seed(seed)
    return [{k: torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8).to(device) for k in 'AB'}
            for _ in range(n)]


def largest_batch(variants: dict, size: int, device: str, top: int) -> int:
    "The largest power of two <= `top` at which one step of every variant runs without running out of memory."
    batch = 1 << (top.bit_length() - 1)
    while batch > 1:
        try:
            for v in variants.values(): v.step(random_batches(1, batch, size, device)[0])
            return batch
        except torch.OutOfMemoryError: batch //= 2
        finally: torch.cuda.empty_cache() if device == 'cuda' else None
    return 1


def bench(size: int, device: str, ref, steps: int, warmup: int, baseline=None, seed: int = 0, batch=1, max_batch: int = 64) -> list[dict]:
    variants = make_variants(size, device, ref, baseline)
    if batch == 'max': batch = largest_batch(variants, size, device, max_batch)
    data = random_batches(warmup + steps, batch, size, device, seed)
    flops = {k: iteration_flops(v, data[0]) for k, v in variants.items()}  # also the first warm-up step
    times = {k: [] for k in variants}
    for i, b in enumerate(data):
        for k, v in variants.items():  # interleaved: every variant sees the same batches and the same machine load
            random.seed(i); torch.manual_seed(i)
            _sync(device); t = time.perf_counter()
            v.step(b)
            _sync(device); dt = time.perf_counter() - t
            if i >= warmup: times[k].append(dt)
    base = [k for k in variants if k.endswith('_fp32') and not k.startswith('project')][0]
    auto = [k for k in variants if k.endswith('_autocast')]
    rows = []
    for k, v in variants.items():
        s = min(times[k])
        rows.append({'size': size, 'batch': batch, 'device': device, 'variant': k, 's_per_iter': round(s, 3),
                     'median_s': round(sorted(times[k])[len(times[k]) // 2], 3),
                     'x_ref_fp32': round(min(times[base]) / s, 2),
                     'x_ref_autocast': round(min(times[auto[0]]) / s, 2) if auto else None,
                     'gflop_per_iter': round(flops[k] / 1e9, 1), 'gflops': round(flops[k] / 1e9 / s, 1),
                     'params_G': v.params['G_A'], 'params_D': v.params['D_A']})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--ref', default=None, help='a checkout of junyanz/pytorch-CycleGAN-and-pix2pix (git clone)')
    ap.add_argument('--sizes', default='128,256')
    ap.add_argument('--batches', default='1', help="images per step, comma-separated; 'max': the largest that fits (GPU)")
    ap.add_argument('--max-batch', type=int, default=64, help="where 'max' starts looking")
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1, help='untimed steps first (oneDNN/cuDNN pick their kernels then)')
    ap.add_argument('--baseline', default=None, help='another checkout of this project (e.g. main), timed alongside as baseline_*')
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--json', default=None, help='also write the results here')
    a = ap.parse_args()
    if a.device == 'cuda' and not torch.cuda.is_available(): raise SystemExit('--device cuda: no CUDA GPU is visible here')
    if a.ref and not os.path.isfile(os.path.join(a.ref, 'models', 'cycle_gan_model.py')):
        raise SystemExit(f'--ref {a.ref}: no models/cycle_gan_model.py there; git clone https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix')
    if not a.ref:
        print('no --ref given: the reference implementation is not imported; comparing with this project\'s own networks '
              'called in the reference\'s order (refnets_*). For the real thing: git clone '
              'https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix and pass --ref PATH', file=sys.stderr)
    if a.threads: torch.set_num_threads(a.threads)
    if a.device == 'cpu': torch.set_flush_denormal(True)  # as the engine does (and fair to the reference: its denormals too)
    kept = a.device == 'cpu' and keep_freed_memory()  # as `start_run` does on CPU; one process: the reference's steps gain too
    load = os.getloadavg()[0]
    baseline = import_baseline(a.baseline) if a.baseline else None
    batches = [b if b == 'max' else int(b) for b in a.batches.split(',')]
    if 'max' in batches and a.device != 'cuda': raise SystemExit("--batches max: only on a GPU, whose memory sets it; on a CPU give a number")
    rows = [r for size in map(int, a.sizes.split(',')) for b in batches
            for r in bench(size, a.device, a.ref, a.steps, a.warmup, baseline, batch=b, max_batch=a.max_batch)]
    cols = ['size', 'batch', 'variant', 's_per_iter', 'median_s', 'x_ref_fp32', 'x_ref_autocast', 'gflop_per_iter', 'gflops']
    print(' | '.join(f'{c:>14}' for c in cols))
    for r in rows: print(' | '.join(f'{str(r[c]):>14}' for c in cols))
    res = {'torch': torch.__version__, 'device': a.device, 'threads': torch.get_num_threads(), 'steps': a.steps,
           'cpu': torch.backends.cpu.get_cpu_capability(), 'native_bf16': torch.ops.mkldnn._is_mkldnn_bf16_supported(),
           'gpu': torch.cuda.get_device_name() if a.device == 'cuda' else None, 'reference': a.ref, 'baseline': a.baseline,
           'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'), 'keep_freed_memory': kept, 'load_before': round(load, 2),
           'load_after': round(os.getloadavg()[0], 2), 'rows': rows}
    print(json.dumps(res))
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
