"""End to end: the Playground, Samples and Eval explorer tabs of `o1pruner webui`, driven
by Chromium via Playwright, on a prepared run (pre-samples, a trained model, evaluation
results; tests/test_explore.py's `prepare_run`) whose scripted tiny models write known
answers; the Runs tab's Delete and Evaluate acting on the run they show, every picker
filled after a reload, and the first screen of a machine without a GPU (issue #30).
Screenshots go to tmp (or $O1PRUNER_SCREENSHOT_DIR, e.g. docs/screenshots)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from o1pruner import jobs
from o1pruner.jobs import RunDir
from tests.test_explore import prepare_run
from tests.test_playground import ANSWER, build_scripted_model
from tests.test_webui_browser import Server, _type, browser  # noqa: F401 (a fixture)
from webui.machine import has_gpu

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`o1pruner webui` on a workspace with the prepared run `runs/studio` and a model that
    never stops (`models/looper`, for Stop)."""
    ws = tmp_path_factory.mktemp("studio") / "workspace"
    prepare_run(ws)
    build_scripted_model(ws / "models" / "looper", ANSWER, loop=True)
    server = Server(ws)
    yield server
    if server.proc.poll() is None:
        server.kill()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("O1PRUNER_SCREENSHOT_DIR") or tmp_path_factory.mktemp("shots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def page(browser, studio: Server):  # noqa: ANN001, ANN201, F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(studio.url)
    page.get_by_role("tab", name="Build").wait_for(timeout=60_000)
    yield page
    page.close()


def _field(page, elem_id: str):  # noqa: ANN001, ANN202
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _wait_text(page, elem_id: str, text: str, timeout_s: float = 90) -> None:  # noqa: ANN001
    page.locator(f"#{elem_id}").filter(has_text=text).first.wait_for(timeout=timeout_s * 1000)


def _wait_value(page, elem_id: str, value: str, timeout_s: float = 90) -> None:  # noqa: ANN001
    page.wait_for_function(
        "([id, v]) => { const f = document.querySelector(`#${id} textarea, #${id} input`); "
        "return f && f.value === v; }", arg=[elem_id, value], timeout=timeout_s * 1000)


def _choose(page, elem_id: str, option: str) -> None:  # noqa: ANN001
    _field(page, elem_id).click()
    page.get_by_role("option").filter(has_text=option).first.click()


def _cell(page, elem_id: str, text: str):  # noqa: ANN001, ANN202
    return page.locator(f"#{elem_id}").get_by_role("gridcell", name=text, exact=True).first


def _stop(page, tries: int = 3) -> None:  # noqa: ANN001
    """Click Stop until the page says stopped (a click can be lost while the page is busy
    under load)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        try:  # a page streaming tokens under load can hold a click past playwright's 30 s
            page.locator("#pg-stop").click(timeout=90_000)
            _wait_text(page, "pg-message", "stopped", 30)
            return
        except PlaywrightTimeout:
            continue
    try:
        shown = page.locator("#pg-stats-a").inner_text(timeout=5_000)
    except PlaywrightTimeout:
        shown = "(the page did not answer)"
    raise AssertionError(f"Stop did not stop: {shown!r}")


def test_playground_generates_both_answers_and_stops(page, shots: Path) -> None:  # noqa: ANN001
    page.get_by_role("tab", name="Playground").click()
    _wait_value(page, "pg-model-a", "models/base")  # the run's base model ...
    _wait_value(page, "pg-model-b", "runs/studio/train/final")  # ... and its trained model
    _choose(page, "pg-source", "eval: bench.jsonl")
    _choose(page, "pg-pick", "q1:")
    _wait_value(page, "pg-gold", "14")
    assert _field(page, "pg-problem").input_value() == "Problem q1: how many apples are left?"
    page.locator("#pg-generate").click()
    _wait_text(page, "pg-stats-b", "wrong", 120)
    stats_a = page.locator("#pg-stats-a").inner_text()
    assert "31 tokens" in stats_a and "finish: stop" in stats_a and "right" in stats_a
    assert "9 tokens" in page.locator("#pg-stats-b").inner_text()
    assert _field(page, "pg-text-a").input_value().endswith("\\boxed{14}")
    assert _field(page, "pg-text-b").input_value() == "The answer is \\boxed{7}"
    page.screenshot(path=str(shots / "webui-playground.png"), full_page=False)

    model = _field(page, "pg-model-a")  # a model that never stops, and a large limit
    model.fill("models/looper")
    model.press("Enter")
    _field(page, "pg-max-new").fill("100000")
    _field(page, "pg-max-new").press("Tab")
    page.locator("#pg-generate").click()
    _wait_text(page, "pg-stats-a", "generating", 120)
    _stop(page)
    _wait_text(page, "pg-stats-a", "finish: stopped", 30)
    assert "not generated" in page.locator("#pg-stats-b").inner_text()  # B never started


def test_samples_are_filtered_and_read(page, shots: Path) -> None:  # noqa: ANN001
    page.get_by_role("tab", name="Samples").click()
    _wait_text(page, "samples-count", "showing 6 of 6 problems")
    assert "uses 12 samples" in page.locator("#samples-summary").inner_text()
    least = page.locator("#samples-min-acc input[type=number]")
    least.fill("60")  # accuracy in % (0 to 100)
    least.press("Enter")
    _wait_text(page, "samples-count", "showing 4 of 6 problems")
    assert not _cell(page, "samples-problems", "p0").is_visible()  # accuracy 0.5
    _cell(page, "samples-problems", "p2").click()
    _wait_text(page, "samples-problem", "p2")
    _cell(page, "samples-samples", "chosen").click()
    _wait_text(page, "samples-sample", "trained on")
    assert "\\boxed{" in _field(page, "samples-text").input_value()
    page.screenshot(path=str(shots / "webui-samples.png"), full_page=True)


def test_eval_explorer_shows_regressions_side_by_side(page, shots: Path) -> None:  # noqa: ANN001
    page.get_by_role("tab", name="Eval explorer").click()
    _wait_text(page, "evx-filter", "regressions (2)")
    assert "gains (2)" in page.locator("#evx-filter").inner_text()
    page.locator("#evx-filter label").filter(has_text="regressions").click()
    _cell(page, "evx-table", "q2").wait_for(state="detached", timeout=30_000)
    table = page.locator("#evx-table").inner_text()
    assert "q1" in table and "q4" in table and "q2" not in table
    _cell(page, "evx-table", "q4").click()
    _wait_text(page, "evx-problem", "q4")
    assert "right" in page.locator("#evx-left-stats").inner_text()
    assert "wrong" in page.locator("#evx-right-stats").inner_text()
    assert _field(page, "evx-right-text").input_value() == "The answer is \\boxed{7}"
    page.screenshot(path=str(shots / "webui-eval-explorer.png"), full_page=False)
    page.locator("#evx-filter label").filter(has_text="length cuts").click()
    _wait_text(page, "evx-problem", "22 tokens (71 %) shorter")


# ------------------------------------------- issue #30: buttons act on what they show
def _finished(ws: Path, name: str, started_at: float) -> Path:
    """A finished run as its files say (no worker): spec.yaml and job.json."""
    from o1pruner.spec import RunSpec

    run = RunDir(ws / "runs" / name)
    run.root.mkdir(parents=True)
    run.spec_path.write_text(RunSpec.model_validate({"run": {"name": name}}).to_yaml())
    run.update_job(state="done", started_at=started_at, finished_at=started_at + 10,
                   exit_code=0)
    return run.root


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """`o1pruner webui` on a workspace with the evaluated run `runs/tiny1` (scripted models
    models/base and models/other) and two finished runs, `runs/old1` (the oldest) and
    `runs/new4` (the newest, which the page attaches to)."""
    import time

    from tests.test_explore import TRAINED_TEXT

    ws = tmp_path_factory.mktemp("house") / "workspace"
    prepare_run(ws, "tiny1")
    build_scripted_model(ws / "models" / "other", TRAINED_TEXT)
    _finished(ws, "old1", time.time() - 3600)
    _finished(ws, "new4", time.time())
    server = Server(ws)
    yield server, ws
    if server.proc.poll() is None:
        server.kill()


@pytest.fixture()
def house_page(browser, house: tuple[Server, Path]):  # noqa: ANN001, ANN201, F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(house[0].url)
    page.get_by_role("tab", name="Build").wait_for(timeout=60_000)
    yield page
    page.close()


def _picked(page) -> str:  # noqa: ANN001
    return _field(page, "run-pick").input_value()


def _pick_run(page, run_id: str) -> None:  # noqa: ANN001
    _field(page, "run-pick").click()
    page.get_by_role("option", name=run_id, exact=True).click()


def test_delete_asks_for_the_picked_run_and_deletes_only_that_run(  # noqa: ANN001
        house_page, house: tuple[Server, Path], shots: Path) -> None:
    page, ws = house_page, house[1]
    page.get_by_role("tab", name="Runs").click()
    _wait_text(page, "run-status", "new4")  # attached to the newest run on load
    _pick_run(page, "runs/old1")
    _wait_text(page, "run-status", "old1")
    page.locator("#btn-delete").click()  # confirm not ticked: it asks, beside the button
    _wait_text(page, "delete-message", "delete runs/old1 (done, 0 models)?")
    page.wait_for_timeout(6_000)  # a history poll (5 s) passes: the view stays on old1
    assert _picked(page) == "runs/old1"
    assert "old1" in page.locator("#run-status").inner_text()
    assert (ws / "runs" / "old1").exists() and (ws / "runs" / "new4").exists()
    page.screenshot(path=str(shots / "webui-delete.png"), full_page=False)
    page.locator("#confirm-delete input").check()
    page.locator("#btn-delete").click()
    _wait_text(page, "delete-message", "deleted runs/old1")
    assert not (ws / "runs" / "old1").exists()
    assert (ws / "runs" / "new4").exists() and (ws / "runs" / "tiny1").exists()
    page.wait_for_function("() => !document.querySelector('#run-pick input').value"
                           ".includes('old1')", timeout=30_000)


def test_two_evaluations_in_a_row_belong_to_the_run(  # noqa: ANN001
        house_page, house: tuple[Server, Path], shots: Path) -> None:
    page, ws = house_page, house[1]
    page.get_by_role("tab", name="Runs").click()
    _pick_run(page, "runs/tiny1")
    _wait_text(page, "run-status", "tiny1")
    page.locator("#section-evaluate button.label-wrap").first.click()
    _wait_text(page, "eval-target", "Evaluate acts on")
    for model in ("models/base", "models/other"):
        name = model.split("/")[1]
        field = _field(page, "eval-model")
        field.fill(model)
        field.press("Enter")
        page.locator("#btn-evaluate").click()
        _wait_text(page, "runs-message", f"as its own job runs/tiny1/eval/adhoc/{name}-")
        _wait_text(page, "run-status", f"{name}-")  # the view follows the new job ...
        assert _picked(page).startswith(f"runs/tiny1/eval/adhoc/{name}-")
        _wait_text(page, "eval-target", "the run this evaluation belongs to")
        _wait_text(page, "run-status", "state: done", 300)
    assert page.locator(".toast-body").count() == 0  # no "Value ... is not in the list"
    adhoc = ws / "runs" / "tiny1" / "eval" / "adhoc"
    jobs_of = sorted(p.name for p in adhoc.iterdir())
    assert [j.split("-")[0] for j in jobs_of] == ["base", "other"]
    for job in jobs_of:  # ... each beside the other in the run, finished, none nested
        assert json.loads((adhoc / job / "job.json").read_text())["state"] == "done"
        assert not (adhoc / job / "eval").exists()
    page.screenshot(path=str(shots / "webui-two-evaluations.png"), full_page=False)


def test_a_reload_fills_every_picker(  # noqa: ANN001
        house_page, house: tuple[Server, Path]) -> None:
    from dataclasses import replace

    from o1pruner.sweep import plan_sweep, save_definition

    page, ws = house_page, house[1]
    # made after the server started: a trained run and a sweep
    trained = ws / "runs" / "later"
    shutil.copytree(ws / "runs" / "tiny1" / "train", trained / "train")
    shutil.copy(ws / "runs" / "tiny1" / "spec.yaml", trained / "spec.yaml")
    sweep = plan_sweep(ws / "runs" / "tiny1" / "spec.yaml", ["reward.lambda=0.5,2"],
                       name="lam")
    save_definition(replace(sweep, root=ws / "runs" / "sweeps" / "lam"))
    page.reload()
    page.get_by_role("tab", name="Export").click()
    _field(page, "model-export-run").click()
    page.get_by_role("option", name="runs/later", exact=True).wait_for(timeout=30_000)
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Sweeps").click()
    _field(page, "sweep-pick").click()
    page.get_by_role("option", name="runs/sweeps/lam", exact=True).wait_for(timeout=30_000)
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Runs").click()
    _field(page, "run-pick").click()
    page.get_by_role("option", name="runs/later", exact=True).wait_for(timeout=30_000)
    page.keyboard.press("Escape")
    # the form comes from a run's spec, never from an evaluation's
    page.get_by_role("tab", name="Build").click()
    summary = page.locator("#form-summary").inner_text()
    assert "Form restored from runs/" in summary and "adhoc" not in summary


# ----------------------------------------------------- issue #30: the CPU first screen
@pytest.mark.skipif(has_gpu(), reason="the first screen of a machine without a GPU")
def test_the_cpu_first_screen_is_the_quickstart_with_its_time(  # noqa: ANN001
        browser, tmp_path: Path, shots: Path) -> None:  # noqa: F811
    ws = tmp_path / "workspace"
    ws.mkdir()
    server = Server(ws)
    page = browser.new_page(viewport={"width": 1400, "height": 1150})  # down to Start
    try:
        page.goto(server.url)
        _wait_text(page, "form-summary", "This machine has no GPU: the form opens on the "
                   "CPU quickstart preset")
        summary = page.locator("#form-summary").inner_text()
        assert "Estimated time on this machine: about " in summary
        assert _field(page, "field-model-name_or_path").input_value() == \
            "pypi:qwen2.5-coder-0.5b-instruct"
        assert _field(page, "field-run-name").input_value() == "quickstart"
        # the plumbing check says what it is where it is chosen
        assert page.locator("#preset-smoke").inner_text() == "Plumbing check (learns nothing)"
        page.screenshot(path=str(shots / "webui-cpu-first-screen.png"), full_page=False)
        # a run estimated at days: Start asks first, naming the estimate
        page.locator("#section-data button.label-wrap").first.click()
        _type(page, "field-data-train_limit", "20000")
        page.locator("#btn-start").click()  # the question, right under Start
        _wait_text(page, "start-question", "Not started yet: estimated time on this machine")
        button = page.locator("#btn-start").inner_text()
        assert button.startswith("Start anyway (about "), button
        assert button.removeprefix("Start anyway (").rstrip(")") in \
            page.locator("#start-question").inner_text()
        assert not (ws / "runs" / "quickstart").exists()
        page.evaluate("document.querySelector('#form-actions').scrollIntoView()")
        page.mouse.wheel(0, -300)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "webui-start-asks.png"), full_page=False)
        page.locator("#preset-smoke").click()  # another spec: no question waits
        _wait_text(page, "form-summary", "A plumbing check, not a demonstration")
        page.wait_for_function("() => document.querySelector('#btn-start').innerText"
                               ".trim() === 'Start'", timeout=30_000)
        assert page.locator("#start-question").inner_text().strip() == ""
    finally:
        page.close()
        server.kill()
        for run in (ws / "runs").glob("*"):  # leave no worker behind, whatever happened
            jobs.stop(RunDir(run), timeout=5)
