"""The "Samples" and "Eval explorer" tabs: a run's pre-samples problem by problem (with
rewards and the training selection), and its evaluation answers side by side. The data
comes from o1pruner.explore; this module only lays it out, showing data and model text as
text (webui.text), never as markup."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from o1pruner import explore
from o1pruner.errors import UserError
from o1pruner.jobs import RunDir
from o1pruner.spec import RunSpec
from o1pruner.specio import SpecError, load_spec
from webui import handlers
from webui.text import as_text, inline, no_markup
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

SAMPLE_FILES = ("problems.jsonl", "samples.jsonl", "problem_stats.jsonl")


# ------------------------------------------------------------------------- helpers
def run_spec(workspace: Workspace, run_id: str) -> tuple[RunDir, RunSpec]:
    """The run (confined to the workspace) and its spec with local paths made absolute
    against the workspace (the folder its workers ran in), never the studio's working
    directory; a spec whose paths lead outside the workspace is refused (Workspace.confine).
    An ad-hoc evaluation without a spec of its own uses its run's."""
    run = workspace.run_dir(run_id)
    path = run.spec_path if run.spec_path.exists() else run.root.parents[2] / "spec.yaml"
    if not path.exists():
        raise UserError(f"run {run_id}: has no spec.yaml")
    written = load_spec(path)
    workspace.confine(written, must_exist=False, loads_model=False)  # nothing read outside
    spec = explore.localize_spec(written, workspace.root)
    for i, ref in enumerate([spec.data.train, *spec.eval.benchmarks]):  # loaded here
        workspace.check_hub_ref(ref.name, "data.train" if i == 0 else f"eval.benchmarks.{i - 1}")
    return run, spec


def runs_with(workspace: Workspace, has: Any) -> list[str]:
    """Ids of the workspace's runs (newest first) for which has(run root) is true."""
    out = []
    for row in handlers.runs(workspace):
        try:
            if has(Path(row["path"])):
                out.append(row["id"])
        except OSError:
            continue
    return out


def _has_presample(root: Path) -> bool:
    return all((root / "presample" / name).exists() for name in SAMPLE_FILES)


def _has_eval(root: Path) -> bool:
    return bool(explore.eval_methods(root))


def _signature(root: Path) -> tuple[Any, ...]:
    """Changes when the pre-samples, the spec or the training record change."""
    paths = [root / "presample" / n for n in SAMPLE_FILES] + [
        root / "spec.yaml", root / "train" / "dataset.jsonl"]
    return tuple(os.stat(p).st_mtime_ns if p.exists() else 0 for p in paths)


#: The sample table's columns when it is empty (a problem's own table names its columns).
SAMPLE_COLUMNS = ("sample", "tokens", "finish", "extracted", "grade", "reward", "training",
                  "train reward")


def _table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A table with its headers also when it has no row (never Gradio's "1 2 3")."""
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else list(columns or [""]))


def refresh_choice(choices: list[str], current: str | None) -> Any:
    """The run picker's new choices, keeping the current run when it is still there."""
    return gr.update(choices=choices, value=current if current in choices else
                     (choices[0] if choices else None))


# ---------------------------------------------- what the explorers show (data as text)
def problem_markdown(p: explore.ProblemSamples) -> str:
    """The Samples tab's problem: our line of numbers, the id, gold and problem as text."""
    return (f"**{as_text(p.problem_id)}** · gold {inline(p.gold)} · accuracy "
            f"{100 * p.accuracy:.0f} % · {len(p.samples)} samples, "
            f"{p.min_length}-{p.max_length} tokens\n\n{as_text(p.problem)}")


def sample_markdown(problem_id: str, s: explore.SampleInfo) -> str:
    """The line above a pre-sample's text (the text itself goes to a text box)."""
    reward = "" if s.reward_raw is None else (
        f" · reward {s.reward_raw:+.3f} (length {s.length_term:+.3f}, accuracy "
        f"{s.accuracy_term:+.3f})")
    used = " · not trained on"
    if s.training == "chosen":
        used = " · **trained on**" + ("" if s.reward is None else
                                      f" (reward used: {s.reward:+.3f})")
    elif s.training == "rejected":
        used = " · **rejected** of a DPO pair"
    return (f"sample {s.sample_idx} of {as_text(problem_id)}: {s.num_tokens} tokens, "
            f"{as_text(s.finish_reason)}, {'right' if s.correct else 'wrong'} (extracted "
            f"{inline(explore.answer_text(s.extracted))}){reward}{used}")


