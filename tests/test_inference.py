"""engine.inference: one interface over torch, onnxruntime and TensorRT; cached sources; clear errors."""
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from engine.config import ProfileMismatchError, get_profile
from engine.inference import InferenceError, Source, load_models, physical_cores
from exporters.onnx import export_onnx
from tests.test_export import make_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    ck = make_checkpoint(d / "ck", "tiny", blendshapes="bs:1", meta={"gan": "rad"})
    export_onnx(ck, d / "onnx", verify=False)
    return ck, d / "onnx"


def _inputs(cfg, b=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (b, 3, cfg.image_size, cfg.image_size)).astype(np.float32),
            rng.uniform(-1, 1, (b, cfg.n_params)).astype(np.float32))


@pytest.mark.parametrize("profile", ["tiny", "tiny-resnet"])
def test_backends_agree(tmp_path, profile):
    cfg = get_profile(profile)
    ck = make_checkpoint(tmp_path / "ck", profile)
    export_onnx(ck, tmp_path / "onnx", verify=False)
    x, p = _inputs(cfg, 3)
    runs = {"torch": load_models(ck, backend="torch", device="cpu", threads=1),
            "torch-fused": load_models(ck, backend="torch", device="cpu", threads=1, fused=True),
            "ort-checkpoint": load_models(ck, backend="onnxruntime", threads=1),
            "ort-export": load_models(tmp_path / "onnx", backend="onnxruntime", threads=1)}
    ref = runs["torch"]
    g_ref, r_ref = ref.generate(x, p), ref.regress(x)
    for name, m in runs.items():
        assert m.profile == profile and m.n_params == 40 and m.image_size == cfg.image_size
        src = m.source(x)
        assert isinstance(src, Source)
        g, mask = m.generate(src, p, return_mask=True)
        assert g.shape == x.shape and mask.shape == (3, 1, cfg.image_size, cfg.image_size)
        assert np.abs(g - g_ref).max() < 1e-4, name
        assert np.abs(m.generate(x, p) - g).max() < 1e-6  # plain images == cached source
        assert np.abs(m.regress(x) - r_ref).max() < 1e-4 * max(1, np.abs(r_ref).max()), name


def test_warp_generator_backends_agree_and_need_the_frame(tmp_path):
    cfg = get_profile("tiny-warp")
    ck = make_checkpoint(tmp_path / "ck", "tiny-warp")
    export_onnx(ck, tmp_path / "onnx", verify=False)
    x, p = _inputs(cfg, 3)
    rng = np.random.default_rng(1)
    frame = np.concatenate([x[::-1], rng.uniform(0, 1, (3, 1, 64, 64)),
                            rng.uniform(-0.2, 0.2, (3, 2, 64, 64))], 1).astype(np.float32)
    ref = load_models(ck, backend="torch", device="cpu", threads=1)
    g_ref = ref.generate(x, p, frame=frame)
    assert np.abs(g_ref - frame[:, :3]).mean() < 0.05      # untrained: about the warped frame
    for m in (ref, load_models(tmp_path / "onnx", backend="onnxruntime", threads=1)):
        assert m.needs_frame
        src = m.source(x[:1])                               # one portrait, three frames
        g = m.generate(m.source(x), p, frame=frame)
        assert np.abs(g - g_ref).max() < 1e-4
        assert m.generate(src, p, frame=frame).shape == (3, 3, 64, 64)
        with pytest.raises(InferenceError, match="warped frame"):
            m.generate(src, p)
        with pytest.raises(InferenceError, match="6, 64, 64"):
            m.generate(src, p, frame=frame[:, :3])


