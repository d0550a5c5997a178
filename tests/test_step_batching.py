"""The CycleGAN step calls each network on batches of several image sets at once (a generator on its input and its
identity image, a discriminator on reals and pooled fakes). Every layer works per image, so this must give the
losses and gradients of one call per image set, the unbatched step written out below, to float rounding; and the
image pool's row writes must store and return exactly what rewriting the whole pool did.

"Float rounding" is measured, not guessed: in fp32 the paper preset's gradients at 32 px are ~1e-2 away from the exact
(fp64) ones, and which way they round depends on the CPU's convolution kernels (AVX2 and AMX differ). So both steps
are compared with the fp64 unbatched step, and the batched one may be no further from it than the fp32 unbatched one."""
import copy
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F

from cyclegan_pws.config import MODEL_PRESETS, CycleGANConfig
from cyclegan_pws.cyclegan import CycleGAN, ImagePool
from cyclegan_pws.data import to_float
from cyclegan_pws.engine import Runner
from cyclegan_pws.losses import d_loss, g_loss


def unbatched_losses(t: CycleGAN, batch: dict, dtype=torch.float32) -> tuple:
    "(G loss, its parts, D loss, its parts) with one network call per image set, in the reference's order, in `dtype`."
    c = t.cfg
    A, B = to_float(batch['A']).to(dtype), to_float(batch['B']).to(dtype)
    fB, fA = t.G_AB(A), t.G_BA(B)
    adv = g_loss(t.D_B(fB), c.loss) + g_loss(t.D_A(fA), c.loss)
    cycle = F.l1_loss(t.G_BA(fB), A)
    lam_B = c.lambda_cycle if c.lambda_cycle_B is None else c.lambda_cycle_B
    cyc_B = F.l1_loss(t.G_AB(fA), B)
    idt = F.l1_loss(t.G_AB(B), B) + F.l1_loss(t.G_BA(A), A)
    loss_G = adv + c.lambda_cycle * cycle + lam_B * cyc_B + c.lambda_cycle * c.lambda_identity * idt
    old_A, old_B = t.pool_A(fA.detach()), t.pool_B(fB.detach())  # the first queries fill the pools: the fakes as they are
    loss_DA, loss_DB = d_loss(t.D_A(A), t.D_A(old_A), c.loss), d_loss(t.D_B(B), t.D_B(old_B), c.loss)
    return loss_G, {'G_adv': adv, 'cycle': cycle + cyc_B, 'idt': idt}, loss_DA + loss_DB, {'D_A': loss_DA, 'D_B': loss_DB}


def grads(loss, nets) -> list:
    "Gradient of `loss` w.r.t. every parameter of `nets`, one flat tensor per network."
    params = [p for n in nets for p in n.parameters()]
    gs = torch.autograd.grad(loss, params)
    out, i = [], 0
    for n in nets:
        k = len(list(n.parameters()))
        out.append(torch.cat([g.flatten() for g in gs[i:i + k]])); i += k
    return out


VIT_RESIDUAL = asdict(replace(MODEL_PRESETS['tiny'], discriminator='vit', residual=True))  # every D kind, the residual G


@pytest.mark.parametrize('model,size,batch', [('paper', 32, 1), ('tiny', 32, 2), ('seed', 64, 2), (VIT_RESIDUAL, 32, 2)])
def test_first_step_matches_unbatched(model, size, batch):
    torch.manual_seed(0)
    task = CycleGAN(CycleGANConfig(model=model, size=size, augment='none', pool_size=4), seed=0)
    ref, exact = copy.deepcopy(task), copy.deepcopy(task).double()
    g = torch.Generator().manual_seed(1)
    b = {k: torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8) for k in 'AB'}
    run = Runner('cpu', 'fp32')
    # the task's own generator and discriminator losses (D frozen for G's gradients, as in the engine's step)
    loss_G, logs, made = task.generator_loss(b, run)
    gG = grads(loss_G, [task.G_AB, task.G_BA])
    loss_D, d_logs = task.discriminator_loss(b, run, made)
    gD = grads(loss_D, [task.D_A, task.D_B])
    r_G, r_logs, r_D, r_dlogs = unbatched_losses(ref, b)
    rG, rD = grads(r_G, [ref.G_AB, ref.G_BA]), grads(r_D, [ref.D_A, ref.D_B])
    e_G, _, e_D, _ = unbatched_losses(exact, b, torch.float64)
    eG, eD = grads(e_G, [exact.G_AB, exact.G_BA]), grads(e_D, [exact.D_A, exact.D_B])
    for got, want in [(loss_G, r_G), (loss_D, r_D)] + [(v, r_logs[k]) for k, v in logs.items()] + [(v, r_dlogs[k]) for k, v in d_logs.items()]:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    off = lambda g, e: float((g.double() - e).norm() / e.norm())   # whole-network gradient: relative error of the vector
    for got, fp32, e in zip(gG + gD, rG + rD, eG + eD):
        assert off(got, e) <= 2 * off(fp32, e) + 1e-5, (off(got, e), off(fp32, e))
    assert set(logs) == {'G_adv', 'cycle', 'idt'} and set(d_logs) == {'D_A', 'D_B'}


