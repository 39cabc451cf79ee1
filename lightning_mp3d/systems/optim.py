"""Optimizer and schedule callables as hyper-parameters that a weights-only checkpoint can hold.

The callables are LightningCLI's ``OptimizerCallable`` / ``LRSchedulerCallable``; the checkpoint is read with
``torch.load(..., weights_only=True)``.

Under LightningCLI a system's ``hparams`` already hold the config (``{class_path, init_args}``); built from Python, they
would hold the callable itself (a class or ``functools.partial``), which a weights-only load refuses to unpickle.
"""

from __future__ import annotations

import functools
from typing import Any


def callable_config(fn: Any) -> Any:
    """``fn`` as a weights-only-loadable hyper-parameter.

    A class or a ``functools.partial`` of one becomes ``{class_path, init_args}``; a config stays as it is; anything
    else becomes its ``repr``.
    """
    if fn is None or isinstance(fn, dict):
        return fn
    if isinstance(fn, functools.partial) and isinstance(fn.func, type) and not fn.args:
        return {"class_path": f"{fn.func.__module__}.{fn.func.__qualname__}", "init_args": dict(fn.keywords)}
    if isinstance(fn, type):
        return {"class_path": f"{fn.__module__}.{fn.__qualname__}", "init_args": {}}
    return repr(fn)


def store_callables(hparams: Any, *names: str) -> None:
    """Replace the callables ``names`` in a system's ``hparams`` by ``callable_config`` (in place)."""
    for name in names:
        if name in hparams:
            hparams[name] = callable_config(hparams[name])