def test_cached_source_broadcast_and_kinds(tiny):
    ck, onnx_dir = tiny
    m = load_models(onnx_dir, threads=1)
    assert m.backend == "onnxruntime" and m.device == "cpu"
    cfg = m.config
    x, p = _inputs(cfg, 4)
    src = m.source(x[:1])
    many = m.generate(src, p)  # one source, four parameter vectors
    one_by_one = np.concatenate([m.generate(src, p[i]) for i in range(4)])  # (N,) vectors accepted
    assert many.shape == (4, 3, cfg.image_size, cfg.image_size)
    assert np.abs(many - one_by_one).max() < 1e-5
    # torch in -> torch out, numpy in -> numpy out
    tsrc = m.source(torch.from_numpy(x[:1]))
    out = m.generate(tsrc, torch.from_numpy(p))
    assert torch.is_tensor(out) and torch.allclose(out, torch.from_numpy(many), atol=1e-5)
    assert torch.is_tensor(m.regress(torch.from_numpy(x))) and isinstance(m.regress(x), np.ndarray)
    # The per-frame part really does not rerun the encoder: features are reused as given.
    src.feats = tuple(np.zeros_like(f) for f in src.feats)
    assert np.abs(m.generate(src, p[:1]) - many[:1]).max() > 1e-4
    with pytest.raises(InferenceError, match="one source"):
        m.generate(m.source(x[:2]), p[:3])


def test_metadata_passthrough(tiny):
    ck, onnx_dir = tiny
    for path, backend in ((ck, "torch"), (onnx_dir, "onnxruntime")):
        m = load_models(path, backend=backend, threads=1)
        assert m.blendshapes == "bs:1" and m.meta == {"gan": "rad"} and m.n_exp == 30 and m.n_speech == 10
        assert m.param_names[0] == "exp00" and m.param_names[-1] == "speech09"
        assert "tiny" in repr(m)


def test_mismatched_models_rejected(tiny, tmp_path):
    ck, onnx_dir = tiny
    for path in (ck, onnx_dir):
        with pytest.raises(ProfileMismatchError, match="profile 'tiny', not 'realtime'"):
            load_models(path, expect=get_profile("realtime"))
        with pytest.raises(ProfileMismatchError, match="takes 40 parameters, not the 30 expected"):
            load_models(path, n_params=30)
        with pytest.raises(ProfileMismatchError, match="64 x 64 images, not 128 x 128"):
            load_models(path, image_size=128)
        load_models(path, expect=get_profile("tiny"), n_params=40, image_size=64, threads=1)
    # Files of two different exports mixed in one folder.
    other = make_checkpoint(tmp_path / "other", "tiny", seed=7)
    export_onnx(other, tmp_path / "other-onnx", verify=False)
    mixed = tmp_path / "mixed"
    shutil.copytree(onnx_dir, mixed)
    shutil.copy(tmp_path / "other-onnx" / "regressor.onnx", mixed / "regressor.onnx")
    with pytest.raises(InferenceError, match="different models or exports"):
        load_models(mixed)
    # A file renamed into another role.
    swapped = tmp_path / "swapped"
    shutil.copytree(onnx_dir, swapped)
    shutil.copy(onnx_dir / "encoder.onnx", swapped / "regressor.onnx")
    with pytest.raises(InferenceError, match="holds the 'encoder' model, not the 'regressor'"):
        load_models(swapped)


def test_bad_inputs_rejected(tiny):
    m = load_models(tiny[1], threads=1)
    x, p = _inputs(m.config, 1)
    with pytest.raises(InferenceError, match=r"\(B, 3, 64, 64\)"):
        m.source(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InferenceError, match=r"\(B, 40\)"):
        m.generate(m.source(x), np.zeros((1, 30), np.float32))
    with pytest.raises(InferenceError, match="NCHW"):
        m.regress(np.zeros((1, 64, 64, 3), np.float32))


