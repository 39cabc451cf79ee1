"""README's ``## Layout`` block names every module and package of ``lightning_mp3d/`` (inside its package's entry)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lightning_mp3d"


def _layout_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return block.splitlines()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _entry(lines: list[str], name: str, indent: int) -> list[str]:
    """The lines of the entry ``name`` at ``indent``: its own line and every deeper line after it."""
    for i, line in enumerate(lines):
        if _indent(line) == indent and re.match(rf"{re.escape(name)}(\s|$)", line.lstrip(" ")):
            end = i + 1
            while end < len(lines) and _indent(lines[end]) > indent:
                end += 1
            return lines[i:end]
    return []


def _missing(folder: Path, lines: list[str], indent: int) -> list[str]:
    """Modules and packages under ``folder`` that ``lines`` (the entries at ``indent`` and deeper) do not name."""
    missing = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            entry = _entry(lines, f"{path.name}/", indent)
            if not entry:
                missing.append(f"{path.relative_to(PACKAGE)}/")
                continue
            text = "\n".join(entry)  # a package's modules: on their own lines or listed inline in its entry
            for module in sorted(path.glob("*.py")):
                if module.name != "__init__.py" and not re.search(rf"(?<![\w/]){re.escape(module.name)}\b", text):
                    missing.append(str(module.relative_to(PACKAGE)))
            missing += _missing(path, entry[1:], indent + 2)
        elif folder == PACKAGE and path.suffix == ".py" and path.name not in ("__init__.py", "__main__.py"):
            if not _entry(lines, path.name, indent):
                missing.append(path.name)
    return missing


def test_readme_layout_lists_every_module():
    lines = _layout_lines()
    assert lines[0] == "lightning_mp3d/"
    assert _missing(PACKAGE, lines[1:], 2) == []
