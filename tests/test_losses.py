"""Each loss of SPEC section 4 against a value computed by hand on small tensors."""
import math

import pytest
import torch

from trainer import losses as L
from trainer.losses import LossWeights


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_paper_weights():
    w = LossWeights()
    assert (w.adv, w.exp, w.rec, w.gen, w.id, w.att, w.gp) == (30, 1000, 10, 10, 4, 0.3, 10)
    assert LossWeights.from_dict({"att": 0.5}).att == 0.5
    with pytest.raises(ValueError, match="unknown loss weights"):
        LossWeights.from_dict({"colour": 1})


def test_expression_losses_are_mse():
    pred, p = t([[1.0, 2.0], [3.0, 4.0]]), t([[0.0, 2.0], [3.0, 2.0]])
    # (1^2 + 0 + 0 + 2^2) / 4
    assert float(L.L_exp_D(pred, p)) == pytest.approx(1.25)
    assert float(L.L_exp_G(pred, p)) == pytest.approx(1.25)


def test_reconstruction_and_generation_are_l1():
    a = t([[[[0.0, 1.0], [0.5, -1.0]]]])
    b = t([[[[0.5, 1.0], [0.0, 1.0]]]])
    # (0.5 + 0 + 0.5 + 2) / 4
    assert float(L.L_rec(a, b)) == pytest.approx(0.75)
    assert float(L.L_gen(a, b)) == pytest.approx(0.75)


def test_generation_adds_the_changed_region_mean():
    # One channel repeated: a 1 x 3 x 1 x 4 pair that differs (by more than tau) in the last two pixels.
    I_org = t([[[[0.0, 0.0, 0.0, 0.0]]] * 3])
    I_trg = t([[[[0.0, 0.01, 1.0, -1.0]]] * 3])
    I_gen = t([[[[0.5, 0.01, 0.0, -1.0]]] * 3])
    assert L.changed_region(I_org, I_trg).flatten().tolist() == [0, 0, 1, 1]
    # whole image (0.5 + 0 + 1 + 0) / 4 plus the changed region (1 + 0) / 2
    assert float(L.L_gen(I_trg, I_gen, I_org)) == pytest.approx(0.375 + 0.5)
    # copying the source scores the full error of the changed region, not a few percent of it
    assert float(L.L_gen(I_trg, I_org, I_org)) == pytest.approx(0.5025 + 1.0)


def test_identity_is_one_minus_cosine():
    f_gen = t([[1.0, 0.0], [2.0, 2.0], [3.0, 0.0]])
    f_org = t([[0.0, 5.0], [1.0, 1.0], [-1.0, 0.0]])
    # cosines 0, 1, -1 -> 1 - cos = 1, 0, 2 -> mean 1 (the fraction the right way up: scale-free)
    assert float(L.L_id(f_gen, f_org)) == pytest.approx(1.0)
    assert float(L.L_id(f_gen * 7, f_org)) == pytest.approx(1.0)


def test_attention_is_sum_of_mean_absolute_masks():
    a1 = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    a2 = t([[[[0.0, 1.0], [1.0, 0.0]]]])
    assert float(L.L_att(a1, a2)) == pytest.approx(0.5 + 0.5)


def _eq5(C_real, C_fake):
    """Eq. 5 written out: D_Ra(x_r, x_f) = sigma(C(x_r) - E_f C(x_f)), per patch position."""
    B, _, h, w = C_real.shape
    d_loss, g_loss = 0.0, 0.0
    n = 0
    for i in range(h):
        for j in range(w):
            mr = sum(float(C_real[b, 0, i, j]) for b in range(B)) / B
            mf = sum(float(C_fake[b, 0, i, j]) for b in range(B)) / B
            for b in range(B):
                r, f = float(C_real[b, 0, i, j]), float(C_fake[b, 0, i, j])
                d_real, d_fake = sig(r - mf), sig(f - mr)  # D_Ra(x_r, x_f), D_Ra(x_f, x_r)
                d_loss += -math.log(d_real) - math.log(1 - d_fake)
                g_loss += -math.log(d_fake) - math.log(1 - d_real)
                n += 1
    return d_loss / n, g_loss / n


