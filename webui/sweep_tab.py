"""The "Sweeps" tab: start a sweep (a base spec, grid lines, seeds, a preset), watch its
queue of runs, stop or resume it, and read its report (table and plot). A sweep is a
detached job (`o1pruner sweep`), so closing or restarting the UI does not touch it; the
tab reads everything from the sweep's folder (o1pruner.sweep, o1pruner.sweep_report).

Start is planned off the request thread: the click checks what is cheap (the base spec,
the grid, the number of runs against the cap) and returns; a SweepPlanner thread then
builds and confines every point, writes the sweep's folder and launches the job, while
the page shows how many points are checked (one sweep is planned at a time)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.jobs import RunDir
from o1pruner.spec import RunSpec
from o1pruner.specio import SpecError, load_spec
from o1pruner.sweep import (
    MAX_PARALLEL,
    PRESETS,
    check_parallel,
    count_runs,
    list_sweeps,
    load_sweep,
    plan_sweep,
    point_status,
    save_definition,
)
from webui.text import as_text, no_markup
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0
PLAN_POLL_SECONDS = 0.5  # while a Start is being planned
NO_PRESET = "none"
POINT_COLUMNS = ["run", "values", "seed", "state", "why"]  # why: a failed point's reason


def sweep_ids(ws: Workspace) -> list[str]:
    """Every sweep folder under the workspace's output roots, newest first."""
    return [ws.relative(p) for root in ws.output_roots() for p in list_sweeps(root)]


def sweep_dir(ws: Workspace, ident: str) -> Path:
    path = ws.resolve(ident, "sweep")
    if not any(path.parent == root / "sweeps" for root in ws.output_roots()) \
            or not (path / "sweep.json").exists():
        raise UserError(f"sweep {ident!r}: not a sweep folder of this workspace")
    return path


def _grid_lines(grid_text: str | None) -> list[str]:
    return [line.strip() for line in (grid_text or "").splitlines() if line.strip()]


def _preset(preset: str | None) -> str | None:
    return None if preset in (None, "", NO_PRESET) else preset


def check_request(ws: Workspace, spec_text: str, grid_text: str, seeds: str, preset: str,
                  parallel: float | None) -> int:
    """What a Start click checks before it returns, all cheap: the base spec (inside the
    workspace, confined), the grid's syntax, the number of runs (at most MAX_POINTS, counted
    without building a point) and the runs at a time; returns the number of runs."""
    spec_path = ws.resolve(spec_text, "base spec")
    ws.confine(load_spec(spec_path))
    check_parallel(1 if parallel is None else int(parallel))
    return count_runs(_grid_lines(grid_text), (seeds or "").strip() or None, _preset(preset))


