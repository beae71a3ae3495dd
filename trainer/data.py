"""The SliderGAN dataset format on disk, its writer and its streamed reader.

A dataset is a folder::

    DATASET/
      manifest.json          what the folder holds (written atomically; see below)
      shard-000000.npz       samples 0 .. shard_size-1
      shard-000001.npz       ...

Each shard is an uncompressed (``np.savez``) or compressed (``np.savez_compressed``) NumPy archive
with one row per sample:

    ``images``         uint8   (n, S, S, 3)  RGB (not BGR), aligned face crops, S = ``image_size``
    ``params``         float32 (n, N)        the crop's parameter vector p (N = ``n_params``), finite
    ``seq``            int64   (n,)          sequence / identity id (samples of one video or person
                                             share it; string ids are mapped to integers, their
                                             names listed in the manifest's ``sequences``)
    paired datasets only (synthetic pairs, SPEC section 5), every row has both:
    ``target_images``  uint8   (n, S, S, 3)  the same identity under the target expression
    ``target_params``  float32 (n, N)        its parameters p_trg
    datasets with ``"landmarks": true`` (what the geometry-guided generator trains on):
    ``landmarks``      float32 (n, 478, 3)   the face mesh of ``images`` in crop pixels

With ``"jpeg_quality": Q`` in the manifest (``DatasetWriter(jpeg_quality=Q)``, ``--jpeg-quality`` of the
dataset makers) each image array is stored JPEG-coded instead, as ``images_jpeg`` uint8 (the rows' JPEG files one
after another) and ``images_jpeg_ends`` int64 (n,) (where each row's file ends), likewise ``target_images``;
readers get the decoded uint8 arrays as above. About 7 times smaller at quality 95 (128 px face crops: a mean
absolute difference of 1.4 grey levels), for datasets that must travel (a GPU machine's upload) or grow large.

``manifest.json``::

    {"format": "slidergan-dataset", "version": 1, "complete": true,
     "image_size": 128, "n_params": 40, "param_names": ["exp00", ..., "speech09"],
     "paired": false, "landmarks": false, "jpeg_quality": null, "count": 12345,
     "blendshapes": "<model name + hash, or empty>",
     "sequences": ["video_a", ...] or null, "meta": {...free-form...},
     "shards": [{"file": "shard-000000.npz", "count": 1000}, ...]}

The writer rewrites the manifest (atomically) after every shard with ``"complete": false`` and once
more on ``close()`` with ``"complete": true``, so an interrupted annotation run leaves a readable
dataset of the shards it finished; a shard itself appears whole or not at all.

Reading is streamed (``ShardStream``, a torch ``IterableDataset``): a DataLoader worker of a DDP rank
holds only a few shards in memory at a time. Each epoch the shard order is shuffled (the same way on
every rank and worker) and the shards are dealt round-robin to the ``world_size * num_workers``
readers; with fewer shards than readers every reader reads every shard and keeps every T-th row.
Shuffling is a block shuffle: a reader gathers consecutive shards of its share until at least
``shuffle_buffer`` samples are in memory and emits them in a random order. The stream is a pure
function of (seed, rank, worker), so training resumes exactly: ``start_batch`` skips the batches
already consumed, skipping whole shards by their manifest counts without reading them.
Images are resized to the model profile's size when the dataset's differs and handed out as float
tensors in [-1, 1], (B, 3, S, S).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from engine.atomic import atomic_path, write_text_atomic

FORMAT = "slidergan-dataset"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{:06d}.npz"

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset folder is missing, malformed, or does not fit the model."""


# ----------------------------------------------------------------------------------------- writing

IMAGE_KEYS = ("images", "target_images")


