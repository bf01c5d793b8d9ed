"""The "Runs" tab: history table, live view of the chosen run, stop / evaluate / compare /
delete. Everything shown is read from run directories (webui.live, o1pruner.jobs)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.specio import SpecError
from webui import handlers
from webui.live import LiveView, job_markdown
from webui.text import inline
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.5
HISTORY_SECONDS = 5.0


@dataclass
class RunsTab:
    """Components of the Runs tab that other parts of the app wire to."""

    run: gr.Dropdown
    history: gr.Dataframe
    compare_pick: gr.Dropdown
    eval_model: gr.Dropdown
    refresh_lists: Callable[[str | None], list[Any]]
    fill_lists: Callable[[], list[Any]]

    def lists(self) -> list[gr.Component]:
        """Outputs of refresh_lists and fill_lists: history, run picker, compare picker,
        model picker."""
        return [self.history, self.run, self.compare_pick, self.eval_model]


class _Lazy:
    """A value that is costly to build (a figure): sent only when its key changes."""

    def __init__(self, key: str, build: Callable[[], Any]):
        self.key, self.build = key, build


def _shown(component: type, value: Any) -> Any:
    """`value` for a component that is hidden while it has nothing to show."""
    return component(value=value, visible=bool(value) if isinstance(value, list)
                     else value is not None)


def _view_outputs(view: LiveView | None, workspace: Workspace, force: bool = False
                  ) -> list[Any]:
    """Values for the live components; unchanged parts are skipped (no re-render). Report
    plots are handed out (Workspace.hand_out): the run folder itself is not served."""
    if view is None:
        return ["_no run selected_", "", gr.update(value="", visible=False), "",
                _shown(gr.Plot, None), "", None, None, _shown(gr.Gallery, []),
                stop_button(None)]
    view.poll()
    job = view.job()
    view.state = job["state"]
    failed = job["state"] in ("failed", "unreadable")
    values = [
        job_markdown(view.run, job, view.choices),
        view.progress_html(running=job["state"] in jobs.ACTIVE_STATES),
        gr.update(value=jobs.failure_report(view.run), visible=True) if failed
        else gr.update(value="", visible=False),
        view.log.text(),
        _Lazy(str(view.metrics_seen), lambda: _shown(gr.Plot, view.curves_figure())),
        view.presample_markdown(),
        view.disharmony(),
        view.results(),
        _shown(gr.Gallery, [p for p in map(workspace.hand_out, view.report_images()) if p]),
        stop_button(job["state"]),
    ]
    sent = view.sent or [None] * len(values)
    out = []
    for i, value in enumerate(values):
        if isinstance(value, _Lazy):
            key = value.key
        elif isinstance(value, dict):  # a gr.update
            key = repr(sorted(value.items()))
        elif isinstance(value, gr.components.Component):  # a component as an update
            key = repr(value.constructor_args)
        else:
            key = value.to_json() if hasattr(value, "to_json") else repr(value)
        if force or key != sent[i]:
            out.append(value.build() if isinstance(value, _Lazy) else value)
        else:
            out.append(gr.skip())
        sent[i] = key
    view.sent = sent
    return out


def stop_button(state: str | None) -> dict[str, Any]:
    """Stop in red and clickable only while the shown run's job is running or stopping."""
    active = state in jobs.ACTIVE_STATES
    return gr.update(variant="stop" if active else "secondary", interactive=active)


# Keep the log box at its last line while new lines arrive, unless the user scrolled up
# to read (Gradio's own autoscroll gives up once the box starts away from the end, e.g.
# after a reload with a long log).
FOLLOW_LOG_JS = """() => {
  const box = document.querySelector('#run-log textarea');
  if (!box) return;
  if (!box.dataset.o1pFollow) {
    box.dataset.o1pFollow = '1';
    box.addEventListener('scroll', () => {
      box.dataset.o1pAtEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40 ? '1' : '0';
    });
  }
  if (box.dataset.o1pAtEnd !== '0') box.scrollTop = box.scrollHeight;
}"""


