"""Helpers (no tests) shared by several test modules.

- Stage tests: tiny teacher/AAE checkpoints in their stages' exact formats, and small in-process runs of the student
  stages through the ``lightning`` CLI entry (``cli_main``).
- Metric tests: random plausible people and random metric batches (also used by ``ddp_metrics_script.py``).
- Evaluation tests: the MuPoTS ground truth as the model sees it in its 224-px input camera.
- Pipeline tests: a stand-in for the ``lightning fit`` subprocess that records its calls (``install_fake_fit``, the
  ``fake_fit`` fixture of ``conftest.py``), and an in-process ``mp3d-pipeline`` run of the tiny preset.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightning_mp3d import checkpoints, pipeline
from lightning_mp3d.cli import cli_main
from lightning_mp3d.geometry import Intrinsics, translate
from lightning_mp3d.models.aae import PoseDecoder
from lightning_mp3d.models.teacher import EmbeddedTeacher
from lightning_mp3d.skeleton import BONE_LENGTHS, PARENTS, ROOT

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEACHER_WIDTH = 0.0625


def make_frozen_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Write a stage-0 teacher checkpoint (``teacher.*`` weights) and an AAE checkpoint (``pose_decoder.*``), each with
    the stage record its stage writes (``checkpoints.write``)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    teacher = EmbeddedTeacher(width=TEACHER_WIDTH)
    teacher_args = {"width": TEACHER_WIDTH, "peak_threshold": 0.1}
    teacher_path = checkpoints.write(
        folder / "teacher.ckpt", "teacher", {"teacher": teacher}, {"teacher": teacher_args}
    )
    decoder = PoseDecoder(width=32, depth=2)
    aae_path = checkpoints.write(
        folder / "aae.ckpt", "aae", {"pose_decoder": decoder}, {"pose_decoder": decoder.config}
    )
    return teacher_path, aae_path


def stage_args(
    stage: str, root: Path, teacher: Path, aae: Path, *extra: str, init_from: Path | None = None
) -> list[str]:
    """CLI arguments for a very small run of a student stage writing to ``root/<stage>``."""
    args = [
        "fit",
        f"--config={CONFIGS / f'stage_{stage}.yaml'}",
        f"--config={CONFIGS / 'tiny' / f'stage_{stage}.yaml'}",
        f"--model.init_args.teacher_checkpoint={teacher}",
        f"--model.init_args.aae_checkpoint={aae}",
        "--model.init_args.g_hidden=8",
        "--model.init_args.h_width=8",
        "--model.init_args.h_fc_channels=8",
        "--model.init_args.val_figures=false",
        f"--trainer.default_root_dir={root / stage}",
        f"--trainer.callbacks.init_args.dirpath={root / stage / 'checkpoints'}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.limit_val_batches=1",
    ]
    args.append(f"--model.init_args.init_from={init_from if init_from is not None else 'null'}")
    if stage == "distill":
        args += ["--data.init_args.batch_size=2", "--data.init_args.val_size=2", "--data.init_args.batches_per_epoch=4"]
    else:
        args += [  # 2 steps per epoch, each a D_syn and a D_I batch
            "--data.init_args.batches_per_epoch=2",
            "--data.init_args.syn={batch_size: 2}",
            "--data.init_args.images={batch_size: 2, val_size: 2}",
        ]
    return args + list(extra)


def run_stage(stage: str, root: Path, teacher: Path, aae: Path, *extra: str, init_from: Path | None = None):
    """Run ``lightning fit`` in-process; returns the LightningCLI (``.model``, ``.trainer``)."""
    return cli_main(stage_args(stage, root, teacher, aae, *extra, init_from=init_from))


def student_state(module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter of a module."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """True if any tensor differs."""
    return any(not torch.equal(before[k], after[k]) for k in before)


def random_person(offset=(0.0, 0.0, 4000.0), seed=0) -> torch.Tensor:
    """A plausible (15, 3) pose (mm): random bone directions with the skeleton's bone lengths."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(15, 3, generator=g, dtype=torch.float64), dim=-1)
    pose = torch.zeros(15, 3, dtype=torch.float64)
    for j in range(1, 15):
        pose[j] = pose[PARENTS[j]] + dirs[j] * BONE_LENGTHS[j]
    return pose + torch.tensor(offset, dtype=torch.float64)