def test_relativistic_average_matches_eq5_by_hand():
    # One patch: C_real = (2, 0), C_fake = (1, -1): mean fake 0, mean real 1.
    C_real, C_fake = t([2.0, 0.0]).view(2, 1, 1, 1), t([1.0, -1.0]).view(2, 1, 1, 1)
    d = -(math.log(sig(2)) + math.log(sig(0))) / 2 - (math.log(1 - sig(0)) + math.log(1 - sig(-2))) / 2
    g = -(math.log(sig(0)) + math.log(sig(-2))) / 2 - (math.log(1 - sig(2)) + math.log(1 - sig(0))) / 2
    assert float(L.L_adv_D_rad(C_real, C_fake)) == pytest.approx(d, abs=1e-12)
    assert float(L.L_adv_G_rad(C_real, C_fake)) == pytest.approx(g, abs=1e-12)


def test_relativistic_average_matches_eq5_on_patch_maps():
    g = torch.Generator().manual_seed(0)
    C_real = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64) * 3
    C_fake = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64) * 3
    d, gl = _eq5(C_real, C_fake)
    assert float(L.L_adv_D_rad(C_real, C_fake)) == pytest.approx(d, rel=1e-10)
    assert float(L.L_adv_G_rad(C_real, C_fake)) == pytest.approx(gl, rel=1e-10)
    assert float(L.adversarial_D("rad", C_real, C_fake)) == pytest.approx(d, rel=1e-10)
    # Stable where the naive form overflows: log-sigmoid form.
    big = L.L_adv_D_rad(t([200.0, 0.0]).view(2, 1, 1, 1), t([-200.0, 0.0]).view(2, 1, 1, 1))
    assert torch.isfinite(big)


def test_wgan_terms():
    C_real, C_fake = t([1.0, 3.0]).view(2, 1, 1, 1), t([-1.0, 0.0]).view(2, 1, 1, 1)
    assert float(L.L_adv_D_wgan(C_real, C_fake)) == pytest.approx(-0.5 - 2.0)
    assert float(L.L_adv_G_wgan(C_fake)) == pytest.approx(0.5)
    assert float(L.adversarial_G("wgp", C_real, C_fake)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="rad"):
        L.adversarial_D("lsgan", C_real, C_fake)


def test_gradient_penalty_linear_and_quadratic_critics():
    w = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    w[..., 0, 0], w[..., 1, 1] = 2.0, 0.0  # |w| = 2 -> (2 - 1)^2 = 1 wherever it is evaluated
    real = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    fake = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    linear = lambda x: (x * w).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)  # noqa: E731
    assert float(L.gradient_penalty(linear, real, fake)) == pytest.approx(1.0)
    # C(x) = |x|^2 / 2: the gradient is x_hat = alpha * real, |x_hat| = 2 alpha (4 ones)
    quad = lambda x: 0.5 * (x ** 2).sum(dim=(1, 2, 3))  # noqa: E731
    alpha = t([0.25, 1.0]).view(2, 1, 1, 1)
    expect = ((2 * 0.25 - 1) ** 2 + (2 * 1.0 - 1) ** 2) / 2
    gp = L.gradient_penalty(quad, real, fake, alpha=alpha)
    assert float(gp.detach()) == pytest.approx(expect)
    # It is differentiable with respect to the critic's parameters (double backward).
    w2 = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    gp2 = L.gradient_penalty(lambda x: w2 * x.sum(dim=(1, 2, 3)), real, fake)
    gp2.backward()  # gp = (2 w - 1)^2 -> d/dw = 4 (2 w - 1) = 20
    assert float(w2.grad) == pytest.approx(20.0)


def test_totals_use_the_weights():
    w = LossWeights()
    one = torch.tensor(1.0)
    g = L.total_G({"adv": one, "exp": one, "rec": one, "id": one, "att": one, "gen": one}, w)
    assert float(g) == pytest.approx(30 + 1000 + 10 + 4 + 0.3 + 10)
    d = L.total_D({"adv": one, "gp": 2 * one, "exp": one}, w)
    assert float(d) == pytest.approx(30 + 20 + 1000)