def start_sweep(ws: Workspace, spec_text: str, grid_text: str, seeds: str, preset: str,
                parallel: float | None, name: str,
                check_point: Callable[[RunSpec], None] | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[str, str | None]:
    """Plan the sweep (every point checked: `check_point`, by default the workspace's
    confinement, and `progress` told the points checked), then launch `o1pruner sweep` as
    a detached job; returns (message, the sweep's id)."""
    spec_path = ws.resolve(spec_text, "base spec")
    base = load_spec(spec_path)
    ws.confine(base)
    grid = _grid_lines(grid_text)
    preset_name = _preset(preset)
    count = 1 if parallel is None else int(parallel)
    check_parallel(count)
    # every point is confined exactly as a Build-tab spec is
    sweep = plan_sweep(spec_path, grid, seeds.strip() or None, name=name.strip() or None,
                       preset=preset_name, check_point=check_point or ws.confine,
                       progress=progress)
    root = ws.resolve_output_root(base.run.output_root) / "sweeps" / sweep.name
    argv = ["sweep", ws.relative(spec_path), "--name", sweep.name, "--parallel", str(count)]
    for line in grid:
        argv += ["--grid", line]
    if seeds.strip():
        argv += ["--seeds", seeds.strip()]
    if preset_name:
        argv += ["--preset", preset_name]
    save_definition(replace(sweep, root=root))  # listed at once; another sweep is refused
    jobs.launch(RunDir(root), argv, cwd=ws.root)
    ws.remember_output_root(root.parent.parent)
    return (f"started `o1pruner {' '.join(argv)}`: {len(sweep.points)} runs, "
            f"{count} at a time"), ws.relative(root)


@dataclass
class Planning:
    """A sweep being planned: the points checked so far, then how it ended (the start
    message and the sweep's id, or the error)."""

    runs: int
    checked: int = 0
    message: str | None = None  # set when done
    ident: str | None = None  # the sweep's id, once started
    done: threading.Event = field(default_factory=threading.Event)

    def line(self) -> str:
        if self.done.is_set():
            return self.message or ""
        return (f"planning the sweep: {self.checked} of {self.runs} runs checked (each as a "
                "Build-tab spec); it starts when all are")


class SweepPlanner:
    """Plans sweeps off the request thread, one at a time for the whole studio: `submit`
    checks what is cheap and returns a key at once; a thread runs start_sweep; `get(key)`
    tells how far it is. The last MAX_KEPT plannings are kept for their pages to read."""

    MAX_KEPT = 16

    def __init__(self, ws: Workspace, check_point: Callable[[RunSpec], None] | None = None):
        self.ws = ws
        self.check_point = check_point  # None: the workspace's confinement
        self._plannings: OrderedDict[str, Planning] = OrderedDict()
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, spec_text: str, grid_text: str, seeds: str, preset: str,
               parallel: float | None, name: str) -> str:
        """Check the request (check_request) and start planning it; UserError if it is
        refused or another sweep is being planned."""
        runs = check_request(self.ws, spec_text, grid_text, seeds, preset, parallel)
        with self._lock:
            if any(not p.done.is_set() for p in self._plannings.values()):
                raise UserError("another sweep is being planned (from this or another page); "
                                "press Start again when it has started")
            key = str(next(self._keys))
            planning = self._plannings[key] = Planning(runs)
            while len(self._plannings) > self.MAX_KEPT:
                self._plannings.popitem(last=False)
        args = (spec_text, grid_text, seeds, preset, parallel, name)
        threading.Thread(target=self._plan, args=(planning, args), name="sweep-planner",
                         daemon=True).start()
        return key

    def get(self, key: str | None) -> Planning | None:
        with self._lock:
            return self._plannings.get(key or "")

    def _plan(self, planning: Planning, args: tuple[Any, ...]) -> None:
        def checked(n: int) -> None:
            planning.checked = n

        try:
            planning.message, planning.ident = start_sweep(
                self.ws, *args, check_point=self.check_point, progress=checked)
        except (UserError, SpecError) as err:
            planning.message = f"Error: {err}"
        except Exception as err:  # noqa: BLE001 - shown on the page, logged with its trace
            logger.exception("planning a sweep")
            planning.message = f"Error: internal error: {err}"
        finally:
            planning.done.set()


def resume_sweep(ws: Workspace, ident: str) -> str:
    root = sweep_dir(ws, ident)
    jobs.launch(RunDir(root), ["sweep", ws.relative(root)], cwd=ws.root)
    return f"resumed `o1pruner sweep {ws.relative(root)}`"