def runs_tab(workspace: Workspace) -> RunsTab:
    """Lay out the Runs tab and wire its timers and buttons."""
    with gr.Row(equal_height=True):
        refresh = gr.Button("Refresh", scale=0, min_width=100)
        run = gr.Dropdown([], label="run", info="choose a run to watch; on page load the UI "
                          "re-attaches to the newest running job", elem_id="run-pick", scale=3)
        stop_btn = gr.Button("Stop", variant="secondary", interactive=False, scale=0,
                             min_width=100, elem_id="btn-stop")
        with gr.Column(scale=0, min_width=170):
            confirm = gr.Checkbox(label="confirm delete", value=False, elem_id="confirm-delete")
            delete_btn = gr.Button("Delete this run", variant="stop", size="sm",
                                   elem_id="btn-delete")
    delete_note = gr.Markdown(elem_id="delete-message")  # the question, right beside Delete
    pending_delete = gr.State(None)  # the run that question names, until answered
    status = gr.Markdown(elem_id="run-status")
    progress = gr.HTML(elem_id="run-progress")
    failure = gr.Textbox(label="why it failed (then the last log lines)", lines=6,
                         max_lines=20, interactive=False, elem_id="run-failure",
                         visible=False)
    with gr.Row():
        presample = gr.Markdown(elem_id="run-presample")
    curves = gr.Plot(label="training curves", show_label=False, format="png",
                     elem_id="run-curves", visible=False)  # the panels carry their titles
    disharmony = gr.Dataframe(label="accuracy by length quartile (pre-samples)",
                              interactive=False, elem_id="run-disharmony")
    results = gr.Dataframe(label="evaluation results", interactive=False, wrap=True,
                           elem_id="run-results")  # the full width, wrapped: intervals fit
    gallery = gr.Gallery(label="report plots", columns=3, height=360, object_fit="contain",
                         elem_id="run-report", visible=False)
    log = gr.Textbox(label="log (worker output)", lines=12, max_lines=12, autoscroll=True,
                     interactive=False, elem_id="run-log")
    message = gr.Markdown(elem_id="runs-message")
    with gr.Accordion("Evaluate a checkpoint or any model", open=False,
                      elem_id="section-evaluate"):
        with gr.Row():
            eval_model = gr.Dropdown([], allow_custom_value=True, label="model",
                                     info="a run's trained model, or a model in the workspace, "
                                     "a hub id or pypi: model (empty: the run's trained model)",
                                     elem_id="eval-model")
            eval_bench = gr.Textbox(label="benchmarks", info="comma separated (empty: the "
                                    "spec's eval.benchmarks)", elem_id="eval-bench")
            eval_btn = gr.Button("Evaluate", scale=0, elem_id="btn-evaluate")
        eval_note = gr.Markdown(elem_id="eval-target")
    with gr.Accordion("History and comparison", open=True, elem_id="section-history"):
        history = gr.Dataframe(handlers.history_table(workspace), label="runs",
                               interactive=False, elem_id="runs-history", wrap=True)
        with gr.Row(equal_height=True):
            compare_pick = gr.Dropdown([], multiselect=True, label="compare runs", scale=3,
                                       info="one run or several; a run that has not been "
                                       "evaluated shows its training curves",
                                       elem_id="compare-pick")
            compare_btn = gr.Button("Compare", scale=0, elem_id="btn-compare")
        compare_plot = gr.Plot(show_label=False, format="png", elem_id="compare-plot",
                               visible=False)
        compare_view = gr.Markdown(elem_id="compare-table")
    view = gr.State(None)
    live_outputs = [status, progress, failure, log, curves, presample, disharmony, results,
                    gallery, stop_btn]

    def select(name: str | None) -> list[Any]:
        if not name:
            return [None, *_view_outputs(None, workspace)]
        try:
            new = LiveView(workspace.run_dir(name))
        except UserError as err:
            return [None, f"Error: {err}", *_view_outputs(None, workspace)[1:]]
        return [new, *_view_outputs(new, workspace, force=True)]

    shown_history = gr.State("")
    picker_outputs = [history, shown_history, compare_pick, eval_model]

    def history_tick(shown: str) -> list[Any]:
        """The history table, and the pickers that list runs and models, when it changed."""
        rows = handlers.runs(workspace)
        table = handlers.history_table(workspace, rows)
        key = table.to_json()
        if key == shown:
            return [gr.skip()] * len(picker_outputs)
        return [table, key, gr.update(choices=[row["id"] for row in rows]),
                gr.update(choices=handlers.checkpoints(workspace))]

    def tick(current: LiveView | None, shown: str) -> list[Any]:
        if current is None:
            return [gr.skip()] * (len(live_outputs) + len(picker_outputs))
        before = current.state
        out = _view_outputs(current, workspace)
        if current.state == before:
            return [*out, *[gr.skip()] * len(picker_outputs)]
        return [*out, *history_tick(shown)]  # the history follows a state change at once

    def refresh_lists(selected: str | None) -> list[Any]:
        rows = handlers.runs(workspace)
        names = [row["id"] for row in rows]
        value = selected if selected in names else handlers.attach_target(workspace)
        return [handlers.history_table(workspace, rows), gr.update(choices=names, value=value),
                gr.update(choices=names), gr.update(choices=handlers.checkpoints(workspace))]

    def fill_lists() -> list[Any]:
        """The lists only, never the picked run (the tab also opens when Start switches to
        it, with the new run just picked)."""
        rows = handlers.runs(workspace)
        names = [row["id"] for row in rows]
        return [handlers.history_table(workspace, rows), gr.update(choices=names),
                gr.update(choices=names), gr.update(choices=handlers.checkpoints(workspace))]

    def guarded(func: Any) -> Any:
        def call(*args: Any) -> str:
            try:
                return func(*args)
            except (UserError, SpecError) as err:
                return f"Error: {err}"
        return call

    def on_compare(names: list[str] | None) -> list[Any]:
        try:
            text, figure = handlers.compare(names or [], workspace)
        except (UserError, SpecError) as err:
            return [f"Error: {err}", gr.Plot(visible=False)]
        return [text, gr.Plot(value=figure, visible=figure is not None)]

    run.change(select, run, [view, *live_outputs])
    poll = gr.Timer(POLL_SECONDS).tick(tick, [view, shown_history],
                                       [*live_outputs, *picker_outputs], show_progress="hidden")
    poll.then(None, js=FOLLOW_LOG_JS)
    lists = [history, run, compare_pick, eval_model]
    gr.Timer(HISTORY_SECONDS).tick(history_tick, shown_history, picker_outputs,
                                   show_progress="hidden")
    refresh.click(refresh_lists, run, lists)
    stop_btn.click(guarded(lambda name: handlers.stop(name, workspace) if name
                           else "no run selected"), run, message, show_progress="hidden")

    def on_evaluate(name: str | None, model: str, bench: str) -> list[Any]:
        """Evaluate the picked run (for an evaluation: the run it belongs to); the view
        follows the new job, which is always among the picker's choices."""
        if not name:
            return ["choose a run first", gr.skip()]
        try:
            text, job_id = handlers.evaluate(name, model, bench, workspace)
        except (UserError, SpecError) as err:
            return [f"Error: {err}", gr.skip()]
        names = handlers.run_ids(workspace)
        return [text, gr.update(choices=names, value=job_id if job_id in names else name)]

    def eval_target(name: str | None) -> str:
        """The line that says which run Evaluate acts on."""
        if not name:
            return "Evaluate acts on the run picked above; pick one first."
        try:
            owner = workspace.run_id(handlers.owner_run(workspace.run_dir(name)))
        except UserError:
            return ""
        belongs = ", the run this evaluation belongs to" if owner != name else ""
        return (f"Evaluate acts on {inline(owner)}{belongs}; another model's evaluation is "
                f"a job of its own in {inline(owner + '/eval/adhoc/')}")

    eval_btn.click(on_evaluate, [run, eval_model, eval_bench], [message, run])
    run.change(eval_target, run, eval_note, show_progress="hidden")
    compare_btn.click(on_compare, compare_pick, [compare_view, compare_plot])

    def on_delete(name: str | None, confirmed: bool, pending: str | None) -> list[Any]:
        """Act on the run picked now, never another: ask first (naming it), delete on a
        confirmed second click; the picker moves only once the run is gone."""
        try:
            step = handlers.delete(name, bool(confirmed), pending, workspace)
        except (UserError, SpecError) as err:
            return [f"Error: {err}", None, False, *[gr.skip()] * len(lists)]
        if not step.deleted:
            return [step.message, step.pending, False, *[gr.skip()] * len(lists)]
        return [step.message, None, False, *refresh_lists(None)]

    def on_pick(name: str | None, pending: str | None) -> list[Any]:
        """Another run picked while a question waits: the question is withdrawn."""
        if pending is None or pending == name:
            return [gr.skip()] * 3
        return ["", None, False]

    delete_btn.click(on_delete, [run, confirm, pending_delete],
                     [delete_note, pending_delete, confirm, *lists], show_progress="hidden")
    run.change(on_pick, [run, pending_delete], [delete_note, pending_delete, confirm],
               show_progress="hidden")
    return RunsTab(run, history, compare_pick, eval_model, refresh_lists, fill_lists)
