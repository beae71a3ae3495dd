import pytest
import torch

from trainer.ied import ied, ied_direct


@pytest.mark.parametrize("sigma,h,w", [(1.0, 9, 11), (2.5, 12, 8), (0.7, 5, 5)])
def test_ied_matches_direct_double_sum(sigma, h, w):
    g = torch.Generator().manual_seed(int(sigma * 10) + h)
    x = torch.rand(3, h, w, generator=g) * 2 - 1
    y = torch.rand(3, h, w, generator=g) * 2 - 1
    direct = ied_direct(x, y, sigma)
    fast_full = float(ied(x, y, sigma, truncate=None))
    assert fast_full == pytest.approx(direct, rel=1e-10, abs=1e-14)
    fast = float(ied(x, y, sigma))  # kernel truncated at 4 sigma
    assert fast == pytest.approx(direct, rel=1e-3)


def test_ied_batched_ranges_and_basic_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    y = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    batch = ied(x, y)
    assert batch.shape == (4,)
    for i in range(4):
        assert float(batch[i]) == pytest.approx(ied_direct(x[i], y[i]), rel=1e-3)
    # identical images: 0; symmetric; a positive semi-definite form: >= 0
    assert float(ied(x, x).abs().max()) == 0.0
    assert torch.allclose(ied(x, y), ied(y, x))
    assert bool((batch >= 0).all())
    # the same images as [0, 1] and uint8 [0, 255] give the same value
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    assert torch.allclose(ied(x01, y01, value_range="[0,1]"), batch)
    assert torch.allclose(ied(x01.numpy() * 255, y01.numpy() * 255, value_range="[0,255]"), batch)
    # a constant offset c in [0, 1] units in every channel, far from the borders: about 3 c^2
    big = torch.zeros(1, 3, 64, 64)
    val = float(ied(big + 0.2, big))  # 0.1 in [0, 1] units
    assert val == pytest.approx(3 * 0.1 ** 2, rel=0.1)
    assert val < 3 * 0.1 ** 2


def test_ied_rejects_bad_input():
    with pytest.raises(ValueError):
        ied(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5))
    with pytest.raises(ValueError):
        ied(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), value_range="0..1")


def test_ied_weighs_coherent_differences_more_than_scattered_ones():
    # Unlike the MSE, IED couples neighbouring pixels: a spatially coherent change (an edge moved by
    # one pixel) costs more than scattered single-pixel changes of the same MSE.
    img = torch.zeros(1, 1, 32, 32)
    img[..., :, 16:] = 1.0
    shifted = img.clone()
    shifted[..., :, 15] = 1.0
    noise = img.clone()
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(32 * 32, generator=g)[:32]
    noise.view(-1)[idx] = 1 - noise.view(-1)[idx]
    assert float(((img - shifted) ** 2).mean()) == pytest.approx(float(((img - noise) ** 2).mean()))
    coherent = float(ied(img, shifted, value_range="[0,1]"))
    scattered = float(ied(img, noise, value_range="[0,1]"))
    assert coherent > 1.5 * scattered > 0
