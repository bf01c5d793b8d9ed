"""End to end in Chromium: a run that cannot learn says so in the Runs status line and the
Samples header (#30 item 4), and the tables read (#30 item 10): results intervals whole,
compare headers unbroken, epochs as integers, "no answer" for an answer not found, accuracy
in %, step models in numeric order, an empty filter with its headers, a log without
terminal codes and Stop greyed on a finished run. Screenshots go to tmp (or
$O1PRUNER_SCREENSHOT_DIR, e.g. docs/screenshots)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from o1pruner.analysis import run_analyze
from o1pruner.evaluation import run_eval
from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.training import run_train
from tests.presample_files import make_spec, write_presample
from tests.test_learning_warning import MAX_NEW, _truncate_every_sample
from tests.test_tables import _tqdm_log
from tests.test_webui_browser import Server, browser  # noqa: F401 (a fixture)
from tests.test_webui_studio_browser import _field, _wait_text, shots  # noqa: F401 (a fixture)
from tests.tiny_model import build_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`o1pruner webui` on a workspace with `runs/stuck` (every pre-sample cut at
    max_new_tokens: trained, evaluated, analysed; step models 3 and 12) and its copy
    `runs/stuck-6` with train.epochs 6."""
    ws = tmp_path_factory.mktemp("tables-studio") / "workspace"
    model = build_tiny_model(ws / "tiny-model")
    spec = make_spec(model, ws / "runs", name="stuck", presample={"max_new_tokens": MAX_NEW},
                     train={"epochs": 2},
                     data={"eval_limit": 3},
                     eval={"benchmarks": ["arithmetic_test"], "max_new_tokens": 4,
                           "engine": "hf", "batch_size": 3})
    run = run_dir_for(spec)
    run.write_spec(spec.to_yaml())
    _truncate_every_sample(write_presample(run.root, load_tokenizer(spec.model, str(model)),
                                           n_problems=4, k=2))
    run_train(spec)
    run_eval(spec)
    run_analyze(run.root)
    for step in (3, 12):
        shutil.copytree(run.root / "train" / "final", run.root / "train" / "models" /
                        f"step-{step}")
    _tqdm_log(run.root / "logs" / "worker.log")
    other = ws / "runs" / "stuck-6"
    shutil.copytree(run.root, other)
    text = (other / "spec.yaml").read_text()
    assert "epochs: 2.0" in text
    (other / "spec.yaml").write_text(text.replace("epochs: 2.0", "epochs: 6.0")
                                     .replace("name: stuck", "name: stuck-6"))
    server = Server(ws)
    yield server
    if server.proc.poll() is None:
        server.kill()


@pytest.fixture()
def page(browser, studio: Server):  # noqa: ANN001, ANN201, F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(studio.url)
    page.get_by_role("tab", name="Runs").click(timeout=60_000)
    yield page
    page.close()


def _pick_run(page, run_id: str) -> None:  # noqa: ANN001
    _field(page, "run-pick").click()
    page.get_by_role("option", name=run_id, exact=True).click()
    _wait_text(page, "run-status", run_id.split("/")[-1])


def test_the_status_line_says_the_run_cannot_learn_and_stop_is_greyed(  # noqa: ANN001
        page, shots: Path) -> None:  # noqa: F811
    _pick_run(page, "runs/stuck")
    _wait_text(page, "run-status", "warning: training cannot change the model")
    status = page.locator("#run-status").inner_text()
    assert f"every pre-sample (8) hit max_new_tokens {MAX_NEW}" in status
    assert f"raise presample.max_new_tokens (now {MAX_NEW})" in status
    _wait_text(page, "run-presample", "training cannot change the model")
    stop = page.locator("#btn-stop")
    assert stop.is_disabled() and "secondary" in (stop.get_attribute("class") or "")
    log = _field(page, "run-log").input_value()
    assert "train: done" in log and "\x1b" not in log and "[A" not in log
    page.screenshot(path=str(shots / "webui-cannot-learn.png"), full_page=False)


