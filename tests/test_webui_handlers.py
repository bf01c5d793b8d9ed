"""Web UI handler logic without a browser: preview/export/import, workspace confinement,
starting runs, history, and the live-view readers on a run directory written here."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import pytest

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json
from o1pruner.jobs import RunDir
from o1pruner.spec import RunSpec
from o1pruner.specio import load_spec
from webui import form, handlers
from webui.app import build_app, parse_auth
from webui.live import CURVES, LiveView, TextTail
from webui.machine import has_gpu
from webui.text import inline
from webui.workspace import Workspace


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "workspace").mkdir()
    return Workspace.open(tmp_path / "workspace")


def _values(**changes: object) -> list[object]:
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    values.update(changes)
    return list(values.values())


def test_preview_gives_resolved_yaml_and_the_exact_command(ws: Workspace) -> None:
    check, text, command = handlers.preview(_values(**{"run.name": "demo"}), ws)
    assert check.spec is not None and "name: demo" in text
    assert command == "o1pruner run runs/demo/spec.yaml"


def test_export_then_import_restores_the_same_form(ws: Workspace) -> None:
    values = _values(**{"presample.k": 3, "reward.lambda": 5.0, "reward.samples_per_problem": 1})
    check, path = handlers.export_yaml(values, ws)
    assert path is not None and Path(path).suffix == ".yaml"
    assert load_spec(path) == check.spec
    imported, message = handlers.import_yaml_file(path)
    assert imported == form.spec_to_values(check.spec) and message.startswith("OK:")


@pytest.mark.parametrize("text, expected", [
    ("presample: {k: [", "malformed YAML"),
    ("presample:\n  k: 0\n", "presample.k (line 2)"),
    ("nonsense_section: 1\n", "unknown field"),
])
def test_a_broken_yaml_import_changes_nothing(text: str, expected: str) -> None:
    values, message = handlers.import_yaml_text(text, "bad.yaml")
    assert values is None
    assert "form is unchanged" in message and expected in message


def test_validation_errors_are_shown_per_section(ws: Workspace) -> None:
    check = handlers.validate(_values(**{"presample.k": 1}), ws)  # m=2 > K=1
    assert check.spec is None
    assert "samples_per_problem" in check.section_markdown("reward")
    assert check.section_markdown("train") == ""
    assert check.summary().startswith("Error: 1 problem")


@pytest.mark.parametrize("bad", ["../x.yaml", "/etc/passwd", "sub/../../x", "~/x.yaml"])
def test_workspace_refuses_paths_outside(ws: Workspace, bad: str) -> None:
    with pytest.raises(UserError, match="outside the workspace"):
        ws.resolve(bad, "import")
    values, message = handlers.import_yaml_file(bad, ws)
    assert values is None and "outside the workspace" in message


def test_workspace_refuses_a_symlink_that_leads_outside(ws: Workspace, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("presample: {k: 3}\n")
    (ws.root / "link.yaml").symlink_to(secret)
    with pytest.raises(UserError, match="outside the workspace"):
        ws.resolve("link.yaml")
    (ws.root / "ok.yaml").write_text("presample: {k: 3}\n")
    values, _ = handlers.import_yaml_file("ok.yaml", ws)
    assert values is not None and load_spec(ws.root / "ok.yaml").presample.k == 3


def test_a_spec_pointing_outside_the_workspace_is_not_started(ws: Workspace) -> None:
    check, run, message = handlers.start(_values(**{"model.name_or_path": "/opt/model"}), ws)
    assert run is None and "model.name_or_path" in check.summary()
    check, run, _ = handlers.start(_values(**{"run.output_root": "../elsewhere"}), ws)
    assert run is None and "run.output_root" in check.summary()
    assert not ws.runs_root.exists()


def test_start_launches_the_stage_and_a_failure_shows_its_message_first(ws: Workspace) -> None:
    # org/name with no local folder of that name and not in the cache: offline, refused
    values = _values(**{"model.name_or_path": "no-such-org/no-such-model", "run.name": "fails",
                        "presample.k": 2, "data.train_limit": 2})
    check, run, message = handlers.start(values, ws, "presample")
    assert run is not None and "o1pruner presample runs/fails/spec.yaml" in message
    assert load_spec(run.spec_path) == check.spec
    deadline = time.monotonic() + 180
    while jobs.status(run)["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job = jobs.status(run)
    assert job["state"] == "failed" and job["exit_code"] == 2
    report = jobs.failure_report(run)
    first = report.splitlines()[0]
    assert first.startswith("model.name_or_path: no-such-org/no-such-model is not a folder "
                            "here") and "HF_HUB_OFFLINE is set" in first
    assert "(stage presample, exit code 2)" in report and "Traceback" not in report
    table = handlers.history_table(ws)
    assert table.loc[0, "run"] == "runs/fails" and table.loc[0, "state"] == "failed"
    assert "K=2" in table.loc[0, "parameters"]
    asked = handlers.delete("runs/fails", False, None, ws)
    assert asked.pending == "runs/fails" and "delete runs/fails (failed, 0 models)?" in asked.message
    assert handlers.delete("runs/fails", True, "runs/fails", ws).message == "deleted runs/fails"
    assert not run.root.exists()


def test_attach_target_prefers_a_running_job(ws: Workspace) -> None:
    for name in ("a", "b"):
        run = ws.run_dir(name)
        run.root.mkdir(parents=True)
        run.spec_path.write_text(RunSpec().to_yaml())
    ws.run_dir("a").update_job(state="running", pid=os.getpid(), pgid=os.getpgid(0),
                               started_at=time.time() - 100)
    ws.run_dir("b").update_job(state="done", started_at=time.time())
    assert handlers.attach_target(ws) == "runs/a"
    assert handlers.run_ids(ws) == ["runs/b", "runs/a"]


class _Page:
    """What a browser holds for `app`'s components, by component; an event runs as the
    server runs it: its handler, the handlers chained after it (.then), then the change
    events of the components whose value it changed."""

    def __init__(self, app: gr.Blocks) -> None:
        self.app = app
        self.values = {i: getattr(b, "value", None) for i, b in app.blocks.items()}
        self.choices = {i: [c[1] if isinstance(c, tuple) else c for c in b.choices]
                        for i, b in app.blocks.items() if isinstance(b, gr.Dropdown)}
        self.ids = {b.elem_id: i for i, b in app.blocks.items() if getattr(b, "elem_id", None)}

    def __getitem__(self, elem_id: str) -> object:
        return self.values[self.ids[elem_id]]

    def options(self, elem_id: str) -> list[object]:
        """What a picker offers now."""
        return self.choices[self.ids[elem_id]]

    def load(self) -> None:
        """The page is opened (or reloaded)."""
        self._fire(self.app._id, "load")

    def _tab(self, tab_id: str) -> int:
        return next(i for i, b in self.app.blocks.items() if isinstance(b, gr.Tab)
                    and b.id == tab_id)

    def open_tab(self, tab_id: str) -> None:
        self._fire(self._tab(tab_id), "select")

    def leave(self, elem_id: str) -> None:
        """The user leaves a text box (its blur event)."""
        self._fire(self.ids[elem_id], "blur")

    def set(self, elem_id: str, value: object) -> None:
        """The user changes a component (its change events follow)."""
        self.values[self.ids[elem_id]] = value
        self._fire(self.ids[elem_id], "change")

    def click(self, elem_id: str) -> None:
        self._fire(self.ids[elem_id], "click")

    def open_tab_while(self, tab_id: str, meanwhile: Callable[[], None]) -> None:
        """The tab opens, and `meanwhile` (a user's pick) happens after its handlers read
        their inputs and before their answers arrive (a slow server)."""
        tab = self._tab(tab_id)
        fns = [fn for fn in self.app.fns.values() if (tab, "select") in
               [tuple(t) for t in fn.targets] and fn.fn is not None]
        answers = [fn.fn(*[self.values.get(c._id) for c in fn.inputs]) for fn in fns]
        meanwhile()
        for fn, out in zip(fns, answers, strict=True):
            self._apply(fn, out, 0)

    def _fire(self, block: int, event: str, depth: int = 0) -> None:
        for fn in list(self.app.fns.values()):
            if (block, event) in [tuple(t) for t in fn.targets]:
                self._run(fn, depth)

    def _run(self, fn: object, depth: int) -> None:
        if fn.fn is None:  # a js-only step
            return
        self._apply(fn, fn.fn(*[self.values.get(c._id) for c in fn.inputs]), depth)

    def _apply(self, fn: object, out: object, depth: int) -> None:
        outs = [out] if len(fn.outputs) == 1 else list(out or [])
        changed = []
        for component, value in zip(fn.outputs, outs, strict=True):
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "choices" in value:
                    self.choices[component._id] = [c[1] if isinstance(c, tuple) else c
                                                   for c in value["choices"]]
                if "value" not in value:
                    continue  # gr.skip(), or new choices only
                value = value["value"]
            elif isinstance(value, gr.components.Component):
                if "value" not in value.constructor_args:
                    continue
                value = value.constructor_args["value"]
            old = self.values.get(component._id)
            try:
                differs = bool(value != old)
            except (TypeError, ValueError):  # a table
                differs = True
            self.values[component._id] = value
            if differs:
                changed.append(component._id)
        for then in list(self.app.fns.values()):
            if then.trigger_after == fn._id:
                self._run(then, depth)
        for block in changed if depth < 3 else []:
            self._fire(block, "change", depth + 1)


def _finished_run(ws: Workspace, name: str, started_at: float, models: int = 0) -> RunDir:
    """A finished run with `models` trained models (train/final, then step models)."""
    run = ws.run_dir(name)
    run.root.mkdir(parents=True)
    run.spec_path.write_text(RunSpec().to_yaml())
    run.update_job(state="done", started_at=started_at, finished_at=started_at + 10,
                   exit_code=0)
    for folder in ["final", "models/step-2", "models/step-4"][:models]:
        (run.root / "train" / folder).mkdir(parents=True)
        (run.root / "train" / folder / "config.json").write_text("{}")
    return run


def test_delete_asks_naming_the_picked_run_then_deletes_that_run_only(ws: Workspace) -> None:
    # issue #30: Delete without confirm switched the view to the newest run, and the
    # confirmed Delete then removed that one
    old = _finished_run(ws, "tiny1", time.time() - 300, models=2)
    newest = _finished_run(ws, "tiny4", time.time() - 100, models=1)
    page = _Page(build_app(ws.root))
    page.set("run-pick", "runs/tiny1")
    page.click("btn-delete")  # confirm not ticked: a question beside the button
    assert page["run-pick"] == "runs/tiny1"
    assert "delete runs/tiny1 (done, 2 models)?" in page["delete-message"]
    assert old.root.exists() and newest.root.exists()
    page.set("confirm-delete", True)
    page.click("btn-delete")
    assert page["delete-message"] == "deleted runs/tiny1"
    assert not old.root.exists() and newest.root.exists()
    assert page["run-pick"] == "runs/tiny4" and page["confirm-delete"] is False


def test_a_question_for_one_run_never_deletes_another(ws: Workspace) -> None:
    first = _finished_run(ws, "first", time.time() - 300)
    second = _finished_run(ws, "second", time.time() - 100, models=3)
    page = _Page(build_app(ws.root))
    page.set("run-pick", "runs/first")
    page.click("btn-delete")
    assert page["run-pick"] == "runs/first"
    assert "delete runs/first (done, 0 models)?" in page["delete-message"]
    page.set("run-pick", "runs/second")  # another run picked: the question is withdrawn
    assert page["delete-message"] == ""
    page.set("confirm-delete", True)  # ticked before any question named this run: it asks
    page.click("btn-delete")
    assert "delete runs/second (done, 3 models)?" in page["delete-message"]
    assert page["confirm-delete"] is False and page["run-pick"] == "runs/second"
    assert first.root.exists() and second.root.exists()


def test_a_run_is_not_deleted_while_it_or_an_export_of_it_runs(ws: Workspace) -> None:
    running = _finished_run(ws, "running", time.time() - 300)
    running.update_job(state="running", pid=os.getpid(), pgid=os.getpgid(0))
    exported = _finished_run(ws, "exported", time.time() - 200, models=1)
    export_job = RunDir(exported.root / "exports" / "model-1234abcd")
    export_job.root.mkdir(parents=True)
    export_job.update_job(state="running", pid=os.getpid(), pgid=os.getpgid(0),
                          started_at=time.time())
    with pytest.raises(UserError, match="an export of it is running"):
        jobs.delete_run(exported)  # issue #29: Delete removed a run while its export ran
    with pytest.raises(UserError, match="the job is running"):
        handlers.delete("runs/running", False, None, ws)
    assert (exported.root / "train" / "final" / "config.json").exists()
    page = _Page(build_app(ws.root))
    page.set("run-pick", "runs/exported")
    page.click("btn-delete")
    assert page["delete-message"].startswith("Error: ") and "export" in page["delete-message"]
    assert running.root.exists() and exported.root.exists()


def _wait_done(run: RunDir, timeout_s: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while jobs.status(run)["state"] in jobs.ACTIVE_STATES:
        assert time.monotonic() < deadline, f"{run.root} still {jobs.status(run)['state']}"
        time.sleep(0.2)
    return jobs.status(run)


def test_two_evaluations_in_a_row_belong_to_the_run_and_keep_it_in_the_picker(
        ws: Workspace) -> None:
    # issue #30: with the first evaluation shown, a second Evaluate nested a job under it,
    # the picker was given a value not among its choices (a Gradio error, a blank picker)
    # and the nested job.json stayed 'running'
    run = _finished_run(ws, "tiny1", time.time() - 300)
    page = _Page(build_app(ws.root))
    page.set("run-pick", "runs/tiny1")
    assert f"Evaluate acts on {inline('runs/tiny1')};" in page["eval-target"]
    evaluations = []
    for model in ("nobody/first", "nobody/second"):  # hub ids that fail offline, quickly
        page.set("eval-model", model)
        page.set("eval-bench", "arithmetic_test")
        page.click("btn-evaluate")
        assert "Error" not in page["runs-message"], page["runs-message"]
        shown = page["run-pick"]
        assert shown.startswith(f"runs/tiny1/eval/adhoc/{model.replace('/', '-')}-")
        assert shown in page.options("run-pick")  # the view follows the job, a listed one
        assert f"Evaluate acts on {inline('runs/tiny1')}, the run this evaluation belongs " \
            "to" in page["eval-target"]
        assert "o1pruner eval runs/tiny1/spec.yaml --model " + model in page["runs-message"]
        evaluations.append(ws.run_dir(shown))
        assert _wait_done(evaluations[-1])["state"] == "failed"  # its own job.json says so
    first, second = evaluations
    assert first.root.parent == second.root.parent == run.root / "eval" / "adhoc"
    assert not (first.root / "eval").exists()  # nothing nested in the first evaluation
    assert jobs.status(run)["state"] == "done"
    assert {"runs/tiny1", ws.run_id(first), ws.run_id(second)} <= set(handlers.run_ids(ws))


def test_every_picker_fills_itself_on_page_load_and_when_its_tab_opens(ws: Workspace) -> None:
    # issue #30: Export's run list and Sweeps' sweep list were those of the server's start
    from dataclasses import replace

    from o1pruner.sweep import plan_sweep, save_definition

    page = _Page(build_app(ws.root))  # the server starts on an empty workspace
    assert page.options("model-export-run") == [] and page.options("sweep-pick") == []
    _finished_run(ws, "trained", time.time() - 100, models=1)
    (ws.root / "base.yaml").write_text(RunSpec().to_yaml())
    sweep = plan_sweep(ws.root / "base.yaml", ["reward.lambda=0.5,2"], name="lam")
    save_definition(replace(sweep, root=ws.runs_root / "sweeps" / "lam"))
    page.load()  # a reload
    assert page.options("model-export-run") == ["runs/trained"]
    assert page.options("sweep-pick") == ["runs/sweeps/lam"]
    assert "runs/trained" in page.options("run-pick")
    assert page.options("eval-model") == ["runs/trained/train/final"]
    _finished_run(ws, "later", time.time(), models=1)
    (ws.root / "runs" / "sweeps" / "lam2").mkdir()
    (ws.root / "runs" / "sweeps" / "lam2" / "sweep.json").write_text(
        (ws.root / "runs" / "sweeps" / "lam" / "sweep.json").read_text())
    page.open_tab("export")
    assert page.options("model-export-run") == ["runs/later", "runs/trained"]
    page.open_tab("sweeps")
    assert "runs/sweeps/lam2" in page.options("sweep-pick")
    page.set("run-pick", "runs/trained")
    page.open_tab("runs")  # the lists fill; the picked run stays
    assert "runs/later" in page.options("run-pick") and page["run-pick"] == "runs/trained"
    # a pick made while the fill was on its way stays (a slow server after a reload)
    page.load()
    page.open_tab_while("export", lambda: page.set("model-export-run", "runs/trained"))
    assert page["model-export-run"] == "runs/trained"
    # a picked run that went away is unpicked
    shutil.rmtree(ws.root / "runs" / "trained")
    page.open_tab("export")
    assert page["model-export-run"] is None and page.options("model-export-run") == [
        "runs/later"]


@pytest.mark.skipif(has_gpu(), reason="the CPU first screen")
def test_without_a_gpu_the_form_opens_on_the_cpu_quickstart_with_its_time(
        ws: Workspace) -> None:
    quickstart = load_spec(handlers.first_screen(cuda=False)[1].path)
    page = _Page(build_app(ws.root))
    assert page["field-model-name_or_path"] == quickstart.model.name_or_path
    assert page["field-run-name"] == "quickstart"
    page.load()  # no run to restore: the first line says why the form is the quickstart
    summary = page["form-summary"]
    assert summary.startswith("This machine has no GPU: the form opens on the **CPU "
                              "quickstart** preset")
    assert "Estimated time on this machine: about " in summary and " min" in summary
    values, preset = handlers.first_screen(cuda=True)  # with a GPU: the spec's defaults
    assert preset is None and values == form.default_values()


@pytest.mark.skipif(has_gpu(), reason="the estimate is for CPUs")
def test_start_says_the_time_first_and_asks_before_a_long_run(ws: Workspace) -> None:
    from tests.tiny_model import build_tiny_model

    build_tiny_model(ws.root / "tiny-model")
    page = _Page(build_app(ws.root))
    for elem_id, value in {"field-model-name_or_path": "tiny-model",
                           "field-run-name": "big", "field-data-train_limit": "100000",
                           "field-presample-k": "64", "field-presample-max_new_tokens":
                           "4096", "field-model-dtype": "float32"}.items():
        page.set(elem_id, value)
    page.click("btn-start")  # days of work on a CPU: asked first, nothing started
    question = page["start-question"]
    assert question.startswith("**Not started yet: estimated time on this machine: about ")
    assert page["btn-start"].startswith("Start anyway (about ")
    assert page["btn-start"].removeprefix("Start anyway (").rstrip(")") in question
    assert page["form-summary"] == "OK: spec is valid"
    assert not (ws.runs_root / "big").exists()
    page.set("field-presample-k", "32")
    page.leave("field-presample-k")  # an edited form is another spec: asked again
    assert page["btn-start"] == "Start" and page["start-question"] == ""
    page.click("btn-start")
    assert page["btn-start"].startswith("Start anyway") and not (ws.runs_root / "big").exists()
    page.click("btn-start")  # the extra click: started, the estimate first
    run = ws.run_dir("big")
    try:
        assert page["start-message"].startswith("Estimated time on this machine: about ")
        assert "Started `o1pruner run runs/big/spec.yaml`" in page["start-message"]
        assert page["btn-start"] == "Start" and page["run-pick"] == "runs/big"
        assert page["start-question"] == ""
    finally:
        jobs.stop(run, timeout=5)
    # a small run starts at once, saying its time first
    page.set("field-run-name", "small")
    page.set("field-data-train_limit", "2")
    page.set("field-presample-k", "8")
    page.set("field-presample-max_new_tokens", "8")
    page.click("btn-start")
    try:
        assert page["start-message"].startswith("Estimated time on this machine: about ")
        assert "Started `o1pruner run runs/small/spec.yaml`" in page["start-message"]
    finally:
        jobs.stop(ws.run_dir("small"), timeout=5)


def test_dataset_preview_shows_rows_and_reports_broken_files(ws: Workspace) -> None:
    text = handlers.preview_dataset("arithmetic_test", ws)
    assert "arithmetic_test:" in text and "gold:" in text
    (ws.root / "bad.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": \n')
    bad = handlers.preview_dataset("{name: bad.jsonl, problem_field: problem, answer_field: "
                                   "answer}", ws)
    assert bad.startswith("Error:") and "bad.jsonl" in bad and "line 2" in bad
    assert "outside the workspace" in handlers.preview_dataset("../x.jsonl", ws)


def test_auth_needs_user_and_password() -> None:
    assert parse_auth("ann:s3cret:x") == ("ann", "s3cret:x")
    assert parse_auth(None) is None
    with pytest.raises(UserError, match="user:password"):
        parse_auth("ann")


# ------------------------------------------------------------------------ live view
def test_text_tail_reads_only_appended_bytes(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("x" * 100_000 + "\nfirst\n")
    tail = TextTail(log, max_lines=3, first_bytes=1000)
    assert tail.read_new()[-1] == "first" and tail.offset == log.stat().st_size
    with open(log, "a") as fh:
        fh.write("bar 10%\rbar 50%\rbar 100%\nhalf")
    assert tail.read_new() == ["bar 100%"]
    assert tail.text().endswith("bar 100%\nhalf")
    with open(log, "a") as fh:
        fh.write(" line\n")
    assert tail.read_new() == ["half line"]
    with open(log, "a") as fh:  # a stage and its pipeline both print their last line
        fh.write("stopped\nstopped\n\n\nend 100%\r\n")
    assert tail.read_new() == ["stopped", "", "", "end 100%"]


def _synthetic_run(root: Path) -> RunDir:
    run = RunDir(root)
    run.root.mkdir(parents=True)
    run.spec_path.write_text(RunSpec().to_yaml())
    run.emit("progress", "presample", done=3, total=10, unit="problem", elapsed_s=30.0,
             eta_s=70.0)
    run.emit("metrics", "presample", mean_length=120.5, mean_accuracy=0.5)
    for step in (1, 2):
        run.emit("metrics", "train", step=step, loss=1.0 / step, **{"reward/mean": 0.1 * step},
                 clip_ratio=0.0, learning_rate=1e-5, completion_length=50.0 + step)
    (run.root / "presample").mkdir()
    (run.root / "presample" / "problem_stats.jsonl").write_text("".join(
        json.dumps({"problem_id": i, "k": 4, "mean_length": 100.0 + 10 * i,
                    "mean_accuracy": 0.25 * i}) + "\n" for i in range(3)))
    return run


def test_live_view_progress_curves_and_statistics(tmp_path: Path) -> None:
    run = _synthetic_run(tmp_path / "runs" / "live")
    view = LiveView(run)
    view.poll()
    html = view.progress_html()
    assert "presample" in html and "3/10 problem" in html and "(30%)" in html
    assert "elapsed 0m30s" in html and "ETA 1m10s" in html
    loss = view.curve("loss")
    assert list(loss["x"]) == [1, 2] and list(loss["value"]) == [1.0, 0.5]
    length = view.curve("mean sample length")
    assert set(length["series"]) == {"presample mean_length", "train completion_length"}
    assert "3 problems, 12 samples" in view.presample_markdown()
    assert "mean length 110.0" in view.presample_markdown()
    assert list(view.disharmony().iloc[0]) == ["not available yet"]
    run.emit("progress", "presample", done=10, total=10, unit="problem", elapsed_s=90.0,
             eta_s=0.0)
    run.emit("metrics", "train", step=3, loss=0.25)
    offset = view._events.offset
    view.poll()
    assert view._events.offset > offset and "10/10" in view.progress_html()
    assert view.metrics_seen == 4  # 3 before plus the new one: the curves are redrawn
    assert list(view.curve("loss")["value"]) == [1.0, 0.5, 0.25]
    atomic_write_json(run.root / "report" / "disharmony.json", {"quartiles": [
        {"quartile": q, "accuracy": a} for q, a in zip([1, 2, 3, 4], [0.8, 0.7, 0.6, 0.5],
                                                       strict=True)]})
    atomic_write_json(run.root / "eval" / "results.json", {"rows": [
        {"benchmark": "arithmetic_test", "accuracy": 0.5}]})
    assert list(view.disharmony()["accuracy"]) == [0.8, 0.7, 0.6, 0.5]
    assert view.results().loc[0, "benchmark"] == "arithmetic_test"


def test_curves_figure_draws_every_series(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "empty")
    run.root.mkdir(parents=True)
    assert LiveView(run).curves_figure() is None  # nothing to draw yet
    view = LiveView(_synthetic_run(tmp_path / "runs" / "curves"))
    view.poll()
    fig = view.curves_figure()
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert list(axes) == list(CURVES)
    line = axes["loss"].get_lines()[0]
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [1.0, 0.5]
    # the y axis grows upwards (the native plot drew it inverted, as categories)
    low, high = axes["loss"].get_ylim()
    assert low < high
    length = {ln.get_label(): ln for ln in axes["mean sample length"].get_lines()}
    assert list(length["train completion_length"].get_ydata()) == [51.0, 52.0]
    assert list(length["presample mean_length"].get_ydata()) == [120.5, 120.5]  # reference
    png = tmp_path / "curves.png"
    fig.savefig(png)
    assert png.stat().st_size > 10_000


# ------------------------------------------------------------------ form helpers
def test_a_missing_model_folder_is_shown_at_its_field_and_goes_once_fixed(ws: Workspace) -> None:
    check = handlers.validate(_values(**{"model.name_or_path": "./models/x"}), ws)
    assert list(check.by_field) == ["model.name_or_path"]
    assert "no such directory: ./models/x" in check.by_field["model.name_or_path"][0]
    fixed = handlers.validate(_values(**{"model.name_or_path": "org/model"}), ws)
    assert fixed.spec is not None and fixed.by_field == {}
    assert fixed.summary() == "OK: spec is valid"


def test_every_preset_loads_and_the_smoke_test_is_small() -> None:
    from webui.presets import presets

    found = {p.slug: p for p in presets()}
    assert {"smoke", "quickstart", "paper-marco-o1-7b"} <= set(found)
    for preset in found.values():
        values, message = handlers.load_preset(preset)
        assert values is not None, message
        assert message.startswith(f"OK: loaded preset **{preset.label}**")
    # issue #30: its curves and results are all zero; it says so where it is chosen
    assert found["smoke"].label == "Plumbing check (learns nothing)"
    message = handlers.load_preset(found["smoke"])[1]
    assert "A plumbing check, not a demonstration" in message
    assert "every reward, curve and result stays at 0" in message
    smoke = form.form_to_spec(handlers.load_preset(found["smoke"])[0])
    assert smoke.presample.k == 2 and smoke.data.train_limit <= 8
    assert smoke.presample.max_new_tokens <= 64 and smoke.presample.engine == "hf"
    assert smoke.eval.max_new_tokens <= 64 and smoke.data.eval_limit <= 8


def test_after_a_reload_the_form_comes_from_the_watched_runs_spec(ws: Workspace) -> None:
    assert handlers.restore_from_run(None, ws) == (None, "")
    run = ws.run_dir("small")
    run.root.mkdir(parents=True)
    spec = RunSpec.model_validate({"presample": {"k": 2}, "run": {"name": "small"}})
    run.spec_path.write_text(spec.to_yaml())
    values, message = handlers.restore_from_run(handlers.attach_target(ws), ws)
    assert form.form_to_spec(values) == spec
    assert "runs/small/spec.yaml" in message
    assert handlers.restore_from_run("runs/gone", ws) == (None, "")
    adhoc = run.root / "eval" / "adhoc" / "other-model-1234"  # an evaluation: its run's spec
    adhoc.mkdir(parents=True)
    values, _ = handlers.restore_from_run("runs/small/eval/adhoc/other-model-1234", ws)
    assert form.form_to_spec(values) == spec
    # issue #30: an evaluation's worker writes a spec.yaml of its own; the form never
    # comes from it
    other = RunSpec.model_validate({"presample": {"k": 5}, "run": {"name": "small"}})
    RunDir(adhoc).spec_path.write_text(other.to_yaml())
    values, message = handlers.restore_from_run("runs/small/eval/adhoc/other-model-1234", ws)
    assert form.form_to_spec(values) == spec
    assert "runs/small/spec.yaml" in message and "adhoc" not in message


def test_the_load_picker_lists_the_workspaces_spec_files(ws: Workspace) -> None:
    (ws.root / "mine.yaml").write_text("presample: {k: 3}\n")
    (ws.root / "specs").mkdir()
    (ws.root / "specs" / "b.yml").write_text("presample: {k: 3}\n")
    ws.runs_root.mkdir()
    (ws.runs_root / "x.yaml").write_text("")
    assert ws.spec_files() == ["mine.yaml", "specs/b.yml"]


# ------------------------------------------------------------------ progress phases
def _progress_run(root: Path) -> RunDir:
    run = RunDir(root)
    run.root.mkdir(parents=True)
    run.spec_path.write_text(RunSpec().to_yaml())
    return run


def test_the_reference_pass_and_training_are_separate_bars(tmp_path: Path) -> None:
    run = _progress_run(tmp_path / "runs" / "phases")
    run.emit("progress", "train", done=9, total=12, unit="batch", phase="reference pass")
    run.emit("progress", "train", done=8, total=12, unit="step")
    view = LiveView(run)
    view.poll()
    html = view.progress_html()
    assert "<b>reference pass</b> 9/12 batch" in html and "<b>train</b> 8/12 step" in html
    # a run written before events named their phase: told apart by the unit
    old = _progress_run(tmp_path / "runs" / "old")
    old.emit("progress", "train", done=12, total=12, unit="batch")
    old.emit("progress", "train", done=3, total=12, unit="step")
    old_view = LiveView(old)
    old_view.poll()
    assert list(old_view.progress) == ["reference pass", "train"]


def test_a_cached_evaluation_and_a_stop_show_what_happened(tmp_path: Path) -> None:
    run = _progress_run(tmp_path / "runs" / "stopped")
    run.emit("progress", "train", done=0, total=12, unit="step")
    run.emit("metrics", "train", step=1, loss=0.5)  # the stop came before the next event
    run.emit("progress", "eval", done=0, total=0, unit="problem")
    view = LiveView(run)
    view.poll()
    html = view.progress_html()
    assert "<b>train</b> 1/12 step" in html
    assert "ETA -" in view.progress_html(running=False)  # a stopped job has no ETA
    assert "eval</b> nothing to do" in html and "0/0" not in html


# ------------------------------------------------------------------------ compare
def _evaluated(run: RunDir, base: tuple[float, float], trained: tuple[float, float]) -> None:
    """An eval/results.json with the fields `o1pruner compare` reads."""
    averages = {m: {"accuracy": acc, "mean_tokens": tokens, "n": 4}
                for m, (acc, tokens) in (("base", base), ("trained", trained))}
    atomic_write_json(run.results_path, {
        "methods": ["base", "trained"], "benchmarks": {"arithmetic_test": {"n": 4}},
        "models": {"base": {"fingerprint": "f"}, "trained": {"fingerprint": "g"}},
        "metrics": {m: {"arithmetic_test": a} for m, a in averages.items()},
        "averages": averages, "comparison": {"trained": {"arithmetic_test": {
            "d_len": -0.3, "d_acc": 0.1, "aes": 0.5}, "AVG": {"d_len": -0.3, "d_acc": 0.1,
                                                              "aes": 0.5}}}})


def test_compare_draws_one_run_and_a_stopped_run_with_what_they_have(ws: Workspace) -> None:
    done = _synthetic_run(ws.runs_root / "done")
    _evaluated(done, (0.5, 200.0), (0.55, 140.0))
    stopped = _synthetic_run(ws.runs_root / "stopped")  # curves, no evaluation
    text, fig = handlers.compare(["runs/done"], ws)
    assert "| done |" in text and "140" in text
    scatter = fig.axes[0]
    points = sorted(tuple(round(float(v), 6) for v in p) for c in scatter.collections
                    for p in c.get_offsets())
    assert points == [(140.0, 55.0), (200.0, 50.0)]
    text, fig = handlers.compare(["runs/done", "runs/stopped"], ws)
    assert "`stopped`: no evaluation results yet; its training curves are drawn" in text
    loss = next(ax for ax in fig.axes if ax.get_title() == "loss")
    assert {ln.get_label() for ln in loss.get_lines()} == {"done", "stopped"}
    assert stopped.root.exists()
    assert handlers.compare([], ws)[0].startswith("choose")
