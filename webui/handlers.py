"""Event-handler logic of the web UI, free of Gradio so it can be tested without a browser.

Each function takes plain values (form values in leaf order, names, paths) and returns
plain values; `webui.app` wires them to components.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.files import atomic_write_text
from o1pruner.jobs import RunDir
from o1pruner.rounds import ROUNDS_DIR
from o1pruner.safeyaml import read_text
from o1pruner.spec import RunSpec
from o1pruner.specio import SpecError, dump_yaml, load_spec, load_spec_text
from webui import form
from webui.machine import TimeNote, has_gpu, time_note
from webui.presets import Preset, first_preset
from webui.text import natural_key, no_markup
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

STAGE_COMMANDS = ("run", "presample", "train", "eval")
HISTORY_COLUMNS = ["run", "kind", "state", "stage", "model", "parameters", "results", "created"]


@dataclass
class Validation:
    """The outcome of checking the form: a spec, or problems grouped by section."""

    spec: RunSpec | None
    problems: list[str] = field(default_factory=list)

    @property
    def by_section(self) -> dict[str, list[str]]:
        return form.problems_by_section(self.problems)

    @property
    def by_field(self) -> dict[str, list[str]]:
        """{field path: its problems}: what the form shows under each field."""
        return form.problems_by_field(self.problems)[0]

    def section_markdown(self, section: str) -> str:
        lines = self.by_section.get(section, [])
        return "\n".join(f"- {no_markup(p)}" for p in lines)

    def summary(self) -> str:
        """Markdown; a value quoted from a file shows as text (webui.text.no_markup)."""
        if self.spec is not None:
            return "OK: spec is valid"
        return (f"Error: {len(self.problems)} problem(s); each is also shown under its field:"
                "\n" + "\n".join(f"- {no_markup(p)}" for p in self.problems))


def validate(values: Sequence[Any], workspace: Workspace | None = None) -> Validation:
    """Form values -> a spec (also checking its paths stay inside the workspace)."""
    try:
        spec = form.form_to_spec(values)
    except SpecError as err:
        return Validation(None, list(err.problems))
    problems = workspace.spec_path_problems(spec) if workspace is not None else []
    return Validation(None, problems) if problems else Validation(spec)


def preview(values: Sequence[Any], workspace: Workspace) -> tuple[Validation, str, str]:
    """(validation, resolved YAML, the exact CLI command that runs it)."""
    check = validate(values, workspace)
    if check.spec is None:
        return check, "", ""
    run = workspace.run_dir_for(check.spec)
    return check, dump_yaml(check.spec), command_line("run", workspace.relative(run.spec_path))


def command_line(stage: str, spec_path: str, extra: Sequence[str] = ()) -> str:
    return " ".join(["o1pruner", stage, spec_path, *extra])


def export_yaml(values: Sequence[Any], workspace: Workspace) -> tuple[Validation, str | None]:
    """Write the spec to `<run name>.yaml` in the workspace's served folder, one file per
    content (clicks do not pile up files), for download (None if invalid)."""
    check = validate(values, workspace)
    if check.spec is None:
        return check, None
    text = dump_yaml(check.spec)
    folder = workspace.served_root / "specs" / hashlib.sha256(text.encode()).hexdigest()[:16]
    path = folder / f"{check.spec.run_name()}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return check, str(path)


def import_yaml_text(text: str, source: str) -> tuple[list[Any] | None, str]:
    """YAML text -> form values, or (None, errors): a bad file changes nothing."""
    try:
        spec = load_spec_text(text, source=source)
    except SpecError as err:
        return None, f"Error: {no_markup(source)}: not imported, the form is unchanged:\n" + (
            "\n".join(f"- {no_markup(p)}" for p in err.problems))
    return form.spec_to_values(spec), f"OK: imported {source}"


def import_yaml_file(path: str | None, workspace: Workspace | None = None) -> tuple[
        list[Any] | None, str]:
    """An uploaded file (or, with `workspace`, a path typed by the user) -> form values."""
    if not path:
        return None, "no file given"
    try:
        real = workspace.resolve(path, "import") if workspace is not None else Path(path)
        text = read_text(real, Path(path).name)  # the size is checked before reading
    except UserError as err:
        return None, f"Error: {no_markup(err)}"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"Error: cannot read {Path(path).name}: {err}"
    return import_yaml_text(text, Path(path).name)


def load_preset(preset: Preset) -> tuple[list[Any] | None, str]:
    """A preset's spec as form values, with what it is for (and, for the plumbing check,
    that it learns nothing)."""
    values, message = import_yaml_file(str(preset.path))
    if values is None:
        return None, message
    note = f"\n\n**{preset.note}**" if preset.note else ""
    return values, f"OK: loaded preset **{preset.label}** (`{preset.relative}`). " + (
        preset.description()) + note


def first_screen(cuda: bool | None = None) -> tuple[list[Any], Preset | None]:
    """The values the Build form opens on, and the preset they come from: on a machine
    without a GPU the CPU quickstart (the spec's defaults are the paper's recipe, days of
    work on a CPU); with one, the spec's defaults (None)."""
    preset = first_preset(has_gpu() if cuda is None else cuda)
    values = load_preset(preset)[0] if preset is not None else None
    return (values, preset) if values is not None else (form.default_values(), None)