def test_identity_off_and_one_cycle():
    "Without the identity loss each generator runs alone; lambda_cycle_B=0 drops the second cycle call."
    cfg = CycleGANConfig(model='tiny', size=32, augment='none', lambda_identity=0.0, lambda_cycle_B=0.0)
    task = CycleGAN(cfg, seed=0)
    calls = []
    for name in ('G_AB', 'G_BA'): getattr(task, name).register_forward_hook(lambda m, i, o, n=name: calls.append((n, i[0].shape[0])))
    b = {k: torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8) for k in 'AB'}
    loss, logs, made = task.generator_loss(b, Runner())
    assert calls == [('G_BA', 2), ('G_AB', 2), ('G_BA', 2)] and 'idt' not in logs


def test_generator_and_discriminator_calls_are_batched():
    "Three generator calls (on twice and three times the batch, then the batch) and four discriminator calls per step, instead of six and six."
    task = CycleGAN(CycleGANConfig(model='tiny', size=32, augment='none'), seed=0)
    calls = []
    for name in ('G_AB', 'G_BA', 'D_A', 'D_B'):
        getattr(task, name).register_forward_hook(lambda m, i, o, n=name: calls.append((n, i[0].shape[0])))
    task.step({k: torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8) for k in 'AB'}, Runner())
    assert calls == [('G_BA', 6), ('G_AB', 9), ('D_B', 3), ('D_A', 3), ('G_BA', 3), ('D_A', 6), ('D_B', 6)], calls


class OneHotPool(ImagePool):
    "The pool as it was: every write rewrites all rows through one-hot matrix products (the specification)."
    def _write(self, rows, mask, x):
        onehot = F.one_hot(rows, self.size).to(x.dtype) * mask[:, None].to(x.dtype)
        keep = 1 - onehot.sum(0)
        self.images.copy_(self.images * keep.view(-1, *[1] * (self.images.dim() - 1)) + (onehot.t() @ x.flatten(1)).view_as(self.images))

    def _query(self, x):
        B = x.shape[0]
        x32 = x.detach().float()
        slot = self.count + torch.arange(B, device=x.device)
        filling = slot < self.size
        self._write(slot.clamp(max=self.size - 1), filling, x32)
        self.count.copy_(torch.clamp(self.count + B, max=self.size))
        rows = torch.rand(self.size, device=x.device).argsort()[:B]
        swap = ~filling & (torch.rand(B, device=x.device) < self.swap)
        old = self.images[rows]
        self._write(rows, swap, x32)
        return torch.where(swap[:, None, None, None], old, x32).to(x.dtype)


@pytest.mark.parametrize('size,B', [(1, 1), (3, 2), (4, 3), (5, 5), (50, 4)])
def test_pool_rows_match_whole_pool_rewrite(size, B):
    new, old = ImagePool(size, (2, 3, 3)), OneHotPool(size, (2, 3, 3))
    g = torch.Generator().manual_seed(size)
    for i in range(3 * size + 5):  # filling, the query that fills it up part-way, then swaps
        x = torch.randn(B, 2, 3, 3, generator=g)
        torch.manual_seed(i); got = new(x)
        torch.manual_seed(i); want = old(x)
        assert torch.equal(got, want) and torch.equal(new.images, old.images) and torch.equal(new.count, old.count), i
