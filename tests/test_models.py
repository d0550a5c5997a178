"""Integration tests of `cyclegan_pws.models` that are too slow for the notebook: torch.compile and a few training steps.

The compile tests use `fullgraph=True` with the `aot_eager` backend: Dynamo must trace each network as ONE graph
(no graph breaks, no data-dependent Python control flow, no `.item()`), which is what XLA and inductor need,
and AOTAutograd must functionalise it; skipping inductor's C++ code generation keeps the test at seconds
instead of minutes on a 2-core CPU (inductor itself took ~100 s for the tiny ResNet here)."""
import pytest, torch
import torch.nn.functional as F

from cyclegan_pws.config import MODEL_PRESETS
from cyclegan_pws.models import build_discriminator, build_generator, model_stats


@pytest.mark.parametrize('kind', ['resnet', 'unet'])
def test_compiled_generator_matches_eager(kind):
    "torch.compile traces the tiny preset's generators without graph breaks and computes the same images."
    torch.manual_seed(0)
    cond_dim = 2 if kind == 'unet' else 0
    g = build_generator('tiny', kind=kind, cond_dim=cond_dim, generator=torch.Generator().manual_seed(0)).eval()
    x, args = torch.rand(2, 3, 64, 64) * 2 - 1, ((torch.rand(2, cond_dim),) if cond_dim else ())
    compiled = torch.compile(g, backend='aot_eager', fullgraph=True, dynamic=False)
    with torch.no_grad(): torch.testing.assert_close(compiled(x, *args), g(x, *args), atol=1e-4, rtol=1e-4)



def test_compiled_resize_generator_gradients_match_eager():
    "NearestUp2x's hand-written backward traces into one graph (fullgraph) and gives eager's parameter gradients."
    g = build_generator('tiny', generator=torch.Generator().manual_seed(0))
    assert g.model[15].__class__.__name__ == 'NearestUp2x'
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    eager = torch.autograd.grad(g(x).square().mean(), list(g.parameters()))
    compiled = torch.compile(g, backend='aot_eager', fullgraph=True, dynamic=False)
    for a, b in zip(torch.autograd.grad(compiled(x).square().mean(), list(g.parameters())), eager):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

@pytest.mark.parametrize('kind', ['patch', 'whole', 'vit'])
def test_compiled_discriminator_matches_eager(kind):
    torch.manual_seed(0)
    d = build_discriminator('tiny', 64, kind=kind, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    compiled = torch.compile(d, backend='aot_eager', fullgraph=True, dynamic=False)
    with torch.no_grad(): torch.testing.assert_close(compiled(x), d(x), atol=1e-4, rtol=1e-4)


def test_generator_learns_a_colour_shift():
    "A few Adam steps teach the tiny ResNet generator a fixed colour change (redden the image): the L1 loss falls."
    gen = torch.Generator().manual_seed(0)
    g = build_generator('tiny', generator=gen)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    target = (x + torch.tensor([0.4, -0.2, -0.2])[:, None, None]).clamp(-1, 1)
    opt = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(20):
        loss = F.l1_loss(g(x), target)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_model_stats_for_every_preset():
    for name in MODEL_PRESETS:
        for size in (128, 256):
            s = model_stats(name, size)
            assert s['g_params'] > 0 and s['d_params'] > 0 and s['g_gflops'] > 0 and s['d_gflops'] > 0, s
    assert model_stats('seed', 256)['g_params'] <= 8_000_000 and model_stats('seed', 256)['d_params'] <= 2_000_000