def first_screen_message(preset: Preset | None, workspace: Workspace) -> str:
    """The Build tab's first line for a form on `preset`: why it opened there, and how long
    it takes on this machine ("" for the spec's defaults)."""
    if preset is None:
        return ""
    spec = load_spec(preset.path)
    return (f"This machine has no GPU: the form opens on the **{preset.label}** preset "
            f"(`{preset.relative}`). {no_markup(time_note(spec, 'run', workspace.root).sentence)} "
            "Pick another preset, or load a spec, to start from something else.")


def restore_from_run(run_id: str | None, workspace: Workspace) -> tuple[list[Any] | None, str]:
    """The watched run's spec.yaml as form values (after a page reload the form shows the
    run it is attached to, not the defaults); (None, "") when there is none to restore."""
    if not run_id:
        return None, ""
    try:
        run = owner_run(workspace.run_dir(run_id))  # an evaluation: its run's spec
        text = run.spec_path.read_text(encoding="utf-8")
    except (UserError, OSError, UnicodeDecodeError):
        return None, ""
    values, _ = import_yaml_text(text, workspace.relative(run.spec_path))
    if values is None:
        return None, ""
    return values, (f"Form restored from `{workspace.relative(run.spec_path)}`, the run shown "
                    "in the Runs tab. Pick a preset to start from something else.")


def preview_dataset(name: str, workspace: Workspace, local_dir: str | None = None,
                    rows: int = 5) -> str:
    """Row count and first rows of a registry name or a workspace file, or the error."""
    from o1pruner.data import load_problems, registry
    from o1pruner.data import preview_dataset as engine_preview
    from o1pruner.spec import DatasetRef

    name = (name or "").strip()
    if not name:
        return "choose a data set"
    try:
        ref = DatasetRef.model_validate(form.text_to_ref(name))
        target = ref.name
        if target not in registry():
            path = workspace.resolve(target, "data set")  # refuses paths outside
            target = str(path) if path.exists() else target  # else: a hub id
        if ref == DatasetRef(name=ref.name):
            return engine_preview(target, rows=rows, local_dir=local_dir)
        problems = load_problems(ref.model_copy(update={"name": target}), local_dir=local_dir)
        lines = [f"{ref.name}: {len(problems)} problems"]
        for p in problems[:rows]:
            lines += [f"[{p.id}] {' '.join(p.problem.split())[:100]}", f"    gold: {p.gold}"]
        return "\n".join(lines)
    except Exception as err:  # a broken file of any kind is reported, not raised
        logger.info("dataset preview of %r failed: %s", name, err)
        return f"Error: cannot read data set {name!r}: {err}"


# -------------------------------------------------------------------------- runs
def owner_run(run: RunDir) -> RunDir:
    """The run an ad-hoc evaluation (<run>/eval/adhoc/<name>) belongs to; a run itself."""
    return RunDir(run.root.parents[2]) if run.is_adhoc else run


def start(values: Sequence[Any], workspace: Workspace, stage: str = "run") -> tuple[
        Validation, RunDir | None, str]:
    """Validate, then (holding the run's lock) write spec.yaml and launch
    `o1pruner <stage> <run>/spec.yaml`, saying first how long it takes on this machine. A
    run whose job is running is refused before any file is written. (Start in the UI goes
    through `start_step`, which asks first before a long run.)"""
    if stage not in STAGE_COMMANDS:
        raise UserError(f"stage {stage!r}: expected one of {', '.join(STAGE_COMMANDS)}")
    check = validate(values, workspace)
    if check.spec is None:
        return check, None, "not started: fix the problems shown under each section"
    return _launch(check, workspace, stage, time_note(check.spec, stage, workspace.root))


