"""One copy of Lightning: importing every module of the package and running every stage's ``fast_dev_run`` never
imports the ``lightning`` umbrella package (whose ``lightning.pytorch`` classes are other types than
``pytorch_lightning``'s), and every Lightning object in play comes from ``pytorch_lightning``."""

from __future__ import annotations

import importlib
import importlib.abc
import pkgutil
import sys

import pytest

import lightning_mp3d
from lightning_mp3d.cli import cli_main
from tests.helpers import CONFIGS, make_frozen_checkpoints, stage_args


class ImportRecorder(importlib.abc.MetaPathFinder):
    """Records every attempt to import ``lightning`` or ``lightning.*`` (found or not) and lets the import go on."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name == "lightning" or name.startswith("lightning."):
            self.names.append(name)
        return None


@pytest.fixture
def recorder():
    assert "lightning" not in sys.modules, "an earlier import brought in the lightning umbrella package"
    finder = ImportRecorder()
    sys.meta_path.insert(0, finder)
    yield finder
    sys.meta_path.remove(finder)


def test_package_and_every_stage_fast_dev_run_never_import_the_lightning_package(recorder, tmp_path, monkeypatch):
    for module in pkgutil.walk_packages(lightning_mp3d.__path__, "lightning_mp3d."):
        importlib.import_module(module.name)
    monkeypatch.chdir(tmp_path)  # the configs' runs/<stage>/ folders land here
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    runs = {
        "teacher": [
            "fit",
            f"--config={CONFIGS / 'stage_teacher.yaml'}",
            f"--config={CONFIGS / 'tiny' / 'stage_teacher.yaml'}",
            "--data.init_args.batch_size=2",
            "--data.init_args.val_size=2",
            "--model.init_args.num_figure_images=1",
        ],
        "aae": ["fit", f"--config={CONFIGS / 'stage_aae.yaml'}", f"--config={CONFIGS / 'tiny' / 'stage_aae.yaml'}"],
        **{stage: stage_args(stage, tmp_path, teacher, aae) for stage in ("distill", "phase1", "phase2")},
    }
    for stage, args in runs.items():
        args = [a for a in args if not a.startswith("--trainer.callbacks.")]  # the configs' own callbacks
        cli = cli_main([*args, "--trainer.fast_dev_run=true"])
        assert cli.trainer.state.finished, stage
        for obj in (cli.trainer, cli.model, cli.datamodule, *cli.trainer.callbacks):
            assert not type(obj).__module__.startswith("lightning."), (stage, type(obj))
    assert recorder.names == []
    assert "lightning" not in sys.modules
