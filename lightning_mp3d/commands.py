"""The parsers of the plain commands (``mp3d-pipeline``, ``mp3d-predict``, ``mp3d-evaluate``), on jsonargparse.

Each command keeps argparse's flags (``--skip-eval``, repeatable ``--extra``, bare on/off flags) and, like the stages'
LightningCLI, also takes ``-c/--config`` YAML files of the same options (keys are the option names with underscores:
``skip_eval: true``, ``eval_images: 64``) and prints one with ``--print_config``. Later arguments override earlier ones
(``--config run.yaml --seeds 3``). ``jsonargparse.CLI`` itself is not used: it derives options from a function's
parameter names (``--skip_eval`` only, no ``--skip-eval``), makes booleans take a value (``--skip_eval true``) and
reads a repeated list option as a replacement, not an append; building the parser with jsonargparse's
``ArgumentParser`` keeps every existing spelling and still validates config files by type.
"""

from __future__ import annotations

from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

CONFIG_HELP = (
    "YAML file of any of these options, keyed by their names with underscores (e.g. skip_eval: true); "
    "--print_config writes one"
)
FLAG: dict[str, Any] = {"type": bool, "nargs": "?", "const": True, "default": False}
"""An on/off option: bare ``--flag`` is true (as argparse's ``store_true``), ``--flag false`` and YAML booleans too."""


def command_parser(prog: str, description: str) -> ArgumentParser:
    """A jsonargparse parser with ``-c/--config`` (and so ``--print_config``); abbreviated options stay accepted."""
    parser = ArgumentParser(prog=prog, description=description, allow_abbrev=True)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help=CONFIG_HELP)
    return parser
