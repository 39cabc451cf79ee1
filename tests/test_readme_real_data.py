"""README "Real data" (issue 13): every command of the walk-through names files and options that exist."""

import importlib
import re
import shlex
from pathlib import Path

from lightning_mp3d.datamodules.muco import main as muco_main
from lightning_mp3d.evaluation import main as evaluate_main

ROOT = Path(__file__).resolve().parents[1]


def real_data_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Real data") :]
    block = section[section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)]
    lines = [ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [shlex.split(ln) for ln in lines]


def test_real_data_commands_name_existing_configs_and_options(capsys):
    commands = real_data_commands()
    assert [c[0] for c in commands] == ["python", "lightning", "lightning", "lightning", "lightning"] + [
        "mp3d-evaluate"
    ] * 2
    for cmd in commands:
        for arg in cmd:
            if arg.startswith("configs/"):
                assert (ROOT / arg).is_file(), arg
    importlib.import_module(commands[0][2])  # python -m lightning_mp3d.datamodules.muco
    for parse in (muco_main, evaluate_main):  # every option the walk-through uses is accepted by the parser
        try:
            parse(["--help"])
        except SystemExit:
            pass
    helps = capsys.readouterr().out
    options = {a.split("=")[0] for c in commands if c[0] != "lightning" for a in c if a.startswith("--")}
    assert all(re.search(rf"{o}\b", helps) for o in options), options
    datasets = {c[c.index("--dataset") + 1] for c in commands if "--dataset" in c}
    assert datasets == {"mupots", "3dpw"} and all(d in helps for d in datasets)


def test_real_data_stage_commands_instantiate(tmp_path, monkeypatch):
    from lightning_mp3d.cli import cli_main

    monkeypatch.chdir(tmp_path)
    for cmd in real_data_commands():
        if cmd[0] != "lightning":
            continue
        configs = [str(ROOT / a) for a in cmd if a.startswith("configs/")]
        cli = cli_main([f"--config={c}" for c in configs] + ["--trainer.logger=false"], run=False)
        if len(configs) > 1:  # the student stages: OpenPose weights, MuCo shards
            assert cli.model.hparams.teacher_checkpoint == "data/body_pose_model.pth"
            dm = cli.datamodule
            train = dm.hparams.train if "train" in dm.hparams else dm.images_kwargs["train"]
            assert train == "data/shards/muco/muco-*.tar"
