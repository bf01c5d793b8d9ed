"""The folder the web UI may read and write; every path from the browser is checked here.

A path typed or chosen in the browser is resolved (symlinks and `..` included) and must
land inside the workspace; anything else is refused with a UserError that names the field
and says nothing about the outside file (not even whether it exists). Workers run with the
workspace as their working directory, so relative paths in a spec mean the same thing to
the UI and to the worker.

Runs are identified in the UI by their path relative to the workspace (`runs/quickstart`,
`runs/quickstart/eval/adhoc/<name>` for an ad-hoc evaluation). Every output root a spec
launched from the UI used is remembered in `.o1pruner/output_roots.json`, so runs under any
of them are listed, watched, stopped and deleted like the default `runs/`.

The studio serves one folder, `.o1pruner/served/`: a file of a run the UI shows (a report
plot) is handed out as a link or copy made there, and export zips are built there. No
output root and no run folder is served as such, so nothing else in the workspace can be
fetched by its path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, read_json
from o1pruner.jobs import RunDir, run_dir_for
from o1pruner.models import PYPI_PREFIX, looks_like_path
from o1pruner.spec import RunSection, RunSpec

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = RunSection.model_fields["output_root"].default
STATE_DIR = ".o1pruner"
ROOTS_FILE = "output_roots.json"
SERVED_DIR = "served"


@dataclass(frozen=True)
class Workspace:
    """The UI's root folder and the run output roots inside it; `allow_remote_code`: the
    studio was started with --allow-remote-code (else model.trust_remote_code is refused)."""

    root: Path
    allow_remote_code: bool = False

    @classmethod
    def open(cls, path: str | Path, allow_remote_code: bool = False) -> Workspace:
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise UserError(f"--workspace {path}: not a directory")
        return cls(root, allow_remote_code)

    @property
    def runs_root(self) -> Path:
        return self.root / DEFAULT_OUTPUT_ROOT

    def resolve(self, text: str | Path, what: str = "path") -> Path:
        """`text` (relative to the workspace, or absolute) resolved; refused if outside."""
        raw = str(text).strip()
        if not raw:
            raise UserError(f"{what}: empty path")
        if "\x00" in raw:
            raise UserError(f"{what}: not a valid path")
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

    # served files ---------------------------------------------------------------
    @property
    def served_root(self) -> Path:
        """The only folder the studio serves (launch's allowed_paths)."""
        return self.root / STATE_DIR / SERVED_DIR

    def hand_out(self, path: str | Path) -> str | None:
        """A run's file given to the browser: linked (or copied) into served_root, the only
        folder served. None, and nothing served, for anything but a regular file inside
        an output root (a symbolic link, a folder, a file elsewhere)."""
        source = Path(path)
        try:
            info = source.lstat()
            real = source.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not stat.S_ISREG(info.st_mode) or not any(
                real.is_relative_to(r) for r in self.output_roots()):
            return None
        key = hashlib.sha256(f"{real}\0{info.st_mtime_ns}\0{info.st_size}".encode())
        target = self.served_root / key.hexdigest()[:20] / source.name
        if target.exists():
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            os.link(real, partial, follow_symlinks=False)
        except OSError:  # another file system, or links not allowed: a copy
            shutil.copyfile(real, partial, follow_symlinks=False)
        os.replace(partial, target)
        return str(target)

    def clear_served(self) -> None:
        """Forget what an earlier studio handed out (called at launch)."""
        shutil.rmtree(self.served_root, ignore_errors=True)

    # output roots and runs -------------------------------------------------------
    def output_roots(self) -> list[Path]:
        """The default runs/ and every output root a UI launch used (existing, inside)."""
        roots = [self.runs_root]
        recorded = read_json(self.root / STATE_DIR / ROOTS_FILE, [])
        for text in recorded if isinstance(recorded, list) else []:
            try:
                path = self.resolve_output_root(str(text))
            except UserError:  # outside, the workspace itself, a hidden folder
                continue
            if path not in roots and path.is_dir():
                roots.append(path)
        return roots

    def resolve_output_root(self, text: str | Path) -> Path:
        """An output root inside the workspace; never the workspace itself nor a hidden
        folder (.o1pruner holds the studio's state): a root's runs are listed, deleted and
        their files handed out, so a root must hold runs and nothing else."""
        path = self.resolve(text, "run.output_root")
        if path == self.root:
            raise UserError(f"run.output_root: {text} is the workspace itself; runs need a "
                            f"folder of their own inside it, e.g. {DEFAULT_OUTPUT_ROOT}")
        if any(part.startswith(".") for part in path.relative_to(self.root).parts):
            raise UserError(f"run.output_root: {text} is a hidden folder; use a visible "
                            f"folder inside the workspace, e.g. {DEFAULT_OUTPUT_ROOT}")
        return path

    def remember_output_root(self, path: Path) -> None:
        """Record a launch's output root so its runs are listed from now on."""
        if path == self.runs_root or path in self.output_roots():
            return
        known = [self.relative(p) for p in self.output_roots()[1:]]
        atomic_write_json(self.root / STATE_DIR / ROOTS_FILE, [*known, self.relative(path)])

    def run_dir(self, ident: str) -> RunDir:
        """The run (or ad-hoc evaluation) `ident`, a workspace-relative path such as
        runs/quickstart; a bare name means one under runs/. Refused unless it lies in one
        of the output roots."""
        ident = (ident or "").strip()
        if not ident or ident in (".", ".."):
            raise UserError("run: choose a run")
        path = self.resolve(ident if "/" in ident else self.runs_root / ident, "run")
        roots = self.output_roots()
        adhoc = RunDir(path).is_adhoc and path.parents[2].parent in roots
        if path.parent not in roots and not adhoc:
            raise UserError(f"run {ident!r}: not a run folder of this workspace's output roots "
                            f"({', '.join(self.relative(r) for r in roots)})")
        return RunDir(path)

    def run_id(self, run: RunDir) -> str:
        return self.relative(run.root)

    def run_dir_for(self, spec: RunSpec) -> RunDir:
        """The spec's run directory, its output root confined to the workspace."""
        root = self.resolve_output_root(spec.run.output_root)
        return RunDir(root / run_dir_for(spec).root.name)

    # spec paths ------------------------------------------------------------------
    def check_model(self, ref: str, what: str = "model.name_or_path",
                    must_exist: bool = True) -> None:
        """A local model reference must be a model folder inside the workspace: "no such
        directory" for one that looks like a path and does not exist (unless not
        `must_exist`: a finished run whose base model was since removed). Hub ids (org/name
        with no local match) and pypi: models pass."""
        ref = (ref or "").strip()
        if not ref:
            raise UserError(f"{what}: empty")
        if "\x00" in ref:
            raise UserError(f"{what}: contains a NUL character (\\0), which no name or path "
                            "may")
        if ref.startswith(PYPI_PREFIX):
            return
        local = Path(ref).expanduser()
        local = local if local.is_absolute() else self.root / local
        if local.exists() or looks_like_path(ref, self.root):
            path = self.resolve(ref, what)
            if not must_exist and not path.exists():
                return
            if not path.is_dir():
                raise UserError(f"{what}: no such directory: {ref} (in the workspace "
                                f"{self.root})" if not path.exists() else
                                f"{what}: {ref} is a file; expected a model folder")
            if not (path / "config.json").exists():
                raise UserError(f"{what}: {ref} has no config.json; expected a model saved in "
                                "Hugging Face format")

    def check_hub_ref(self, ref: str, what: str) -> None:
        """A reference left relative (a hub id) and loaded in the studio's own process (the
        Playground, the explorers): transformers and datasets take a folder of that name in
        the process's working directory first, so one there, outside the workspace, is
        refused rather than loaded."""
        if not ref or ref.startswith(PYPI_PREFIX) or Path(ref).expanduser().is_absolute():
            return
        here = Path.cwd() / ref
        if here.exists() and not here.resolve().is_relative_to(self.root):
            raise UserError(f"{what}: {ref} would load {ref} of the studio's working directory "
                            f"{Path.cwd()} (outside the workspace), not the hub's; start "
                            "`o1pruner webui` in its workspace, or use a model folder inside "
                            "the workspace")

    def check_dataset(self, name: str, what: str) -> None:
        """A data set must be a registry name, a hub id or a file inside the workspace."""
        from o1pruner.data import registry

        if "\x00" in name:
            raise UserError(f"{what}: contains a NUL character (\\0), which no name or path "
                            "may")
        if name in registry():
            return
        local = Path(name).expanduser()
        local = local if local.is_absolute() else self.root / local
        if local.exists() or looks_like_path(name, self.root) or Path(name).suffix:
            self.resolve(name, what)

    def confine(self, spec: RunSpec, must_exist: bool = True, loads_model: bool = True
                ) -> None:
        """Refuse a spec a UI action would run or read (Build, Evaluate, a sweep point,
        Export, the Playground, the explorers) whose local paths (model, data, templates,
        configs, output root) point outside the workspace, that asks for trust_remote_code
        without --allow-remote-code (when the action `loads_model`), or (`must_exist`)
        whose local model folder does not exist."""
        problems = self.spec_path_problems(spec, must_exist, loads_model)
        if problems:
            raise UserError("; ".join(problems))

    def spec_path_problems(self, spec: RunSpec, must_exist: bool = True,
                           loads_model: bool = True) -> list[str]:
        """The one rule for every spec a UI action produces: one line per local path of
        the spec that is outside the workspace (or a missing model folder), and for remote
        code the studio was not started to allow, each starting with its field path."""
        problems: list[str] = []
        if spec.model.trust_remote_code and loads_model and not self.allow_remote_code:
            problems.append("model.trust_remote_code: refused from the web UI: it lets the "
                            "model's repository run its own Python code on this machine; "
                            "start the studio with `o1pruner webui --allow-remote-code` if "
                            "you trust the model's author")

        def check(what: str, func: Any, *args: Any) -> None:
            try:
                func(*args)
            except UserError as err:
                problems.append(str(err))

        check("model.name_or_path", self.check_model, spec.model.name_or_path,
              "model.name_or_path", must_exist)
        for name, value in [("model.cache_dir", spec.model.cache_dir),
                            ("data.local_dir", spec.data.local_dir),
                            ("train.deepspeed_config", spec.train.deepspeed_config)]:
            if value is not None:
                check(name, self.resolve, value, name)
        check("run.output_root", self.resolve_output_root, spec.run.output_root)
        template = spec.model.prompt_template
        if template.endswith((".yaml", ".yml")) or "/" in template or "\\" in template:
            check("model.prompt_template", self.resolve, template, "model.prompt_template")
        check("data.train", self.check_dataset, spec.data.train.name, "data.train")
        for i, ref in enumerate(spec.eval.benchmarks):
            check(f"eval.benchmarks.{i}", self.check_dataset, ref.name, f"eval.benchmarks.{i}")
        return problems

    def spec_files(self, limit: int = 200) -> list[str]:
        """YAML files in the workspace and its folders one level down (not under the run
        output roots or hidden folders), for the Load picker."""
        roots = set(self.output_roots())
        found = sorted(self.root.glob("*.y*ml")) + sorted(self.root.glob("*/*.y*ml"))
        out = [self.relative(p) for p in found if p.suffix in (".yaml", ".yml")
               and p.parent not in roots and not any(part.startswith(".") for part in
                                                     p.relative_to(self.root).parts)]
        return out[:limit]
