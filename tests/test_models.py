import numpy as np
import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from engine.config import PROFILES, ModelConfig, ProfileMismatchError, get_profile
from engine.models import Discriminator, build_generator, composite


@pytest.mark.parametrize("name", ["tiny", "tiny-resnet"])
def test_shapes_and_eq4(name):
    cfg = get_profile(name)
    G, D = build_generator(cfg), Discriminator(cfg)
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    p = torch.rand(2, cfg.n_params) * 2 - 1
    y, C, A = G(x, p)
    assert y.shape == x.shape and C.shape == x.shape and A.shape == (2, 1, cfg.image_size, cfg.image_size)
    assert float(A.min().detach()) >= 0 and float(A.max().detach()) <= 1 and float(C.abs().max().detach()) <= 1
    assert torch.allclose(y, A * C + (1 - A) * x)
    critic, params = D(x)
    assert params.shape == (2, cfg.n_params) and critic.shape[:2] == (2, 1)
    assert torch.allclose(D.regress(x), params)


@pytest.mark.parametrize("name", ["tiny", "tiny-resnet"])
def test_generator_depends_on_params(name):
    cfg = get_profile(name)
    G = build_generator(cfg).eval()
    x = torch.rand(1, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        y0 = G(x, torch.zeros(1, cfg.n_params))[0]
        y1 = G(x, torch.ones(1, cfg.n_params))[0]
        # The split interface gives the same result as the whole forward.
        feats = G.encode(x)
        C, A = G.decode(x, feats, torch.ones(1, cfg.n_params))
    assert (y0 - y1).abs().max() > 1e-4
    assert torch.allclose(composite(x, C, A), y1, atol=1e-6)


def test_warp_generator_starts_as_the_warp_and_follows_p():
    """The geometry-guided generator composites over the warped frame; untrained, its attention is
    about 0 (it returns the warp); its colour and attention depend on p and on the frame."""
    cfg = get_profile("tiny-warp")
    G = build_generator(cfg).eval()
    s = cfg.image_size
    x = torch.rand(2, 3, s, s) * 2 - 1
    frame = torch.cat([torch.rand(2, 3, s, s) * 2 - 1, torch.rand(2, 1, s, s), torch.rand(2, 2, s, s) - 0.5], 1)
    p = torch.rand(2, cfg.n_params) * 2 - 1
    with torch.no_grad():
        y, C, A = G(x, p, frame=frame)
        assert y.shape == x.shape and A.shape == (2, 1, s, s)
        assert float(A.max()) < 0.03 and float((y - frame[:, :3]).abs().max()) < 0.06
        assert torch.allclose(y, composite(frame[:, :3], C, A))
        C1, A1 = G.decode(frame, G.encode(x), -p)
        C2, _ = G.decode(frame.flip(-1), G.encode(x), p)
    assert (C1 - C).abs().max() > 1e-4 and (A1 - A).abs().max() > 1e-6 and (C2 - C).abs().max() > 1e-4
    with pytest.raises(ValueError, match="warped frame"):
        G(x, p)
    # G paints only in the target's openings (the frame's region mask, widened): nowhere else
    closed = frame.clone()
    closed[:, 3] = 0
    closed[:, 3, 20:30, 20:40] = 1.0                             # a mouth opening
    with torch.no_grad():
        _, A = G.decode(closed, G.encode(x), p)
    assert float(A[..., 20:30, 20:40].min()) > 0 and float(A[..., 45:, :].abs().max()) == 0


def test_box_mean_is_the_mean_over_each_windows_part_inside_the_image():
    """``box_mean`` (the openings' feathering, by convolution: onnxruntime's AveragePool of opset 19 is slow) is
    avg_pool2d with count_include_pad=False, at the edges too, in PyTorch and in onnxruntime."""
    import io

    import onnxruntime as ort
    import torch.nn.functional as F

    from engine.models import box_mean
    torch.manual_seed(0)
    for h, w, r in ((128, 128, 5), (20, 33, 3), (5, 6, 4)):
        m = (torch.rand(2, 1, h, w) > 0.6).float()
        want = F.avg_pool2d(m, 2 * r + 1, 1, r, count_include_pad=False)
        torch.testing.assert_close(box_mean(m, r), want, rtol=0, atol=1e-6)

    class Box(torch.nn.Module):
        def forward(self, m):
            return box_mean(m, 5)
    buf = io.BytesIO()
    torch.onnx.export(Box(), (m,), buf, input_names=["m"], dynamic_axes={"m": {0: "b", 2: "h", 3: "w"}},
                      opset_version=20, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    m = (torch.rand(3, 1, 40, 52) > 0.6).float()
    np.testing.assert_allclose(sess.run(None, {"m": m.numpy()})[0],
                               F.avg_pool2d(m, 11, 1, 5, count_include_pad=False).numpy(), atol=1e-6)


def test_composite_keeps_source_where_mask_is_zero():
    x, c = torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), -1.0)
    a = torch.zeros(1, 1, 4, 4)
    a[..., :2, :] = 1
    y = composite(x, c, a)
    assert torch.all(y[..., :2, :] == -1) and torch.all(y[..., 2:, :] == 0.5)


