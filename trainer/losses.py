"""Every loss of SPEC section 4, one small function each, in the paper's notation.

Images are (B, 3, H, W) in [-1, 1]; parameters (B, N); critic outputs C(I) are PatchGAN maps
(B, 1, h, w); attention masks A are (B, 1, H, W) in [0, 1]. Each function returns a scalar tensor.

Full objectives (SPEC section 4, ``LossWeights`` holds the lambdas):

    L_G = l_adv L_adv,G + l_exp L_exp,G + l_rec L_rec + l_id L_id + l_att L_att (+ l_gen L_gen, paired)
    L_D = l_adv L_adv,D + l_gp L_gp + l_exp L_exp,D

**(choice)** The gradient penalty is weighted by l_gp alone, not l_adv * l_gp (as StarGAN and
GANimation do: their penalty term sits beside the adversarial term, not inside it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch.nn import functional as F


@dataclass
class LossWeights:
    """The paper's weights (SPEC section 4) and lambda_gp of WGAN-GP."""
    adv: float = 30.0
    exp: float = 1000.0
    rec: float = 10.0
    gen: float = 10.0
    id: float = 4.0
    att: float = 0.3
    gp: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LossWeights":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in d.items()})


# ---------------------------------------------------------------------------------------------
# Expression (parameter regression) losses

def L_exp_D(p_real_pred: torch.Tensor, p_org: torch.Tensor) -> torch.Tensor:
    """L_exp,D = mse(D_p(I_org), p_org): D learns to regress the parameters of real images."""
    return F.mse_loss(p_real_pred, p_org)


def L_exp_G(p_gen_pred: torch.Tensor, p_trg: torch.Tensor) -> torch.Tensor:
    """L_exp,G = mse(D_p(G(I_org, p_trg)), p_trg): G's edit must show the target parameters."""
    return F.mse_loss(p_gen_pred, p_trg)


# ---------------------------------------------------------------------------------------------
# Image losses

def L_rec(I_org: torch.Tensor, I_rec: torch.Tensor) -> torch.Tensor:
    """Cycle reconstruction L_rec = l1(I_org, G(G(I_org, p_trg), p_org)); I_rec is the second term."""
    return F.l1_loss(I_rec, I_org)


