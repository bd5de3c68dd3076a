"""The translation nets of pix2pix and CycleGAN: shapes, range, the 70x70 patch, dropout only
in training, refusals naming the side, and parameter counts against the papers' nets."""

from __future__ import annotations

import pytest
import torch

from gan_core.translation.nets import (
    PatchDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    build_patch_discriminator,
    build_translator,
    unet_depth,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/gan_core/conftest.py


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("kind", ["unet", "resnet"])
@pytest.mark.parametrize(("size", "in_ch", "out_ch"), [(32, 1, 3), (32, 3, 3), (64, 1, 3)])
def test_generator_shapes_and_range(kind, size, in_ch, out_ch):
    torch.manual_seed(0)
    G = build_translator(
        kind, in_ch, out_ch, size, width=4, n_blocks=2 if kind == "resnet" else None
    )
    y = G(torch.randn(2, in_ch, size, size) * 3)
    assert y.shape == (2, out_ch, size, size)
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert y.abs().max() > 0  # not a constant zero output
    if isinstance(G, ResnetGenerator):
        # The residual blocks run at a quarter of the side and keep it.
        block_in = G.net[:10](torch.randn(1, in_ch, size, size))
        assert block_in.shape[-2:] == (size // 4, size // 4)
        assert G.net[10](block_in).shape == block_in.shape


def test_the_256px_nets_and_their_depth():
    torch.manual_seed(0)
    U = build_translator("unet", 3, 3, 256, width=2)
    assert U.depth == 8  # 256 -> 1x1, as in the paper
    assert U(torch.randn(1, 3, 256, 256)).shape == (1, 3, 256, 256)
    R = build_translator("resnet", 1, 3, 256, width=2, n_blocks=1)
    assert R(torch.randn(1, 1, 256, 256)).shape == (1, 3, 256, 256)
    D = build_patch_discriminator(3, 256, width=2, condition_channels=1)
    assert D(torch.randn(1, 3, 256, 256), torch.randn(1, 1, 256, 256)).shape == (1, 1, 30, 30)
    assert [unet_depth(s) for s in (32, 48, 64, 96, 128, 192, 256)] == [5, 4, 6, 5, 7, 6, 8]
    assert build_translator("resnet", 3, 3, 128, width=2).n_blocks == 6
    assert build_translator("resnet", 3, 3, 256, width=2).n_blocks == 9


@pytest.mark.parametrize(("size", "side"), [(32, 2), (64, 6)])
def test_patchgan_shapes_conditional_and_not(size, side):
    a, b = torch.randn(2, 1, size, size), torch.randn(2, 3, size, size)
    paired = build_patch_discriminator(3, size, width=4, condition_channels=1)
    assert paired(b, a).shape == (2, 1, side, side)
    unpaired = build_patch_discriminator(3, size, width=4)
    assert unpaired(b).shape == (2, 1, side, side)
    with pytest.raises(ValueError, match="conditional"):
        paired(b)
    with pytest.raises(ValueError, match="unconditional"):
        unpaired(b, a)


def test_one_patchgan_logit_sees_a_70x70_patch():
    # Instance norm couples every pixel of a sample, so the conv geometry is measured without
    # it: the same layers, kernels, strides and paddings as the default D.
    D = PatchDiscriminator(3, 128, width=4, condition_channels=1, norm="none").double()
    normed = PatchDiscriminator(3, 128, width=4, condition_channels=1)
    convs = [m for m in D.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [
        (c.kernel_size, c.stride, c.padding) for c in normed.net if isinstance(c, torch.nn.Conv2d)
    ]
    a = torch.randn(1, 1, 128, 128, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    out = D(b, a)  # (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    for x in (a, b):
        seen = x.grad[0].abs().sum(0) > 0
        rows = seen.any(1).nonzero().flatten()
        cols = seen.any(0).nonzero().flatten()
        assert rows.min() > 0 and rows.max() < 127  # not clipped by the border
        assert rows.max() - rows.min() + 1 == 70
        assert cols.max() - cols.min() + 1 == 70
        assert seen[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()


@pytest.mark.parametrize("kind", ["unet", "resnet"])
def test_eval_is_a_pure_function_of_the_input(kind):
    torch.manual_seed(0)
    G = build_translator(kind, 1, 3, 32, width=4, n_blocks=2 if kind == "resnet" else None)
    G.eval()
    x, others = torch.randn(1, 1, 32, 32), torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        first, second = G(x), G(x)
        in_batch = G(torch.cat([others[:1], x, others[1:]]))[1:2]
        in_other_batch = G(torch.cat([x, others[2:]]))[:1]
    assert torch.equal(first, second)
    torch.testing.assert_close(in_batch, first, rtol=0, atol=1e-6)
    torch.testing.assert_close(in_other_batch, first, rtol=0, atol=1e-6)


def test_unet_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, 32, width=4)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        G.train()
        assert not torch.equal(G(x), G(x))
        G.eval()
        assert torch.equal(G(x), G(x))
    drops = [m for m in G.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)
    # The CycleGAN generator has no dropout unless asked: training passes agree too.
    R = build_translator("resnet", 3, 3, 32, width=4, n_blocks=1).train()
    with torch.no_grad():
        assert torch.equal(R(x), R(x))


@pytest.mark.parametrize(
    ("build", "side"),
    [
        (lambda s: build_translator("unet", 3, 3, s, width=2), 40),  # halves only 3 times
        (lambda s: build_translator("unet", 3, 3, s, width=2), 100),
        (lambda s: build_translator("unet", 3, 3, s, width=2), 512),
        (lambda s: build_translator("resnet", 3, 3, s, width=2), 34),  # not a multiple of 4
        (lambda s: build_translator("resnet", 3, 3, s, width=2), 16),
        (lambda s: build_patch_discriminator(3, s, width=2, n_layers=4), 32),
    ],
)
def test_sides_the_nets_cannot_take_are_refused_by_name(build, side):
    with pytest.raises(ValueError, match=f"cannot take {side}px"):
        build(side)


def test_other_refusals_are_clear():
    with pytest.raises(ValueError, match="unknown translator kind 'vit'"):
        build_translator("vit", 3, 3, 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_blocks is for the 'resnet'"):
        build_translator("unet", 3, 3, 32, n_blocks=6)
    with pytest.raises(ValueError, match="unknown norm 'batch'"):
        build_translator("unet", 3, 3, 32, norm="batch")  # type: ignore[arg-type]
    G = build_translator("unet", 1, 3, 64, width=2)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        G(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 64, got 32x32"):
        G(torch.randn(1, 1, 32, 32))


def test_weights_start_as_the_papers_say():
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, 64, width=16, affine=True)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    scales = [m.weight for m in G.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert scales and all(abs(s.mean().item() - 1) < 0.05 for s in scales)


def unet_params(i: int, o: int, w: int, depth: int) -> int:
    """Our U-Net by hand: 4x4 kernels; biases only where no norm follows."""
    ws = [w * min(2**k, 8) for k in range(depth)]
    enc = (i * ws[0] * 16 + ws[0]) + ws[-1]  # first layer's and innermost's biases
    enc += sum(ws[k - 1] * ws[k] * 16 for k in range(1, depth))
    dec = ws[-1] * ws[-2] * 16
    dec += sum(2 * ws[k + 1] * ws[k] * 16 for k in range(depth - 3, -1, -1))
    return enc + dec + 2 * ws[0] * o * 16 + o


def resnet_params(i: int, o: int, w: int, blocks: int) -> int:
    convs = i * w * 49 + w * 2 * w * 9 + 2 * w * 4 * w * 9  # c7s1, d, d
    convs += blocks * 2 * (4 * w) ** 2 * 9
    convs += 4 * w * 2 * w * 9 + 2 * w * w * 9  # u, u
    return convs + w * o * 49 + o


def patchgan_params(c: int, w: int) -> int:
    return (c * w * 16 + w) + (w * 2 * w + 2 * w * 4 * w + 4 * w * 8 * w) * 16 + 8 * w * 16 + 1


def test_parameter_counts_match_the_papers_nets():
    with torch.device("meta"):  # shapes only: 70M parameters without allocating them
        U = build_translator("unet", 3, 3, 256)
        R = build_translator("resnet", 3, 3, 256)
        D = build_patch_discriminator(3, 256, condition_channels=3)
    counts = {"unet": n_params(U), "resnet": n_params(R), "patchgan": n_params(D)}
    assert counts == {
        "unet": unet_params(3, 3, 64, 8),
        "resnet": resnet_params(3, 3, 64, 9),
        "patchgan": patchgan_params(6, 64),
    }
    assert counts == {"unet": 54_404_675, "resnet": 11_372_931, "patchgan": 2_766_913}
    # The totals the reference implementation prints, in millions (pix2pix's unet_256 and
    # basic D with batch norm, CycleGAN's resnet_9blocks with instance norm): ours differ only
    # by the conv biases that sit before a norm (dropped here) and batch norm's affine terms.
    reference = {"unet": 54.414e6, "resnet": 11.378e6, "patchgan": 2.769e6}
    for name, ref in reference.items():
        assert abs(counts[name] - ref) / ref < 0.01, (name, counts[name], ref)
