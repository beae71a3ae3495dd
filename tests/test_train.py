"""The trainer on the tiny profile and procedural synthetic data: it learns, logs, resumes exactly,
refuses bad inputs, and runs as two processes (gloo)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import ProfileMismatchError, get_profile
from tests.onnx_embedder import make_arcface_like_onnx
from trainer.data import DatasetError, paint_like, write_arrays
from trainer.synthetic import write_synthetic
from trainer.train import (TrainConfig, Trainer, config_from_args, edit_ratio, follows_params, per_parameter_mse,
                           regression_figures, training_device, weights_digest)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 400  # of which the first 40% paired
STRONG = 12  # the synthetic parameters with clearly visible effects (trainer/synthetic.py)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_synthetic(d / "paired", 384, 64, paired=True, seed=1)
    write_synthetic(d / "unpaired", 384, 64, seed=2, shard_size=128)
    write_synthetic(d / "val", 128, 64, seed=3)  # held out: other identities and parameters
    write_synthetic(d / "val-pairs", 128, 64, paired=True, seed=4)
    make_arcface_like_onnx(d / "arcface.onnx")
    return d


def _cfg(data, out, **kw):
    base = dict(profile="tiny", paired=[str(data / "paired")], unpaired=[str(data / "unpaired")],
                val=str(data / "val"), val_pairs=str(data / "val-pairs"), out=str(out),
                batch_size=8, lr=4e-4, lr_d=6e-4, n_critic=2,
                paired_steps=int(STEPS * 0.4), unpaired_steps=STEPS - int(STEPS * 0.4), identity=str(data / "arcface.onnx"),
                checkpoint_every=200, sample_every=200, log_every=25, val_count=128, workers=0, progress=False,
                seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    tr = Trainer(_cfg(data, out), keep_history=True)
    before = regression_figures(tr.G, tr.D, tr.val_images, tr.val_params, tr.mean_params)
    summary = tr.run()
    after = regression_figures(tr.G, tr.D, tr.val_images, tr.val_params, tr.mean_params)
    mse, base = per_parameter_mse(tr.D, tr.val_images, tr.val_params, tr.mean_params)
    figures = {"before": before, "after": after,
               "strong_ratio": float(mse[:STRONG].mean() / base[:STRONG].mean()),
               "all_ratio": float(mse.mean() / base.mean())}
    print("\ntraining figures:", json.dumps(figures, indent=1))
    return tr, out, figures, summary


def test_training_learns(trained):
    tr, out, f, summary = trained
    assert tr.step == STEPS and summary["ranks_agree"]
    # The regression head beats the mean predictor on held-out samples: clearly on the parameters with
    # visible effects, and overall (the subtle ones are not learned in a few hundred steps).
    assert f["strong_ratio"] < 0.88, f
    assert f["all_ratio"] < 0.97, f
    # G(I, p_org) reproduces its input much better than the untrained generator.
    assert f["after"]["recon_l1"] < 0.4 * f["before"]["recon_l1"], f


def test_the_relative_error_leaves_out_near_neutral_rows(trained):
    """Table 4's figure, as evaluate reports it: a parameter vector of zeros (a clip's neutral frame) has no
    relative error; counted, its ratio to a norm of 1e-6 made the validation figure about 1e4."""
    from trainer.evaluate import regression_summary
    tr, _, _, _ = trained
    x, p = tr.val_images[:16], tr.val_params[:16].clone()
    p[0] = 0.0
    got = regression_figures(tr.G, tr.D, x, p, tr.mean_params)["regression_rel_error"]
    with torch.no_grad():
        pred = tr.D.regress(x[1:]).double().numpy()
    assert got == pytest.approx(regression_summary(p[1:].double().numpy(), pred)["mean"], rel=1e-5)
    assert got < 10


@pytest.mark.xfail(strict=True, reason="known defect: after the test's 400 steps the tiny generator still "
                   "copies its input (edit ratio about 0.99); see the README's Training section")
def test_generator_follows_the_target_parameters(trained):
    """What SliderGAN is for: after training, G(x, q) shows q. Measured on held-out synthetic pairs
    against the true target image (in the region where the pair differs, G's error must be well under
    copying's), and through the trained regression head on the parameters with visible effects
    (D_p(G(x, q)) much closer to q than D_p(x) is). Strict xfail: when the defect is fixed this passes
    and the marker must go."""
    tr = trained[0]
    vp = tr.val_pairs
    edit = edit_ratio(tr.G.eval(), vp["image"], vp["target_params"], vp["target_image"])
    f = follows_params(tr.G.eval(), tr.D.eval(), tr.val_images[:64], tr.val_params[:64], which=range(STRONG))
    assert edit < 0.8 and f["ratio"] < 0.7, (edit, f)


def test_every_loss_term_is_finite_and_logged(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tr, out, f, _ = trained
    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    want = {"D/adv", "D/exp", "D/gp", "D/total", "G/adv", "G/exp", "G/rec", "G/att", "G/id", "G/gen",
            "G/total", "lr/G", "lr/D", "val/regression_mse", "val/recon_l1", "val/follow_ratio", "val/edit_ratio"}
    assert want <= tags, want - tags
    for tag in want:
        values = [e.value for e in ea.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag
    # L_gen in the paired phase only; every step's losses finite.
    assert all("G/gen" in h for h in tr.history[:int(STEPS * 0.4)] if "G/total" in h)
    assert not any("G/gen" in h for h in tr.history[int(STEPS * 0.4):])
    assert all(math.isfinite(v) for h in tr.history for v in h.values())
    # Sample grids and checkpoints.
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step-0000000.png", "step-0000200.png", "step-0000400.png"]
    ck = load_checkpoint(out / "checkpoints" / f"step-{STEPS:07d}", expect=get_profile("tiny"), training=True)
    assert ck.step == STEPS and ck.param_names[0] == "mouth_open" and ck.training["step"] == STEPS


@pytest.mark.parametrize("paired_share,paint_share", [(0.0, 0.0), (0.5, 0.5)])
def test_resume_reproduces_the_uninterrupted_run(data, tmp_path, paired_share, paint_share):
    """Also with paired batches mixed into the unpaired phase (two streams to restart where they were) and
    painted rows (drawn from the run's generator); 3 paired steps, so the phase boundary falls inside a
    G-step cycle."""
    kw = dict(paired_steps=3, unpaired_steps=8, n_critic=2, checkpoint_every=3, keep_checkpoints=5, workers=2,
              sample_every=100, batch_size=4, val_count=8, paired_share=paired_share, paint_share=paint_share)
    a = Trainer(_cfg(data, tmp_path / "a", **kw), keep_history=True)
    a.run()
    for at in (3, 6, 9):  # the phase boundary, inside the unpaired phase (twice with a mixed schedule)
        b = Trainer(_cfg(data, tmp_path / f"b{at}", **kw), keep_history=True,
                    resume=tmp_path / "a" / "checkpoints" / f"step-{at:07d}")
        assert b.step == at
        b.run()
        assert [h["step"] for h in b.history] == list(range(at + 1, 12))
        for ha, hb in zip(a.history[at:], b.history):
            assert ha.keys() == hb.keys()
            for k in ha:
                assert hb[k] == pytest.approx(ha[k], rel=1e-5, abs=1e-6), (at, ha["step"], k)
    # --resume with no path: the newest checkpoint of the output folder.
    c = Trainer(_cfg(data, tmp_path / "a", **kw), resume=True)
    assert c.step == 11


def test_paired_share_schedules_that_share_of_the_unpaired_g_step_cycles_on_pairs(data, tmp_path):
    tr = Trainer(_cfg(data, tmp_path, paired_steps=5, unpaired_steps=400, n_critic=3, paired_share=0.25))
    kinds = [tr.phase_at(s) for s in range(tr.total_steps)]
    assert kinds[:5] == ["paired"] * 5
    g_steps = [s for s in range(5, tr.total_steps) if (s + 1) % 3 == 0]
    share = np.mean([kinds[s] == "paired" for s in g_steps])
    assert share == pytest.approx(0.25, abs=0.01)
    for s in range(6, tr.total_steps):  # whole cycles: the D steps before a G step take its kind of batch
        if s % 3:
            assert kinds[s] == kinds[s - 1], s
    # The batch counts that a resume restarts the two streams from agree with the schedule.
    for s in range(tr.total_steps):
        before, after = tr.batches_before(s), tr.batches_before(s + 1)
        assert after[kinds[s]] == before[kinds[s]] + 1 and sum(after.values()) == s + 1, s
    with pytest.raises(ValueError, match="paired_share must be between 0 and 1"):
        _cfg(data, tmp_path, paired_share=1.5)


def test_painted_rows_look_painted_and_a_pair_alike(data, tmp_path):
    """paint_like: the same look for row i of every array (a pair differs only by its motion), the input
    untouched, a yellowed varnish; the trainer paints paint_share of a batch's rows, source and target alike."""
    a = np.load(next((data / "paired").glob("shard-*.npz")))
    src, trg = a["images"][:6], a["target_images"][:6]
    keep = src.copy()
    ps, pt = paint_like([src, trg], np.random.default_rng(3))
    assert np.array_equal(src, keep)
    assert np.abs(ps.astype(float) - src).mean() > 5
    alone, = paint_like([trg], np.random.default_rng(3))   # the same draws: the same look
    assert np.array_equal(alone, pt)
    twin, twin2 = paint_like([src, src], np.random.default_rng(4))
    assert np.array_equal(twin, twin2)
    blue_over_red = lambda x: x[..., 2].astype(float).mean() / x[..., 0].astype(float).mean()
    assert blue_over_red(ps) < blue_over_red(src)
    with pytest.raises(ValueError, match="paint_share must be between 0 and 1"):
        _cfg(data, tmp_path, paint_share=2)
    tr = Trainer(_cfg(data, tmp_path / "run", paint_share=0.5, batch_size=64))
    batch = next(tr._stream("paired", 0))
    out = tr._paint(batch)
    changed = [(out[k] != batch[k]).flatten(1).any(1) for k in ("image", "target_image")]
    assert torch.equal(changed[0], changed[1])
    assert 0.25 < changed[0].float().mean() < 0.75
    assert torch.equal(out["params"], batch["params"])


def test_checkpoint_of_another_profile_is_a_clear_error(data, trained):
    _, out, _, _ = trained
    cfg = _cfg(data, out, profile="tiny-resnet", identity=None)
    with pytest.raises(ProfileMismatchError, match="made for model profile 'tiny', not 'tiny-resnet'"):
        Trainer(cfg, resume=True)


def test_init_starts_from_a_checkpoints_weights(data, trained, tmp_path):
    """Fine-tuning: --init takes the weights, not the step, the optimisers or the schedule."""
    tr, out, _, _ = trained
    ckpt = out / "checkpoints" / f"step-{STEPS:07d}"
    ft = Trainer(_cfg(data, tmp_path, init=str(ckpt), identity=None))
    assert ft.step == 0 and not ft.opt_G.state
    assert weights_digest(ft.G, ft.D) == weights_digest(tr.G, tr.D)
    with pytest.raises(ProfileMismatchError, match="made for model profile 'tiny', not 'tiny-resnet'"):
        Trainer(_cfg(data, tmp_path, profile="tiny-resnet", init=str(ckpt), identity=None))
    with pytest.raises(DatasetError, match="val_pairs: .* holds no target images"):
        Trainer(_cfg(data, tmp_path, val_pairs=str(data / "val")))


def test_distillation_teaches_a_narrower_generator_to_paint_as_the_teacher(data, trained, tmp_path, monkeypatch):
    """--teacher: a generator of half the widths learns the teacher's I_gen on the same inputs; D is the
    teacher's, untouched (no D step); it resumes exactly; a teacher that differs beyond the generator's widths,
    or was made for another blendshape model, is refused."""
    import dataclasses

    from engine import config
    tr, out, _, _ = trained
    teacher = str(out / "checkpoints" / f"step-{STEPS:07d}")
    monkeypatch.setitem(config.PROFILES, "tiny-narrow",
                        dataclasses.replace(get_profile("tiny"), name="tiny-narrow", g_channels=4, g_max_channels=16))
    kw = dict(profile="tiny-narrow", teacher=teacher, identity=None, n_critic=1, lr=2e-3, betas=(0.9, 0.999),
              paired_steps=40, unpaired_steps=40, paired_share=0.5)
    st = Trainer(_cfg(data, tmp_path / "s", **kw), keep_history=True)
    assert sum(p.numel() for p in st.G.parameters()) < 0.4 * sum(p.numel() for p in tr.G.parameters())
    x = st.val_images
    q = st.val_params.roll(1, 0)

    def gap():
        with torch.no_grad():
            return float((st.G(x, q)[0] - st.T(x, q)[0]).abs().mean())
    before = gap()
    st.run()
    after = gap()
    print(f"\nstudent vs teacher, mean |I_gen difference| on held-out faces: {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before
    assert st.last_val["distill"] == pytest.approx(after, rel=1e-4)
    assert weights_digest(st.D) == weights_digest(tr.D)
    assert not any(k.startswith("D/") for h in st.history for k in h)
    ck = load_checkpoint(tmp_path / "s" / "checkpoints" / "step-0000080")
    assert ck.config.name == "tiny-narrow"
    # exact resume (the teacher is read again from the config)
    short = dict(kw, paired_steps=3, unpaired_steps=4, checkpoint_every=3, batch_size=4, val_count=8, sample_every=100)
    a = Trainer(_cfg(data, tmp_path / "a", **short), keep_history=True)
    a.run()
    b = Trainer(_cfg(data, tmp_path / "b", **short), keep_history=True,
                resume=tmp_path / "a" / "checkpoints" / "step-0000003")
    b.run()
    assert [h["step"] for h in b.history] == [4, 5, 6, 7]
    for ha, hb in zip(a.history[3:], b.history):
        for k in ha:
            assert hb[k] == pytest.approx(ha[k], rel=1e-5, abs=1e-7), (ha["step"], k)
    with pytest.raises(ProfileMismatchError, match="cannot teach profile 'tiny-resnet': they differ in generator"):
        Trainer(_cfg(data, tmp_path / "c", **dict(kw, profile="tiny-resnet")))
    other = save_checkpoint(tmp_path / "other", tr.mcfg, tr.G, tr.D, param_names=tr.param_names, blendshapes="other:1")
    with pytest.raises(DatasetError, match="made for blendshape model 'other:1'"):
        Trainer(_cfg(data, tmp_path / "c", **dict(kw, teacher=str(other))))


def test_bad_training_inputs(data, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        Trainer(_cfg(data, tmp_path, unpaired=[str(tmp_path / "missing")]))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    write_arrays(tmp_path / "narrow", images, rng.uniform(-1, 1, (4, 30)).astype(np.float32))
    with pytest.raises(DatasetError, match="30 parameters per sample, but the model profile 'tiny' expects 40"):
        Trainer(_cfg(data, tmp_path, unpaired=[str(tmp_path / "narrow")]))
    params = rng.uniform(-1, 1, (4, 40)).astype(np.float32)
    info = write_arrays(tmp_path / "nan", images, params)
    bad = dict(np.load(info.shard_path(0)))
    bad["params"][3, 7] = np.nan
    np.savez(info.shard_path(0), **bad)
    with pytest.raises(DatasetError, match="shard-000000.npz: row 3 has a non-finite label"):
        Trainer(_cfg(data, tmp_path, unpaired=[str(tmp_path / "nan")]))
    with pytest.raises(DatasetError, match="listed as paired"):
        Trainer(_cfg(data, tmp_path, paired=[str(data / "unpaired")]))


def test_the_training_device_is_an_indexed_gpu_or_a_clear_error(monkeypatch):
    """``--device``: a GPU is made current by its index (torch.cuda.set_device refuses a bare ``cuda`` device,
    which had stopped every run on a GPU machine at its start); a GPU where torch has none, one the machine
    lacks, or a device name torch does not train on is a clear error. The GPUs here are torch.cuda's functions
    replaced (no GPU needed); set_device checks its argument as torch's own does."""
    from torch.cuda._utils import _get_device_index

    assert training_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N, not 'gpu'"):
        training_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        training_device("cuda")
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: made_current.append(_get_device_index(d)))
    assert training_device("auto") == torch.device("cuda", 0)
    assert training_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device("cuda", rank=1, world=2) == torch.device("cuda", 1)
    assert made_current == [0, 1, 1]
    with pytest.raises(ValueError, match="has 2 CUDA GPU"):
        training_device("cuda:2")


def test_config_files_and_overrides(tmp_path):
    import argparse

    from trainer.train import add_arguments
    for name in ("tiny", "realtime", "paper"):
        cfg = TrainConfig.load(ROOT / "trainer" / "configs" / f"{name}.toml")
        assert cfg.profile == name and cfg.betas == (0.5, 0.999)
    paper = TrainConfig.load(ROOT / "trainer" / "configs" / "paper.toml")
    assert (paper.paired_epochs, paper.unpaired_epochs, paper.batch_size, paper.gan) == (20, 40, 16, "rad")
    assert paper.weights.exp == 1000 and paper.weights.att == 0.3
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--config", str(ROOT / "trainer" / "configs" / "tiny.toml"), "--gan", "wgp", "--no-id",
                         "--set", "weights.att=0.5", "--set", "sample_params=[2, 4]", "--batch-size", "3"])
    cfg = config_from_args(args)
    assert (cfg.gan, cfg.no_id, cfg.weights.att, cfg.sample_params, cfg.batch_size) == ("wgp", True, 0.5, [2, 4], 3)
    (tmp_path / "bad.toml").write_text('profile = "tiny"\nlearning_rate = 1\n')
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.load(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="unknown loss weight"):
        config_from_args(p.parse_args(["--set", "weights.colour=1"]))


def test_wgp_and_ablations_run(data, tmp_path):
    tr = Trainer(_cfg(data, tmp_path, gan="wgp", no_id=True, no_gen=True, paired_steps=2, unpaired_steps=2,
                      n_critic=1, batch_size=2, val_count=4), keep_history=True)
    tr.run()
    assert tr.F is None
    assert all("G/id" not in h and "G/gen" not in h for h in tr.history)


def test_two_processes_with_gloo_agree(data, tmp_path):
    cfg = _cfg(data, tmp_path / "ddp", paired_steps=3, unpaired_steps=3, n_critic=2, batch_size=2, val_count=8,
               checkpoint_every=100, sample_every=100, identity=None)
    (tmp_path / "ddp.json").write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "engine.cli", "train", "--config", str(tmp_path / "ddp.json")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["ranks_agree"] and len(set(summary["weights_digest"])) == 1
    ck = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step-0000006", training=True)
    assert ck.step == 6 and ck.training["world_size"] == 2 and len(ck.training["rng"]) == 2


def test_generalisation_script_reports_training_and_held_out_figures(data, trained, tmp_path):
    """scripts/generalisation.py on the trained tiny checkpoint: its figures, and a regression head that
    beats predicting zeros (relative error exactly 1) on training and held-out crops."""
    _, out, _, _ = trained
    report = tmp_path / "gen.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generalisation.py"),
                    str(out / "checkpoints" / f"step-{STEPS:07d}"), "--train-pairs", str(data / "paired"),
                    "--held-out-pairs", str(data / "val-pairs"), "--train", str(data / "unpaired"),
                    "--held-out", str(data / "val"), "--crops", "128", "--json", str(report)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    (row,) = json.loads(report.read_text())
    assert set(row) == {"checkpoint", "edit_train", "edit_held_out", "head_train", "head_held_out"}
    assert row["checkpoint"] == str(out / "checkpoints" / f"step-{STEPS:07d}")
    # Bounds that hold on any machine. How far below 1 (predicting zeros) the head gets after these 400
    # steps depends on the float numerics of the run (head_held_out was 0.975 on an AVX2-only machine
    # against 0.96 elsewhere), so learning is not judged here: test_training_learns judges it, against
    # the mean predictor with margin. This test checks the script: both figures for both splits, finite
    # and in their possible range (edit: 0 exact .. 1 copying, a little above for edits worse than
    # copying; head: a relative error, 1 for a head that outputs zeros, far above only if broken) ...
    for k in ("edit_train", "edit_held_out", "head_train", "head_held_out"):
        assert math.isfinite(row[k]) and 0 < row[k] < 2, row
    # ... and that it reports what it says: the same figures computed here from the same rows.
    import importlib.util
    spec = importlib.util.spec_from_file_location("generalisation", ROOT / "scripts" / "generalisation.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    ck = load_checkpoint(out / "checkpoints" / f"step-{STEPS:07d}")
    G, D, cfg = ck.generator.eval(), ck.discriminator.eval(), ck.config
    for split, pairs, crops in (("train", "paired", "unpaired"), ("held_out", "val-pairs", "val")):
        vp = gen.sample(str(data / pairs), cfg, 63)
        assert row[f"edit_{split}"] == pytest.approx(
            edit_ratio(G, vp["image"], vp["target_params"], vp["target_image"]), rel=1e-4, abs=1e-6)
        assert row[f"head_{split}"] == pytest.approx(
            gen.head_rel_error(D, gen.sample(str(data / crops), cfg, 128)), rel=1e-4, abs=1e-6)


def test_rng_states_round_trip_exactly_through_a_checkpoint(tmp_path):
    """torch, NumPy (with a cached Gaussian), Python (with a cached gauss) and the trainer's generator
    continue exactly where they were, from the pickle-free training file."""
    import random

    import torch

    from engine.models import Discriminator, build_generator
    from trainer.train import _rng_state, _set_rng_state
    cfg = get_profile("tiny")
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.rand(3), torch.rand(3, generator=gen), np.random.normal(), random.gauss(0, 1)  # leave cached halves
    path = save_checkpoint(tmp_path / "ck", cfg, build_generator(cfg), Discriminator(cfg),
                           training={"rng": [_rng_state(gen)]})

    def draws():
        return (torch.rand(4).tolist(), torch.rand(4, generator=gen).tolist(), np.random.normal(size=3).tolist(),
                np.random.rand(2).tolist(), random.gauss(0, 1), random.random())

    expected = draws()
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    gen.manual_seed(99)
    _set_rng_state(load_checkpoint(path, training=True).training["rng"][0], gen)
    assert draws() == expected


class _Planted:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_a_planted_training_pt(data, tmp_path):
    import torch

    from engine.checkpoint import CheckpointError
    kw = dict(paired_steps=2, unpaired_steps=2, n_critic=1, batch_size=2, val_count=4, checkpoint_every=2,
              sample_every=100, identity=None)
    Trainer(_cfg(data, tmp_path / "a", **kw)).run()
    ck = tmp_path / "a" / "checkpoints" / "step-0000002"
    assert (ck / "training.safetensors").exists() and not (ck / "training.pt").exists()
    marker = tmp_path / "unpickled"
    torch.save({"step": 2, "payload": _Planted(marker)}, ck / "training.pt")
    b = Trainer(_cfg(data, tmp_path / "b", **kw), resume=ck)  # resumes from training.safetensors
    assert b.step == 2 and b.opt_G.state
    b.run()
    assert b.step == 4 and not marker.exists()
    (ck / "training.safetensors").unlink()  # only the pickle left: refused, not read
    with pytest.raises(CheckpointError, match=r"training\.pt, a pickle, which is never loaded.*--init"):
        Trainer(_cfg(data, tmp_path / "c", **kw), resume=ck)
    with pytest.raises(CheckpointError, match="never loaded"):
        load_checkpoint(ck, training=True)
    assert not marker.exists()
    load_checkpoint(ck)  # the weights alone still load (--init)
    torch.load(ck / "training.pt", weights_only=False)  # the plant is live: unpickling it runs its code
    assert marker.exists()


def test_old_checkpoints_are_pruned_but_never_the_ones_a_resumed_run_writes(tmp_path):
    """trainer.train.prune_checkpoints (every trainer's): the newest ``keep`` up to the one just written stay;
    a run resumed from step 3 of a run that went on to step 6 keeps its own step 4 (pruned by the newest steps'
    names, it would have removed what it had just written)."""
    from trainer.train import prune_checkpoints
    ck = tmp_path / "checkpoints"
    for s in range(1, 7):
        (ck / f"step-{s:07d}").mkdir(parents=True)
    (ck / "notes").mkdir()
    prune_checkpoints(ck / "step-0000004", keep=2)
    assert sorted(p.name for p in ck.iterdir()) == ["notes", "step-0000003", "step-0000004", "step-0000005",
                                                    "step-0000006"]
    prune_checkpoints(ck / "step-0000006", keep=2)
    assert sorted(p.name for p in ck.iterdir()) == ["notes", "step-0000005", "step-0000006"]
