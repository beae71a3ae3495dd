"""The dataset format (trainer/data.py): round trip, streamed splits, exact resume, bad inputs."""
import json

import numpy as np
import pytest
import torch

from trainer.data import (MANIFEST, DatasetError, DatasetWriter, ParamBank, ShardStream, images_to_tensor,
                          make_loader, open_dataset, tensor_to_images, write_arrays)
from trainer.synthetic import synthetic_arrays, write_synthetic


def _arrays(n, size=16, n_params=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    params = rng.uniform(-1, 1, (n, n_params)).astype(np.float32)
    params[:, 0] = np.arange(n)  # a sample's index, to follow it through the stream
    return images, params


def _ids(batches):
    return [int(v) for b in batches for v in b["params"][:, 0]]


def test_round_trip_unpaired_and_paired(tmp_path):
    images, params = _arrays(10)
    info = write_arrays(tmp_path / "u", images, params, seq=[f"video{i // 4}" for i in range(10)], shard_size=4)
    assert (info.count, info.image_size, info.n_params, info.paired, info.complete) == (10, 16, 5, False, True)
    assert info.shard_counts == [4, 4, 2] and info.sequences == ["video0", "video1", "video2"]
    got = [info.load_shard(i) for i in range(3)]
    assert np.array_equal(np.concatenate([g["images"] for g in got]), images)
    assert np.array_equal(np.concatenate([g["params"] for g in got]), params)
    assert np.concatenate([g["seq"] for g in got]).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    m = json.loads((tmp_path / "u" / MANIFEST).read_text())
    assert m["format"] == "slidergan-dataset" and m["version"] == 1

    t_images, t_params = _arrays(10, seed=1)
    info = write_arrays(tmp_path / "p", images, params, target_images=t_images, target_params=t_params)
    shard = info.load_shard(0)
    assert info.paired and np.array_equal(shard["target_images"], t_images)
    assert np.array_equal(shard["target_params"], t_params)
    batch = next(iter(ShardStream(info, 10, shuffle=False, repeat=False)))
    assert torch.equal(batch["target_params"], torch.from_numpy(t_params))
    assert np.array_equal(tensor_to_images(batch["target_image"]), t_images)


def test_image_tensor_conversion_and_resize():
    images, _ = _arrays(2, size=16)
    x = images_to_tensor(images)
    assert x.shape == (2, 3, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert np.array_equal(tensor_to_images(x), images)
    assert images_to_tensor(images, 32).shape == (2, 3, 32, 32)
    flat = np.full((1, 16, 16, 3), 200, np.uint8)
    assert np.allclose(images_to_tensor(flat, 8).numpy(), 200 / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("shard_size", [3, 40])  # 14 shards (split by shard) / 1 shard (split by row)
def test_one_epoch_over_ranks_and_workers_covers_every_sample_once(tmp_path, shard_size):
    images, params = _arrays(40)
    info = write_arrays(tmp_path / "d", images, params, shard_size=shard_size)
    seen = []
    for rank in range(2):
        st = ShardStream(info, 4, shuffle=True, shuffle_buffer=5, seed=3, repeat=False, rank=rank, world_size=2)
        seen += _ids(make_loader(st, num_workers=2))
    assert sorted(seen) == list(range(40))


def test_streams_shuffle_per_epoch_resize_and_resume_exactly(tmp_path):
    images, params = _arrays(30, size=16)
    info = write_arrays(tmp_path / "d", images, params, shard_size=4)
    for workers in (0, 2):
        st = ShardStream(info, 3, 8, shuffle_buffer=6, seed=1, rank=0, world_size=1)
        it = iter(make_loader(st, workers))
        batches = [next(it) for _ in range(25)]  # 2.5 epochs
        assert batches[0]["image"].shape == (3, 3, 8, 8)  # resized to the model's size
        ids = _ids(batches)
        assert sorted(ids[:30]) == list(range(30)) and ids[:30] != ids[30:60]  # a new order each epoch
        assert ids[:30] != list(range(30))
        resumed = ShardStream(info, 3, 8, shuffle_buffer=6, seed=1, rank=0, world_size=1, start_batch=13)
        it2 = iter(make_loader(resumed, workers))
        assert _ids([next(it2) for _ in range(12)]) == ids[13 * 3:]


def test_several_datasets_read_as_one_stream(tmp_path):
    a_img, a_par = _arrays(6, size=16)
    b_img, b_par = _arrays(5, size=32)
    b_par[:, 0] += 100
    a = write_arrays(tmp_path / "a", a_img, a_par)
    b = write_arrays(tmp_path / "b", b_img, b_par)
    batches = list(ShardStream([a, b], 4, 16, repeat=False))
    assert sorted(_ids(batches)) == list(range(6)) + list(range(100, 105))
    assert all(x["image"].shape[-1] == 16 for x in batches)


def test_param_bank_samples_other_samples_parameters(tmp_path):
    images, params = _arrays(8)
    info = write_arrays(tmp_path / "d", images, params)
    bank = ParamBank.from_datasets([info])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1, s2 = bank.sample(16, g1), bank.sample(16, g2)
    assert torch.equal(s1, s2) and s1.shape == (16, 5)
    rows = {tuple(r) for r in params.tolist()}
    assert all(tuple(r) in rows for r in s1.tolist())


def test_interrupted_writer_leaves_the_finished_shards_readable(tmp_path):
    images, params = _arrays(7)
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "d", image_size=16, n_params=5, shard_size=3) as w:
            for i in range(7):
                w.add(images[i], params[i])
            raise RuntimeError("crash")
    info = open_dataset(tmp_path / "d")
    assert not info.complete and info.count == 6


def test_synthetic_dataset_command(tmp_path):
    from engine.cli import main
    assert main(["synthetic", "-o", str(tmp_path / "s"), "--count", "6", "--size", "64", "--paired"]) == 0
    info = open_dataset(tmp_path / "s", n_params=40)
    assert info.paired and info.count == 6 and info.param_names[0] == "mouth_open"
    s = info.load_shard(0)
    assert not np.array_equal(s["images"], s["target_images"])  # two expressions ...
    u = synthetic_arrays(8, 64, seed=1, per_identity=4)
    assert u["seq"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_synthetic_parameters_drive_the_image():
    from trainer.synthetic import random_identity, render_face
    idt = random_identity(np.random.default_rng(0))
    base = render_face(idt, np.zeros(40), 64).astype(float)
    for k in range(12):  # the strongly visible ones
        p = np.zeros(40)
        p[k] = 1.0
        a = render_face(idt, p, 64).astype(float)
        p[k] = -1.0
        b = render_face(idt, p, 64).astype(float)
        assert np.abs(a - b).mean() > 0.15, k
    assert np.array_equal(render_face(idt, np.zeros(40), 64), base.astype(np.uint8))  # deterministic


# ------------------------------------------------------------------------------------ bad inputs

def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no manifest.json"):
        open_dataset(tmp_path / "empty")


def test_unknown_version_and_foreign_manifest(tmp_path):
    images, params = _arrays(3)
    write_arrays(tmp_path / "d", images, params)
    m = json.loads((tmp_path / "d" / MANIFEST).read_text())
    (tmp_path / "d" / MANIFEST).write_text(json.dumps({**m, "version": 99}))
    with pytest.raises(DatasetError, match="version 99; this build reads version 1"):
        open_dataset(tmp_path / "d")
    (tmp_path / "d" / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DatasetError, match="not a SliderGAN dataset manifest"):
        open_dataset(tmp_path / "d")


def test_wrong_parameter_width(tmp_path):
    images, params = _arrays(3, n_params=5)
    write_arrays(tmp_path / "d", images, params)
    with pytest.raises(DatasetError, match="has 5 parameters per sample, but the model profile 'tiny' expects 40"):
        open_dataset(tmp_path / "d", n_params=40, profile="tiny")


def test_nan_labels_name_the_shard_and_row(tmp_path):
    images, params = _arrays(6)
    info = write_arrays(tmp_path / "d", images, params, shard_size=3)
    bad = dict(np.load(info.shard_path(1)))
    bad["params"][2, 1] = np.nan
    np.savez(info.shard_path(1), **bad)
    info = open_dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match=r"shard-000001.npz: row 2 has a non-finite label in params \(column 1"):
        info.check_labels()
    with pytest.raises(DatasetError, match="row 2"):
        list(ShardStream(info, 2, repeat=False, shuffle=False))
    # The writer refuses them in the first place.
    with pytest.raises(DatasetError, match="non-finite"):
        DatasetWriter(tmp_path / "w", image_size=16, n_params=5).add(images[0], [np.inf, 0, 0, 0, 0])


def test_writer_checks_shapes_and_refuses_to_overwrite(tmp_path):
    w = DatasetWriter(tmp_path / "d", image_size=16, n_params=5)
    with pytest.raises(DatasetError, match=r"expected \(16, 16, 3\) RGB"):
        w.add(np.zeros((8, 8, 3), np.uint8), np.zeros(5))
    with pytest.raises(DatasetError, match="expected uint8"):
        w.add(np.zeros((16, 16, 3), np.float32), np.zeros(5))
    with pytest.raises(DatasetError, match="has 4 values, expected 5"):
        w.add(np.zeros((16, 16, 3), np.uint8), np.zeros(4))
    with pytest.raises(DatasetError, match="takes no target_image"):
        w.add(np.zeros((16, 16, 3), np.uint8), np.zeros(5), target_image=np.zeros((16, 16, 3), np.uint8),
              target_params=np.zeros(5))
    w.add(np.zeros((16, 16, 3), np.uint8), np.zeros(5))
    w.close()
    with pytest.raises(DatasetError, match="exists and is not empty"):
        DatasetWriter(tmp_path / "d", image_size=16, n_params=5)
    DatasetWriter(tmp_path / "d", image_size=16, n_params=5, overwrite=True).close()
    with pytest.raises(DatasetError, match="holds no samples"):
        ShardStream(open_dataset(tmp_path / "d"), 2)


def test_missing_shard_file(tmp_path):
    images, params = _arrays(4)
    info = write_arrays(tmp_path / "d", images, params, shard_size=2)
    info.shard_path(1).unlink()
    with pytest.raises(DatasetError, match="shard-000001.npz listed in .* is missing"):
        open_dataset(tmp_path / "d").check_labels()


def test_write_synthetic_writes_manifest(tmp_path):
    info = write_synthetic(tmp_path / "s", 5, 64, seed=2, per_identity=2, shard_size=2)
    assert info.count == 5 and len(info.shards) == 3 and info.meta["source"] == "synthetic"


def test_jpeg_coded_images_round_trip_smaller_and_refuse_bad_rows(tmp_path):
    """``jpeg_quality``: the images stored JPEG-coded, read back decoded (RGB order kept, close to the originals,
    the labels exact) and several times smaller than raw; a damaged row or bad quality: a clear error."""
    a = synthetic_arrays(12, 64, seed=3, paired=True)
    images, params, t_images, t_params = a["images"], a["params"], a["target_images"], a["target_params"]
    raw = write_arrays(tmp_path / "raw", images, params, target_images=t_images, target_params=t_params, shard_size=8)
    info = write_arrays(tmp_path / "jpeg", images, params, target_images=t_images, target_params=t_params,
                        shard_size=8, jpeg_quality=95)
    assert info.jpeg_quality == 95 and raw.jpeg_quality is None
    got = [info.load_shard(i) for i in range(2)]
    for key, want in (("images", images), ("target_images", t_images)):
        read = np.concatenate([g[key] for g in got])
        assert read.dtype == np.uint8 and read.shape == want.shape
        assert np.abs(read.astype(int) - want).mean() < 6.0    # (grainy synthetic faces: 3.4 at quality 95)
        # channels stay in RGB order: each channel's mean is kept
        assert np.allclose(read.reshape(-1, 3).mean(0), want.reshape(-1, 3).mean(0), atol=2.0)
    assert np.array_equal(np.concatenate([g["params"] for g in got]), params)
    size = lambda d: sum(p.stat().st_size for p in d.path.glob("shard-*.npz"))  # noqa: E731
    assert size(info) * 3 < size(raw)
    batch = next(iter(ShardStream(info, 12, shuffle=False, repeat=False)))
    assert batch["image"].shape == (12, 3, 64, 64)
    # a damaged row names the shard, the array and the row
    path = info.shard_path(0)
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["images_jpeg"][arrays["images_jpeg_ends"][2]:arrays["images_jpeg_ends"][2] + 16] = 0   # its header
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(DatasetError, match=r"shard-000000.npz: images: row 3 is not a 64 x 64 colour JPEG"):
        info.load_shard(0)
    with pytest.raises(DatasetError, match=r"JPEG quality \(--jpeg-quality\) must be between 1 and 100"):
        DatasetWriter(tmp_path / "bad", image_size=16, n_params=5, jpeg_quality=0)
