"""The `slidergan` command's failures: one line saying what and where, exit 1, the traceback only with
--debug (before or after the command) or SLIDERGAN_DEBUG=1."""
from __future__ import annotations

import pytest

from engine import cli


@pytest.fixture
def failing(monkeypatch):
    """`slidergan render` whose work raises the exception given."""
    import streaming.render as R
    box = {}

    def main(args):
        raise box["exc"]

    monkeypatch.setattr(R, "main", main)
    monkeypatch.delenv("SLIDERGAN_DEBUG", raising=False)
    return box


ARGS = ["render", "--source", "a.png", "--driver", "b.npz", "-o", "c.mp4"]


@pytest.mark.parametrize("exc, line", [
    (PermissionError(13, "Permission denied", "/srv/out/c.mp4"), "[Errno 13] Permission denied: '/srv/out/c.mp4'"),
    (OSError(30, "Read-only file system", "/mnt/ro/c.mp4"), "[Errno 30] Read-only file system: '/mnt/ro/c.mp4'"),
    (FileNotFoundError("audio not found: x.wav"), "audio not found: x.wav"),
    (ValueError("first line\n  second line"), "first line second line"),
    (KeyError("fps"), "KeyError: 'fps' (--debug shows the traceback)"),
    (MemoryError(), "MemoryError (--debug shows the traceback)"),
])
def test_failures_are_one_line(failing, capsys, exc, line):
    failing["exc"] = exc
    assert cli.main(ARGS) == 1
    err = capsys.readouterr().err
    assert err == f"slidergan render: error: {line}\n"


def test_debug_shows_the_traceback(failing, capsys, monkeypatch):
    failing["exc"] = PermissionError(13, "Permission denied", "/srv/out/c.mp4")
    for argv in (["--debug"] + ARGS, ARGS + ["--debug"], ARGS[:1] + ["--debug"] + ARGS[1:]):
        with pytest.raises(PermissionError):
            cli.main(argv)
    monkeypatch.setenv("SLIDERGAN_DEBUG", "1")
    with pytest.raises(PermissionError):
        cli.main(ARGS)
    failing["exc"] = KeyboardInterrupt()
    assert cli.main(ARGS) == 130


def test_debug_after_a_nested_command(tmp_path, capsys, monkeypatch):
    """--debug is taken after a nested command too (``track check FILE --debug``)."""
    monkeypatch.delenv("SLIDERGAN_DEBUG", raising=False)
    missing = tmp_path / "none.npz"
    assert cli.main(["track", "check", str(missing)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(FileNotFoundError, match="track not found"):
        cli.main(["track", "check", str(missing), "--debug"])
    assert "--debug" in cli.build_parser().format_help()
