"""`o1pruner sweep SPEC --grid FIELD=V1,V2 ... --seeds 0,1,2`: one run per grid point and
seed, queued, then a report over seeds (o1pruner.sweep_report).

A sweep lives in `<output_root>/sweeps/<name>/`: `sweep.json` (its definition and points),
`points/<run>.yaml` (each point's spec), the job files of the sweep itself (`job.json`,
`events.jsonl`, `logs/sweep.log`: it is a job like a run, stopped and watched the same
way) and `report/`. Each point is an ordinary run in `<output_root>/<run name>/`, started
as a job of its own (`o1pruner run`), so points share pre-samples and base evaluations
through the shared caches whenever those are identical (a lambda or method sweep samples
and evaluates the base once), and each can be evaluated, compared or exported like any
run.

The queue survives anything: a point's state is its run's state, so re-running the same
sweep (same command, or Start in the UI) skips finished points, waits for points still
running (a sweep process killed with `kill -9` leaves its current point running on its
own) and starts the rest. A failed point is recorded and the sweep goes on; a re-run
tries it again. A stop (the UI's Stop, `o1pruner stop sweeps/NAME`, Ctrl-C) stops the
running points (each saves, as any run does) and the sweep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, atomic_write_text, read_json
from o1pruner.jobs import Progress, RunDir, job_process
from o1pruner.safeyaml import YamlError, safe_load
from o1pruner.spec import GRPO_METHODS, RunSpec
from o1pruner.specio import SpecError, dump_yaml, load_spec, load_spec_text
from o1pruner.sweep_report import write_sweep_report

logger = logging.getLogger(__name__)

STAGE = "sweep"
SWEEPS_DIR = "sweeps"
#: Presets: extra overrides and the points they add (crossed with any --grid).
#: "paper-table" is the paper's Table 2 for your model on the same pre-samples: base and
#: Fast-Solving Prompt (evaluated once, cached), SFT and DPO on the 2 shortest correct
#: samples of each problem (METHOD.md), and O1-Pruner as the spec sets it.
#: "peers" adds the on-policy length methods (docs/method.md), grpo_length and thinkprune,
#: on the same training problems and held-out evaluation, under the pre-samples' budget
#: (`from_base`: fields only they take, derived from the base spec):
#: completions as long as the pre-samples, groups of K (presample.k) completions, or the
#: largest group that divides a training step's completions, and as many epochs as make
#: their sampled completions per round as many as the pre-samples (K per problem: one epoch
#: of groups of K), so every method sees the same sampling budget. ThinkPrune's cap starts
#: below the pre-samples' limit (its 4k -> 3k -> 2k for R1 distills that run to 16-32k):
#: half of it, then 3/8 and 1/4 in later rounds; at the full limit its first round would
#: cap nothing.
_PAPER_POINTS: list[dict[str, Any]] = [
    {"train.method": "sft", "reward.samples_per_problem": 2},
    {"train.method": "dpo", "reward.samples_per_problem": 2},
    {"train.method": "lh"}]
PRESETS: dict[str, dict[str, Any]] = {
    "paper-table": {"overrides": ["eval.fast_solving_prompt=true"], "points": _PAPER_POINTS},
    "peers": {"overrides": ["eval.fast_solving_prompt=true"],
              "points": [*_PAPER_POINTS, {"train.method": "grpo_length"},
                         {"train.method": "thinkprune",
                          "train.thinkprune_cap_schedule": [0.5, 0.375, 0.25]}],
              "from_base": {"train.grpo_max_completion_length":
                            lambda base: base.presample.max_new_tokens,
                            "train.grpo_num_generations": lambda base: _group_size(base),
                            "train.epochs": lambda base: max(
                                1, round(base.presample.k / _group_size(base)))}},
}
POLL_S = 1.0
MAX_POINTS = 100  # runs of one sweep (each a full run); more is a mistake or a split
MAX_PARALLEL = 8  # runs of one sweep at a time
MAX_REASON = 1000  # characters of a failed point's reason in the table and the report


class PointsFailed(UserError):
    """Some points of a sweep did not finish (the report lists them with why)."""


@dataclass
class Point:
    """One run of the sweep: its grid values, seed and run name."""

    name: str
    values: dict[str, Any]
    seed: int

    def label(self) -> str:
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.values.items()) or "base spec"


@dataclass
class Sweep:
    root: Path
    name: str
    base_yaml: str  # the resolved base spec (with --set and the preset applied)
    grid: list[tuple[str, list[Any]]]
    seeds: list[int]
    seed_fields: list[str]
    preset: str | None
    points: list[Point]

    @property
    def job(self) -> RunDir:
        return RunDir(self.root)

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "base_spec": self.base_yaml,
                "grid": [[f, v] for f, v in self.grid], "seeds": self.seeds,
                "seed_fields": self.seed_fields, "preset": self.preset,
                "points": [asdict(p) for p in self.points]}

    def run_dir(self, point: Point) -> RunDir:
        return RunDir(self.root.parent.parent / point.name)


# ----------------------------------------------------------------------------- planning
def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """`FIELD=V1,V2,...` items as (field, values); values are YAML scalars."""
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        field, sep, raw = item.partition("=")
        field = field.strip()
        if not sep or not field or not raw.strip():
            raise UserError(f"--grid {item!r}: expected FIELD=V1,V2,... e.g. "
                            "--grid reward.lambda=0.5,1,2")
        if any(f == field for f, _ in grid):
            raise UserError(f"--grid {field}: given twice; put all its values in one --grid")
        values = []
        for text in raw.split(","):
            try:
                values.append(safe_load(text.strip(), source=f"--grid {field}"))
            except YamlError as err:
                raise UserError(f"--grid {field}: {err}") from None
        if len(set(map(json.dumps, values))) != len(values):
            raise UserError(f"--grid {field}: a value is given twice")
        grid.append((field, values))
    return grid


def parse_seeds(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected whole numbers, e.g. --seeds 0,1,2") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise UserError(f"--seeds {text!r}: expected distinct numbers >= 0")
    return seeds


def _slug(values: dict[str, Any]) -> str:
    text = "_".join(f"{k.split('.')[-1]}{v}" for k, v in values.items()) or "base"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "point"


def _points(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for field, values in grid:
        combos = [{**c, field: v} for c in combos for v in values]
    return combos


def count_runs(grid_items: list[str], seeds_text: str | None = None,
               preset: str | None = None) -> int:
    """The number of runs of a sweep (values x seeds x preset points), counted without
    building any point; refused over MAX_POINTS, or for a sweep of nothing."""
    grid = parse_grid(grid_items)
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if preset is None and not grid and not seeds_text:
        raise UserError("a sweep needs at least one --grid FIELD=V1,V2 or --seeds 0,1,2")
    count = math.prod(len(values) for _, values in grid) * max(1, len(
        parse_seeds(seeds_text))) * (len(PRESETS[preset]["points"]) if preset else 1)
    if count > MAX_POINTS:
        raise UserError(f"this sweep has {count:,} runs; at most {MAX_POINTS} are allowed in "
                        "one sweep (each is a whole run): use fewer values or seeds, or "
                        "split it into several sweeps")
    return count


def plan_sweep(spec_path: str | Path, grid_items: list[str], seeds_text: str | None = None,
               *, overrides: list[str] | None = None, name: str | None = None,
               preset: str | None = None, seed_fields: list[str] | None = None,
               check_point: Callable[[RunSpec], None] | None = None,
               progress: Callable[[int], None] | None = None) -> Sweep:
    """The sweep's points, each validated as a spec and passed to `check_point` (the web
    UI's workspace confinement): a bad grid value is refused before anything runs, naming
    the point. `progress(n)` is told each time n points have been checked."""
    overrides = list(overrides or [])
    count_runs(grid_items, seeds_text, preset)  # before any point is built
    grid = parse_grid(grid_items)
    combos = _points(grid)
    if preset is not None:
        overrides = [*PRESETS[preset]["overrides"], *overrides]
    seed_fields = seed_fields or ["run.seed"]
    base = load_spec(spec_path, overrides)
    if preset is not None:
        combos = [{**_from_base(p, base, PRESETS[preset]), **c}
                  for p in PRESETS[preset]["points"] for c in combos]
    seeds = parse_seeds(seeds_text) or [_get(base, seed_fields[0])]
    base_yaml = dump_yaml(base)
    digest = hashlib.sha256(json.dumps(
        [base_yaml, combos, seeds, seed_fields, preset],
        sort_keys=True, default=str).encode()).hexdigest()[:8]
    stem = base.run.name or re.sub(r"[^A-Za-z0-9._-]+", "-", base.model.name_or_path.rstrip(
        "/").split("/")[-1].split(":")[-1]).strip("-.") or "sweep"
    name = name or f"{stem}-sweep-{digest}"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) or name.startswith("."):
        raise UserError(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    points = []
    for i, values in enumerate(combos):
        for seed in seeds:
            point = Point(f"{name}-{i:02d}-{_slug(values)}-s{seed}", values, seed)
            try:
                spec = point_run_spec(base_yaml, point, seed_fields)
                if check_point is not None:
                    check_point(spec)
            except (SpecError, UserError) as err:
                raise UserError(f"sweep point {point.label()} (seed {seed}): {err}") from None
            points.append(point)
            if progress is not None:
                progress(len(points))
    root = Path(base.run.output_root) / SWEEPS_DIR / name
    return Sweep(root, name, base_yaml, grid, seeds, seed_fields, preset, points)


def _from_base(point: dict[str, Any], base: RunSpec, preset: dict[str, Any]) -> dict[str, Any]:
    """A preset point with its `from_base` fields filled from the base spec, for the
    on-policy methods (the fields only they take)."""
    if point.get("train.method") not in GRPO_METHODS:
        return point
    return {**point, **{field: derive(base) for field, derive
                        in preset.get("from_base", {}).items() if field not in point}}


def _group_size(base: RunSpec) -> int:
    """G for an on-policy point: presample.k when it divides the completions of a training
    step (batch_size x gradient_accumulation_steps x devices x num_machines), else the
    largest divisor of them below it (at least 2; else K, which the spec check refuses
    with its reason)."""
    t = base.train
    step = t.batch_size * t.gradient_accumulation_steps * t.devices * t.num_machines
    return next((g for g in range(base.presample.k, 1, -1) if step % g == 0),
                base.presample.k)


def _get(spec: Any, dotted: str) -> Any:
    value = spec
    for part in dotted.split("."):
        value = getattr(value, part if part != "lambda" else "lambda_")
    return value


def point_run_spec(base_yaml: str, point: Point, seed_fields: list[str]) -> RunSpec:
    """The spec of a point: the base spec with its grid values, seed and run name."""
    sets = [f"{field}={json.dumps(value)}" for field, value in point.values.items()]
    sets += [f"{field}={point.seed}" for field in seed_fields]
    sets.append(f"run.name={point.name}")
    return load_spec_text(base_yaml, "the base spec", sets)


def point_spec(base_yaml: str, point: Point, seed_fields: list[str]) -> str:
    """The resolved spec YAML of a point."""
    return dump_yaml(point_run_spec(base_yaml, point, seed_fields))


# ------------------------------------------------------------------------------ running
def point_state(run: RunDir) -> str:
    """done (finished with results), running, failed, stopped or pending."""
    return point_status(run)[0]


def point_status(run: RunDir) -> tuple[str, str | None]:
    """(point_state, why): for a failed or stopped point, what its run recorded (the
    stage, then the job's message: the user's error, e.g. "no training samples selected
    ... are any correct?", or how the process ended), at most MAX_REASON characters."""
    from o1pruner.jobs import status

    if not run.root.exists():
        return "pending", None
    job = status(run)
    if job.get("alive"):
        return "running", None
    if job["state"] == "done" and run.results_path.exists():
        return "done", None
    if job["state"] not in ("failed", "stopped", "unreadable"):
        return "pending", None
    why = job.get("error") or job.get("message") or "no reason recorded; see its logs/"
    stage = job.get("stage")
    why = str(why)
    if stage and job["state"] == "failed" and f"stage {stage}" not in why:
        why = f"{stage}: {why}"
    if len(why) > MAX_REASON:
        why = why[:MAX_REASON] + "..."
    return ("failed" if job["state"] == "unreadable" else job["state"]), why


def write_report(sweep: Sweep | Path) -> dict[str, Any]:
    """Write the sweep's report (o1pruner.sweep_report) with every point's state and
    reason now; `sweep` may be its folder. Returns the report's data."""
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(Path(sweep))
    return write_sweep_report(sweep, [point_status(sweep.run_dir(p)) for p in sweep.points])


def run_sweep(sweep: Sweep, parallel: int = 1) -> dict[str, Any]:
    """Stage entry (`o1pruner sweep`): run the points not yet done, `parallel` at a time,
    then write the report; returns the report's data."""
    check_parallel(parallel)
    job = sweep.job
    with job_process(job, STAGE):
        save_definition(sweep)
        for point in sweep.points:
            path = job.root / "points" / f"{point.name}.yaml"
            path.parent.mkdir(exist_ok=True)
            text = point_spec(sweep.base_yaml, point, sweep.seed_fields)
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                atomic_write_text(path, text)
        _run_points(sweep, parallel)
        report = write_report(sweep)
        failed = [p for p in report["points"] if p["state"] != "done"]
        job.emit("metrics", STAGE, report=str(job.root / "report"),
                 failed=[p["name"] for p in failed])
        if failed:
            lines = "".join(f"\n- {p['name']} ({p['state']}): {p.get('reason') or '-'}"
                            for p in failed)
            raise PointsFailed(f"{len(failed)} of {len(sweep.points)} sweep points did not "
                            f"finish:{lines}\nTheir logs are in their run folders. Start "
                            "the sweep again to retry them (the report has the others)")
    return report


def check_parallel(parallel: int) -> None:
    """The number of runs of a sweep at a time: 1 to MAX_PARALLEL."""
    if not 1 <= parallel <= MAX_PARALLEL:
        raise UserError(f"--parallel {parallel}: runs at a time must be 1 to {MAX_PARALLEL}")


def save_definition(sweep: Sweep) -> None:
    """Write sweep.json (the folder then lists as a sweep), refusing a folder that holds
    another sweep."""
    sweep.root.mkdir(parents=True, exist_ok=True)
    known = read_json(sweep.root / "sweep.json")
    if known is not None and known.get("points") != sweep.definition()["points"]:
        raise UserError(f"{sweep.root} holds another sweep (other points); choose another "
                        "name or delete that folder")
    if known != sweep.definition():
        atomic_write_json(sweep.root / "sweep.json", sweep.definition())


def queue_order(points: list[Point]) -> list[Point]:
    """The order points run in: seed by seed (every point of the first seed, then of the
    next), so the first whole comparison of the methods or values comes after one seed's
    runs, not after the last point's first seed."""
    first = {seed: i for i, seed in reversed(list(enumerate(p.seed for p in points)))}
    return sorted(points, key=lambda p: first[p.seed])


def _run_points(sweep: Sweep, parallel: int) -> None:
    from o1pruner.jobs import launch, request_stop, stop, stop_timeout_of

    job = sweep.job
    states = {p.name: point_state(sweep.run_dir(p)) for p in sweep.points}
    todo = [p for p in queue_order(sweep.points) if states[p.name] != "done"]
    running: dict[str, Point] = {}
    with Progress(job, STAGE, total=len(sweep.points), initial=len(sweep.points) - len(todo),
                  unit="run") as progress:
        try:
            while todo or running:
                while todo and len(running) < parallel:
                    point = todo.pop(0)
                    run = sweep.run_dir(point)
                    if point_state(run) != "running":  # else: left running by a killed sweep
                        spec_path = job.root / "points" / f"{point.name}.yaml"
                        launch(run, ["run", str(run.spec_path)], cwd=os.getcwd(),
                               spec_text=spec_path.read_text(encoding="utf-8"))
                    running[point.name] = point
                    job.emit("point", STAGE, name=point.name, state="running",
                             values=point.values, seed=point.seed)
                    logger.info("sweep point %s (%s, seed %d) started", point.name,
                                point.label(), point.seed)
                time.sleep(POLL_S)
                for name, point in list(running.items()):
                    state, why = point_status(sweep.run_dir(point))
                    if state == "running":
                        continue
                    del running[name]
                    job.emit("point", STAGE, name=name, state=state, values=point.values,
                             seed=point.seed, **({"reason": why} if why else {}))
                    logger.log(logging.INFO if state == "done" else logging.WARNING,
                               "sweep point %s: %s%s", name, state, f" ({why})" if why else "")
                    progress.update(1, point=name, state=state)
                    write_report(sweep)  # the report grows run by run
        except KeyboardInterrupt:
            for point in running.values():  # points are jobs of their own: stop them all,
                request_stop(sweep.run_dir(point))
            for point in running.values():  # then wait for each to save
                run = sweep.run_dir(point)
                stop(run, timeout=stop_timeout_of(run))
            job.update_stage(STAGE, resume=f"{len(running)} running point(s) stopped and "
                             "saved; Start resumes the sweep")
            raise


def load_sweep(root: Path) -> Sweep:
    """A sweep from its folder (the UI's Start of an existing sweep)."""
    data = read_json(root / "sweep.json")
    if not isinstance(data, dict):
        raise UserError(f"{root}: no sweep.json; not a sweep folder")
    return Sweep(root, data["name"], data["base_spec"], [(f, v) for f, v in data["grid"]],
                 data["seeds"], data["seed_fields"], data.get("preset"),
                 [Point(**p) for p in data["points"]])


def list_sweeps(output_root: Path | str) -> list[Path]:
    base = Path(output_root) / SWEEPS_DIR
    return sorted((p for p in base.iterdir() if (p / "sweep.json").exists()),
                  key=lambda p: p.stat().st_mtime, reverse=True) if base.is_dir() else []
