"""Model profiles: one frozen dataclass, one instance per profile.

The config travels inside every checkpoint and every exported model, so a file always says which
network shape it holds and loading it into another profile fails with a clear message.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


class ProfileMismatchError(ValueError):
    """A checkpoint or exported model was made for another model profile."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    image_size: int = 128
    n_exp: int = 30  # expression parameters p_exp
    n_speech: int = 10  # speech parameters p_speech
    # Generator. "resnet": the paper's CycleGAN/GANimation generator, parameters tiled as input channels.
    # "cached": a source encoder run once per portrait, and a light per-frame decoder conditioned on p.
    # "warp": geometry-guided (SPEC section 8): the portrait warped along its mesh to p (engine.geometry)
    # is the per-frame input; G adds colour and attention where the warp cannot do the job.
    generator: str = "resnet"
    g_channels: int = 64  # channels of the first convolution; doubled at each downsampling
    g_down: int = 2  # number of stride-2 downsamplings
    g_res_blocks: int = 6  # residual blocks at the bottleneck (per-frame blocks for "cached")
    g_source_blocks: int = 0  # "cached" only: residual blocks in the source encoder
    g_max_channels: int = 256
    # Discriminator: PatchGAN of d_layers 4x4 stride-2 convolutions, critic and regression heads.
    d_channels: int = 64
    d_layers: int = 6
    d_max_channels: int = 2048

    def __post_init__(self):
        if self.generator not in ("resnet", "cached", "warp"):
            raise ValueError(f"generator must be 'resnet', 'cached' or 'warp', not {self.generator!r}")
        if self.image_size % (2 ** self.d_layers) or self.image_size % (2 ** self.g_down):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**d_layers and 2**g_down")

    @property
    def n_params(self) -> int:
        return self.n_exp + self.n_speech

    @property
    def has_encoder(self) -> bool:
        """Whether the generator has a source encoder run once per portrait ("cached", "warp")."""
        return self.generator in ("cached", "warp")

    @property
    def frame_channels(self) -> int:
        """Channels of the generator's per-frame image input: RGB, or for "warp" the warped RGB, the
        region mask and the flow (engine.geometry.generator_frame)."""
        return 6 if self.generator == "warp" else 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))

    def check_same(self, other: "ModelConfig", what: str = "checkpoint") -> None:
        """Raise ProfileMismatchError naming the fields that differ. The name alone may differ: a
        profile renamed (the first real-time model's "realtime" is now "cached") holds the same network."""
        a, b = self.to_dict(), other.to_dict()
        if all(a[k] == b[k] for k in a if k != "name"):
            return
        diff = ", ".join(f"{k}: {b[k]!r} (expected {a[k]!r})" for k in a if a[k] != b[k])
        raise ProfileMismatchError(
            f"the {what} was made for model profile {other.name!r}, not {self.name!r}; differs in {diff}")


PROFILES: dict[str, ModelConfig] = {
    # The paper's sizes: GANimation/CycleGAN generator, 6-layer PatchGAN, 128 x 128, N = 40.
    "paper": ModelConfig(name="paper"),
    # Real time on a 2-core CPU, geometry-guided (SPEC section 8): the portrait warped along its mesh to p,
    # source features cached once, a thin per-frame U-Net that adds colour and attention to the warp.
    "realtime": ModelConfig(
        name="realtime", generator="warp", g_channels=16, g_down=3, g_res_blocks=2,
        g_source_blocks=1, g_max_channels=64, d_channels=32, d_layers=6, d_max_channels=256),
    # The realtime generator at half its widths (a quarter of its work a frame), distilled from a realtime
    # model (slidergan train --teacher): for machines where the realtime one misses the frame rate.
    "realtime-small": ModelConfig(
        name="realtime-small", generator="warp", g_channels=8, g_down=3, g_res_blocks=2,
        g_source_blocks=1, g_max_channels=32, d_channels=32, d_layers=6, d_max_channels=256),
    # The first real-time generator (the default model until the geometry-guided one): source features
    # cached once, a thin per-frame decoder that must make all motion from pixels.
    "cached": ModelConfig(
        name="cached", generator="cached", g_channels=16, g_down=3, g_res_blocks=2,
        g_source_blocks=2, g_max_channels=64, d_channels=32, d_layers=6, d_max_channels=256),
    # For tests: small images, few channels.
    "tiny": ModelConfig(
        name="tiny", image_size=64, generator="cached", g_channels=8, g_down=2,
        g_res_blocks=1, g_source_blocks=1, g_max_channels=32, d_channels=16, d_layers=5,
        d_max_channels=128),
    "tiny-warp": ModelConfig(
        name="tiny-warp", image_size=64, generator="warp", g_channels=8, g_down=2,
        g_res_blocks=1, g_source_blocks=1, g_max_channels=32, d_channels=16, d_layers=5,
        d_max_channels=128),
    # The paper's generator shape at test size, so both generator kinds are exercised by the tests.
    "tiny-resnet": ModelConfig(
        name="tiny-resnet", image_size=64, generator="resnet", g_channels=8,
        g_down=2, g_res_blocks=2, g_max_channels=32, d_channels=16, d_layers=5, d_max_channels=128),
}


def get_profile(name: str) -> ModelConfig:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown model profile {name!r}; choose one of {sorted(PROFILES)}") from None
