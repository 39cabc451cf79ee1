"""Atomic file output: a uniquely named temporary file beside the target, then ``os.replace``.

A killed run leaves no half-written file, and two writers of the same target never share a temporary file (the last
complete one wins).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def unique_temporary(path: str | Path) -> Path:
    """Create (empty, exclusively) and return a new temporary file beside ``path``: ``.<name>.<pid>.<random>.tmp``."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp


class PendingFile:
    """A binary file written atomically over several calls, where one ``with atomic_path(...)`` block does not fit.

    For example a shard that fills up across loop iterations: ``handle`` writes to a unique temporary file beside
    ``path``; ``commit`` closes it and renames it onto ``path``; ``discard`` closes and removes it, leaving ``path`` as
    it was.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tmp = unique_temporary(self.path)
        self.handle = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit / discard

    def commit(self) -> Path:
        """Close and move the finished file onto ``path``."""
        self.handle.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the partial file."""
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` (parents created).

    On success it replaces ``path``; on an exception it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (parents created) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 100, **kwargs: Any) -> Path:
    """``fig.savefig`` to ``path`` (parents created) atomically; the format comes from the path's suffix."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or None)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, **kwargs)
    return path
