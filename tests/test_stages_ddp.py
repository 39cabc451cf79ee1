"""Phase 1 under 2-process CPU DDP (gloo, launched by torchrun): it finishes, ranks draw different samples from both
inner loaders of the CombinedLoader, and the replicas of G and H stay equal."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import make_frozen_checkpoints

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from lightning_mp3d.cli import cli_main
    from tests.helpers import stage_args

    root, teacher, aae = (Path(a) for a in sys.argv[1:4])
    extra = ("--trainer.max_steps=6", "--trainer.accelerator=cpu", "--trainer.devices=2",
             "--trainer.strategy=ddp_find_unused_parameters_true")
    cli = cli_main(stage_args("phase1", root, teacher, aae, *extra))
    rank = cli.trainer.global_rank
    first, _, _ = next(iter(cli.datamodule.train_dataloader()))  # this rank's first step: {"syn": ..., "image": ...}
    state = {k: v for k, v in cli.model.state_dict().items() if k.startswith(("g.", "h."))}
    record = {"state": state, "maps": first["syn"]["maps"], "images": first["image"]["image"]}
    torch.save({**record, "steps": cli.trainer.global_step}, root / f"rank{rank}.pt")
    """
)


@pytest.mark.ddp
def test_phase1_ddp_two_processes_keep_replicas_equal(tmp_path):
    teacher, aae = make_frozen_checkpoints(tmp_path / "frozen")
    script = tmp_path / "ddp_phase1.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path), str(teacher), str(aae)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 6
    assert r0["state"].keys() == r1["state"].keys() and any(k.startswith("g.") for k in r0["state"])
    for key, value in r0["state"].items():
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=1e-6, msg=key)
    assert not torch.equal(r0["maps"], r1["maps"])  # each rank its own D_syn samples
    assert not torch.equal(r0["images"], r1["images"])  # and its own D_I samples
    assert (tmp_path / "phase1" / "checkpoints" / "last.ckpt").is_file()
