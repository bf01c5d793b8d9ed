"""End to end: the Playground, Samples and Eval explorer tabs of `o1pruner webui`, driven
by Chromium via Playwright, on a prepared run (pre-samples, a trained model, evaluation
results; tests/test_explore.py's `prepare_run`) whose scripted tiny models write known
answers. Screenshots go to tmp (or $O1PRUNER_SCREENSHOT_DIR, e.g. docs/screenshots)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_explore import prepare_run
from tests.test_playground import ANSWER, build_scripted_model
from tests.test_webui_browser import Server, browser  # noqa: F401 (a fixture)

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


def _wait_text(page, elem_id: str, text: str, timeout_s: float = 60) -> None:  # noqa: ANN001
    page.locator(f"#{elem_id}").filter(has_text=text).first.wait_for(timeout=timeout_s * 1000)


def _wait_value(page, elem_id: str, value: str, timeout_s: float = 30) -> None:  # noqa: ANN001
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
        page.locator("#pg-stop").click()
        try:
            _wait_text(page, "pg-message", "stopped", 30)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"Stop did not stop: {page.locator('#pg-stats-a').inner_text()!r}")


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
    least.fill("0.6")
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