def pair_markdown(p: explore.AnswerPair, right: str) -> str:
    """The Eval explorer's problem: id, gold and problem as text, with the outcome."""
    cut = "" if p.cut is None or not p.left or not p.left.tokens else \
        f" · {as_text(right)} is {abs(p.cut):.0f} tokens " \
        f"({abs(100 * p.cut / p.left.tokens):.0f} %) " + ("shorter" if p.cut >= 0 else "longer")
    return (f"**{as_text(p.problem_id)}** · gold {inline(p.gold)} · {p.outcome}{cut}\n\n"
            f"{as_text(p.problem)}")


# ------------------------------------------------------------------------- samples
def samples_tab(workspace: Workspace, tab: gr.Tab | None = None) -> None:
    """Lay out the Samples tab; `tab` (its gr.Tab) refreshes the run list when opened."""
    views: dict[str, tuple[tuple[Any, ...], explore.PresampleView]] = {}

    def view_of(run_id: str) -> explore.PresampleView:
        run, spec = run_spec(workspace, run_id)
        key = _signature(run.root)
        if run_id not in views or views[run_id][0] != key:
            views.clear()  # one run's samples in memory at a time
            views[run_id] = (key, explore.load_presample_view(spec, run.root))
        return views[run_id][1]

    initial = runs_with(workspace, _has_presample)
    with gr.Row():
        run = gr.Dropdown(initial, value=initial[0] if initial else None, label="run",
                          info="a run with pre-samples", scale=3, elem_id="samples-run")
        refresh = gr.Button("Refresh", scale=0, min_width=100)
    summary = gr.Markdown(elem_id="samples-summary")
    with gr.Row():
        min_acc = gr.Slider(0, 100, value=0, step=5, label="accuracy % at least",
                            info="share of a problem's K samples graded right (A_ref)",
                            elem_id="samples-min-acc")
        max_acc = gr.Slider(0, 100, value=100, step=5, label="accuracy % at most",
                            elem_id="samples-max-acc")
        spread = gr.Number(1.0, minimum=1.0, label="length spread at least",
                           info="longest sample / shortest sample", elem_id="samples-spread")
    count = gr.Markdown(elem_id="samples-count")
    problems = gr.Dataframe(label="problems (click one to see its samples)", interactive=False,
                            max_height=300, wrap=True, elem_id="samples-problems")
    chosen = gr.State(None)  # the problem whose samples are shown
    problem_md = gr.Markdown(elem_id="samples-problem")
    samples = gr.Dataframe(label="its K samples, shortest first (click one to read it)",
                           interactive=False, max_height=320, elem_id="samples-samples")
    sample_md = gr.Markdown(elem_id="samples-sample")
    sample_text = gr.Textbox(label="sample text", lines=10, max_lines=24, interactive=False,
                             elem_id="samples-text")

    def show(run_id: str | None, lo: float, hi: float, min_spread: float | None) -> list[Any]:
        empty = [_table([], explore.PROBLEM_COLUMNS), None, "", _table([], SAMPLE_COLUMNS),
                 "", ""]
        if not run_id:
            return ["_no run with pre-samples in this workspace_", "", *empty]
        try:
            view = view_of(run_id)
        except (UserError, SpecError) as err:
            return [f"Error: {as_text(err)}", "", *empty]
        kept = explore.filter_problems(view.problems, (lo or 0.0) / 100,
                                       1.0 if hi is None else hi / 100, min_spread or 1.0)
        notes = "\n".join(f"- {n}" for n in view.notes)
        first = kept[0] if kept else None
        warned = f"**warning: {no_markup(view.warning)}**\n\n" if view.warning else ""
        return [f"{warned}{view.summary()}\n\n{notes}",
                f"showing **{len(kept)}** of {len(view.problems)} problems"
                + ("" if kept else ": no problem matches these filters"),
                _table(explore.problem_rows(kept), explore.PROBLEM_COLUMNS),
                *problem_outputs(first), "", ""]

    def problem_outputs(p: explore.ProblemSamples | None) -> list[Any]:
        if p is None:
            return [None, "", _table([], SAMPLE_COLUMNS)]
        return [p.problem_id, problem_markdown(p), _table(explore.sample_rows(p))]

    def pick_problem(run_id: str, evt: gr.SelectData) -> list[Any]:
        pid = str((evt.row_value or [None])[0])
        p = next((x for x in view_of(run_id).problems if x.problem_id == pid), None)
        return [*problem_outputs(p), "", ""]

    def pick_sample(run_id: str, pid: str | None, evt: gr.SelectData) -> list[Any]:
        p = next((x for x in view_of(run_id).problems if x.problem_id == pid), None)
        idx = (evt.row_value or [None])[0]
        s = next((x for x in (p.samples if p else []) if str(x.sample_idx) == str(idx)), None)
        if s is None:
            return ["", ""]
        return [sample_markdown(str(pid), s), s.completion]

    filters = [run, min_acc, max_acc, spread]
    outputs = [summary, count, problems, chosen, problem_md, samples, sample_md, sample_text]
    shown = gr.State(None)  # the run on screen, so that reopening the tab keeps the view

    def show_run(*args: Any) -> list[Any]:
        return [*show(*args), args[0]]

    def open_tab(run_id: str | None, on_screen: str | None, *args: Any) -> list[Any]:
        if run_id == on_screen:
            return [gr.skip()] * (len(outputs) + 1)
        return show_run(run_id, *args)

    def refresh_runs(current: str | None) -> Any:
        return refresh_choice(runs_with(workspace, _has_presample), current)

    run.change(show_run, filters, [*outputs, shown])
    refresh.click(refresh_runs, run, run).then(show_run, filters, [*outputs, shown])
    for widget in (min_acc, max_acc, spread):
        widget.change(show, filters, outputs, show_progress="hidden")
    problems.select(pick_problem, run, [chosen, problem_md, samples, sample_md, sample_text])
    samples.select(pick_sample, [run, chosen], [sample_md, sample_text])
    if tab is not None:
        tab.select(refresh_runs, run, run).then(
            open_tab, [run, shown, *filters[1:]], [*outputs, shown])


