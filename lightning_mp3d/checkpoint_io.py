"""Reading checkpoints safely: ``torch.load(weights_only=True)`` with errors that name the file, and a finiteness check.

No Lightning import. ``read_checkpoint`` turns a missing, truncated or garbage file into one clear error instead of a
raw zip/pickle error (``KeyError: 101``, "failed finding central directory"); ``require_finite`` refuses weights that
hold a NaN or an infinity (a diverged run), so nothing downstream turns them into empty predictions or zero metrics.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` as a dict, or a clear error naming ``path``.

    Args:
        path: the file.
        what: what the caller expected, for the messages (e.g. "phase2 checkpoint").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{what} {str(path)!r} cannot be read ({path.stat().st_size} bytes): truncated, corrupt or not a PyTorch "
            f"checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what} {str(path)!r} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


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
