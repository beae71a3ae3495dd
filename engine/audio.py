"""Audio drives the lips: speech parameters ``p_speech`` from sound.

- **Decoding** (PyAV): any file FFmpeg reads (wav, mp3, m4a, ogg, flac, a video's soundtrack), any
  sample rate, mono or stereo -> mono float32 at 16 kHz (the channels' mean), streamed in chunks
  (``audio_chunks``), so a file of hours is never held whole. An unreadable or unsupported file, one without an audio stream,
  an empty or an entirely silent one -> ``AudioError`` (a ValueError) saying which and where.
- **Features**: log-mel spectrogram, our own NumPy implementation (torchaudio has no build for the
  pinned torch 2.13.0): 25 ms Hann window, 10 ms hop (100 frames a second), 512-point FFT, 64 mel
  bands 60-7600 Hz (HTK mel scale), ``log(power + 1e-6)``. The frames are *causal*: frame k covers the
  25 ms that end at ``(k + 1) * 10 ms``, so a frame never waits for later sound.
- **Network** (``AudioNet``): a causal temporal convolution stack (a 1x1 input projection, residual
  blocks of dilated causal 1-D convolutions, kernel 3, dilations 1, 2, 4, 8, 1, 2, 4, 8; receptive
  field 0.61 s of past sound) that maps log-mel frames to the 10 speech parameters, one output per
  10 ms frame.
- **Bounded look-ahead**: output k is the prediction for ``(k + 1) * 10 ms - lookahead``: the mouth
  at time t is decided from sound up to ``t + lookahead`` (``AudioConfig.lookahead_frames``: the
  shipped model's is 100 ms). Lips move before the sound they make; this lets the model see the
  sound a mouth shape leads to, at a bounded delay (live, the mouth lags the voice by it).
- **Streaming** (``AudioStream``): ``push(samples)`` returns the predictions the new sound decides,
  with their times; the network runs over its receptive field plus the new frames, so its output is
  identical to a whole-file run (tested). ``predict_file`` streams a file through it into a track.

The model ships next to the generator in the model folder as ``audio.safetensors`` (weights,
config JSON, feature normalisation, sha256 of the tensors; checked on load), trained by
``slidergan train-audio`` (``trainer/audio.py``).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["AudioError", "SAMPLE_RATE", "HOP", "FRAME_RATE", "AUDIO_MODEL_FILE", "audio_chunks", "read_audio",
           "log_mel", "MelStream", "AudioConfig", "AudioNet", "AudioStream", "save_audio_model",
           "load_audio_model", "predict_file", "predict_samples", "track_from_audio", "SILENCE_DBFS",
           "OnnxAudioNet", "to_onnxruntime", "audio_onnx_bytes", "audio_model_for", "is_audio_file"]

SAMPLE_RATE = 16000
HOP = 160                 # 10 ms
WIN = 400                 # 25 ms
N_FFT = 512
N_MELS = 64
FMIN, FMAX = 60.0, 7600.0
FRAME_RATE = SAMPLE_RATE / HOP   # 100 feature frames a second
LOG_FLOOR = 1e-6
SILENCE_DBFS = -60.0      # a file whose loudest sample is below this is silent
AUDIO_MODEL_FILE = "audio.safetensors"
AUDIO_ONNX_FILE = "audio.onnx"            # the same network exported (exporters/onnx.py)
AUDIO_FORMAT = "slidergan-audio-model"
AUDIO_VERSION = 1
CHUNK_S = 10.0            # decoding chunk


class AudioError(ValueError):
    """An audio input that cannot be used: unreadable, unsupported, without audio, empty or silent."""


# ------------------------------------------------------------------------------------------ decoding
def _why(e: BaseException) -> str:
    s = str(e).strip() or type(e).__name__
    return s.splitlines()[0][:200]


def audio_chunks(path: str | os.PathLike, rate: int = SAMPLE_RATE, chunk_s: float = CHUNK_S,
                 max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decode the first audio stream of ``path`` to mono float32 in [-1, 1] at ``rate`` Hz, yielded
    in chunks of about ``chunk_s`` seconds (memory follows the chunk, not the file). Raises
    FileNotFoundError, or AudioError for a folder, a file FFmpeg cannot open (unsupported or not
    media), one without an audio stream, one that breaks while decoding, or one with no samples."""
    import av
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio not found: {path}")
    if path.is_dir():
        raise AudioError(f"not an audio file (a folder): {path}")
    try:
        c = av.open(str(path))
    except Exception as e:
        raise AudioError(f"cannot read audio {path}: unsupported or not a media file ({_why(e)})") from None
    with c:
        if not c.streams.audio:
            raise AudioError(f"no audio stream in {path}")
        stream = c.streams.audio[0]
        # resampled in the file's own layout, then the channels averaged (FFmpeg's stereo-to-mono
        # downmix sums at -3 dB, which makes a centred voice 3 dB louder than in mono)
        res = av.AudioResampler(format="fltp", rate=int(rate))
        want = max(1, int(chunk_s * rate))
        limit = math.inf if max_seconds is None else int(max_seconds * rate)
        buf: list[np.ndarray] = []
        have = total = 0

        def take(n):   # the first n buffered samples
            nonlocal buf, have
            x = np.concatenate(buf)
            buf, have = ([x[n:]], len(x) - n) if len(x) > n else ([], 0)
            return x[:n]
        try:
            for frame in c.decode(stream):
                frame.pts = None
                for rf in res.resample(frame):
                    buf.append(rf.to_ndarray().mean(axis=0).astype(np.float32))
                    have += len(buf[-1])
                while total < limit and (have >= want or (have and total + have >= limit)):
                    out = take(int(min(want, limit - total)))
                    total += len(out)
                    yield out
                if total >= limit:
                    return
            for rf in res.resample(None):
                buf.append(rf.to_ndarray().mean(axis=0).astype(np.float32))
                have += len(buf[-1])
            if have:
                out = take(int(min(have, limit - total)))
                total += len(out)
                yield out
        except (AudioError, GeneratorExit):
            raise
        except Exception as e:
            raise AudioError(f"cannot decode audio {path} (after {total / rate:.2f} s): {_why(e)}") from None
    if total == 0:
        raise AudioError(f"the audio of {path} is empty (no samples)")