def changed_region(I_org: torch.Tensor, I_trg: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """M: 1 where a pair differs (by more than ``tau`` on any channel, about 6 grey levels), else 0.
    Shape (B, 1, H, W)."""
    return ((I_trg - I_org).abs().amax(dim=1, keepdim=True) > tau).to(I_org.dtype)


def L_gen(I_trg: torch.Tensor, I_gen: torch.Tensor, I_org: torch.Tensor | None = None) -> torch.Tensor:
    """Paired generation L_gen = l1(I_trg, G(I_org, p_trg)) (synthetic pairs only).

    **(choice)** Given ``I_org``, plus the same L1 averaged over the changed region M of the pair
    (``changed_region``): l1(I_trg, I_gen) + sum(M |I_trg - I_gen|) / (3 sum(M)). An expression edit
    changes a few percent of the pixels (a mouth opening: about 1% of a 64 px face), so in the plain
    image mean copying the source scores nearly as well as the edit, and the sign-valued L1 gradients
    of the unchanged 99% drown the edit's. G trained by L_gen alone on pairs that differ in mouth_open
    (``python scripts/generator_ablation.py --supervised 0 [--plain-gen]``): its error in the changed
    region stays 1.000 of copying's with the plain mean, 0.551 with this term."""
    whole = F.l1_loss(I_gen, I_trg)
    if I_org is None:
        return whole
    M = changed_region(I_org, I_trg)
    return whole + ((I_gen - I_trg).abs() * M).sum() / (3 * M.sum()).clamp_min(1.0)


def L_id(f_gen: torch.Tensor, f_org: torch.Tensor) -> torch.Tensor:
    """Identity L_id = 1 - cos(F(I_gen), F(I_org)), mean over the batch.

    cos(a, b) = a . b / (|a| |b|) (the printed Eq. 11 has the fraction upside down)."""
    return (1.0 - F.cosine_similarity(f_gen.flatten(1), f_org.flatten(1), dim=1, eps=1e-8)).mean()


def L_att(A_fwd: torch.Tensor, A_bwd: torch.Tensor) -> torch.Tensor:
    """Attention L_att = mean|A(I_org, p_trg)| + mean|A(I_gen, p_org)|: keeps the masks from saturating."""
    return A_fwd.abs().mean() + A_bwd.abs().mean()


# ---------------------------------------------------------------------------------------------
# Adversarial losses: relativistic average (SliderGAN-RaD, Eq. 5) and WGAN (SliderGAN-WGP)

def relativistic_average(C_x: torch.Tensor, C_other: torch.Tensor) -> torch.Tensor:
    """The logit of Eq. 5, D_Ra(x, other) = sigma(C(x) - E_other[C(other)]).

    **(choice)** For patch critics the expectation is over the other batch at each patch position
    (mean over the batch dimension), so every patch is judged against the same patch of the others."""
    return C_x - C_other.mean(dim=0, keepdim=True)


def L_adv_D_rad(C_real: torch.Tensor, C_fake: torch.Tensor) -> torch.Tensor:
    """D's side of Eq. 5: -E_r[log D_Ra(x_r, x_f)] - E_f[log(1 - D_Ra(x_f, x_r))], in log-sigmoid form
    (1 - sigma(z) = sigma(-z)). Pass C_fake of detached fakes."""
    return (-F.logsigmoid(relativistic_average(C_real, C_fake)).mean()
            - F.logsigmoid(-relativistic_average(C_fake, C_real)).mean())


def L_adv_G_rad(C_real: torch.Tensor, C_fake: torch.Tensor) -> torch.Tensor:
    """G's side of Eq. 5, both terms (SPEC section 3): -E_f[log D_Ra(x_f, x_r)] - E_r[log(1 - D_Ra(x_r, x_f))].
    The real term depends on G through the mean critic value of the fakes."""
    return (-F.logsigmoid(relativistic_average(C_fake, C_real)).mean()
            - F.logsigmoid(-relativistic_average(C_real, C_fake)).mean())


def L_adv_D_wgan(C_real: torch.Tensor, C_fake: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss: E[C(fake)] - E[C(real)]."""
    return C_fake.mean() - C_real.mean()


def L_adv_G_wgan(C_fake: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: -E[C(fake)]."""
    return -C_fake.mean()


def gradient_penalty(critic, I_real: torch.Tensor, I_fake: torch.Tensor,
                     alpha: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: E[(||grad_x_hat C(x_hat)||_2 - 1)^2], x_hat = alpha I_real + (1 - alpha) I_fake,
    alpha ~ U(0, 1) per sample. ``critic`` maps images to critic maps; the gradient is of the sum of
    the patch map (as StarGAN and GANimation do), its norm taken per sample over all pixels."""
    if alpha is None:
        alpha = torch.rand(I_real.shape[0], 1, 1, 1, device=I_real.device, dtype=I_real.dtype,
                           generator=generator)
    x_hat = (alpha * I_real.detach() + (1 - alpha) * I_fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    grad, = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def adversarial_D(gan: str, C_real: torch.Tensor, C_fake: torch.Tensor) -> torch.Tensor:
    if gan == "rad":
        return L_adv_D_rad(C_real, C_fake)
    if gan == "wgp":
        return L_adv_D_wgan(C_real, C_fake)
    raise ValueError(f"gan must be 'rad' or 'wgp', not {gan!r}")


def adversarial_G(gan: str, C_real: torch.Tensor, C_fake: torch.Tensor) -> torch.Tensor:
    if gan == "rad":
        return L_adv_G_rad(C_real, C_fake)
    if gan == "wgp":
        return L_adv_G_wgan(C_fake)
    raise ValueError(f"gan must be 'rad' or 'wgp', not {gan!r}")


def total_G(terms: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    """L_G from the terms present (``adv``, ``exp``, ``rec``, ``id``, ``att``, ``gen``)."""
    weight = {"adv": w.adv, "exp": w.exp, "rec": w.rec, "id": w.id, "att": w.att, "gen": w.gen}
    return sum(weight[k] * v for k, v in terms.items())


def total_D(terms: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    """L_D from the terms present (``adv``, ``gp``, ``exp``)."""
    weight = {"adv": w.adv, "gp": w.gp, "exp": w.exp}
    return sum(weight[k] * v for k, v in terms.items())