def project_people(p: torch.Tensor) -> torch.Tensor:
    """A fixed pinhole projection (f = 1000 px, principal point (1000, 1000)) of (..., 3) mm points to (..., 2) px."""
    return 1000.0 * p[..., :2] / p[..., 2:3] + 1000.0


def random_people_batch(seed: int, b: int = 6, p: int = 3, g: int = 3, num_seq: int = 3):
    """Random metric inputs: B frames of G GT people (jittered, permuted predictions, random masks, sequences).

    Returns:
        (pred, pred_2d, pred_mask, gt, gt_2d, gt_mask, seq) in the metrics' argument order.
    """
    gen = torch.Generator().manual_seed(seed)
    gt = torch.stack(
        [
            torch.stack(
                [random_person((600.0 * k - 600.0, 0.0, 4000.0), seed=seed * 100 + i * 10 + k) for k in range(g)]
            )
            for i in range(b)
        ]
    )
    pred = gt[:, torch.randperm(g, generator=gen)] + 60.0 * torch.randn(b, g, 15, 3, generator=gen, dtype=torch.float64)
    pred = torch.cat((pred, torch.zeros(b, p - g, 15, 3, dtype=torch.float64)), 1) if p > g else pred[:, :p]
    pred_mask = torch.rand(b, p, generator=gen) < 0.8
    gt_mask = torch.rand(b, g, generator=gen) < 0.85
    pred_2d = project_people(pred) * pred_mask[..., None, None]
    seq = torch.randint(0, num_seq, (b,), generator=gen)
    return pred, pred_2d, pred_mask, gt, project_people(gt), gt_mask, seq


def as_the_model_sees_it(b: dict) -> torch.Tensor:
    """GT people in the 224-px input camera: same root pixel, same root-relative pose, apparent-size depth."""
    virtual = Intrinsics.for_image(224)
    gt = b["gt_poses"]  # (B, G, 15, 3) real camera
    s = b["letterbox"][:, None, 0]  # (B, 1)
    f_real = torch.sqrt(b["intrinsics"][:, None, 0] * b["intrinsics"][:, None, 1])  # (B, 1)
    depth = gt[..., ROOT, 2] * virtual.focal / (s * f_real)  # (B, G)
    return translate(gt - gt[..., ROOT : ROOT + 1, :], b["gt_2d_input"][..., ROOT, :], depth, virtual)


FAKE_FIT = """
import json, pathlib, sys
args = sys.argv[1:]
stage = next(pathlib.Path(a).stem.removeprefix("stage_") for a in args if a.endswith(".yaml"))
with open("calls.jsonl", "a") as f:
    f.write(json.dumps({"stage": stage, "args": args, "cwd": str(pathlib.Path.cwd())}) + "\\n")
if stage == FAIL_STAGE:
    sys.exit(3)
ckpt = pathlib.Path("runs", stage, "checkpoints", "last.ckpt")
ckpt.parent.mkdir(parents=True, exist_ok=True)
ckpt.write_text("weights")
"""


def install_fake_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict]]:
    """Replace the `lightning` subprocess by a script; returns a reader of the recorded calls."""
    script = tmp_path / "fake_fit.py"

    def install(fail_stage: str | None = None) -> None:
        script.write_text(f"FAIL_STAGE = {fail_stage!r}\n" + FAKE_FIT)

    install()
    monkeypatch.setattr(pipeline, "lightning_command", lambda: [sys.executable, str(script)])
    work = tmp_path / "work"

    def calls() -> list[dict]:
        records = []
        for path in sorted(work.rglob("calls.jsonl"), key=lambda p: len(p.parts)):  # the main chain first
            records += [json.loads(line) for line in path.read_text().splitlines()]
            path.unlink()
        return records

    calls.install = install
    calls.work = work
    work.mkdir()
    return calls


def run_pipeline(work: Path, *extra: str) -> None:
    """``mp3d-pipeline`` in-process on the tiny preset in ``work``, without evaluation or W&B; asserts it succeeds."""
    assert (
        pipeline.main(["--preset", "tiny", "--workdir", str(work), "--skip-eval", "--wandb", "disabled", *extra]) == 0
    )
