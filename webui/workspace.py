"""The folder the web UI may read and write; every path from the browser is checked here.

A path typed or chosen in the browser is resolved (symlinks and `..` included) and must
land inside the workspace; anything else is refused with a UserError. Workers run with the
workspace as their working directory, so relative paths in a spec mean the same thing to
the UI and to the worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.runs import RunDir
from o1pruner.spec import RunSection, RunSpec

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = RunSection.model_fields["output_root"].default
MODEL_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".yaml", ".yml")


@dataclass(frozen=True)
class Workspace:
    """The UI's root folder and the run output root inside it."""

    root: Path

    @classmethod
    def open(cls, path: str | Path) -> Workspace:
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise UserError(f"--workspace {path}: not a directory")
        return cls(root)

    @property
    def runs_root(self) -> Path:
        return self.root / DEFAULT_OUTPUT_ROOT

    def resolve(self, text: str | Path, what: str = "path") -> Path:
        """`text` (relative to the workspace, or absolute) resolved; refused if outside."""
        raw = str(text).strip()
        if not raw:
            raise UserError(f"{what}: empty path")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.root / path
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise UserError(f"{what}: {raw} is outside the workspace {self.root}; only files "
                            "inside it can be used from the web UI")
        return resolved

    def relative(self, path: Path) -> str:
        """`path` written relative to the workspace (for commands a user can copy)."""
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def run_dir(self, name: str, output_root: str | None = None) -> RunDir:
        """The run directory `name` under the output root, confined to the workspace."""
        root = self.resolve(output_root or DEFAULT_OUTPUT_ROOT, "run.output_root")
        if not name or "/" in name or name in (".", ".."):
            raise UserError(f"run name {name!r}: expected a plain folder name")
        path = self.resolve(root / name, "run")
        if path.parent != root:
            raise UserError(f"run {name!r}: not a folder directly inside {root}")
        return RunDir(path)

    def run_dir_for(self, spec: RunSpec) -> RunDir:
        return self.run_dir(spec.run_name(), spec.run.output_root)

    def check_spec_paths(self, spec: RunSpec) -> None:
        """Refuse a spec whose local paths (model, data, configs) point outside the workspace.

        Hub ids, `pypi:` models and registry names resolve inside it and pass.
        """
        fields: list[tuple[str, Any]] = [
            ("model.name_or_path", spec.model.name_or_path),
            ("model.cache_dir", spec.model.cache_dir),
            ("data.local_dir", spec.data.local_dir),
            ("data.train", spec.data.train.name),
            ("train.deepspeed_config", spec.train.deepspeed_config),
            ("run.output_root", spec.run.output_root),
        ]
        if spec.model.prompt_template.endswith((".yaml", ".yml")):
            fields.append(("model.prompt_template", spec.model.prompt_template))
        fields += [(f"eval.benchmarks.{i}", ref.name) for i, ref in enumerate(spec.eval.benchmarks)]
        problems = []
        for name, value in fields:
            if value is None:
                continue
            try:
                self.resolve(value, name)
            except UserError as err:
                problems.append(str(err))
        if problems:
            raise UserError("; ".join(problems))
