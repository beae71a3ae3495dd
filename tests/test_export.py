"""ONNX export: parity with PyTorch for every profile, metadata inside the files, clear errors;
TensorRT: import-safe, clear refusal without a GPU, real build and parity where there is one."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from engine.checkpoint import CheckpointError, save_checkpoint
from engine.config import ModelConfig, get_profile
from engine.inference import MANIFEST, NORMALIZATION, ROLE_FILES, read_export, read_onnx_metadata
from engine.models import Discriminator, build_generator
from engine.torch_backend import FrameGenerator
from exporters import tensorrt as trt_export
from exporters.onnx import ATOL, ExportError, export_onnx, format_report, load_images


def make_checkpoint(path, profile, seed=0, **kw):
    cfg = get_profile(profile)
    torch.manual_seed(seed)
    G, D = build_generator(cfg), Discriminator(cfg)
    # Random but not default-initialised weights: larger outputs make the parity bound meaningful.
    with torch.no_grad():
        for net in (G, D):
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return save_checkpoint(path, cfg, G, D, **kw)


@pytest.mark.parametrize("profile", ["tiny", "tiny-resnet", "tiny-warp", "realtime"])
def test_export_parity_and_metadata(tmp_path, profile):
    ck = make_checkpoint(tmp_path / "ck", profile, blendshapes="test-model:abc123", step=5, meta={"gan": "rad"})
    m = export_onnx(ck, tmp_path / "out")
    cfg = get_profile(profile)
    v = m["verification"]
    assert v["passed"] and v["tolerance"]["atol"] == ATOL
    roles = ["generator", "regressor"] + (["encoder"] if cfg.generator in ("cached", "warp") else [])
    for case in ("random_b1", "random_b3", "smooth_b2"):
        for role in roles:
            assert v["cases"][case][role]["max_abs_diff"] <= 1e-4
    assert "PASSED" in format_report(m)
    # Files: exactly the roles this generator kind needs, each checked and self-describing.
    assert sorted(m["files"]) == sorted(roles)
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["verification"]["passed"]
    weights = set()
    for role in roles:
        path = tmp_path / "out" / ROLE_FILES[role]
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
        for inp in model.graph.input:  # dynamic batch on every input
            assert inp.type.tensor_type.shape.dim[0].dim_param
        md = read_onnx_metadata(path)
        assert md["role"] == role
        assert ModelConfig.from_json(md["config"]) == cfg
        assert json.loads(md["param_names"]) == [f"exp{i:02d}" for i in range(30)] + \
            [f"speech{i:02d}" for i in range(10)]
        assert int(md["n_params"]) == 40 and int(md["image_size"]) == cfg.image_size
        assert json.loads(md["normalization"]) == NORMALIZATION
        assert md["blendshapes"] == "test-model:abc123" and md["step"] == "5"
        assert json.loads(md["meta"]) == {"gan": "rad"}
        weights.add(md["weights"])
    assert len(weights) == 1 and m["weights"] in weights
    info, files, manifest = read_export(tmp_path / "out")
    assert info.config == cfg and sorted(files) == sorted(roles)


@pytest.mark.slow
def test_paper_profile_export_parity(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", "paper")
    m = export_onnx(ck, tmp_path / "out")
    assert m["verification"]["passed"]
    assert m["verification"]["max_abs_diff"]["generator"] <= 1e-4
    assert sorted(m["files"]) == ["generator", "regressor"]
    assert len(m["rewrites"]) == 2  # fused heads + folded parameter channels, both checked above


def test_export_with_real_images(tmp_path, shared_data):
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    m = export_onnx(ck, tmp_path / "out", images=shared_data / "portraits")
    real = m["verification"]["cases"]["real"]
    assert real["batch"] >= 4 and real["generator"]["ok"] and real["regressor"]["ok"]
    imgs = load_images(shared_data / "portraits", 64, limit=2)
    assert imgs.shape == (2, 3, 64, 64) and imgs.min() >= -1 and imgs.max() <= 1


@pytest.mark.parametrize("profile", ["tiny", "tiny-resnet"])
def test_fused_modules_are_exact(profile):
    """The rewrites that are exported (one head convolution, folded parameter channels) compute the
    trained generator's function."""
    cfg = get_profile(profile)
    torch.manual_seed(1)
    G = build_generator(cfg).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        x = torch.rand(3, 3, cfg.image_size, cfg.image_size) * 2 - 1
        p = torch.rand(3, cfg.n_params) * 2 - 1
        p[0] = 1.0  # the ends of the slider range too
        y, _, a = G(x, p)
        fused = FrameGenerator(G, fused=True).eval()
        y2, a2 = fused(x, p, *G.encode(x))
    assert fused.fused_ops
    assert (y - y2).abs().max() < 5e-5 and (a - a2).abs().max() < 5e-5  # float rounding only
    # The trained module itself is untouched (fusing works on a copy).
    assert G.heads.color.weight.shape[0] == 3