def test_garbage_and_absent_files(tiny, tmp_path):
    ck, onnx_dir = tiny
    with pytest.raises(InferenceError, match="no checkpoint or export"):
        load_models(tmp_path / "absent")
    with pytest.raises(InferenceError, match="unknown backend"):
        load_models(onnx_dir, backend="tflite")
    broken = tmp_path / "broken"
    shutil.copytree(onnx_dir, broken)
    (broken / "generator.onnx").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InferenceError, match="not a readable ONNX model"):
        load_models(broken)
    missing = tmp_path / "missing"
    shutil.copytree(onnx_dir, missing)
    (missing / "regressor.onnx").unlink()
    with pytest.raises(InferenceError, match="regressor.onnx missing"):
        load_models(missing)
    no_enc = tmp_path / "no-enc"
    shutil.copytree(onnx_dir, no_enc)
    (no_enc / "encoder.onnx").unlink()
    with pytest.raises(InferenceError, match="lacks encoder.onnx"):
        load_models(no_enc)
    foreign = tmp_path / "foreign"
    shutil.copytree(onnx_dir, foreign)
    model = onnx.load(str(foreign / "generator.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(foreign / "generator.onnx"))
    with pytest.raises(InferenceError, match="not a SliderGAN export"):
        load_models(foreign)
    with pytest.raises(InferenceError, match="needs the checkpoint folder"):
        load_models(onnx_dir, backend="torch")
    bad_manifest = tmp_path / "bad-manifest"
    shutil.copytree(onnx_dir, bad_manifest)
    (bad_manifest / "export.json").write_text("{not json")
    with pytest.raises(InferenceError, match="not readable JSON"):
        load_models(bad_manifest)


def test_tensorrt_backend_without_gpu(tiny):
    from engine.tensorrt_runtime import TensorRTUnavailable, unavailable_reason
    if unavailable_reason() is None:
        pytest.skip("TensorRT is usable here")
    with pytest.raises(TensorRTUnavailable, match="GPU"):
        load_models(tiny[1], backend="tensorrt")
    m = load_models(tiny[1], backend="auto", threads=1)  # auto never picks what cannot run
    assert m.backend == "onnxruntime"


def test_a_gpu_asked_of_a_torch_without_one_is_a_clear_error(tiny):
    """The torch backend and the identity network on ``cuda`` where torch has no GPU: an InferenceError that
    says so, not torch's AssertionError from inside a ``.to()``."""
    if torch.cuda.is_available():
        pytest.skip("this torch has a GPU")
    from engine.identity import load_dlib_embedder
    with pytest.raises(InferenceError, match="'cuda': torch .* sees no CUDA GPU"):
        load_models(tiny[0], backend="torch", device="cuda")
    with pytest.raises(InferenceError, match="'cuda:0': torch .* sees no CUDA GPU"):
        load_dlib_embedder(device="cuda:0")
    assert load_models(tiny[0], backend="torch", device="cpu").backend == "torch"


def test_auto_and_threads(tiny):
    ck, _ = tiny
    assert physical_cores() >= 1
    m = load_models(ck, threads=1)  # a checkpoint on CPU: converted to ONNX in memory
    assert m.backend == "onnxruntime"
    so = m.runner.sessions["generator"].get_session_options()
    assert so.intra_op_num_threads == 1


@pytest.mark.slow
def test_bench_smoke(tiny, tmp_path):
    from exporters.bench import bench, format_table
    # a checkpoint is benchmarked as its own profile unless told otherwise
    assert list(bench(checkpoint=str(tiny[0]), backends=["torch"], threads=1, quick=True,
                      log=lambda *a, **k: None)["profiles"]) == ["tiny"]
    report = bench(profiles=["tiny"], backends=["torch", "onnxruntime", "tensorrt"], threads=1, quick=True,
                   log=lambda *a, **k: None)
    e = report["profiles"]["tiny"]
    assert e["flops"]["generator"] > 0 and e["flops"]["encoder"] > 0
    for b in ("torch", "onnxruntime"):
        r = e["backends"][b]
        assert "error" not in r, r
        for part in ("encoder", "generator", "regressor"):
            assert r[part]["median_ms"] > 0 and r[part]["p95_ms"] >= r[part]["median_ms"]
        assert r["generator"]["batch8_fps"] > 0 and r["peak_rss_mb"] >= 0
        assert r["generator"]["speedup_vs_torch"] > 0
    table = format_table(report)
    assert "generator" in table and "onnxruntime" in table
    json.dumps(report)  # JSON-ready
    # a geometry-guided profile adds the warp beside the network and the whole engine frame
    warp = bench(profiles=["tiny-warp"], backends=["onnxruntime"], threads=1, quick=True,
                 log=lambda *a, **k: None)["profiles"]["tiny-warp"]["backends"]["onnxruntime"]
    assert "error" not in warp, warp
    for part in ("geometry", "geometry+head", "engine", "engine+head"):
        assert warp[part]["median_ms"] > 0, part
    assert warp["engine"]["median_ms"] > warp["geometry"]["median_ms"]      # the network comes on top


def test_engine_never_imports_exporters(tiny, tmp_path):
    """Dependency direction: exporters write files and may use the engine, never the reverse. No
    import statement in engine/ or streaming/ names exporters, and loading models through every backend
    that runs here (a checkpoint converted to ONNX in memory, an export folder, torch; TensorRT's
    refusal) leaves exporters unimported."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(from|import)\s+exporters\b", re.M)
    offenders = [str(f.relative_to(root)) for d in ("engine", "streaming") for f in (root / d).rglob("*.py")
                 if pattern.search(f.read_text())]
    assert offenders == []
    ck, onnx_dir = tiny
    code = f"""
import sys
from engine.inference import load_models
from engine.tensorrt_runtime import TensorRTUnavailable, unavailable_reason
import streaming.render, engine.animator
a = load_models({str(ck)!r}, backend="onnxruntime", device="cpu", threads=1)
b = load_models({str(onnx_dir)!r}, backend="onnxruntime", device="cpu", threads=1)
c = load_models({str(ck)!r}, backend="torch", device="cpu")
if unavailable_reason() is not None:
    try:
        load_models({str(onnx_dir)!r}, backend="tensorrt")
    except TensorRTUnavailable:
        pass
    else:
        raise SystemExit("tensorrt did not refuse")
bad = sorted(m for m in sys.modules if m == "exporters" or m.startswith("exporters."))
print(bad)
raise SystemExit(1 if bad else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_export_files_are_checked_against_their_recorded_sha256(tiny, tmp_path):
    """export.json records each ONNX file's sha256; a file changed since (here: one weight, the file
    still a valid ONNX model with its metadata) is refused as corrupt. Exports without the record load."""
    _, onnx_dir = tiny
    manifest = json.loads((onnx_dir / "export.json").read_text())
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    tampered = tmp_path / "tampered"
    shutil.copytree(onnx_dir, tampered)
    model = onnx.load(str(tampered / "generator.onnx"))
    init = next(t for t in model.graph.initializer if len(t.raw_data) >= 4)
    raw = bytearray(init.raw_data)
    raw[0] ^= 0x40
    init.raw_data = bytes(raw)
    onnx.save(model, str(tampered / "generator.onnx"))
    with pytest.raises(InferenceError, match=r"generator\.onnx is corrupt: its sha256 .*export\.json"):
        load_models(tampered, backend="onnxruntime", threads=1)
    older = tmp_path / "older"
    shutil.copytree(onnx_dir, older)
    for f in manifest["files"].values():
        f.pop("sha256")
    (older / "export.json").write_text(json.dumps(manifest))
    assert load_models(older, backend="onnxruntime", threads=1).backend == "onnxruntime"


def test_a_checkpoints_onnx_graphs_are_cached_by_what_makes_them(tmp_path, monkeypatch):
    """The onnxruntime backend keeps a checkpoint's graphs on disk: the next load reads them (torch.onnx not
    run) and computes the same; a damaged file is built again; other weights are another entry; a cache
    that cannot be written, or none ("off"), still loads."""
    import engine.onnx_graph as og
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    cache = tmp_path / "cache"
    monkeypatch.setenv(og.CACHE_ENV, str(cache))
    built = []
    export = og.export_to_bytes
    monkeypatch.setattr(og, "export_to_bytes", lambda *a, **kw: built.append(1) or export(*a, **kw))
    first = load_models(ck, backend="onnxruntime", threads=1)
    entries = list((cache / "onnx").iterdir())
    assert len(built) == 1 and len(entries) == 1
    assert sorted(f.name for f in entries[0].iterdir()) == ["encoder.onnx", "generator.onnx", "manifest.json",
                                                          "regressor.onnx"]
    image, params = _inputs(first.config)
    again = load_models(ck, backend="onnxruntime", threads=1)
    assert len(built) == 1
    np.testing.assert_array_equal(again.generate(image, params), first.generate(image, params))
    np.testing.assert_array_equal(again.regress(image), first.regress(image))
    graph = entries[0] / "generator.onnx"
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")      # same size, not the bytes recorded
    np.testing.assert_array_equal(load_models(ck, backend="onnxruntime", threads=1).generate(image, params),
                                  first.generate(image, params))
    assert len(built) == 2
    other = make_checkpoint(tmp_path / "other", "tiny", seed=1)
    load_models(other, backend="onnxruntime", threads=1)
    assert len(built) == 3 and len(list((cache / "onnx").iterdir())) == 2
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    for where in (str(blocked), "off"):
        monkeypatch.setenv(og.CACHE_ENV, where)
        assert load_models(ck, backend="onnxruntime", threads=1).backend == "onnxruntime"
    assert len(built) == 5 and blocked.read_text() == "not a folder"


def test_onnxruntime_frames_run_while_another_thread_is_still_importing_torch(tiny, monkeypatch):
    """A live process imports torch on a thread of its own (a first conversion): meanwhile ``sys.modules`` holds a
    torch without its functions, and the frames' NumPy inputs must not ask it anything (they had: an
    AttributeError in the frame path)."""
    import sys
    import types
    ck, onnx_dir = tiny
    models = load_models(onnx_dir, backend="onnxruntime", threads=1)
    x, p = _inputs(models.config, 1)
    want = models.generate(x, p)
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))     # half made: no is_tensor yet
    np.testing.assert_array_equal(models.generate(x, p), want)
    assert np.asarray(models.regress(x)).shape == (1, models.n_params)


def test_a_checkpoint_with_cached_graphs_loads_without_torch(tmp_path, monkeypatch):
    """The graphs are cached by the model file's bytes: another process loads the checkpoint, reports the
    same weights' digest and computes the same without importing torch (a second and 190 MB at every start of
    render, edit, live and serve); a model file damaged since is a miss, refused by the full load's checks."""
    import subprocess
    import sys

    import engine.onnx_graph as og
    from engine.checkpoint import CheckpointError
    ck = make_checkpoint(tmp_path / "ck", "tiny")
    monkeypatch.setenv(og.CACHE_ENV, str(tmp_path / "cache"))
    first = load_models(ck, backend="onnxruntime", threads=1)
    image, params = _inputs(first.config)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "params.npy", params)
    code = (f"import sys, numpy as np; from engine.inference import load_models; "
            f"m = load_models({str(ck)!r}, threads=1); "
            f"np.save({str(tmp_path / 'out.npy')!r}, m.generate(np.load({str(tmp_path / 'image.npy')!r}), "
            f"np.load({str(tmp_path / 'params.npy')!r}))); "
            f"print(m.backend, m.info.weights, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, og.CACHE_ENV: str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["onnxruntime", first.info.weights, "False"]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), first.generate(image, params))
    model = ck / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF                                 # a weight's byte: the recorded checksum no longer holds
    model.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_models(ck, backend="onnxruntime", threads=1)
