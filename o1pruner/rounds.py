"""Iterative rounds (`run.rounds`): round r > 1 repeats pre-sampling and training with round
r-1's trained model as the reference.

```
runs/<name>/                     round 1: the run itself (presample/, train/)
runs/<name>/rounds/round-2/      spec.yaml (model: <run>/train/final), presample/, train/
runs/<name>/rounds/round-3/      spec.yaml (model: round-2's train/final), ...
```

A round's folder is a run directory of its own, run by the same stage commands
(`o1pruner presample|train <round>/spec.yaml`), so it resumes like any run. Its spec is the
run's spec with the model replaced by the previous round's final model (a folder inside
the run), `run.rounds` at 1, and `model.prompt_template: auto` replaced by the template it
chose for the run's model: the folder's name would choose another (usually generic), and a round
must prompt as the run did. The run's evaluation compares each round's model with the
base: `round-1` .. `round-(N-1)`, and the last round as `trained`.
"""

from __future__ import annotations

from pathlib import Path

from o1pruner.files import atomic_write_text
from o1pruner.jobs import RunDir
from o1pruner.prompts import match_template
from o1pruner.spec import RunSpec

ROUNDS_DIR = "rounds"


def round_label(r: int) -> str:
    """The evaluation label of round r's model (the last round's is `trained`)."""
    return f"round-{r}"


def round_dir(run: RunDir, r: int) -> RunDir:
    """Round r's run directory: the run itself for round 1."""
    return run if r == 1 else RunDir(run.root / ROUNDS_DIR / round_label(r))


def final_model(run: RunDir, r: int) -> Path:
    """Where round r's trained model is (or will be)."""
    return round_dir(run, r).root / "train" / "final"


def round_spec(spec: RunSpec, run: RunDir, r: int) -> RunSpec:
    """Round r's spec: the run's, starting from round r-1's trained model, with the prompt
    template the run's model resolved to (the only `auto` that reads the model's name)."""
    if r == 1:
        return spec
    data = spec.model_dump(mode="json", by_alias=True)
    if spec.model.prompt_template == "auto":
        data["model"]["prompt_template"] = match_template(spec.model.name_or_path).name
    data["model"]["name_or_path"] = str(final_model(run, r - 1).resolve())
    data["model"]["revision"] = None
    data["run"].update(name=round_label(r), output_root=str(run.root.resolve() / ROUNDS_DIR),
                       rounds=1)
    return RunSpec.model_validate(data)


def prepare_round(spec: RunSpec, run: RunDir, r: int) -> RunDir:
    """Round r's run directory with its spec.yaml written (unchanged if already there)."""
    folder = round_dir(run, r)
    if r > 1:
        text = round_spec(spec, run, r).to_yaml()
        path = folder.spec_path
        folder.root.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    return folder

