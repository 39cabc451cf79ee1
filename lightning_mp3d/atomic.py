"""Atomic file output: write beside the target, then ``os.replace``, so a killed run leaves no half-written file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (parents created) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 100, **kwargs: Any) -> Path:
    """``fig.savefig`` to ``path`` (parents created) atomically; the format comes from the path's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=dpi, **kwargs)
    os.replace(tmp, path)
    return path