def test_full_profiles_build():
    for name in ("paper", "realtime"):
        cfg = PROFILES[name]
        assert cfg.n_params == 40 and cfg.image_size == 128
        D = Discriminator(cfg)
        assert D.regress(torch.zeros(1, 3, 128, 128)).shape == (1, 40)
    assert sum(p.numel() for p in build_generator(PROFILES["paper"]).parameters()) > 5e6


def test_config_validation_and_roundtrip():
    cfg = get_profile("tiny")
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown model profile"):
        get_profile("huge")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(name="bad", image_size=100)
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_checkpoint_roundtrip_and_profile_mismatch(tmp_path):
    cfg = get_profile("tiny")
    G, D = build_generator(cfg), Discriminator(cfg)
    path = save_checkpoint(tmp_path / "ck", cfg, G, D, step=7, training={"step": 7})
    md = read_metadata(path)
    assert md["config"] == cfg and md["step"] == 7 and len(md["param_names"]) == cfg.n_params
    ck = load_checkpoint(path, expect=cfg, training=True)
    for a, b in zip(G.state_dict().values(), ck.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert ck.training == {"step": 7}
    with pytest.raises(ProfileMismatchError, match="profile 'tiny', not 'tiny-resnet'"):
        load_checkpoint(path, expect=get_profile("tiny-resnet"))
    import dataclasses    # a renamed profile with the same network loads
    load_checkpoint(path, expect=dataclasses.replace(get_profile("tiny"), name="tiny-renamed"))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    cfg = get_profile("tiny")
    G, D = build_generator(cfg), Discriminator(cfg)
    save_checkpoint(tmp_path / "ck", cfg, G, D, step=1)

    # A training state that cannot be stored without pickle is refused before anything is written.
    with pytest.raises(CheckpointError, match="cannot be stored without pickle"):
        save_checkpoint(tmp_path / "ck", cfg, G, D, step=2, training={"oops": object()})
    assert read_metadata(tmp_path / "ck")["step"] == 1
    # A failure half-way through writing (the training file, after the model file).
    import safetensors.torch

    import engine.checkpoint as ckmod
    real = safetensors.torch.save_file

    def boom(tensors, filename, metadata=None):
        if filename.endswith(ckmod.TRAINING_FILE):
            raise RuntimeError("disk full")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", boom)     # engine.checkpoint imports it when it writes
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path / "ck", cfg, G, D, step=2, training={"step": 2})
    assert read_metadata(tmp_path / "ck")["step"] == 1  # the old checkpoint survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary left behind


