"""Atomic writes: a file or folder appears whole under its final name or not at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    Write the file (or fill the folder) at the yielded path. A crash or exception leaves any previous
    ``path`` untouched and removes the temporary. Same folder, so the rename never crosses devices.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp (and some writers, e.g. safetensors) make private files (0600/0700); the
        # result gets the usual permissions, as if written in place.
        for p in [tmp, *(tmp.rglob("*") if is_dir else ())]:
            _plain_permissions(p, p.is_dir())
        if is_dir:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _plain_permissions(path: Path, is_dir: bool) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if is_dir else 0o666) & ~umask)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