def encode_jpeg(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 images (n, S, S, 3) -> (their JPEG files one after another (uint8), where each ends (int64 (n,)))."""
    import cv2
    files = []
    for img in images:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise DatasetError("an image could not be JPEG-coded")
        files.append(buf.reshape(-1))
    return (np.concatenate(files).astype(np.uint8) if files else np.zeros(0, np.uint8),
            np.cumsum([len(b) for b in files]).astype(np.int64))


def decode_jpeg(data: np.ndarray, ends: np.ndarray, size: int, where: str) -> np.ndarray:
    """``encode_jpeg``'s arrays -> RGB uint8 images (n, size, size, 3); a row that is not such a JPEG: DatasetError."""
    import cv2
    ends = np.asarray(ends, np.int64)
    if ends.ndim != 1 or np.any(np.diff(ends, prepend=0) <= 0) or (len(ends) and ends[-1] != len(data)):
        raise DatasetError(f"{where}: the JPEG row ends do not match the data ({len(data)} bytes)")
    out = np.empty((len(ends), size, size, 3), np.uint8)
    start = 0
    for r, end in enumerate(ends):
        img = cv2.imdecode(np.ascontiguousarray(data[start:end]), cv2.IMREAD_COLOR)
        if img is None or img.shape != (size, size, 3):
            raise DatasetError(f"{where}: row {r} is not a {size} x {size} colour JPEG")
        out[r] = img[..., ::-1]
        start = end
    return out


def _keys(paired: bool, landmarks: bool) -> list[str]:
    return (["images", "params", "seq"] + (["target_images", "target_params"] if paired else [])
            + (["landmarks"] if landmarks else []))


class DatasetWriter:
    """Write samples into a dataset folder, shard by shard.

    >>> with DatasetWriter("out/ds", image_size=128, n_params=40) as w:
    ...     w.add(image_rgb_uint8, params, seq="video_a")

    ``paired=True``: every ``add`` must give ``target_image`` and ``target_params`` as well.
    ``seq`` is an int or a str (all of one kind per dataset). Non-finite parameters are refused.
    """

    def __init__(self, path, image_size: int = 128, n_params: int | None = None, *,
                 param_names: Sequence[str] | None = None, paired: bool = False,
                 shard_size: int = 1000, compress: bool = False, blendshapes: str = "",
                 meta: dict | None = None, overwrite: bool = False, landmarks: bool = False,
                 jpeg_quality: int | None = None):
        self.path = Path(path)
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise DatasetError(f"the JPEG quality (--jpeg-quality) must be between 1 and 100, not {jpeg_quality}")
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        if param_names is not None:
            param_names = [str(n) for n in param_names]
            if n_params is not None and n_params != len(param_names):
                raise DatasetError(f"{len(param_names)} parameter names for n_params={n_params}")
            n_params = len(param_names)
        if not n_params or n_params <= 0:
            raise DatasetError("give n_params or param_names")
        if shard_size <= 0:
            raise DatasetError("shard_size must be positive")
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise DatasetError(f"{self.path} exists and is not empty (pass overwrite=True to replace it)")
            for p in self.path.iterdir():
                if p.name == MANIFEST or (p.name.startswith("shard-") and p.suffix == ".npz"):
                    p.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self.image_size = int(image_size)
        self.n_params = int(n_params)
        self.param_names = param_names or [f"p{i:02d}" for i in range(self.n_params)]
        self.paired = bool(paired)
        self.landmarks = bool(landmarks)
        self.shard_size = int(shard_size)
        self.compress = compress
        self.blendshapes = blendshapes
        self.meta = dict(meta or {})
        self.shards: list[dict] = []
        self.count = 0
        self._seq_names: dict[str, int] | None = None
        self._seq_kind: type | None = None
        self._buf: dict[str, list] = self._empty()
        self._closed = False

    def _empty(self) -> dict[str, list]:
        return {k: [] for k in _keys(self.paired, self.landmarks)}

    def _image(self, image, what: str) -> np.ndarray:
        a = np.asarray(image)
        s = self.image_size
        if a.shape != (s, s, 3):
            raise DatasetError(f"sample {self.count}: {what} has shape {a.shape}, expected ({s}, {s}, 3) RGB")
        if a.dtype != np.uint8:
            raise DatasetError(f"sample {self.count}: {what} has dtype {a.dtype}, expected uint8")
        return a

    def _params(self, params, what: str) -> np.ndarray:
        p = np.asarray(params, dtype=np.float32).reshape(-1)
        if p.shape[0] != self.n_params:
            raise DatasetError(f"sample {self.count}: {what} has {p.shape[0]} values, expected {self.n_params}")
        if not np.all(np.isfinite(p)):
            raise DatasetError(f"sample {self.count}: {what} has non-finite values {p[~np.isfinite(p)][:4]}")
        return p

    def _seq(self, seq) -> int:
        kind = str if isinstance(seq, str) else int
        if self._seq_kind is None:
            self._seq_kind = kind
            self._seq_names = {} if kind is str else None
        elif kind is not self._seq_kind:
            raise DatasetError("sequence ids must all be strings or all integers")
        if kind is str:
            return self._seq_names.setdefault(seq, len(self._seq_names))
        return int(seq)

    def add(self, image, params, seq=0, target_image=None, target_params=None, landmarks=None) -> None:
        if self._closed:
            raise DatasetError("the writer is closed")
        if self.landmarks != (landmarks is not None):
            raise DatasetError(f"sample {self.count}: this dataset {'needs' if self.landmarks else 'takes no'} "
                               "landmarks")
        if self.paired != (target_image is not None) or self.paired != (target_params is not None):
            raise DatasetError(f"sample {self.count}: a {'paired' if self.paired else 'unpaired'} dataset "
                               f"{'needs' if self.paired else 'takes no'} target_image and target_params")
        b = self._buf
        b["images"].append(self._image(image, "image"))
        b["params"].append(self._params(params, "params"))
        b["seq"].append(self._seq(seq))
        if self.paired:
            b["target_images"].append(self._image(target_image, "target_image"))
            b["target_params"].append(self._params(target_params, "target_params"))
        if self.landmarks:
            lm = np.asarray(landmarks, np.float32)
            if lm.shape != (478, 3) or not np.all(np.isfinite(lm)):
                raise DatasetError(f"sample {self.count}: landmarks must be finite (478, 3), got {lm.shape}")
            b["landmarks"].append(lm)
        self.count += 1
        if len(b["images"]) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered samples as one shard and update the manifest."""
        if not self._buf["images"]:
            return
        arrays = {
            "images": np.stack(self._buf["images"]).astype(np.uint8),
            "params": np.stack(self._buf["params"]).astype(np.float32),
            "seq": np.asarray(self._buf["seq"], dtype=np.int64)}
        if self.paired:
            arrays["target_images"] = np.stack(self._buf["target_images"]).astype(np.uint8)
            arrays["target_params"] = np.stack(self._buf["target_params"]).astype(np.float32)
        if self.landmarks:
            arrays["landmarks"] = np.stack(self._buf["landmarks"]).astype(np.float32)
        if self.jpeg_quality is not None:
            for k in IMAGE_KEYS:
                if k in arrays:
                    arrays[f"{k}_jpeg"], arrays[f"{k}_jpeg_ends"] = encode_jpeg(arrays.pop(k), self.jpeg_quality)
        name = SHARD_PATTERN.format(len(self.shards))
        with atomic_path(self.path / name) as tmp:
            with open(tmp, "wb") as f:
                (np.savez_compressed if self.compress else np.savez)(f, **arrays)
        self.shards.append({"file": name, "count": int(arrays["params"].shape[0])})
        self._buf = self._empty()
        self._write_manifest(complete=False)

    def _write_manifest(self, complete: bool) -> None:
        seqs = None
        if self._seq_names is not None:
            seqs = [None] * len(self._seq_names)
            for k, v in self._seq_names.items():
                seqs[v] = k
        manifest = {
            "format": FORMAT, "version": VERSION, "complete": complete,
            "image_size": self.image_size, "n_params": self.n_params, "param_names": self.param_names,
            "paired": self.paired, "landmarks": self.landmarks, "jpeg_quality": self.jpeg_quality,
            "count": sum(s["count"] for s in self.shards),
            "blendshapes": self.blendshapes, "sequences": seqs, "meta": self.meta,
            "shards": self.shards}
        write_text_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1))

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._write_manifest(complete=True)
        self._closed = True

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            # Keep the finished shards readable (manifest says complete: false); drop the partial one.
            self._closed = True


# ----------------------------------------------------------------------------------------- reading

@dataclass
class DatasetInfo:
    """A dataset's manifest, checked. Use ``open_dataset``."""
    path: Path
    image_size: int
    n_params: int
    param_names: list[str]
    paired: bool
    count: int
    shards: list[dict]
    landmarks: bool = False
    complete: bool = True
    blendshapes: str = ""
    sequences: list[str] | None = None
    meta: dict = field(default_factory=dict)
    jpeg_quality: int | None = None     # images stored JPEG-coded (see the module docstring)

    @property
    def shard_counts(self) -> list[int]:
        return [int(s["count"]) for s in self.shards]

    def shard_path(self, i: int) -> Path:
        return self.path / self.shards[i]["file"]

    def load_shard(self, i: int, keys: Sequence[str] | None = None, check: bool = True) -> dict[str, np.ndarray]:
        """The arrays of shard ``i`` (all, or ``keys``), checked for shape and finite labels."""
        p = self.shard_path(i)
        want = list(keys) if keys is not None else _keys(self.paired, self.landmarks)
        try:
            coded = [k for k in want if k in IMAGE_KEYS] if self.jpeg_quality is not None else []
            stored = [x for k in want for x in ((f"{k}_jpeg", f"{k}_jpeg_ends") if k in coded else (k,))]
            with np.load(p, allow_pickle=False) as z:
                missing = [k for k in stored if k not in z.files]
                if missing:
                    raise DatasetError(f"shard {p} lacks arrays {missing} (has {sorted(z.files)})")
                out = {k: (decode_jpeg(z[f"{k}_jpeg"], z[f"{k}_jpeg_ends"], self.image_size, f"shard {p}: {k}")
                           if k in coded else z[k]) for k in want}
        except FileNotFoundError:
            raise DatasetError(f"shard {p} listed in {self.path / MANIFEST} is missing") from None
        except (OSError, ValueError) as e:
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(f"shard {p} is not a readable .npz file: {e}") from None
        if check:
            self._check_arrays(p, i, out)
        return out

    def _check_arrays(self, p: Path, i: int, arrays: dict[str, np.ndarray]) -> None:
        n = self.shard_counts[i]
        s = self.image_size
        for k, a in arrays.items():
            if a.shape[0] != n:
                raise DatasetError(f"shard {p}: {k} has {a.shape[0]} rows, the manifest says {n}")
            if k in ("images", "target_images") and (a.shape[1:] != (s, s, 3) or a.dtype != np.uint8):
                raise DatasetError(f"shard {p}: {k} is {a.dtype} {a.shape[1:]}, expected uint8 ({s}, {s}, 3)")
            if k == "landmarks" and (a.shape[1:] != (478, 3) or not np.all(np.isfinite(a))):
                raise DatasetError(f"shard {p}: landmarks must be finite (n, 478, 3), got {a.shape}")
            if k in ("params", "target_params"):
                if a.ndim != 2 or a.shape[1] != self.n_params:
                    raise DatasetError(f"shard {p}: {k} has shape {a.shape}, expected (n, {self.n_params})")
                bad = ~np.isfinite(a)
                if bad.any():
                    row, col = map(int, np.argwhere(bad)[0])
                    raise DatasetError(
                        f"shard {p}: row {row} has a non-finite label in {k} "
                        f"(column {col} = {a[row, col]}; {int(bad.any(1).sum())} bad row(s) in this shard)")

    def check_labels(self) -> None:
        """Read every shard's parameters (cheap: no images) and fail on the first bad row."""
        keys = ["params"] + (["target_params"] if self.paired else [])
        for i in range(len(self.shards)):
            self.load_shard(i, keys)

    def all_params(self, target: bool = False) -> np.ndarray:
        """Every sample's parameters (or target parameters), (count, N) float32."""
        key = "target_params" if target else "params"
        if not self.shards:
            return np.zeros((0, self.n_params), np.float32)
        return np.concatenate([self.load_shard(i, [key])[key] for i in range(len(self.shards))])

    def check_model(self, n_params: int, profile: str = "") -> None:
        if self.n_params != n_params:
            raise DatasetError(
                f"dataset {self.path} has {self.n_params} parameters per sample, but the model"
                f"{' profile ' + repr(profile) if profile else ''} expects {n_params}")


def open_dataset(path, n_params: int | None = None, profile: str = "") -> DatasetInfo:
    """Read and check a dataset's manifest. ``n_params``: the width the model expects."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset {path} is not a folder")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise DatasetError(f"{path} has no {MANIFEST}: not a SliderGAN dataset "
                           f"(or its writer never finished a shard)")
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{mpath} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DatasetError(f"{mpath} is not a SliderGAN dataset manifest (format {m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("version") != VERSION:
        raise DatasetError(f"{mpath} has dataset format version {m.get('version')!r}; this build reads version {VERSION}")
    try:
        info = DatasetInfo(
            path=path, image_size=int(m["image_size"]), n_params=int(m["n_params"]),
            param_names=list(m["param_names"]), paired=bool(m["paired"]), count=int(m["count"]),
            shards=list(m["shards"]), complete=bool(m.get("complete", True)), landmarks=bool(m.get("landmarks", False)),
            blendshapes=m.get("blendshapes", ""), sequences=m.get("sequences"), meta=m.get("meta") or {},
            jpeg_quality=None if m.get("jpeg_quality") is None else int(m["jpeg_quality"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{mpath} is missing or has a bad field: {e}") from None
    if sum(info.shard_counts) != info.count:
        raise DatasetError(f"{mpath}: shard counts sum to {sum(info.shard_counts)}, count says {info.count}")
    if not info.complete:
        log.warning("dataset %s was not closed by its writer; reading the %d finished shards", path, len(info.shards))
    if n_params is not None:
        info.check_model(n_params, profile)
    return info


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, S, S, 3) -> (n, size, size, 3): area averaging down, bilinear up."""
    if images.shape[1] == size:
        return images
    import cv2
    interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def paint_like(groups: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Real frames given a painting's look (uint8 (n, S, S, 3) RGB arrays, all of one n): flat, smoothed
    shading (an edge-preserving filter, as glazes blend skin), a yellowed varnish, less saturation and
    contrast. Row i of every array gets the same look, so that a pair (source, target) stays a pair and
    differs only by its motion. (Why: four of the training portraits are paintings, every real pair is a
    video frame; the held-out paintings moved least, README "Painted pairs".)"""
    import cv2
    groups = [np.array(g, copy=True) for g in groups]
    for i in range(len(groups[0])):
        sigma_s = rng.uniform(10, 40) * groups[0].shape[1] / 128
        sigma_r, blend = rng.uniform(0.15, 0.4), rng.uniform(0.6, 1.0)
        varnish = np.array([1.0, rng.uniform(0.86, 0.97), rng.uniform(0.65, 0.88)], np.float32)
        sat, gamma, light = rng.uniform(0.55, 1.0), rng.uniform(0.9, 1.3), rng.uniform(0.8, 1.0)
        for g in groups:
            x = g[i].astype(np.float32)
            smooth = cv2.edgePreservingFilter(g[i], flags=cv2.RECURS_FILTER, sigma_s=sigma_s, sigma_r=sigma_r)
            x = x + blend * (smooth.astype(np.float32) - x)
            grey = x.mean(axis=2, keepdims=True)
            x = grey + sat * (x - grey)
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** gamma * light * varnish
            g[i] = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return groups


def images_to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 (n, S, S, 3) RGB -> float32 (n, 3, size, size) in [-1, 1], resized when S != size."""
    if size is not None:
        images = resize_images(images, size)
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def tensor_to_images(t: torch.Tensor) -> np.ndarray:
    """float (n, 3, S, S) in [-1, 1] -> uint8 (n, S, S, 3) RGB."""
    a = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(0, 2, 3, 1).cpu().numpy()


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


class ShardStream(torch.utils.data.IterableDataset):
    """Batches streamed from the shards of one dataset, or of several read as one; see the module docstring.

    Yields dicts of tensors: ``image`` (B, 3, S, S) in [-1, 1], ``params`` (B, N), ``seq`` (B,), and for
    paired datasets ``target_image`` and ``target_params``. Use it with ``DataLoader(batch_size=None)``
    (``make_loader``): it batches itself, so that the order is fixed by (seed, rank, worker).

    ``repeat=True``: an endless stream of epochs (training); else one epoch, the last batch possibly short
    (unless ``drop_last``). ``rank``/``world_size`` default to torch.distributed's when initialised.
    """

    def __init__(self, info: DatasetInfo | Sequence[DatasetInfo], batch_size: int, image_size: int | None = None, *,
                 shuffle: bool = True, shuffle_buffer: int = 2048, seed: int = 0, repeat: bool = True,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None,
                 start_batch: int = 0):
        super().__init__()
        infos = [info] if isinstance(info, DatasetInfo) else list(info)
        if not infos:
            raise DatasetError("no dataset given")
        for i in infos:
            if not i.shards:
                raise DatasetError(f"dataset {i.path} holds no samples")
            if i.paired != infos[0].paired or i.n_params != infos[0].n_params:
                raise DatasetError(f"datasets {infos[0].path} and {i.path} cannot be read as one stream: "
                                   f"paired {infos[0].paired}/{i.paired}, n_params {infos[0].n_params}/{i.n_params}")
        self.infos = infos
        self.paired = infos[0].paired
        # Several datasets read as one: a flat list of (dataset, shard) with their row counts.
        self._shards = [(d, s) for d, i in enumerate(infos) for s in range(len(i.shards))]
        self._counts = [infos[d].shard_counts[s] for d, s in self._shards]
        self.count = sum(self._counts)
        self.batch_size = int(batch_size)
        self.image_size = image_size or infos[0].image_size
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.seed = int(seed)
        self.repeat = repeat
        self.drop_last = drop_last
        if rank is None or world_size is None:
            dist = torch.distributed
            ok = dist.is_available() and dist.is_initialized()
            rank, world_size = (dist.get_rank(), dist.get_world_size()) if ok else (0, 1)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_batch = int(start_batch)

    # -- the plan: which rows of which shards a reader sees, epoch by epoch, without reading them
    def _reader(self) -> tuple[int, int, int, int]:
        """(reader index, number of readers, role, workers). DataLoader takes batches from its workers
        round-robin starting at worker 0, so after ``start_batch`` batches worker w plays the role of
        the worker that made batch ``start_batch + w`` of the uninterrupted stream."""
        wi = torch.utils.data.get_worker_info()
        w, nw = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        role = (w + self.start_batch) % nw
        return self.rank * nw + role, self.world_size * nw, role, nw

    def _epoch_groups(self, epoch: int, reader: int, readers: int) -> list[list[tuple[int, int, int]]]:
        """Groups of (shard, first row, row step) for one reader in one epoch."""
        n = len(self._shards)
        order = _rng(self.seed, epoch, 1).permutation(n) if self.shuffle else np.arange(n)
        if n >= readers:
            parts = [(int(s), 0, 1) for s in order[reader::readers]]
        else:  # fewer shards than readers: every reader reads every shard, keeps every T-th row
            parts = [(int(s), reader, readers) for s in order]
        groups, cur, size = [], [], 0
        for part in parts:
            cur.append(part)
            size += self._rows(part)
            if size >= self.shuffle_buffer:
                groups.append(cur)
                cur, size = [], 0
        if cur:
            groups.append(cur)
        return groups

    def _rows(self, part: tuple[int, int, int]) -> int:
        s, first, step = part
        return len(range(first, self._counts[s], step))

    def samples_per_epoch(self, reader: int, readers: int) -> int:
        return sum(self._rows(p) for g in self._epoch_groups(0, reader, readers) for p in g)

    def _samples(self, reader: int, readers: int, skip: int) -> Iterator[tuple[dict, int]]:
        """(arrays of one group, row index) in stream order, starting ``skip`` samples in."""
        epoch = 0
        while True:
            groups = self._epoch_groups(epoch, reader, readers)
            total = sum(self._rows(p) for g in groups for p in g)
            if total == 0:
                return  # this reader has nothing (cannot happen with the row split, kept for safety)
            if skip >= total and self.repeat:
                skip -= total
                epoch += 1
                continue
            for gi, group in enumerate(groups):
                gsize = sum(self._rows(p) for p in group)
                if skip >= gsize:
                    skip -= gsize
                    continue
                arrays = self._load_group(group)
                order = (_rng(self.seed, epoch, 2, reader, gi).permutation(gsize) if self.shuffle
                         else np.arange(gsize))
                for j in order[skip:]:
                    yield arrays, int(j)
                skip = 0
            if not self.repeat:
                return
            epoch += 1

    def _load_group(self, group) -> dict[str, np.ndarray]:
        parts = []
        for s, first, step in group:
            d, i = self._shards[s]
            a = {k: v[first::step] for k, v in self.infos[d].load_shard(i).items()}
            if "landmarks" in a and a["images"].shape[1] != self.image_size:
                a["landmarks"] = a["landmarks"] * np.float32(self.image_size / a["images"].shape[1])
            for k in ("images", "target_images"):
                if k in a and a[k].shape[1] != self.image_size:
                    a[k] = resize_images(a[k], self.image_size)
            parts.append(a)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def __iter__(self):
        reader, readers, role, nw = self._reader()
        # The worker of role r made batches r, r + nw, r + 2 nw, ...: those below start_batch are done.
        consumed = -(-(self.start_batch - role) // nw) if self.start_batch > role else 0
        buf: list[tuple[dict, int]] = []
        for item in self._samples(reader, readers, consumed * self.batch_size):
            buf.append(item)
            if len(buf) == self.batch_size:
                yield self._collate(buf)
                buf = []
        if buf and not self.drop_last:
            yield self._collate(buf)

    def _collate(self, items: list[tuple[dict, int]]) -> dict[str, torch.Tensor]:
        keys = items[0][0].keys()
        rows = {k: np.stack([a[k][j] for a, j in items]) for k in keys}
        out = {"image": images_to_tensor(rows["images"], self.image_size),
               "params": torch.from_numpy(rows["params"]).float(),
               "seq": torch.from_numpy(rows["seq"]).long()}
        if "target_images" in rows:
            out["target_image"] = images_to_tensor(rows["target_images"], self.image_size)
            out["target_params"] = torch.from_numpy(rows["target_params"]).float()
        if "landmarks" in rows:
            out["landmarks"] = torch.from_numpy(rows["landmarks"]).float()
        return out


def make_loader(stream: ShardStream, num_workers: int = 0, pin_memory: bool = False,
                prefetch_factor: int = 2) -> torch.utils.data.DataLoader:
    """A DataLoader over a ShardStream (batches are made by the stream itself)."""
    kw = {}
    if num_workers > 0:
        kw = {"prefetch_factor": prefetch_factor, "persistent_workers": False}
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers,
                                       pin_memory=pin_memory, **kw)


class ParamBank:
    """Unpaired targets: p_trg drawn from other samples' parameters (SPEC section 5).

    Holds every parameter vector of one or more datasets (N floats a sample: 160 bytes, so even
    hundreds of thousands fit in memory) and samples rows uniformly with a torch Generator, whose
    state the trainer checkpoints for exact resume. **(choice)** Drawing from the whole dataset rather
    than permuting the batch (StarGAN) keeps targets independent of the batch, also at batch size 1.
    """

    def __init__(self, params: np.ndarray | torch.Tensor):
        p = torch.as_tensor(np.asarray(params, dtype=np.float32))
        if p.ndim != 2 or p.shape[0] == 0:
            raise DatasetError(f"a parameter bank needs a non-empty (n, N) array, got {tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise DatasetError("a parameter bank holds non-finite values")
        self.params = p

    @classmethod
    def from_datasets(cls, infos: Sequence[DatasetInfo]) -> "ParamBank":
        arrays = [i.all_params() for i in infos]
        arrays += [i.all_params(target=True) for i in infos if i.paired]
        return cls(np.concatenate(arrays))

    @property
    def n_params(self) -> int:
        return self.params.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(0, self.params.shape[0], (n,), generator=generator)
        return self.params[idx].clone()


def write_arrays(path, images: np.ndarray, params: np.ndarray, seq=None, target_images=None,
                 target_params=None, **kw) -> DatasetInfo:
    """Convenience: write whole arrays as a dataset and return it opened."""
    paired = target_images is not None
    with DatasetWriter(path, image_size=images.shape[1], n_params=params.shape[1], paired=paired, **kw) as w:
        for i in range(len(images)):
            w.add(images[i], params[i], 0 if seq is None else seq[i],
                  target_images[i] if paired else None, target_params[i] if paired else None)
    return open_dataset(path)


__all__ = ["FORMAT", "VERSION", "MANIFEST", "DatasetError", "DatasetWriter", "DatasetInfo", "open_dataset",
           "ShardStream", "make_loader", "ParamBank", "images_to_tensor", "tensor_to_images", "write_arrays"]