def test_results_and_quartiles_read_whole_in_percent(page, shots: Path) -> None:  # noqa: ANN001, F811
    _pick_run(page, "runs/stuck")
    table = page.locator("#run-results")
    table.get_by_text("acc diff", exact=False).first.wait_for(timeout=60_000)
    assert page.locator("#run-disharmony").get_by_text("accuracy %").count() >= 1
    # every interval cell shows its whole text inside the table's box (none cut off on
    # the right, none scrolled out of view)
    cut = page.evaluate("""() => {
        const box = document.querySelector('#run-results').getBoundingClientRect();
        return [...document.querySelectorAll('#run-results td')]
            .filter(td => /\\[/.test(td.innerText))
            .filter(td => td.scrollWidth > td.clientWidth + 1
                          || td.getBoundingClientRect().right > box.right + 1)
            .map(td => td.innerText); }""")
    assert cut == []
    header = page.locator("#run-results th").filter(has_text="truncation").first
    assert header.evaluate("th => getComputedStyle(th.querySelector('*') || th).wordBreak"
                           ) == "normal"  # a header wraps between words, never inside one
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "webui-results-table.png"), full_page=False)


def test_compare_headers_do_not_break_and_epochs_are_integers(  # noqa: ANN001
        page, shots: Path) -> None:  # noqa: F811
    _pick_run(page, "runs/stuck")
    page.keyboard.press("Escape")  # a picker's list re-rendered by a refill may stay open
    _field(page, "compare-pick").click()
    for name in ("runs/stuck", "runs/stuck-6"):
        # the compare picker's own list (the run picker's may hold the same names)
        page.locator("#compare-pick").get_by_role("option", name=name, exact=True).click()
        _field(page, "compare-pick").click()
    page.keyboard.press("Escape")
    page.locator("#btn-compare").click()
    header = page.locator("#compare-table th").filter(has_text="train.epochs").first
    header.wait_for(timeout=60_000)
    assert header.evaluate("th => getComputedStyle(th).whiteSpace") == "nowrap"
    cells = page.locator("#compare-table td").all_inner_texts()
    assert "2" in cells and "6" in cells and "2.0" not in cells
    run_cell = page.locator("#compare-table td").filter(has_text="stuck-6").first
    assert run_cell.evaluate("td => getComputedStyle(td).whiteSpace") == "nowrap"
    assert "lambda=2," in page.locator("#runs-history").inner_text()  # not 2.0
    header.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "webui-compare-table.png"), full_page=False)


def test_step_models_are_in_numeric_order(page) -> None:  # noqa: ANN001
    page.locator("#section-evaluate button.label-wrap").first.click()
    _field(page, "eval-model").click()
    options = page.get_by_role("option").all_inner_texts()
    steps = [o for o in options if o.startswith("runs/stuck/train/models/step-")]
    assert steps == ["runs/stuck/train/models/step-3", "runs/stuck/train/models/step-12"]


def test_samples_header_warns_and_an_empty_filter_keeps_its_headers(  # noqa: ANN001
        page, shots: Path) -> None:  # noqa: F811
    page.get_by_role("tab", name="Samples").click()
    _field(page, "samples-run").click()
    page.get_by_role("option", name="runs/stuck", exact=True).click()
    _wait_text(page, "samples-summary", "warning: training cannot change the model")
    problems = page.locator("#samples-problems")
    problems.get_by_text("accuracy %").first.wait_for(timeout=30_000)
    # the first problem's samples are shown: cut before any answer
    page.wait_for_function("() => document.querySelector('#samples-samples').innerText"
                           ".includes('no answer')", timeout=30_000)
    assert "None" not in page.locator("#samples-samples").inner_text()
    page.screenshot(path=str(shots / "webui-samples-cannot-learn.png"), full_page=False)
    spread = _field(page, "samples-spread")
    spread.fill("50")
    spread.press("Enter")
    _wait_text(page, "samples-count", "no problem matches these filters")
    headers = page.locator("#samples-problems thead").inner_text()
    assert "problem" in headers and "accuracy %" in headers and "1\t2\t3" not in headers
