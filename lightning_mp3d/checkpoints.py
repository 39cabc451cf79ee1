"""Stage checkpoints: the one stage record every stage writes and the one reader every loader goes through.

No Lightning import. A stage's Lightning checkpoint carries, under ``STAGE_KEY``, its *stage record*::

    {"format": 2,
     "stage": "phase1",                                   # teacher, aae, distill, phase1, phase2, refine
     "models": {"h": {"v_channels": 96, "width": 32, ...}, # constructor arguments of each sub-model, keyed by
                "g": {...}, "scene_decoder": {...}},       #   the prefix of its weights in "state_dict"
     "upstream": {"teacher": "../../teacher/checkpoints/last.ckpt", "aae": "...", "init_from": "..."},
     "folder": "/abs/path/runs/phase1/checkpoints"}         # where it was written

Upstream checkpoints are stored relative to the folder of the checkpoint file (the run's ``ModelCheckpoint``
``dirpath``), so a run folder that moves as a whole still finds them; a checkpoint copied elsewhere alone finds them
from the folder it was written in (``folder``). Absolute where no such folder is known.

``read(path, expect_stage=...)`` gives a ``StageCheckpoint`` or one clear error naming the file: missing, truncated or
garbage, not a Lightning checkpoint, no stage record, the wrong stage. ``StageCheckpoint.build`` rebuilds a sub-model
from its recorded arguments and weights. Checkpoints written before the record existed (three formats: a teacher's
``width`` hyper-parameter, the AAE's ``lightning_mp3d_pose_decoder`` entry, the student stages' record without
``models``) are still read, by ``_legacy_record``; their upstream paths are taken as they were given (from the current
folder). Sub-models renamed since (``RENAMED``: the AAE's Ψ was ``decoder``) are read under their new names
(``renamed_state_dict``). ``require_finite`` refuses weights holding a NaN or an infinity (a diverged run).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

STAGE_KEY = "lightning_mp3d_stage"
FORMAT = 2
STUDENT_STAGES = ("distill", "phase1", "phase2", "refine")
_LABELS = {"teacher": "stage-0 TeacherPretraining", "aae": "AAE stage"}
_LEGACY_AAE_KEY = "lightning_mp3d_pose_decoder"  # the AAE's own entry before FORMAT 2: PoseDecoder's arguments
# sub-models renamed since a stage first wrote checkpoints: stage -> {old prefix: new prefix} (AAE: Ψ was "decoder",
# a name the student stages' M also had)
RENAMED = {"aae": {"decoder": "pose_decoder"}}


class StageCheckpoint(NamedTuple):
    """A stage checkpoint as read by ``read``.

    ``upstream`` paths are resolved (relative entries joined to the checkpoint's folder) but not checked: a loader
    that needs one says what is missing and how to point at it.
    """

    path: Path
    stage: str
    models: dict[str, dict[str, Any]]  # sub-model (weight prefix) -> constructor keyword arguments
    upstream: dict[str, Path]  # "teacher", "aae", "init_from" -> checkpoint path
    state_dict: dict[str, torch.Tensor]
    hparams: dict[str, Any]  # Lightning's hyper_parameters (settings that are not a sub-model's arguments)

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """The ``<name>.*`` entries of the state dict, prefix removed (empty if none)."""
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in self.state_dict.items() if k.startswith(prefix)}

    def build(self, cls: type[nn.Module], name: str, **extra: Any) -> nn.Module:
        """``cls(**models[name])`` (``extra`` overrides recorded arguments) with the ``<name>.*`` weights (strict)."""
        if name not in self.models:
            raise ValueError(f"{str(self.path)!r} records no '{name}' model (it has {sorted(self.models)})")
        return self.load_into(cls(**{**self.models[name], **extra}), name)

    def load_into(self, module: nn.Module, name: str) -> nn.Module:
        """Load the ``<name>.*`` weights into ``module`` (strict), or ``ValueError`` naming the file and arguments."""
        state = self.weights(name)
        if not state:
            raise ValueError(f"{str(self.path)!r} has no '{name}.*' weights (a '{self.stage}' checkpoint)")
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            recorded = ", ".join(f"{k}={v!r}" for k, v in self.models.get(name, {}).items())
            raise ValueError(
                f"{str(self.path)!r}: its '{name}' weights do not fit the {type(module).__name__} built here "
                f"(recorded {type(module).__name__}({recorded})); widths differ from the config, or C_v from the "
                f"teacher's?: {str(err).splitlines()[-1].strip()}"
            ) from None
        return module


def read_checkpoint(path: str | Path, what: str = "checkpoint", hint: str = "") -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` as a dict, or a clear error naming ``path``.

    Args:
        path: the file.
        what: what the caller expected, for the messages (e.g. "phase2 checkpoint").
        hint: appended to the missing-file message (e.g. how to make the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r} does not exist{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{what} {str(path)!r} cannot be read ({path.stat().st_size} bytes): truncated, corrupt or not a readable "
            f"PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what} {str(path)!r} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def read(path: str | Path, expect_stage: str | Sequence[str] | None = None, what: str = "") -> StageCheckpoint:
    """Read a stage checkpoint and check its stage.

    Args:
        path: a checkpoint written by one of the stages (``runs/<stage>/checkpoints/last.ckpt``).
        expect_stage: the stage (or stages) the caller can use; None accepts any.
        what: what the caller calls the file, for the messages (default "<stage> checkpoint").

    Raises:
        FileNotFoundError: no file at ``path`` (the message says which stage makes it).
        ValueError: unreadable, not a Lightning checkpoint, no stage record, or another stage than expected.
    """
    path = Path(path)
    expected = (expect_stage,) if isinstance(expect_stage, str) else tuple(expect_stage or ())
    what = what or (f"{_describe(expected)} checkpoint" if len(expected) == 1 else "stage checkpoint")
    hint = f" (train it with lightning fit --config configs/stage_{expected[0]}.yaml)" if len(expected) == 1 else ""
    ckpt = read_checkpoint(path, what, hint)
    if "state_dict" not in ckpt:
        raise ValueError(f"{what} {str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    record = ckpt.get(STAGE_KEY)
    if not (isinstance(record, dict) and record.get("format") == FORMAT):
        record = _legacy_record(ckpt)
    if record is None:
        raise ValueError(
            f"{what} {str(path)!r} is not {_article(_describe(expected or STUDENT_STAGES))} checkpoint (no "
            f"'{STAGE_KEY}' record, and none of the formats written before it)"
        )
    if expected and record["stage"] not in expected:
        want = f"'{expected[0]}'" if len(expected) == 1 else f"one of {list(expected)}"
        raise ValueError(f"{what} {str(path)!r} is a '{record['stage']}' checkpoint, expected {want}")
    upstream = {k: _resolve(v, path, record) for k, v in record.get("upstream", {}).items() if v}
    renamed = RENAMED.get(record["stage"], {})
    models = {renamed.get(name, name): args for name, args in record["models"].items()}
    state = renamed_state_dict(record["stage"], ckpt["state_dict"])
    return StageCheckpoint(path, record["stage"], models, upstream, state, dict(ckpt.get("hyper_parameters", {})))


def renamed_state_dict(stage: str, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the sub-model prefixes renamed since ``stage`` wrote it (``RENAMED``) made current.

    E.g. an AAE's ``decoder.*`` becomes ``pose_decoder.*``; the same dict comes back when nothing was renamed.
    """
    renamed = RENAMED.get(stage, {})
    if not any(k.split(".", 1)[0] in renamed for k in state_dict):
        return state_dict
    return {_renamed_key(k, renamed): v for k, v in state_dict.items()}


def _renamed_key(key: str, renamed: dict[str, str]) -> str:
    head, dot, rest = key.partition(".")
    return renamed[head] + dot + rest if dot and head in renamed else key


def stage_record(
    stage: str,
    models: dict[str, dict[str, Any]],
    upstream: dict[str, str | Path | None] | None = None,
    folder: str | Path | None = None,
) -> dict[str, Any]:
    """The record a stage writes under ``STAGE_KEY`` (``on_save_checkpoint``; see the module docstring).

    Args:
        stage: the stage's name.
        models: constructor keyword arguments of each sub-model, keyed by its weights' prefix (plain types only:
            the record is read with ``weights_only=True``).
        upstream: checkpoints the stage was built from (None entries are left out).
        folder: where the checkpoint file goes; upstream paths are stored relative to it (absolute when None).
    """
    stored = {}
    for name, p in (upstream or {}).items():
        if p:
            p = os.path.abspath(p)
            stored[name] = os.path.relpath(p, os.path.abspath(folder)) if folder is not None else p
    written = os.path.abspath(folder) if folder is not None else None
    return {"format": FORMAT, "stage": stage, "models": models, "upstream": stored, "folder": written}


def write(path: str | Path, stage: str, modules: dict[str, nn.Module], models: dict[str, dict[str, Any]]) -> Path:
    """Write plain modules as a minimal checkpoint of ``stage`` (no Lightning): what ``read`` and the loaders need.

    For upstream checkpoints made without running their stage (untrained weights for tests and benchmarks).

    Args:
        path: the file to write.
        stage: the stage's name.
        modules: the sub-models, keyed by their weights' prefix in ``state_dict``.
        models: their constructor keyword arguments under the same keys (``stage_record``'s ``models``).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    state_dict = {f"{name}.{k}": v for name, module in modules.items() for k, v in module.state_dict().items()}
    torch.save({"state_dict": state_dict, STAGE_KEY: stage_record(stage, models)}, path)
    return path


def add_stage_record(
    checkpoint: dict[str, Any],
    trainer: Any,
    stage: str,
    models: dict[str, dict[str, Any]],
    upstream: dict[str, str | Path | None] | None = None,
) -> None:
    """``checkpoint[STAGE_KEY] = stage_record(...)``, for a LightningModule's ``on_save_checkpoint``.

    Upstream paths are relative to the folder of the trainer's ``ModelCheckpoint`` (every checkpoint of a run goes
    there).
    """
    folder = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
    checkpoint[STAGE_KEY] = stage_record(stage, models, upstream, folder)


def _resolve(stored: str, path: Path, record: dict[str, Any]) -> Path:
    """An upstream path of ``record``: beside ``path`` (relative to its folder), else from the folder it was written in.

    A record older than FORMAT 2 gave the path as the run's config did (from the current folder).
    """
    if record.get("format") != FORMAT:
        return Path(stored)
    here = path.parent / stored  # an absolute ``stored`` stays itself
    written = Path(record["folder"]) / stored if record.get("folder") else here
    return written if not here.exists() and written.exists() else here


def _describe(stages: Sequence[str]) -> str:
    """Stage names for the messages: "AAE stage", "phase2", "distill/phase1/phase2 checkpoint nor a refine"."""
    names = [_LABELS.get(s, s) for s in stages]
    return "/".join(names[:-1]) + f" checkpoint nor a {names[-1]}" if len(names) > 1 else "".join(names)


def _article(label: str) -> str:
    return ("an " if label[:1] in "aeiouAEIOU" else "a ") + label


def _legacy_record(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a checkpoint written before FORMAT 2, or None. Upstream paths stay as they were given."""
    from lightning_mp3d.models.student import student_model_args

    hparams, state = ckpt.get("hyper_parameters", {}), ckpt["state_dict"]
    old = ckpt.get(STAGE_KEY)
    if isinstance(old, dict) and old.get("stage") in STUDENT_STAGES:  # {"stage", "v_channels", *_checkpoint}
        stage = old["stage"]
        models = student_model_args(int(old.get("v_channels", 0)), hparams, stage != "distill", stage == "refine")
        upstream = {k: old.get(f"{k}_checkpoint") for k in ("teacher", "aae")} | {"init_from": hparams.get("init_from")}
        return {"stage": stage, "models": models, "upstream": upstream}
    if isinstance(ckpt.get(_LEGACY_AAE_KEY), dict):
        return {"stage": "aae", "models": {"pose_decoder": dict(ckpt[_LEGACY_AAE_KEY])}, "upstream": {}}
    if "width" in hparams and any(k.startswith("teacher.") for k in state):
        args = {"width": hparams["width"], "peak_threshold": hparams.get("peak_threshold", 0.1)}
        return {"stage": "teacher", "models": {"teacher": args}, "upstream": {}}
    return None


def non_finite_keys(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [
        k
        for k, v in tensors.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()
    ]


def require_finite(state: dict[str, Any], path: str | Path) -> None:
    """Raise ``ValueError`` naming ``path`` and the tensors if any floating-point tensor of ``state`` is not finite."""
    bad = non_finite_keys(state)
    if bad:
        raise ValueError(
            f"{str(path)!r} holds non-finite (NaN/inf) weights in {len(bad)} tensors, e.g. {bad[:3]}: the run that "
            "wrote it diverged; use an earlier checkpoint or retrain with a lower learning rate"
        )
