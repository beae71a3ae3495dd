"""``scripts/make_default_model.py``: installs a checkpoint's weights in float16 with its card; with
``--discriminator-from`` another run's D, named in the meta; with ``--keep-card`` the weights alone."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests import streamkit as kit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_default_model.py"


def _installer():
    spec = importlib.util.spec_from_file_location("make_default_model", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_keep_card_swaps_the_discriminator_and_leaves_the_card(tmp_path):
    from engine.checkpoint import load_checkpoint
    install = _installer()
    a, b = kit.tiny_checkpoint(tmp_path / "a", seed=0), kit.tiny_checkpoint(tmp_path / "b", seed=1)
    out = tmp_path / "model"
    assert install([str(a), "-o", str(out)]) == 0
    card = (out / "MODEL_CARD.md").read_text() + "\nA line kept by hand.\n"
    (out / "MODEL_CARD.md").write_text(card)
    assert install([str(out), "-o", str(out), "--discriminator-from", str(b), "--keep-card"]) == 0
    assert (out / "MODEL_CARD.md").read_text() == card
    got, want, gen = load_checkpoint(out), load_checkpoint(b), load_checkpoint(a)
    for x, y in zip(got.discriminator.state_dict().values(), want.discriminator.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-3, rtol=1e-3)          # float16 on disk
    for x, y in zip(got.generator.state_dict().values(), gen.generator.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-3, rtol=1e-3)
    assert got.meta["discriminator_from"]["path"] == str(b)
    # without --keep-card the card is written anew (the hand-kept line gone) and names the donor
    assert install([str(out), "-o", str(out), "--discriminator-from", str(b)]) == 0
    text = (out / "MODEL_CARD.md").read_text()
    assert "A line kept by hand." not in text and str(b) in text
    with pytest.raises(SystemExit):
        install([str(a), "-o", str(tmp_path / "empty"), "--keep-card"])