# ---------------------------------------------------------------------- evaluation
def _answer_md(label: str, a: explore.Answer | None) -> str:
    if a is None:
        return f"**{as_text(label)}**: no answer yet"
    split = "" if a.thinking_tokens is None or not a.thinking_tokens else \
        f" (thinking {a.thinking_tokens:.0f} · answer {a.answer_tokens or 0:.0f})"
    grade = ("right" if a.accuracy == 1 else "wrong") if len(a.texts) == 1 else \
        f"{100 * a.accuracy:.0f} % of {len(a.texts)} samples right"
    return (f"**{as_text(label)}**: {a.tokens:.0f} tokens{split} · {as_text(a.finish_reason)} "
            f"· answer {inline(explore.answer_text(a.extracted))} · **{grade}**")


def _answer_text(a: explore.Answer | None) -> str:
    if a is None:
        return ""
    if len(a.texts) == 1:
        return a.texts[0]
    return "\n\n".join(f"--- sample {i} ---\n{t}" for i, t in enumerate(a.texts))


def eval_explorer_tab(workspace: Workspace, tab: gr.Tab | None = None) -> None:
    """Lay out the Eval explorer tab; `tab` (its gr.Tab) refreshes the run list when
    opened."""
    initial = runs_with(workspace, _has_eval)
    with gr.Row():
        run = gr.Dropdown(initial, value=initial[0] if initial else None, label="run",
                          info="a run (or ad-hoc evaluation) with evaluation answers",
                          scale=3, elem_id="evx-run")
        bench = gr.Dropdown([], label="benchmark", elem_id="evx-bench")
        left = gr.Dropdown([], label="left", info="usually base", elem_id="evx-left")
        right = gr.Dropdown([], label="right", info="usually trained", elem_id="evx-right")
        refresh = gr.Button("Refresh", scale=0, min_width=100)
    which = gr.Radio([(w, w) for w in explore.EVAL_FILTERS], value="all", label="show",
                     info="regressions: left right, right wrong; gains: the reverse; length "
                     "cuts: largest token savings first", elem_id="evx-filter")
    table = gr.Dataframe(label="problems (click one to compare its answers)", interactive=False,
                         max_height=320, elem_id="evx-table")
    problem_md = gr.Markdown(elem_id="evx-problem")
    with gr.Row(equal_height=True):
        with gr.Column():
            left_md = gr.Markdown(elem_id="evx-left-stats")
            left_text = gr.Textbox(label="left answer", lines=10, max_lines=30,
                                   interactive=False, elem_id="evx-left-text")
        with gr.Column():
            right_md = gr.Markdown(elem_id="evx-right-stats")
            right_text = gr.Textbox(label="right answer", lines=10, max_lines=30,
                                    interactive=False, elem_id="evx-right-text")
    cache: dict[tuple[Any, ...], list[explore.AnswerPair]] = {}

    def pairs_of(run_id: str, b: str, lm: str, rm: str) -> list[explore.AnswerPair]:
        run, spec = run_spec(workspace, run_id)
        folder = explore.eval_dir(run.root)
        stamp = tuple(os.stat(p).st_mtime_ns if p.exists() else 0 for p in (
            folder / lm / b / "generations.jsonl", folder / rm / b / "generations.jsonl"))
        key = (run_id, b, lm, rm, stamp)
        if key not in cache:
            cache.clear()
            cache[key] = explore.load_pairs(run.root, b, lm, rm,
                                            explore.benchmark_problems(spec, run.root, b))
        return cache[key]

    def choose_run(run_id: str | None) -> list[Any]:
        methods = explore.eval_methods(workspace.run_dir(run_id).root) if run_id else {}
        benches = list(methods)
        b = benches[0] if benches else None
        ms = methods.get(b, []) if b else []
        lm = "base" if "base" in ms else (ms[0] if ms else None)
        rm = "trained" if "trained" in ms else next((m for m in ms if m != lm), lm)
        return [gr.update(choices=benches, value=b), gr.update(choices=ms, value=lm),
                gr.update(choices=ms, value=rm)]

    def show(run_id: str | None, b: str | None, lm: str | None, rm: str | None,
             w: str) -> list[Any]:
        empty = [gr.update(), _table([], explore.pair_columns()), "", "", "", "", ""]
        if not (run_id and b and lm and rm):
            return empty
        try:
            pairs = pairs_of(run_id, b, lm, rm)
        except (UserError, SpecError) as err:
            return [gr.update(), _table([], explore.pair_columns()), f"Error: {as_text(err)}",
                    "", "", "", ""]
        counts = explore.filter_counts(pairs)
        kept = explore.filter_pairs(pairs, w or "all")
        radio = gr.update(choices=[(f"{f} ({counts[f]})", f) for f in explore.EVAL_FILTERS])
        first = kept[0] if kept else None
        return [radio, _table(explore.pair_rows(kept, lm, rm), explore.pair_columns(lm, rm)),
                *pair_outputs(first, lm, rm)]

    def pair_outputs(p: explore.AnswerPair | None, lm: str, rm: str) -> list[Any]:
        if p is None:
            return ["_no problem matches this filter_", "", "", "", ""]
        return [pair_markdown(p, rm), _answer_md(lm, p.left), _answer_text(p.left),
                _answer_md(rm, p.right), _answer_text(p.right)]

    def pick(run_id: str, b: str, lm: str, rm: str, evt: gr.SelectData) -> list[Any]:
        pid = str((evt.row_value or [None])[0])
        p = next((x for x in pairs_of(run_id, b, lm, rm) if x.problem_id == pid), None)
        return pair_outputs(p, lm, rm)

    inputs = [run, bench, left, right, which]
    outputs = [which, table, problem_md, left_md, left_text, right_md, right_text]
    shown = gr.State(None)  # the run on screen, so that reopening the tab keeps the view

    def open_run(run_id: str | None, w: str) -> list[Any]:
        try:
            picks = choose_run(run_id)
        except UserError as err:
            return [gr.skip()] * 3 + [gr.update(), _table([], explore.pair_columns()), f"Error: {as_text(err)}", "", "", "", "",
                                      run_id]
        values = [p["value"] for p in picks]
        return [*picks, *show(run_id, *values, w), run_id]

    def open_tab(run_id: str | None, on_screen: str | None, w: str) -> list[Any]:
        if run_id == on_screen:
            return [gr.skip()] * (3 + len(outputs) + 1)
        return open_run(run_id, w)

    def refresh_runs(current: str | None) -> Any:
        return refresh_choice(runs_with(workspace, _has_eval), current)

    everything = [bench, left, right, *outputs, shown]
    run.change(open_run, [run, which], everything)
    for widget in (bench, left, right, which):
        widget.input(show, inputs, outputs)
    table.select(pick, [run, bench, left, right], outputs[2:])
    refresh.click(refresh_runs, run, run).then(open_run, [run, which], everything)
    if tab is not None:
        tab.select(refresh_runs, run, run).then(open_tab, [run, shown, which], everything)
