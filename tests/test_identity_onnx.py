"""The pluggable identity embedder F (trainer/identity.py) on a small ONNX embedder made here."""
import logging

import numpy as np
import pytest
import torch

from tests.onnx_embedder import make_arcface_like_onnx
from trainer.identity import IdentityError, OnnxGraphModule, load_identity, load_onnx_embedder


@pytest.mark.parametrize("in_graph", [False, True])
def test_converter_matches_onnxruntime(tmp_path, in_graph):
    import onnx
    import onnxruntime as ort
    path = make_arcface_like_onnx(tmp_path / "e.onnx", normalise_in_graph=in_graph)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    if in_graph:
        x = (x + 1) * 127.5
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    net = OnnxGraphModule(onnx.load(str(path)))
    got = net(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_embedder_is_frozen_normalised_and_differentiable(tmp_path):
    path = make_arcface_like_onnx(tmp_path / "e.onnx", normalise_in_graph=True)
    emb = load_onnx_embedder(path, crop_size=64)
    assert emb.raw_pixels  # insightface's rule: Sub/Mul at the start -> feed 0..255
    assert not any(p.requires_grad for p in emb.parameters())
    x = (torch.rand(3, 3, 64, 64) * 2 - 1).requires_grad_(True)
    e = emb(x)
    assert e.shape == (3, 8) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    e.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    emb.train()
    assert not emb.training


def test_load_identity_choices_and_errors(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_identity(None) is None
    assert "L_id is OFF" in caplog.text
    with pytest.raises(IdentityError, match="does not exist"):
        load_identity(str(tmp_path / "missing.onnx"))
    with pytest.raises(IdentityError, match="takes an .onnx file"):
        load_identity("model.pt")
    small = make_arcface_like_onnx(tmp_path / "small.onnx", size=64)
    with pytest.raises(IdentityError, match=r"ArcFace input layout \(N, 3, 112, 112\)"):
        load_identity(str(small))
    odd = make_arcface_like_onnx(tmp_path / "odd.onnx", extra_op="Softsign")
    with pytest.raises(IdentityError, match="Softsign"):
        load_identity(str(odd))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(IdentityError):
        load_identity(str(tmp_path / "junk.onnx"))


def test_crops_are_framed_like_arcface(tmp_path):
    """A crop with dots at the template's eye centres, nose tip and mouth corners lands on ArcFace's
    five reference points in the 112 x 112 input."""
    import cv2

    from engine.face import template_points
    from trainer.identity import ARCFACE_POINTS, MESH_EYE_L, MESH_EYE_R, MESH_MOUTH_L, MESH_MOUTH_R, MESH_NOSE
    emb = load_onnx_embedder(make_arcface_like_onnx(tmp_path / "e.onnx"), crop_size=128)
    pts = template_points(128)[:, :2]
    five = [pts[list(MESH_EYE_L)].mean(0), pts[list(MESH_EYE_R)].mean(0), pts[MESH_NOSE], pts[MESH_MOUTH_L],
            pts[MESH_MOUTH_R]]
    for k, (x, y) in enumerate(five):
        img = np.zeros((128, 128), np.float32)
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 3 * 16, 1.0, -1, cv2.LINE_AA, 4)
        t = torch.from_numpy(img)[None, None].expand(1, 3, 128, 128) * 2 - 1
        out = (emb.to_input(t)[0, 0] + 1).numpy() / 2
        ys, xs = np.nonzero(out > 0.5)
        centre = np.array([xs.mean(), ys.mean()])
        assert np.abs(centre - ARCFACE_POINTS[k]).max() < 1.5, (k, centre, ARCFACE_POINTS[k])
