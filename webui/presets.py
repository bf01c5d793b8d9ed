"""Presets: the project's example specs, one click away in the Build tab.

They are the YAML files under the project's templates/ folder (the CPU quickstart, a
plumbing check and each paper recipe), loaded like any imported spec; nothing here repeats
a parameter. On a machine without a GPU the form opens on the CPU quickstart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import o1pruner

TEMPLATES = Path(o1pruner.__file__).resolve().parents[1] / "templates"


#: What the plumbing check (templates/smoke.yaml) shows, said where it is chosen.
PLUMBING_NOTE = ("A plumbing check, not a demonstration: at 32 tokens SmolLM2-135M is wrong "
                 "on every problem, so every reward, curve and result stays at 0. It shows "
                 "that pre-sampling, training and evaluation run end to end, in minutes; to "
                 "see the method shorten answers, start from the CPU quickstart.")


@dataclass(frozen=True)
class Preset:
    slug: str  # for element ids: preset-<slug>
    label: str
    path: Path
    note: str = ""  # what a user must know before choosing it

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
    """The CPU quickstart (and its full recipe), the plumbing check, then each recipe of
    templates/paper/."""
    found = [Preset("quickstart", "CPU quickstart", root / "quickstart.yaml"),
             Preset("quickstart-full", "CPU quickstart, full", root / "quickstart-full.yaml"),
             Preset("smoke", "Plumbing check (learns nothing)", root / "smoke.yaml",
                    PLUMBING_NOTE)]
    found += [Preset(f"paper-{p.stem}", f"paper: {p.stem}", p)
              for p in sorted((root / "paper").glob("*.yaml"))]
    return [p for p in found if p.path.is_file()]


def first_preset(cuda: bool) -> Preset | None:
    """The preset the Build form opens on: the CPU quickstart on a machine without a GPU,
    none (the spec's defaults, the paper's recipe) with one."""
    return None if cuda else next((p for p in presets() if p.slug == "quickstart"), None)