def read_audio(path, rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """The whole (or the first ``max_seconds``) of a file as mono float32 at ``rate`` (training,
    short files; use ``audio_chunks`` for long ones)."""
    return np.concatenate(list(audio_chunks(path, rate, max_seconds=max_seconds)))


def peak_dbfs(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


# ------------------------------------------------------------------------------------------ features
def _mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE,
                 fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters on the HTK mel scale, each of unit area."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    fb = np.zeros((len(freqs), n_mels), np.float64)
    for i in range(n_mels):
        lo, mid, hi = edges[i:i + 3]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, i] = np.maximum(0.0, np.minimum(up, down))
    fb /= np.maximum(fb.sum(axis=0, keepdims=True), 1e-12)
    return fb.astype(np.float32)


_FILTERS = _mel_filters()
_WINDOW = np.hanning(WIN + 1)[:-1].astype(np.float32)     # periodic Hann


def log_mel(samples: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    """(len(samples) // HOP, N_MELS) float32 log-mel frames of mono 16 kHz ``samples``; frame k covers
    the WIN samples ending at sample (k + 1) * HOP, with ``history`` (the WIN - HOP samples before
    ``samples``; zeros by default) in front. Trailing samples short of a hop are not framed."""
    x = np.asarray(samples, np.float32).reshape(-1)
    pad = np.zeros(WIN - HOP, np.float32) if history is None else np.asarray(history, np.float32)
    x = np.concatenate([pad, x])
    n = (len(x) - (WIN - HOP)) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), np.float32)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * _WINDOW
    spec = np.fft.rfft(frames, n=N_FFT, axis=1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    return np.log(power @ _FILTERS + LOG_FLOOR).astype(np.float32)


class MelStream:
    """``log_mel`` over a stream of sample chunks of any length: the same frames as one call on the
    concatenation."""

    def __init__(self):
        self.history = np.zeros(WIN - HOP, np.float32)
        self.pending = np.zeros(0, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.concatenate([self.pending, np.asarray(samples, np.float32).reshape(-1)])
        n = len(x) // HOP
        mel = log_mel(x[:n * HOP], self.history)
        if n:
            self.history = np.concatenate([self.history, x[:n * HOP]])[-(WIN - HOP):]
        self.pending = x[n * HOP:]
        return mel


# ------------------------------------------------------------------------------------------- network
@dataclass
class AudioConfig:
    n_mels: int = N_MELS
    channels: int = 96
    kernel: int = 3
    dilations: tuple = (1, 2, 4, 8, 1, 2, 4, 8)
    lookahead_frames: int = 6                  # 60 ms
    dropout: float = 0.0                       # training only (inside each block)
    bottleneck: int = 0                        # > 0: the mel bands first projected to this many channels
    out_names: list = field(default_factory=list)   # the speech parameters' names (the blendshape model's)
    blendshapes: str = ""                      # identity of the blendshape model they belong to

    @property
    def n_out(self) -> int:
        return len(self.out_names)

    @property
    def receptive_field(self) -> int:
        """Feature frames one output depends on (itself and the past)."""
        return 1 + (self.kernel - 1) * sum(self.dilations)

    @property
    def lookahead_s(self) -> float:
        return self.lookahead_frames / FRAME_RATE

    def to_json(self) -> str:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return json.dumps(d)

    @classmethod
    def from_json(cls, s: str) -> "AudioConfig":
        d = json.loads(s)
        d["dilations"] = tuple(d.get("dilations", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _torch():
    import torch
    return torch


def build_audio_net(cfg: AudioConfig):
    """The network (a torch.nn.Module): (B, T, n_mels) log-mel -> (B, T, n_out), causal in T."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class CausalBlock(nn.Module):
        def __init__(self, ch: int, k: int, d: int, p: float):
            super().__init__()
            self.pad = (k - 1) * d
            self.conv = nn.Conv1d(ch, ch, k, dilation=d)
            self.mix = nn.Conv1d(ch, ch, 1)
            self.drop = nn.Dropout(p)

        def forward(self, x):
            y = self.conv(F.pad(x, (self.pad, 0)))
            return x + self.drop(self.mix(F.gelu(y)))

    class AudioNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg = cfg
            self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
            self.register_buffer("mel_std", torch.ones(cfg.n_mels))
            # a narrow first projection (``bottleneck``) keeps the network to a few broad spectral
            # features, which generalise to new voices from few speakers better than 64 bands do
            self.inp = (nn.Conv1d(cfg.n_mels, cfg.channels, 1) if not cfg.bottleneck else
                        nn.Sequential(nn.Conv1d(cfg.n_mels, cfg.bottleneck, 1),
                                      nn.Conv1d(cfg.bottleneck, cfg.channels, 1)))
            self.blocks = nn.ModuleList(CausalBlock(cfg.channels, cfg.kernel, d, cfg.dropout) for d in cfg.dilations)
            self.out = nn.Conv1d(cfg.channels, cfg.n_out, 1)

        def forward(self, mel):
            x = ((mel - self.mel_mean) / self.mel_std).transpose(1, 2)
            x = self.inp(x)
            for b in self.blocks:
                x = b(x)
            return self.out(F.gelu(x)).transpose(1, 2)

    return AudioNet()


AudioNet = build_audio_net  # the name the module docstring uses


def _tensors_sha256(tensors) -> str:
    from .checkpoint import tensors_sha256
    return tensors_sha256(tensors)


def save_audio_model(path, net, meta: dict | None = None, half: bool = False) -> Path:
    """Write ``net`` (and its config) to ``path`` (a file, or a folder: ``folder/audio.safetensors``),
    atomically."""
    from safetensors.torch import save_file

    from .atomic import atomic_path
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / AUDIO_MODEL_FILE
    tensors = {k: (v.detach().cpu().contiguous().half() if half and v.is_floating_point()
                   and not k.startswith("mel_") else v.detach().cpu().contiguous())
               for k, v in net.state_dict().items()}
    md = {"format": AUDIO_FORMAT, "version": str(AUDIO_VERSION), "config": net.cfg.to_json(),
          "meta": json.dumps(meta or {}, default=str), "sha256": _tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=md)
    return path


def audio_model_path(path=None) -> Path:
    """The audio model file of a model folder (default: the embedded default model's): its
    ``audio.safetensors``, else (an export folder) its ``audio.onnx``."""
    if path is None:
        from .animator import DEFAULT_MODEL_DIR
        path = DEFAULT_MODEL_DIR
    path = Path(path)
    if path.is_dir():
        return path / AUDIO_ONNX_FILE if not (path / AUDIO_MODEL_FILE).exists() and \
            (path / AUDIO_ONNX_FILE).exists() else path / AUDIO_MODEL_FILE
    return path


class OnnxAudioNet:
    """The exported audio network in onnxruntime, with the interface ``AudioStream`` uses (``cfg``,
    ``run_numpy``)."""

    def __init__(self, file, threads: int | None = 1, model: bytes | None = None):
        import onnxruntime as ort

        from .checkpoint import CheckpointError
        from .inference import ort_session_options
        try:
            self.session = ort.InferenceSession(model if model is not None else str(file),
                                                ort_session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CheckpointError(f"{file} is not a loadable ONNX audio model: {_why(e)}") from None
        md = self.session.get_modelmeta().custom_metadata_map
        if md.get("slidergan.format") != AUDIO_FORMAT:
            raise CheckpointError(f"{file} is not a slidergan audio model (no slidergan.format metadata)")
        self.cfg = AudioConfig.from_json(md["slidergan.audio_config"])
        self.meta = json.loads(md.get("slidergan.meta", "{}"))
        self.file = file

    def run_numpy(self, mel: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"mel": np.ascontiguousarray(mel, np.float32)})[0]


def to_onnxruntime(net, threads: int | None = 1) -> "OnnxAudioNet":
    """The network converted (the graph cached on disk: ``engine.onnx_graph.cached_graphs``) and run by
    onnxruntime: per 40 ms of sound 0.3-0.4 ms against 7-66 ms for eager PyTorch on this loaded 2-core machine
    (benchmarks/bench_audio_latency.py), where PyTorch's per-call overhead dominates so small a network."""
    from .onnx_graph import cached_graphs
    from .torch_backend import weights_digest
    key = (weights_digest(net), net.cfg.to_json(), json.dumps(getattr(net, "meta", {}), default=str))
    model = cached_graphs(key, ("audio.py",), lambda: {"audio": audio_onnx_bytes(net)}, {"role": "audio"})[0]["audio"]
    return OnnxAudioNet(getattr(net, "file", ""), threads=threads, model=model)


def audio_onnx_bytes(net, opset: int = 20) -> bytes:
    """The network as a serialised ONNX model: input ``mel`` (B, T, n_mels), output ``speech``
    (B, T, n_out), dynamic batch and time, its config and meta in ``slidergan.*`` metadata (the one
    conversion; ``exporters.onnx.export_audio`` writes and verifies it)."""
    import io

    import onnx
    import torch

    from .onnx_graph import _quiet_export
    buf = io.BytesIO()
    example = torch.zeros(1, 50, net.cfg.n_mels)
    _quiet_export(lambda: torch.onnx.export(
        net.eval(), (example,), buf, dynamo=False, opset_version=opset, input_names=["mel"],
        output_names=["speech"], dynamic_axes={"mel": {0: "batch", 1: "time"}, "speech": {0: "batch", 1: "time"}},
        do_constant_folding=True))
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in {"slidergan.format": AUDIO_FORMAT, "slidergan.role": "audio",
                 "slidergan.audio_config": net.cfg.to_json(),
                 "slidergan.meta": json.dumps(getattr(net, "meta", {}), default=str),
                 "slidergan.io": "mel (B, T, 64) log-mel frames (engine.audio.log_mel) -> speech (B, T, n_out)",
                 }.items():
        proto.metadata_props.add(key=k, value=v)
    return proto.SerializeToString()


def load_audio_model(path=None, backend: str = "torch", threads: int | None = 1):
    """Load the audio network (eval mode, float32) from a file or a model folder (default: the
    embedded default model); an export folder's ``audio.onnx`` loads into onnxruntime.
    ``backend``: "torch" (a torch module: training, export), "onnxruntime" (converted in memory), or
    "auto" (onnxruntime where installed, else torch: what the runtime uses). A missing, unreadable,
    corrupt (checksum) or non-finite file is a CheckpointError saying so."""
    if backend not in ("torch", "onnxruntime", "auto"):
        raise ValueError(f"backend must be torch, onnxruntime or auto, not {backend!r}")
    if backend != "torch":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if backend == "onnxruntime":
                raise
            backend = "torch"
    file = audio_model_path(path)
    if backend == "torch" or file.suffix != ".safetensors" or not file.is_file():
        return _load_audio_model(path)
    # converted through the graphs' cache, keyed by the file's bytes: a file converted before loads without
    # torch; one changed since (damaged too) is a miss, read and checked in full by _load_audio_model
    from .inference import file_sha256
    from .onnx_graph import cached_graphs
    graphs, _ = cached_graphs(("audio file", file_sha256(file)), ("audio.py",),
                              lambda: {"audio": audio_onnx_bytes(_load_audio_model(file))}, {"role": "audio"})
    return OnnxAudioNet(file, threads=threads, model=graphs["audio"])


def _load_audio_model(path=None):
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from .checkpoint import CheckpointError, check_finite
    file = audio_model_path(path)
    if file.suffix == ".onnx" and file.exists():
        return OnnxAudioNet(file)
    if not file.exists():
        raise CheckpointError(f"no audio model at {file}: train one with 'slidergan train-audio', or use a model "
                              f"folder that has {AUDIO_MODEL_FILE}")
    try:
        with safe_open(str(file), "pt") as f:
            md = f.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {_why(e)}") from None
    if md.get("format") != AUDIO_FORMAT:
        raise CheckpointError(f"{file} is not a slidergan audio model (format {md.get('format')!r})")
    if md.get("version") != str(AUDIO_VERSION):
        raise CheckpointError(f"{file} has audio model version {md.get('version')}; this build reads {AUDIO_VERSION}")
    if md.get("sha256") and _tensors_sha256(tensors) != md["sha256"]:
        raise CheckpointError(f"{file} is corrupt: its tensors do not match the sha256 recorded when it was written")
    check_finite(file, tensors.items())
    cfg = AudioConfig.from_json(md["config"])
    net = build_audio_net(cfg)
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    net.eval()
    net.meta = json.loads(md.get("meta", "{}"))
    net.file = file
    return net


# ------------------------------------------------------------------------------------------ runtime
class AudioStream:
    """Streaming inference: ``push(samples)`` (mono float32 at 16 kHz, any chunk length) returns
    ``(times, p)``: the speech parameters the new sound decides, (n,) seconds on the sound's clock
    and (n, n_out) values. The output for time t arrives once the sound up to ``t + lookahead`` is in.
    ``flush()`` pads with ``lookahead`` of silence to give the last predictions of a file."""

    def __init__(self, net=None, threads: int | None = None):
        self.net = load_audio_model(backend="auto") if net is None else net
        self.cfg: AudioConfig = self.net.cfg
        self.mel = MelStream()
        self.context = np.zeros((0, self.cfg.n_mels), np.float32)
        self.frames = 0             # feature frames so far
        if threads and not hasattr(self.net, "run_numpy"):     # a torch module (onnxruntime's are set per session)
            _torch().set_num_threads(int(threads))

    @property
    def lookahead_s(self) -> float:
        return self.cfg.lookahead_s

    def reset(self) -> None:
        self.mel = MelStream()
        self.context = np.zeros((0, self.cfg.n_mels), np.float32)
        self.frames = 0

    def _run(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(mel)
        if n == 0:
            return np.zeros(0), np.zeros((0, self.cfg.n_out), np.float32)
        rf = self.cfg.receptive_field
        ctx = self.context if len(self.context) else np.full((0, self.cfg.n_mels), math.log(LOG_FLOOR), np.float32)
        x = np.concatenate([ctx, mel])
        # Before the first frame there was silence: pad the history with the floor so that a stream
        # and a whole-file run start alike.
        if len(x) < rf - 1 + n:
            x = np.concatenate([np.full((rf - 1 + n - len(x), self.cfg.n_mels), math.log(LOG_FLOOR),
                                        np.float32), x])
        if hasattr(self.net, "run_numpy"):
            y = self.net.run_numpy(x[None])[0, -n:]
        else:
            torch = _torch()
            with torch.inference_mode():
                y = self.net(torch.from_numpy(x[None]))[0, -n:].numpy()
        self.context = x[-(rf - 1):] if rf > 1 else x[:0]
        k = self.frames + np.arange(n)
        self.frames += n
        times = (k + 1) / FRAME_RATE - self.cfg.lookahead_s
        return times, y.astype(np.float32)

    def push(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(self.mel.push(samples))

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        pad = np.zeros(int(round(self.cfg.lookahead_s * SAMPLE_RATE)) + HOP, np.float32)
        return self.push(pad)


def predict_samples(samples: np.ndarray, net=None) -> tuple[np.ndarray, np.ndarray]:
    """Whole-array prediction (training, evaluation): times (s) and (n, n_out) values, with the end
    padded by the look-ahead (``AudioStream.flush``)."""
    s = AudioStream(net)
    t1, p1 = s.push(samples)
    t2, p2 = s.flush()
    t, p = np.concatenate([t1, t2]), np.concatenate([p1, p2])
    keep = (t >= 0) & (t <= len(samples) / SAMPLE_RATE)
    return t[keep], p[keep]


def predict_file(path, net=None, max_seconds: float | None = None, progress: bool = False,
                 allow_silent: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Stream a file through the network: (times, p at 100 Hz, duration in s). An entirely silent
    file (peak under ``SILENCE_DBFS``) is an AudioError unless ``allow_silent``."""
    s = AudioStream(net)
    ts, ps, n, peak = [], [], 0, 0.0
    bar = None
    for chunk in audio_chunks(path, max_seconds=max_seconds):
        if progress and bar is None:       # made once the file has proved readable
            from tqdm import tqdm
            bar = tqdm(unit="s", desc=f"audio {Path(path).name}", leave=False)
        n += len(chunk)
        peak = max(peak, float(np.max(np.abs(chunk))))
        t, p = s.push(chunk)
        ts.append(t)
        ps.append(p)
        if bar is not None:
            bar.update(round(len(chunk) / SAMPLE_RATE, 2))
    if bar is not None:
        bar.close()
    t, p = s.flush()
    ts.append(t)
    ps.append(p)
    dur = n / SAMPLE_RATE
    if not allow_silent and (peak <= 0 or 20 * math.log10(peak) < SILENCE_DBFS):
        level = f"{20 * math.log10(peak):.1f} dBFS" if peak > 0 else "digital silence"
        raise AudioError(f"the audio of {path} is silent (loudest sample {level}, under {SILENCE_DBFS:g} dBFS): "
                         "nothing to drive the lips with")
    t, p = np.concatenate(ts), np.concatenate(ps)
    keep = (t >= 0) & (t <= dur)
    return t[keep], p[keep], dur


def track_from_audio(audio, out=None, fps: float = 25.0, net=None, max_seconds: float | None = None,
                     progress: bool = False, n_expression: int | None = None):
    """A parameter track (``engine.tracks``) of the speech parameters predicted from ``audio``, at
    ``fps``, referencing the audio file (no expression: the expression group stays with whatever
    else drives it). Written to ``out`` when given."""
    from .tracks import DEFAULT_N_EXPRESSION, ParamTrack, TrackError, save_track
    net = load_audio_model(backend="auto") if net is None else net
    t, p, dur = predict_file(audio, net, max_seconds=max_seconds, progress=progress)
    if len(t) < 2:
        raise AudioError(f"the audio of {audio} is too short ({dur * 1000:.0f} ms) to make a track")
    if not (1.0 <= fps <= 240.0):
        raise TrackError(f"fps {fps:g} is outside 1..240")
    n = max(1, int(math.floor(dur * fps + 1e-6)))
    frame_t = np.arange(n) / fps
    speech = np.stack([np.interp(frame_t, t, p[:, i]) for i in range(p.shape[1])], axis=1)
    speech = np.clip(speech, -1.0, 1.0).astype(np.float32)
    meta = {"source": str(audio), "from": "audio", "audio_model": str(getattr(net, "file", "")),
            "lookahead_s": net.cfg.lookahead_s, "blendshapes": net.cfg.blendshapes, "duration_s": dur}
    track = ParamTrack(times=frame_t, speech=speech, fps=float(fps), speech_names=list(net.cfg.out_names),
                       n_expression=DEFAULT_N_EXPRESSION if n_expression is None else int(n_expression),
                       audio=str(Path(audio).resolve()), audio_offset=0.0, meta=meta)
    if out is not None:
        save_track(track, out)
    return track


AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".wma", ".aiff", ".aif")


def is_audio_file(path) -> bool:
    """Whether ``path`` is sound without pictures: an audio suffix, or a media file PyAV opens that
    has an audio stream and no video stream (a video with sound is a video driver)."""
    p = Path(path)
    if p.suffix.lower() in AUDIO_SUFFIXES:
        return True
    if p.suffix.lower() in (".npz", ".jpg", ".jpeg", ".png", ".webp") or not p.is_file():
        return False
    try:
        import av
        with av.open(str(p)) as c:
            return bool(c.streams.audio) and not c.streams.video
    except Exception:
        return False


def audio_model_for(checkpoint=None, speech_names=None):
    """The audio network that goes with a generator: ``checkpoint``'s own ``audio.safetensors`` (or an
    export folder's ``audio.onnx``) when its folder has one, else the embedded default's; in
    onnxruntime where installed. ``speech_names``: the generator's speech parameter names; an audio
    model predicting other parameters is a CheckpointError (its outputs would mean other motions)."""
    from .checkpoint import CheckpointError
    path = None
    if checkpoint is not None and Path(checkpoint).is_dir() and any(
            (Path(checkpoint) / f).exists() for f in (AUDIO_MODEL_FILE, AUDIO_ONNX_FILE)):
        path = checkpoint
    net = load_audio_model(path, backend="auto")
    generic = speech_names is not None and all(re.fullmatch(r"speech_?\d+", str(n)) for n in speech_names)
    if speech_names is not None and (len(speech_names) != net.cfg.n_out
                                     or (not generic and list(speech_names) != list(net.cfg.out_names))):
        raise CheckpointError(f"the audio model {net.file} predicts {list(net.cfg.out_names)}, but the model's speech "
                              f"parameters are {list(speech_names)}: give the model folder its own "
                              f"{AUDIO_MODEL_FILE} (slidergan train-audio)")
    return net