def _launch(check: Validation, workspace: Workspace, stage: str, note: TimeNote) -> tuple[
        Validation, RunDir | None, str]:
    assert check.spec is not None
    run = workspace.run_dir_for(check.spec)
    spec_rel = workspace.relative(run.spec_path)
    try:
        jobs.launch(run, [stage, spec_rel], cwd=workspace.root,
                    spec_text=dump_yaml(check.spec))
    except UserError as err:
        return check, run, f"Error: {err}"
    workspace.remember_output_root(run.root.parent)
    return check, run, (f"{no_markup(note.sentence)} Started `{command_line(stage, spec_rel)}` "
                        f"in {workspace.root}")


@dataclass
class StartStep:
    """What one click on Start did: a launch (run), a question (pending: the spec and
    command it waits for, asked by `question`), or problems to fix (neither)."""

    check: Validation
    run: RunDir | None
    message: str
    pending: str | None = None
    question: TimeNote | None = None


def start_key(check: Validation, stage: str) -> str:
    """What a confirmation answers for: this command on this exact spec."""
    assert check.spec is not None
    return hashlib.sha256(f"{stage}\n{dump_yaml(check.spec)}".encode()).hexdigest()[:16]


def start_step(values: Sequence[Any], workspace: Workspace, stage: str = "run",
               pending: str | None = None) -> StartStep:
    """One click on Start: the estimated time on this machine first; a run estimated over
    machine.LONG_RUN_S (or, without a GPU, one that cannot be estimated) is not started but
    asked about, naming the estimate, and a second click on the same spec and command
    (`pending`) starts it. An edited form asks again."""
    if stage not in STAGE_COMMANDS:
        raise UserError(f"stage {stage!r}: expected one of {', '.join(STAGE_COMMANDS)}")
    check = validate(values, workspace)
    if check.spec is None:
        return StartStep(check, None, "not started: fix the problems shown under each section")
    note = time_note(check.spec, stage, workspace.root)
    key = start_key(check, stage)
    if note.asks and pending != key:
        return StartStep(check, None, (
            f"**Not started yet: {no_markup(note.line)}.** Click **Start anyway "
            f"({note.short})** to start it, or make it smaller first (data.train_limit, "
            "presample.k, presample.max_new_tokens, data.eval_limit)."), pending=key,
            question=note)
    return StartStep(*_launch(check, workspace, stage, note))


def evaluate(run_id: str, model: str, benchmarks: str, workspace: Workspace
             ) -> tuple[str, str]:
    """Launch `o1pruner eval <run>/spec.yaml [--model MODEL]`: the run's own evaluation, or
    (another model) an ad-hoc evaluation, a job of its own that leaves the run untouched.
    An ad-hoc evaluation's id stands for the run it belongs to: its evaluations sit side by
    side in that run, never one inside another. Returns (message, the id of the job to
    watch)."""
    run = owner_run(workspace.run_dir(run_id))
    if not run.spec_path.exists():
        raise UserError(f"run {run_id}: has no spec.yaml")
    spec = load_spec(run.spec_path)  # a spec the worker would reject fails here, with its message
    extra: list[str] = []
    model = (model or "").strip()
    if model:
        workspace.check_model(model, "model")
        extra += ["--model", model]
    names = [b.strip() for b in (benchmarks or "").split(",") if b.strip()]
    for name in names:
        workspace.check_dataset(name, "benchmarks")
    if names:
        extra += ["--benchmarks", ",".join(names)]
    workspace.confine(spec, must_exist=False)  # a spec.yaml written outside the UI too
    from o1pruner.evaluation.runner import eval_job_dir

    # the worker resolves a local model against the workspace (its working directory)
    local = workspace.root / model if model else None
    job = eval_job_dir(run, str(local) if local and local.exists() else model or None,
                       spec.run.rounds)
    spec_rel = workspace.relative(run.spec_path)
    jobs.launch(job, ["eval", spec_rel, *extra], cwd=workspace.root)
    where = "" if job == run else f" as its own job `{workspace.run_id(job)}`"
    return f"started `{command_line('eval', spec_rel, extra)}`{where}", workspace.run_id(job)


def stop(run_id: str, workspace: Workspace) -> str:
    """Ask the job to stop (it saves first) and return at once; the status line says
    "stopping: saving" until it has exited."""
    run = workspace.run_dir(run_id)
    job = jobs.request_stop(run)
    if job["state"] == "stopping":
        timeout = (job.get("stop") or {}).get("timeout")
        return (f"{run_id}: stopping: the running stage is saving (a checkpoint when "
                f"training); killed if still running after {timeout:.0f} s")
    return f"{run_id}: {job['state']}"


@dataclass
class DeleteStep:
    """What one click on "Delete this run" did: the message shown beside the button, and
    the run a confirmation now waits for (None: none)."""

    message: str
    pending: str | None = None
    deleted: bool = False