def sweep_view(ws: Workspace, ident: str | None) -> tuple[str, pd.DataFrame, str, str | None]:
    """(status line, points table, report table markdown, plot path) of a sweep."""
    empty = pd.DataFrame(columns=POINT_COLUMNS)
    if not ident:
        return "_no sweep selected_", empty, "", None
    root = sweep_dir(ws, ident)
    sweep = load_sweep(root)
    job = jobs.status(RunDir(root))
    status = [point_status(sweep.run_dir(p)) for p in sweep.points]
    states = [state for state, _ in status]
    # a Dataframe cell shows its text as is: a reason quoting a file stays text
    table = pd.DataFrame([{"run": ws.relative(sweep.run_dir(p).root), "values": p.label(),
                           "seed": p.seed, "state": state, "why": why or ""}
                          for p, (state, why) in zip(sweep.points, status, strict=True)],
                         columns=POINT_COLUMNS)
    counts = {s: states.count(s) for s in dict.fromkeys(states)}
    message = (job.get("message") or "").strip()
    if message and any(s in ("failed", "stopped") for s in states):
        message = message.splitlines()[0].rstrip(":") + "; why: in the table below"
    line = (f"**{no_markup(sweep.name)}**: sweep job {job['state']}"
            + (f" ({as_text(message, 500)})" if message else "")
            + " · runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    report = root / "report" / "table.md"
    plot = root / "report" / "accuracy_vs_tokens.png"
    text = report.read_text(encoding="utf-8") if report.exists() else \
        "_the report appears when the first run has finished_"
    return line, table, text, ws.hand_out(plot)  # the sweep's folder is not served


def sweep_tab(ws: Workspace) -> gr.Dropdown:
    """Build the tab's components and wire them; returns the sweep picker, which the app
    fills on page load and when the tab opens."""
    planner = SweepPlanner(ws)
    gr.Markdown("Run a spec over a grid of values and seeds: one run per point, queued; "
                "the report gives the mean and 95 % interval over seeds. The same as "
                "`o1pruner sweep` (docs/sweeps.md).")
    with gr.Row():
        spec = gr.Textbox(label="base spec (a YAML file in the workspace, e.g. a run's "
                          "runs/NAME/spec.yaml)", scale=3, elem_id="sweep-spec")
        preset = gr.Dropdown([NO_PRESET, *PRESETS], value=NO_PRESET, label="preset",
                             info="paper-table: base, Fast-Solving, SFT, DPO, O1-Pruner; peers: "
                             "those and grpo_length, thinkprune",
                             scale=1, elem_id="sweep-preset")
    with gr.Row():
        grid = gr.Textbox(label="grid: one FIELD=V1,V2,... per line", lines=3, scale=3,
                          placeholder="reward.lambda=0.5,1,2\ntrain.method=lh,sft",
                          elem_id="sweep-grid")
        with gr.Column(scale=1):
            seeds = gr.Textbox(label="seeds", placeholder="0,1,2", elem_id="sweep-seeds")
            parallel = gr.Number(1, label="runs at a time", precision=0, minimum=1,
                                 maximum=MAX_PARALLEL)
            name = gr.Textbox(label="name (optional)", elem_id="sweep-name")
    with gr.Row():
        start = gr.Button("Start sweep", variant="primary", scale=0, elem_id="sweep-start")
        message = gr.Markdown(elem_id="sweep-message")
    with gr.Row():
        pick = gr.Dropdown(sweep_ids(ws), label="sweep", scale=3, elem_id="sweep-pick")
        refresh = gr.Button("Refresh", scale=0)
        resume = gr.Button("Start again / resume", scale=0, elem_id="sweep-resume")
        stop = gr.Button("Stop", variant="stop", scale=0, elem_id="sweep-stop")
    status = gr.Markdown(elem_id="sweep-status")
    points = gr.Dataframe(label="runs of the sweep", interactive=False, wrap=True,
                          column_widths=["24%", "19%", "6%", "7%", "44%"],  # why wraps
                          elem_id="sweep-points")
    report = gr.Markdown(elem_id="sweep-report")
    plot = gr.Image(label="accuracy vs tokens (95 % intervals over seeds; ringed: Pareto "
                    "front)", type="filepath", interactive=False, elem_id="sweep-plot")

    def show(ident: str | None) -> list[Any]:
        try:
            return list(sweep_view(ws, ident))
        except (UserError, SpecError) as err:
            return [f"Error: {err}", gr.skip(), gr.skip(), gr.skip()]

    def on_start(*args: Any) -> list[Any]:
        try:
            key = planner.submit(*args)
        except (UserError, SpecError) as err:
            return [f"Error: {no_markup(err)}", None, gr.skip()]
        return [planner.get(key).line(), key, gr.Timer(active=True)]

    def on_planning(key: str | None) -> list[Any]:
        """The page's planning: its progress, then its outcome (and the sweep picked)."""
        planning = planner.get(key)
        if planning is None:
            return [gr.skip(), gr.skip(), None, gr.Timer(active=False)]
        if not planning.done.is_set():
            return [planning.line(), gr.skip(), gr.skip(), gr.skip()]
        pick_update = gr.update(choices=sweep_ids(ws), value=planning.ident) \
            if planning.ident else gr.skip()
        text = planning.line() if planning.ident else no_markup(planning.line())
        return [text, pick_update, None, gr.Timer(active=False)]

    def guarded(func: Any) -> Any:
        def call(ident: str | None) -> str:
            if not ident:
                return "choose a sweep first"
            try:
                return func(ident)
            except (UserError, SpecError) as err:
                return f"Error: {err}"
        return call

    def on_stop(ident: str) -> str:
        job = jobs.request_stop(RunDir(sweep_dir(ws, ident)))
        return f"stopping: {job['state']} (the running runs save first)"

    shown = gr.State("")
    planning = gr.State(None)  # this page's planning (a SweepPlanner key)
    plan_timer = gr.Timer(PLAN_POLL_SECONDS, active=False)

    def tick(ident: str | None, last: str) -> list[Any]:
        values = show(ident)
        key = repr([v.to_json() if hasattr(v, "to_json") else v for v in values])
        return [gr.skip()] * 4 + [gr.skip()] if key == last else [*values, key]

    start.click(on_start, [spec, grid, seeds, preset, parallel, name],
                [message, planning, plan_timer])
    plan_timer.tick(on_planning, planning, [message, pick, planning, plan_timer],
                    show_progress="hidden")
    pick.change(show, pick, [status, points, report, plot])
    refresh.click(lambda cur: gr.update(choices=sweep_ids(ws), value=cur), pick, pick)
    resume.click(guarded(lambda ident: resume_sweep(ws, ident)), pick, message)
    stop.click(guarded(on_stop), pick, message, show_progress="hidden")
    gr.Timer(POLL_SECONDS).tick(tick, [pick, shown], [status, points, report, plot, shown],
                                show_progress="hidden")
    return pick
