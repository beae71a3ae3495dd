"""SliderGAN networks: the attention generator G (SPEC section 2) and the discriminator D with its
patch critic and parameter-regression head (SPEC section 3), built from small blocks.

Every generator exposes the same split so that a fixed source portrait is processed once:
    feats = G.encode(I_org)                  # depends on the source image only
    C, A  = G.decode(I_org, feats, p_trg)     # per target parameter vector
    I_gen = A * C + (1 - A) * I_org           # Eq. 4
For the paper's generator nothing can be cached (the parameters enter at the first layer), so
``encode`` returns an empty tuple and ``decode`` runs the whole network.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig


def conv_norm_act(c_in: int, c_out: int, k: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, padding=(k - 1) // 2 if stride == 1 else 1, bias=False),
        nn.InstanceNorm2d(c_out, affine=True)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + conv-IN-ReLU-conv-IN(x), as in CycleGAN/GANimation."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(c, c, 3), conv_norm_act(c, c, 3, act=False))

    def forward(self, x):
        return x + self.body(x)


class FiLM(nn.Module):
    """Instance norm whose scale and shift come from the target parameters p.

    A spatially constant bias (what tiling p as channels before a convolution amounts to) is erased
    by the instance norm that follows it, so p modulates the features after normalisation instead.
    """

    def __init__(self, c: int, n_params: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(c, affine=False)
        self.to_scale_shift = nn.Linear(n_params, 2 * c)

    def forward(self, x, p):
        scale, shift = self.to_scale_shift(p)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + scale) + shift


class ConditionalResidualBlock(nn.Module):
    """x + conv-FiLM(p)-ReLU-conv-IN(x): a residual block steered by the target parameters."""

    def __init__(self, c: int, n_params: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.film = FiLM(c, n_params)
        self.conv2 = conv_norm_act(c, c, 3, act=False)

    def forward(self, x, p):
        return x + self.conv2(F.relu(self.film(self.conv1(x), p)))


class ConditionalUpBlock(nn.Module):
    """Nearest-neighbour x2, 3x3 convolution, FiLM(p), ReLU (no checkerboard artefacts)."""

    def __init__(self, c_in: int, c_out: int, n_params: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.film = FiLM(c_out, n_params)

    def forward(self, x, p):
        return F.relu(self.film(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")), p))


class AttentionHeads(nn.Module):
    """The two parallel output heads: colour C (tanh) and attention mask A (sigmoid)."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.color = nn.Conv2d(c, 3, k, 1, (k - 1) // 2)
        self.mask = nn.Conv2d(c, 1, k, 1, (k - 1) // 2)

    def forward(self, h):
        return torch.tanh(self.color(h)), torch.sigmoid(self.mask(h))


def composite(image: torch.Tensor, color: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 4: I_gen = A * C + (1 - A) * I_org."""
    return mask * color + (1.0 - mask) * image


def _widths(cfg: ModelConfig) -> list[int]:
    return [min(cfg.g_channels * 2 ** i, cfg.g_max_channels) for i in range(cfg.g_down + 1)]


class Generator(nn.Module):
    """Shared interface of both generator kinds; see the module docstring."""

    cfg: ModelConfig

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def decode(self, image, feats, params) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, image: torch.Tensor, params: torch.Tensor):
        """Returns (I_gen, C, A) for images in [-1, 1] and parameters (B, N)."""
        color, mask = self.decode(image, self.encode(image), params)
        return composite(image, color, mask), color, mask


class ResnetGenerator(Generator):
    """The paper's generator: p tiled as N extra input channels, 7x7 stem, stride-2 downsampling,
    residual blocks, upsampling, 7x7 heads (CycleGAN / GANimation)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = _widths(cfg)
        layers: list[nn.Module] = [conv_norm_act(3 + cfg.n_params, w[0], 7)]
        layers += [conv_norm_act(w[i], w[i + 1], 4, stride=2) for i in range(cfg.g_down)]
        layers += [ResidualBlock(w[-1]) for _ in range(cfg.g_res_blocks)]
        layers += [nn.Sequential(
            nn.ConvTranspose2d(w[i + 1], w[i], 4, 2, 1, bias=False),
            nn.InstanceNorm2d(w[i], affine=True), nn.ReLU(inplace=True))
            for i in reversed(range(cfg.g_down))]
        self.body = nn.Sequential(*layers)
        self.heads = AttentionHeads(w[0], 7)

    def encode(self, image):
        return ()

    def decode(self, image, feats, params):
        b, _, h, w = image.shape
        tiled = params[:, :, None, None].expand(b, params.shape[1], h, w)
        return self.heads(self.body(torch.cat([image, tiled], dim=1)))


class CachedGenerator(Generator):
    """Real-time generator: a U-Net whose encoder sees only the source image.

    encode(I): stem + stride-2 convolutions (+ residual blocks at the bottleneck), keeping the
    feature map of every scale. decode: parameter-conditioned residual blocks at the bottleneck,
    then upsampling with the cached source features added at each scale (skip connections carry the
    portrait's detail, so the per-frame path can stay thin).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = _widths(cfg)
        self.stem = conv_norm_act(3, w[0], 3)
        self.down = nn.ModuleList(conv_norm_act(w[i], w[i + 1], 4, stride=2) for i in range(cfg.g_down))
        self.source_blocks = nn.Sequential(*(ResidualBlock(w[-1]) for _ in range(cfg.g_source_blocks)))
        self.blocks = nn.ModuleList(ConditionalResidualBlock(w[-1], cfg.n_params)
                                    for _ in range(cfg.g_res_blocks))
        self.up = nn.ModuleList(ConditionalUpBlock(w[i + 1], w[i], cfg.n_params)
                                for i in reversed(range(cfg.g_down)))
        self.heads = AttentionHeads(w[0], 3)

    def encode(self, image):
        feats = [self.stem(image)]
        for down in self.down:
            feats.append(down(feats[-1]))
        feats[-1] = self.source_blocks(feats[-1])
        return tuple(feats)

    def decode(self, image, feats, params):
        h = feats[-1]
        for block in self.blocks:
            h = block(h, params)
        for up, skip in zip(self.up, reversed(feats[:-1])):
            h = up(h, params) + skip
        return self.heads(h)


class WarpGenerator(Generator):
    """Geometry-guided generator (SPEC section 8). The motion is explicit: the portrait warped along
    its own mesh to the target p (``engine.geometry``) is the per-frame input ``frame`` = [warped RGB,
    region mask (mouth and eye openings), flow / S] (6 channels). G predicts colour C and attention A
    where the warp cannot do the job (mouth interior, teeth, eyelids, shading, stretched texture):
        I_gen = A * C + (1 - A) * warped                                   # Eq. 4 on the warp
    with A confined to the target's mouth and eye openings (``openings``).
    encode(I_org): the source's appearance at the bottleneck, once per portrait (a closed mouth's
    portrait still says what its teeth and skin look like). decode: a U-Net on the frame whose
    bottleneck adds the source features, FiLM(p) residual blocks, upsampling with the frame's skips.
    The attention head starts strongly negative (A about 0.02): untrained, G returns the warp (with the
    drawn mouth interior and lids of the warp-only renderer), and training only adds what the warp lacks."""

    ATTENTION_BIAS = -4.0   # A about 0.018: the warp shows through, and A's gradient is not yet vanishing

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = _widths(cfg)
        self.source_stem = conv_norm_act(3, w[0], 3)
        self.source_down = nn.ModuleList(conv_norm_act(w[i], w[i + 1], 4, stride=2) for i in range(cfg.g_down))
        self.source_blocks = nn.Sequential(*(ResidualBlock(w[-1]) for _ in range(cfg.g_source_blocks)))
        self.stem = conv_norm_act(cfg.frame_channels, w[0], 3)
        self.down = nn.ModuleList(conv_norm_act(w[i], w[i + 1], 4, stride=2) for i in range(cfg.g_down))
        self.blocks = nn.ModuleList(ConditionalResidualBlock(w[-1], cfg.n_params)
                                    for _ in range(cfg.g_res_blocks))
        self.up = nn.ModuleList(ConditionalUpBlock(w[i + 1], w[i], cfg.n_params)
                                for i in reversed(range(cfg.g_down)))
        self.heads = AttentionHeads(w[0], 3)
        nn.init.normal_(self.heads.mask.weight, std=1e-3)    # A about sigmoid(bias) everywhere at the start
        nn.init.constant_(self.heads.mask.bias, self.ATTENTION_BIAS)

    def encode(self, image):
        h = self.source_stem(image)
        for down in self.source_down:
            h = down(h)
        return (self.source_blocks(h),)

    def decode(self, frame, feats, params):
        skips = [self.stem(frame)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips[-1] + feats[0]
        for block in self.blocks:
            h = block(h, params)
        for up, skip in zip(self.up, reversed(skips[:-1])):
            h = up(h, params) + skip
        color, mask = self.heads(h)
        return color, mask * self.openings(frame)

    def openings(self, frame):
        """Where G may paint **(choice)**: the target's mouth and eye openings (the frame's region-mask
        channel), widened by about S/24 pixels and feathered. Elsewhere the warp moves the portrait's own
        pixels and A is 0, so the face outside its openings comes back as the warp made it (a G trained
        briefly on real pairs otherwise painted patches over faces where nothing moved)."""
        r = max(1, int(frame.shape[-1]) // 24)
        m = F.max_pool2d((frame[:, 3:4] > 0.05).to(frame.dtype), 2 * r + 1, 1, r)
        return box_mean(m, r)

    def forward(self, image, params, frame=None):
        """(I_gen, C, A): ``image`` the source crop, ``frame`` its warp to ``params``
        (engine.geometry.generator_frame); Eq. 4 composites over the warped RGB."""
        if frame is None:
            raise ValueError("the warp generator needs the warped frame (engine.geometry.generator_frame)")
        color, mask = self.decode(frame, self.encode(image), params)
        return composite(frame[:, :3], color, mask), color, mask


def box_mean(m: torch.Tensor, r: int) -> torch.Tensor:
    """The mean of each (2r + 1)-square window of ``m`` (B, 1, H, W) over its part inside the image (avg_pool2d
    with count_include_pad=False), as a row sum and a column sum by convolution over the window's pixel count.
    onnxruntime runs AveragePool from opset 19 (which added dilations) on a generic path: 0.59 ms a 128 px
    frame, against 0.14 for this (the same numbers)."""
    k = 2 * r + 1
    s = F.conv2d(F.conv2d(m, m.new_ones(1, 1, 1, k), padding=(0, r)), m.new_ones(1, 1, k, 1), padding=(r, 0))

    def count(n):
        i = torch.arange(n, dtype=m.dtype, device=m.device)
        return (i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1
    return s / (count(m.shape[-2])[:, None] * count(m.shape[-1])[None, :])


def build_generator(cfg: ModelConfig) -> Generator:
    return {"resnet": ResnetGenerator, "cached": CachedGenerator, "warp": WarpGenerator}[cfg.generator](cfg)


class Discriminator(nn.Module):
    """PatchGAN trunk (d_layers 4x4 stride-2 convolutions with LeakyReLU) and two heads:
    the patch critic C(I) and the regression head D_p(I) that estimates the N parameters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in, c = 3, cfg.d_channels
        for _ in range(cfg.d_layers):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            c_in, c = c, min(c * 2, cfg.d_max_channels)
        self.trunk = nn.Sequential(*layers)
        final = cfg.image_size // 2 ** cfg.d_layers
        self.critic = nn.Conv2d(c_in, 1, 3, 1, 1, bias=False)
        self.regressor = nn.Conv2d(c_in, cfg.n_params, final, bias=False)

    def forward(self, image):
        """Returns (critic patch map (B, 1, h, w), parameters (B, N))."""
        h = self.trunk(image)
        return self.critic(h), self.regressor(h).flatten(1)

    def regress(self, image):
        """D_p(I) alone: the trunk and the regression head (what streaming and export need)."""
        return self.regressor(self.trunk(image)).flatten(1)