@pytest.mark.skipif(not __import__("importlib").util.find_spec("onnxscript"), reason="onnxscript not installed "
                    "(the dynamo exporter needs it)")
def test_dynamo_exporter(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    m = export_onnx(ck, tmp_path / "out", exporter="dynamo")
    assert m["verification"]["passed"]


def test_export_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        export_onnx(tmp_path / "junk", tmp_path / "out")
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds other files"):
        export_onnx(ck, busy)
    assert (busy / "notes.txt").read_text() == "mine"
    # A previous export is replaced whole.
    export_onnx(ck, tmp_path / "out", verify=False)
    export_onnx(ck, tmp_path / "out", verify=False)
    assert (tmp_path / "out" / "generator.onnx").exists()


def test_cli_export(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    out = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(ck), "--format", "onnx", "-o",
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "max abs diff" in out.stdout and "PASSED" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(tmp_path / "nope"), "-o",
                          str(tmp_path / "o2")], capture_output=True, text=True)
    assert bad.returncode == 1 and "no checkpoint" in bad.stderr and "Traceback" not in bad.stderr


# ================================================================================================ TensorRT

TRT_REASON = trt_export.unavailable_reason()


def test_tensorrt_refuses_clearly_without_gpu(tmp_path):
    if TRT_REASON is None:
        pytest.skip("TensorRT is usable here; the refusal path is for machines without it")
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    with pytest.raises(trt_export.TensorRTUnavailable) as e:
        trt_export.export_tensorrt(ck, tmp_path / "out")
    msg = str(e.value)
    assert "TensorRT" in msg and "GPU" in msg and msg.count(". ") == 0 and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing half-written
    export_onnx(ck, tmp_path / "onnx", verify=False)
    with pytest.raises(trt_export.TensorRTUnavailable):
        trt_export.TensorRTRunner.from_export(tmp_path / "onnx")
    with pytest.raises(trt_export.TensorRTUnavailable):
        trt_export.build_engine(tmp_path / "onnx" / "generator.onnx")
    cli = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(ck), "--format", "tensorrt", "-o",
                          str(tmp_path / "o3")], capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stderr.strip().count("\n") == 0 and "GPU" in cli.stderr


@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT unavailable: {TRT_REASON}")
@pytest.mark.parametrize("profile", ["tiny", "tiny-resnet"])
def test_tensorrt_build_run_parity(tmp_path, profile):
    from engine.inference import load_models
    ck = make_checkpoint(tmp_path / "ck", profile)
    m = trt_export.export_tensorrt(ck, tmp_path / "out")
    assert m["tensorrt"]["verification"]["passed"]
    models = load_models(tmp_path / "out", backend="tensorrt")
    ref = load_models(ck, backend="torch", device="cpu")
    cfg = get_profile(profile)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    p = np.random.default_rng(1).uniform(-1, 1, (8, cfg.n_params)).astype(np.float32)
    assert np.abs(models.generate(models.source(x), p) - ref.generate(x, p)).max() < trt_export.FP16_ATOL
    assert models.regress(x).shape == (8, cfg.n_params)
    # one execution context, called from threads at once (render's generation workers): each call its own answer
    from concurrent.futures import ThreadPoolExecutor
    src = models.source(x[:1])
    alone = [models.generate(src, p[i:i + 1]) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: models.generate(src, p[i:i + 1]), [i for _ in range(5) for i in range(8)]))
    assert all(np.array_equal(t, alone[k % 8]) for k, t in enumerate(together))


def test_int8_copies_opt_in(tmp_path):
    """--int8 adds quantised copies with their own metadata and a measured difference to fp32."""
    from engine.inference import InferenceError, load_models
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    export_onnx(ck, tmp_path / "fp32", verify=False)
    with pytest.raises(InferenceError, match="export with --int8"):
        load_models(tmp_path / "fp32", precision="int8")
    m = export_onnx(ck, tmp_path / "out", verify=False, int8=True)
    q = m["int8"]
    assert sorted(q["files"]) == ["encoder", "generator", "regressor"]
    assert 20 < q["generator"]["psnr_db_min"] < 200 and q["generator"]["max_abs_diff"] < 0.5
    assert "int8 copies" in format_report(m)
    md = read_onnx_metadata(tmp_path / "out" / "generator.int8.onnx")
    assert md["precision"] == "int8" and "QDQ" in md["quantization"]
    assert read_onnx_metadata(tmp_path / "out" / "generator.onnx")["precision"] == "fp32"
    m8 = load_models(tmp_path / "out", precision="int8", threads=1)
    m32 = load_models(tmp_path / "out", threads=1)
    assert m8.precision == "int8" and m32.precision == "fp32"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    p = np.random.default_rng(1).uniform(-1, 1, (2, 40)).astype(np.float32)
    d = np.abs(m8.generate(m8.source(x), p) - m32.generate(m32.source(x), p)).max()
    assert 0 < d < 0.5  # quantised: close, not exact
    with pytest.raises(InferenceError, match="only in an export folder"):
        load_models(ck, precision="int8")