def delete(run_id: str | None, confirmed: bool, pending: str | None,
           workspace: Workspace) -> DeleteStep:
    """One click on "Delete this run", acting on `run_id` only: the run picked when the
    button was clicked. The first click asks, naming the run, its state and its models;
    the run is deleted by a click with confirm ticked after that question named the same
    run (`pending`), so a tick made before the question, or for another run, asks again.
    A run whose job (or an evaluation or export of it) runs is refused: a UserError."""
    if not run_id:
        return DeleteStep("no run selected")
    run = workspace.run_dir(run_id)
    jobs.check_deletable(run)
    if not confirmed or pending != run_id:
        return DeleteStep(f"**{delete_question(run_id, workspace)}** tick 'confirm delete' "
                          "and click Delete again", pending=run_id)
    jobs.delete_run(run)
    return DeleteStep(f"deleted {run_id}", deleted=True)


def delete_question(run_id: str, workspace: Workspace) -> str:
    """'delete runs/tiny1 (done, 2 models)?': the run, its state and its trained models."""
    run = workspace.run_dir(run_id)
    count = len(run_models(run))
    return (f"delete {run_id} ({jobs.status(run)['state']}, {count} "
            f"model{'' if count == 1 else 's'})?")


def run_models(run: RunDir) -> list[Path]:
    """The run's trained models, which a delete removes: train/final and the step models
    train/models/step-N, of every round (rounds/round-r/train/...)."""
    found = []
    for base in (run.root, *sorted(run.root.glob(f"{ROUNDS_DIR}/*"))):
        for pattern in ("train/final", "train/models/step-*"):
            found += [p for p in sorted(base.glob(pattern))
                      if (p / "config.json").exists() or (p / "adapter_config.json").exists()]
    return found


def compare(run_ids: Sequence[str], workspace: Workspace) -> tuple[str, Any]:
    """(markdown, figure) for the chosen runs, one or more: `o1pruner compare`'s table for
    those with evaluation results, and a figure of accuracy vs mean tokens and training
    curves with what each run has (a stopped run shows its curves)."""
    from webui.compare import compare_figure, compare_markdown, run_points

    if not run_ids:
        return "choose one or more runs to compare", None
    runs = [(name, workspace.run_dir(name)) for name in run_ids]
    drawn = [run_points(run, short_name(run)) for _, run in runs]
    return compare_markdown(runs, drawn), compare_figure(drawn)


def short_name(run: RunDir) -> str:
    """A run's name; an ad-hoc evaluation (<run>/eval/adhoc/<name>) as <run>/<name>."""
    return f"{run.root.parents[2].name}/{run.root.name}" if run.is_adhoc else run.root.name


def runs(workspace: Workspace) -> list[dict[str, Any]]:
    """History rows of every run in the workspace's output roots, each with its `id`."""
    rows = jobs.list_runs(workspace.output_roots())
    for row in rows:
        row["id"] = workspace.relative(Path(row["path"]))
    return rows


def history_table(workspace: Workspace, rows: list[dict[str, Any]] | None = None
                  ) -> pd.DataFrame:
    """The runs table: newest first; a run that cannot be read says why."""
    out = []
    for row in runs(workspace) if rows is None else rows:
        params = ", ".join(f"{k}={v}" for k, v in row["parameters"].items())
        created = pd.Timestamp(row["created"], unit="s").strftime("%Y-%m-%d %H:%M") if row[
            "created"] else ""
        state = f"unreadable: {row['message']}" if row["state"] == "unreadable" else row["state"]
        out.append({**row, "run": row["id"], "state": state, "parameters": params,
                    "created": created})
    return pd.DataFrame(out, columns=HISTORY_COLUMNS)


def run_ids(workspace: Workspace) -> list[str]:
    return [row["id"] for row in runs(workspace)]


def attach_target(workspace: Workspace) -> str | None:
    """The run to show on page load: the newest active one, else the newest run."""
    rows = runs(workspace)
    active = [r for r in rows if r["state"] in jobs.ACTIVE_STATES]
    return (active or rows or [{"id": None}])[0]["id"]


def checkpoints(workspace: Workspace) -> list[str]:
    """Model folders (with a config.json) under <output root>/*/train and the train/ of
    each later round (<run>/rounds/round-r/train), relative to the workspace."""
    found = []
    for root in workspace.output_roots():
        for run in ("*", f"*/{ROUNDS_DIR}/*"):
            for pattern in ("train/config.json", "train/*/config.json",
                            "train/*/*/config.json"):
                found += [workspace.relative(p.parent) for p in root.glob(f"{run}/{pattern}")]
    return sorted(set(found), key=natural_key)
