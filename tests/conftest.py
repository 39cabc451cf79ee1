"""Test-wide settings: W&B never touches the network or the home folder; CPU threads are bounded."""

import os
import tempfile

import pytest
import torch

_WANDB_TMP = tempfile.mkdtemp(prefix="mp3d_wandb_")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
for _key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    os.environ[_key] = _WANDB_TMP
os.environ.pop("WANDB_API_KEY", None)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
