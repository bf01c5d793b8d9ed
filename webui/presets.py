"""Presets: the project's example specs, one click away in the Build tab.

They are the YAML files under the project's templates/ folder (the CPU quickstart, a
smoke test and each paper recipe), loaded like any imported spec; nothing here repeats a
parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import o1pruner

TEMPLATES = Path(o1pruner.__file__).resolve().parents[1] / "templates"


@dataclass(frozen=True)
class Preset:
    slug: str  # for element ids: preset-<slug>
    label: str
    path: Path

    @property
    def relative(self) -> str:
        return str(self.path.relative_to(TEMPLATES.parent))

    def description(self) -> str:
        """The first paragraph of the file's opening comment (what the preset is for), up
        to a blank comment line or an indented command."""
        lines = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            text = line[1:] if line.startswith("#") else None
            if text is None or not text.strip() or text.startswith("   "):
                break
            lines.append(text.strip())
        return " ".join(lines)


def presets(root: Path = TEMPLATES) -> list[Preset]:
    """The smoke test, the CPU quickstart (and its full recipe), then each recipe of
    templates/paper/."""
    found = [Preset("smoke", "Smoke test", root / "smoke.yaml"),
             Preset("quickstart", "CPU quickstart", root / "quickstart.yaml"),
             Preset("quickstart-full", "CPU quickstart, full", root / "quickstart-full.yaml")]
    found += [Preset(f"paper-{p.stem}", f"paper: {p.stem}", p)
              for p in sorted((root / "paper").glob("*.yaml"))]
    return [p for p in found if p.path.is_file()]
