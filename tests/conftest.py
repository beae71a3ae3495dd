import os
from pathlib import Path

import pytest
import torch

# Two cores: keep each test process to one intra-op thread so parallel helpers don't thrash.
torch.set_num_threads(int(os.environ.get("SLIDERGAN_TEST_THREADS", "1")))

# The ONNX graphs' cache (engine.onnx_graph) goes to a folder of this run, never the user's ~/.cache; set
# here so that the CLI's subprocesses inherit it.
if "SLIDERGAN_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile
    os.environ["SLIDERGAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="slidergan-test-cache.")
    atexit.register(shutil.rmtree, os.environ["SLIDERGAN_CACHE_DIR"], True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: a user's fresh clone has none."""
    if not (SHARED_DATA / "driving").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
