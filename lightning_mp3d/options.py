"""Typed groups of another class's init arguments, for nested config keys that merge and refuse typos.

A stage or datamodule that builds an inner object from its init arguments takes them as one typed group, a frozen
dataclass made from the inner class's signature by ``init_options``: each argument and its default are written once, in
the inner class; a preset overlay that sets one key of the group keeps the others; a misspelt key fails when the config
is parsed. ``option_kwargs`` turns a group back into keyword arguments, and into the plain dict that a weights-only
checkpoint's hyper-parameters can hold.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any


def init_options(
    cls: type, name: str, module: str, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> type:
    """A frozen dataclass of ``cls``'s init arguments with their types and defaults, less ``exclude``.

    Args:
        cls: the class whose ``__init__`` signature gives the fields.
        name: the dataclass's name.
        module: the module that defines it (its ``__module__``, as a config names it).
        exclude: arguments left out (those the caller sets itself).
        defaults: defaults that replace the signature's.

    Returns:
        The dataclass. A config typed with it merges overlays key by key and refuses unknown keys.
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(cls.__init__)
    fields = [
        (arg, hints[arg], dataclasses.field(default=defaults.get(arg, param.default)))
        for arg, param in inspect.signature(cls.__init__).parameters.items()
        if arg != "self" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and arg not in exclude
    ]
    options = dataclasses.make_dataclass(name, fields, frozen=True)
    options.__module__ = module
    less = f" (less {', '.join(exclude)})" if exclude else ""
    options.__doc__ = f"Init arguments of ``{cls.__module__}.{cls.__name__}``{less}."
    return options


def option_kwargs(options: Any) -> dict[str, Any]:
    """Init arguments from an options dataclass (every field) or a mapping (its keys, as Python callers may pass)."""
    if dataclasses.is_dataclass(options):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return dict(options or {})