def _data_offset(file) -> int:
    """Where a safetensors file's tensor bytes begin (after the 8-byte length and the JSON header)."""
    import struct
    with open(file, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def _strip_checksum(file) -> None:
    """Rewrite a model file as checkpoints were written before the checksum existed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(file), "pt") as f:
        md = dict(f.metadata())
    md.pop("sha256")
    save_file(load_file(str(file)), str(file), metadata=md)


def _overwrite_weights(file, byte=0xFF) -> None:
    start = _data_offset(file)
    size = file.stat().st_size
    with open(file, "r+b") as f:
        f.seek(start)
        f.write(bytes([byte]) * (size - start))


def test_checksum_is_recorded_and_a_damaged_file_is_corrupt(tmp_path):
    cfg = get_profile("tiny")
    torch.manual_seed(0)
    G, D = build_generator(cfg), Discriminator(cfg)
    path = save_checkpoint(tmp_path / "ck", cfg, G, D, step=3)
    assert len(read_metadata(path)["sha256"]) == 64
    load_checkpoint(path)  # intact: loads
    _overwrite_weights(path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt"):
        load_checkpoint(path)
    # One flipped byte is enough.
    path2 = save_checkpoint(tmp_path / "ck2", cfg, G, D)
    f = path2 / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[_data_offset(f) + 1000] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path2)


def test_checkpoint_without_checksum_loads_but_non_finite_weights_are_refused(tmp_path):
    """Files from before the checksum still load; NaN/inf weights are refused with or without one,
    naming the file and the first bad tensor."""
    cfg = get_profile("tiny")
    torch.manual_seed(0)
    G, D = build_generator(cfg), Discriminator(cfg)
    old = save_checkpoint(tmp_path / "old", cfg, G, D)
    _strip_checksum(old / "model.safetensors")
    assert read_metadata(old)["sha256"] == ""
    ck = load_checkpoint(old)
    for a, b in zip(G.state_dict().values(), ck.generator.state_dict().values()):
        assert torch.equal(a, b)
    _overwrite_weights(old / "model.safetensors")  # 0xFF bytes: NaN in every float
    first = "G." + next(k for k, v in G.state_dict().items() if v.is_floating_point())
    with pytest.raises(CheckpointError, match=rf"old/model\.safetensors: weights are not finite: tensor '{first}'"):
        load_checkpoint(old)
    # NaN written by the program itself (a valid checksum): still refused, naming D's tensor.
    name, t = next((k, v) for k, v in D.state_dict().items() if v.is_floating_point() and v.ndim > 1)
    with torch.no_grad():
        t.view(-1)[5] = float("inf")
    bad = save_checkpoint(tmp_path / "bad", cfg, G, D)
    with pytest.raises(CheckpointError, match=rf"weights are not finite: tensor 'D\.{name}' holds 1 NaN/inf"):
        load_checkpoint(bad)


def test_training_state_round_trips_without_pickle(tmp_path):
    """Optimizer states, RNG states of every kind, tuples, int-keyed dicts, bytes, non-finite floats."""
    import pickle
    import random

    import numpy as np
    cfg = get_profile("tiny")
    G, D = build_generator(cfg), Discriminator(cfg)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    G(torch.rand(2, 3, 64, 64), torch.rand(2, cfg.n_params))[0].mean().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    torch.rand(3, generator=gen)
    state = {"step": 1, "opt": opt.state_dict(), "gen": gen.get_state(), "torch": torch.get_rng_state(),
             "numpy": np.random.get_state(), "python": random.getstate(), "bytes": b"\x00\xff", "inf": float("inf"),
             "scalar": np.float32(1.5), "__odd_key": (1, [2, {3: "x"}])}
    path = save_checkpoint(tmp_path / "ck", cfg, G, D, training=state)
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "training.safetensors"]
    back = load_checkpoint(path, training=True).training
    assert pickle.dumps(back["python"]) == pickle.dumps(state["python"])  # same types, same values
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][1].dtype == state["numpy"][1].dtype and back["numpy"][2:] == state["numpy"][2:]
    assert torch.equal(back["gen"], state["gen"]) and torch.equal(back["torch"], state["torch"])
    assert back["bytes"] == b"\x00\xff" and back["inf"] == float("inf") and back["__odd_key"] == (1, [2, {3: "x"}])
    assert type(back["scalar"]) is np.float32 and back["scalar"] == 1.5
    opt2 = torch.optim.Adam(G.parameters(), lr=1.0)
    opt2.load_state_dict(back["opt"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        for name in a["state"][k]:
            assert torch.equal(a["state"][k][name], b["state"][k][name])
    # The training file has its own checksum.
    f = path / "training.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x10
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"training\.safetensors is corrupt"):
        load_checkpoint(path, training=True)
