"Integration checks for `cyclegan_pws.diffaugment` too slow for the notebook (a few seconds of Dynamo tracing)."
import torch

from cyclegan_pws.diffaugment import AdaptiveAugment, diff_augment


def test_augment_and_ada_update_trace_as_one_graph():
    "fullgraph=True fails on any graph break: a Python `if` on a tensor, `.item()`, a data-dependent shape."
    ada = AdaptiveAugment(interval=2, speed_imgs=100, p_init=0.5, policy='color,translation,cutout,affine')

    def d_step(real, real_logits):
        out = ada(real)
        ada.accumulate(real_logits)
        return out, ada.update()

    step = torch.compile(d_step, backend='eager', fullgraph=True)
    real, logits = torch.rand(2, 3, 16, 16) * 2 - 1, torch.ones(2, 1, 2, 2)
    for _ in range(2): out, p = step(real, logits)
    assert out.shape == real.shape
    assert int(ada.step) == 2 and abs(float(p) - (0.5 + 2 * 2 / 100)) < 1e-6   # r_t = 1 > 0.6: p went up once


def test_float_p_traces_too():
    f = torch.compile(lambda x: diff_augment(x, 'color,translation,cutout', 0.3), backend='eager', fullgraph=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert f(x).shape == x.shape
