"""Choosing what an export writes, and where: the source (train/final, a step model, a
resumable checkpoint; the last round or `--round R`), the dtype, and an output folder that
is never a run directory or a folder the spec uses (docs/export.md). Everything is checked
here, before `o1pruner.export_write` writes anything; a UserError says what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import read_json
from o1pruner.hardware import DTYPE_OF_PRECISION
from o1pruner.jobs import RunDir

DTYPES = DTYPE_OF_PRECISION  # --dtype bf16|fp16|fp32 -> the saved dtype
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
STEP = re.compile(r"^step-(\d+)$")
MODEL_FILES = ("config.json", "adapter_config.json")
MARKER = ".o1pruner-export.json"  # written into every export: what --force may replace


@dataclass
class ExportPlan:
    """What an export will do; checked before anything is written."""

    run: RunDir
    spec: Any
    out: Path
    source: Path  # a model folder, or a resumable checkpoint (from_checkpoint)
    from_checkpoint: bool
    step: int | None
    adapter: bool  # a LoRA adapter is exported (LoRA run without --merge-lora)
    dtype: str  # torch dtype name
    force: bool = False
    push_to_hub: str | None = None
    round: int = 1  # the round whose model is exported (run.rounds)
    rounds: int = 1  # the run's rounds
    run_spec: Any = None  # the run's spec; `spec` is the exported round's (its model: round
    # r-1's, the base of a LoRA adapter or of a checkpoint)

    @property
    def label(self) -> str:
        return str(self.source.relative_to(self.run.root))

    @property
    def trained_run(self) -> RunDir:
        """The run directory of the exported round (the run itself for round 1)."""
        from o1pruner.rounds import round_dir

        return round_dir(self.run, self.round)


def _steps(folder: Path, markers: tuple[str, ...]) -> list[int]:
    """N of the complete folder/step-N folders (holding one of `markers`), ascending."""
    found = [int(m.group(1)) for path in (folder.glob("step-*") if folder.is_dir() else [])
             if (m := STEP.match(path.name)) and any((path / f).exists() for f in markers)]
    return sorted(found)


def available_checkpoints(run: RunDir) -> dict[str, list[int]]:
    """The steps a run can be exported at: `models` (train/models/step-N, loadable models)
    and `resumable` (train/checkpoints/step-N, accelerate states)."""
    train = run.root / "train"
    return {"models": _steps(train / "models", MODEL_FILES),
            "resumable": _steps(train / "checkpoints", ("trainer_state.json",))}


def describe_checkpoints(run: RunDir) -> str:
    found = available_checkpoints(run)
    parts = [f"{what}: {', '.join(f'step-{n}' for n in steps)}"
             for what, steps in (("models", found["models"]),
                                 ("resumable checkpoints", found["resumable"])) if steps]
    return "; ".join(parts) if parts else "none"


def open_run(run_dir: str | Path) -> tuple[RunDir, Any]:
    """The run directory (or the run of a spec file) and its spec."""
    from o1pruner.jobs import run_dir_for
    from o1pruner.specio import load_spec

    path = Path(run_dir).expanduser()
    if path.is_file():
        spec = load_spec(path)
        return run_dir_for(spec), spec
    run = RunDir(path)
    if not path.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not run.spec_path.exists():
        raise UserError(f"{run_dir}: not a run directory (no spec.yaml)")
    return run, load_spec(run.spec_path)


def plan_export(run_dir: str | Path, out: str | Path, *, checkpoint: int | None = None,
                merge_lora: bool = False, dtype: str | None = None, force: bool = False,
                push_to_hub: str | None = None, round: int | None = None) -> ExportPlan:
    """Check the request and choose the source (of the last round unless `round`); a
    UserError says what is wrong."""
    from o1pruner.training.saving import save_dtype

    run, run_spec = open_run(run_dir)
    rounds = run_spec.run.rounds
    chosen, trained, spec = _export_round(run, run_spec, round)
    lora = spec.train.finetuning == "lora"
    if merge_lora and not lora:
        raise UserError(f"--merge-lora: {run.root} was trained with finetuning: "
                        f"{spec.train.finetuning}, not LoRA; its model is already a full "
                        "model: leave out --merge-lora")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype: {dtype!r}; expected one of {', '.join(DTYPES)}")
    if push_to_hub is not None and not REPO_ID.match(push_to_hub):
        raise UserError(f"--push-to-hub: {push_to_hub!r} is not a repository id; expected "
                        "ORG/NAME (your user name or an organisation, then the model name)")
    train = trained.root / "train"
    if checkpoint is None:
        source, from_ckpt = train / "final", False
        if not any((source / f).exists() for f in MODEL_FILES):
            earlier = (f", or an earlier round with --round {chosen - 1}"
                       if round is None and chosen > 1 else "")
            raise UserError(f"{trained.root}: no trained model ({source} is missing); train "
                            f"it first, or export a checkpoint with --checkpoint N (it has: "
                            f"{describe_checkpoints(trained)}){earlier}")
    else:
        found = available_checkpoints(trained)
        if checkpoint in found["models"]:
            source, from_ckpt = train / "models" / f"step-{checkpoint}", False
        elif checkpoint in found["resumable"]:
            source, from_ckpt = train / "checkpoints" / f"step-{checkpoint}", True
        else:
            raise UserError(f"--checkpoint {checkpoint}: {trained.root} has no "
                            f"step-{checkpoint} (it has: {describe_checkpoints(trained)})")
    target = _check_out(Path(out), run, [run_spec, spec], force)
    if dtype:
        name = DTYPES[dtype]
    else:  # as saved; a resumable checkpoint (fp32 master weights) as train.save_dtype
        name = save_dtype(spec.train) if from_ckpt else _source_dtype(source, spec)
    return ExportPlan(run, spec, target, source, from_ckpt,
                      None if checkpoint is None else checkpoint, lora and not merge_lora,
                      name, force, push_to_hub, chosen, rounds, run_spec)


def _export_round(run: RunDir, run_spec: Any, round: int | None) -> tuple[int, RunDir, Any]:
    """(round, its run directory, its spec): the last round unless `round` says."""
    from o1pruner.rounds import round_dir
    from o1pruner.specio import load_spec

    rounds = run_spec.run.rounds
    chosen = rounds if round is None else round
    if not 1 <= chosen <= rounds:
        raise UserError(f"--round {round}: {run.root} has {rounds} round"
                        f"{'s' if rounds > 1 else ''} (run.rounds); choose 1 to {rounds}")
    folder = round_dir(run, chosen)
    if chosen == 1:
        return chosen, folder, run_spec
    if not folder.spec_path.exists():
        raise UserError(f"{run.root}: round {chosen} has not started ({folder.spec_path} is "
                        f"missing); run `o1pruner run {run.spec_path}` to train it, or export "
                        f"an earlier round with --round {chosen - 1}")
    return chosen, folder, load_spec(folder.spec_path)


def _check_out(out: Path, run: RunDir, specs: list[Any], force: bool) -> Path:
    """The output folder, resolved. Never a run directory or a folder a spec refers to, nor
    inside or holding one; new or empty, or with --force an earlier export (a folder
    holding the marker file an export writes), never a folder the export did not write."""
    target = out.expanduser().resolve()
    for folder, what in _protected_folders(run, specs):
        if target == folder:
            where = "is"
        elif target.is_relative_to(folder):
            where = "inside"
        elif folder.is_relative_to(target):
            where = "holds"
        else:
            continue
        raise UserError(f"--out {out}: {where} {what} {folder}; write the export to a new "
                        "folder of its own, outside every run and every folder the spec uses")
    enclosing = _enclosing_run(target)
    if enclosing is not None:
        where = "is" if enclosing == target else "inside"
        raise UserError(f"--out {out}: {where} the run directory {enclosing}; write the "
                        "export to a new folder of its own, outside every run")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out}: is a file; expected a folder")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise UserError(f"--out {out}: the folder exists and is not empty; choose a new "
                            "folder, or pass --force to replace an earlier export in it")
        if not (target / MARKER).is_file():
            raise UserError(f"--out {out}: the folder holds files that no export wrote (no "
                            f"{MARKER} in it); --force replaces only an earlier export: "
                            "choose a new folder, or delete this one yourself")
    return target


def _protected_folders(run: RunDir, specs: list[Any]) -> list[tuple[Path, str]]:
    """(folder, what it is) that an export must not write into, replace or hold: the run,
    the other runs under its output root, and the folders the specs refer to: the base
    model when it is a local folder, the model cache (model.cache_dir, or the cache a pypi:
    model is converted into), data.local_dir. Relative paths are taken from the working
    directory, as the stages take them."""
    from o1pruner.models import cache_root

    root = run.root.resolve()
    found = [(root, "the run directory")]
    siblings = [p for p in root.parent.iterdir() if p.is_dir() and not p.is_symlink()]
    found += [(p.resolve(), "the run directory") for p in sorted(siblings)
              if p.resolve() != root and _is_run_folder(p)]
    for spec in specs:
        model = spec.model
        local = Path(model.name_or_path).expanduser()
        if not model.name_or_path.startswith("pypi:") and local.is_dir():
            found.append((local.resolve(), "the base model folder (model.name_or_path)"))
        if model.cache_dir or model.name_or_path.startswith("pypi:"):
            found.append((cache_root(model).resolve(), "the model cache (model.cache_dir)"))
        if spec.data.local_dir:
            found.append((Path(spec.data.local_dir).expanduser().resolve(),
                          "the data folder (data.local_dir)"))
    return found


def _enclosing_run(target: Path) -> Path | None:
    """The nearest folder at or above `target` that is a run directory, or None."""
    return next((p for p in (target, *target.parents) if _is_run_folder(p)), None)


def _is_run_folder(path: Path) -> bool:
    """A run (or job) directory that has started: spec.yaml with job.json or events.jsonl,
    or a job.json alone (an ad-hoc evaluation's or an export's job). A spec.yaml alone is
    not enough: a workspace may keep its spec files at its top."""
    if (path / "job.json").is_file():
        return True
    return (path / "spec.yaml").is_file() and (path / "events.jsonl").is_file()


def _source_dtype(folder: Path, spec: Any) -> str:
    """The dtype a saved model folder is in (its config), else the run's save_dtype."""
    from o1pruner.training.saving import save_dtype

    config = read_json(folder / "config.json", {}) or {}
    name = config.get("dtype") or config.get("torch_dtype")
    return name if name in DTYPES.values() else save_dtype(spec.train)
