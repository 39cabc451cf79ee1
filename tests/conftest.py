"""Test-wide settings (W&B stays offline and out of the home folder; CPU threads are bounded) and shared fixtures."""

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


@pytest.fixture
def fake_fit(tmp_path, monkeypatch):
    """``mp3d-pipeline``'s ``lightning fit`` subprocess replaced by a recorder (``tests.helpers.install_fake_fit``)."""
    from tests.helpers import install_fake_fit  # lazily: most tests never import Lightning

    return install_fake_fit(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def distill_checkpoint(tmp_path_factory):
    """A distill-stage ``last.ckpt`` after one tiny epoch from untrained frozen checkpoints (one per test module)."""
    from tests.helpers import make_frozen_checkpoints, run_stage  # lazily: most tests never import Lightning

    root = tmp_path_factory.mktemp("chain")
    teacher, aae = make_frozen_checkpoints(root / "frozen")
    run_stage("distill", root, teacher, aae, "--trainer.max_epochs=1")
    ckpt = root / "distill" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt
