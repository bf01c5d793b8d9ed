"""End to end: `o1pruner webui` in a subprocess, driven by Debian's Chromium via Playwright.

Builds a spec with a tiny model, imports and exports YAML, starts a run, watches its
progress, evaluates and sees results; and a run started from the UI survives a server
restart. Screenshots go to tmp (or $O1PRUNER_SCREENSHOT_DIR, e.g. docs/screenshots).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from o1pruner import jobs
from o1pruner.jobs import RunDir
from o1pruner.specio import load_spec_text
from o1pruner.training.distributed import free_port
from tests.tiny_model import build_tiny_model
from webui.machine import has_gpu

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# The UI starts the whole pipeline, the command a user would type.
START_STAGE = "run"
TINY_SPEC = """\
model: {name_or_path: tiny-model, dtype: float32}
data: {train: arithmetic_train, train_limit: 4, eval_limit: 4}
presample: {k: 2, max_new_tokens: 16, engine: hf, batch_size: 4}
reward: {samples_per_problem: 2}
train: {batch_size: 2, gradient_accumulation_steps: 1, max_length: 128, precision: fp32,
        gradient_checkpointing: false, learning_rate: 1.0e-5}
eval: {benchmarks: [arithmetic_test], max_new_tokens: 16, engine: hf, batch_size: 4}
"""


# The same run, training long enough to be stopped from the UI: 1,600 optimizer steps
# (about 100 a second on the tiny model).
LONG_SPEC = TINY_SPEC.replace("train_limit: 4", "train_limit: 8").replace(
    "batch_size: 2,", "batch_size: 1,").replace(
    "learning_rate: 1.0e-5}", "learning_rate: 1.0e-5, epochs: 100, logging_steps: 20}")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def workspace(tmp_path: Path) -> Iterator[Path]:
    ws = tmp_path / "workspace"
    build_tiny_model(ws / "tiny-model")
    (ws / "tiny.yaml").write_text(TINY_SPEC)
    yield ws
    for run in (ws / "runs").glob("*"):
        jobs.stop(RunDir(run), timeout=5)  # leave no worker behind


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    path = Path(os.environ.get("O1PRUNER_SCREENSHOT_DIR") or tmp_path / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Server:
    """`o1pruner webui` as a subprocess on a free port."""

    def __init__(self, workspace: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workspace.parent / f"webui-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "o1pruner.cli", "webui", "--port", str(self.port),
             "--workspace", str(workspace)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                assert self.proc.poll() is None, Path(self.log.name).read_text()
                assert time.monotonic() < deadline, "webui did not start"
                time.sleep(0.5)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture()
def servers(workspace: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def _field(page, elem_id: str):  # noqa: ANN001, ANN202
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _open(page, section_id: str) -> None:  # noqa: ANN001
    page.locator(f"#{section_id} button.label-wrap").first.click()


def _wait_text(page, elem_id: str, text: str, timeout_s: float) -> None:  # noqa: ANN001
    page.locator(f"#{elem_id}").filter(has_text=text).first.wait_for(timeout=timeout_s * 1000)


def _choose(page, elem_id: str, option: str) -> None:  # noqa: ANN001
    _field(page, elem_id).click()
    page.get_by_role("option", name=option, exact=True).click()


def _type(page, elem_id: str, text: str, tries: int = 5) -> None:  # noqa: ANN001
    """Fill a textbox and leave it with Tab, as a user does, then check that the value
    stays. Right after an import the page can still be applying the imported values and
    overwrite what was typed (seen under load); type again then, as a user would."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    field = _field(page, elem_id)
    for _ in range(tries):
        field.fill(text)
        field.press("Tab")
        page.wait_for_timeout(1000)
        try:
            page.wait_for_function(
                "([id, t]) => { const f = document.querySelector(`#${id} textarea, "
                "#${id} input`); return f && f.value === t; }",
                arg=[elem_id, text], timeout=2_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"{elem_id} does not keep {text!r}: it shows {field.input_value()!r}")


def _preview_command(page, expected: str, tries: int = 3) -> str:  # noqa: ANN001
    """Click Preview until the command box shows `expected` (a click can be lost while the
    page is busy under load); fail with what the page shows instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        page.locator("#btn-preview").click()
        try:
            page.wait_for_function(
                "e => { const f = document.querySelector('#preview-command textarea, "
                "#preview-command input'); return f && f.value.includes(e); }",
                arg=expected, timeout=20_000)
            return _field(page, "preview-command").input_value()
        except PlaywrightTimeout:
            continue
    raise AssertionError(
        f"Preview never showed {expected!r}: command {_field(page, 'preview-command').input_value()!r}"
        f", run name {_field(page, 'field-run-name').input_value()!r}, model "
        f"{_field(page, 'field-model-name_or_path').input_value()!r}, summary "
        f"{page.locator('#form-summary').inner_text()!r}")


def _export(page):  # noqa: ANN001, ANN202
    """Export YAML, then download it with the button that appears beside it."""
    page.locator("#btn-export").click()
    button = page.locator("#export-download")
    button.wait_for(state="visible", timeout=30_000)
    with page.expect_download() as download:
        button.click()
    return load_spec_text(Path(download.value.path()).read_text(), "exported")


def _note(page, key: str) -> str:  # noqa: ANN001
    """The small print under a field: its path and its problem, if any."""
    return page.locator(f"#note-{key.replace('.', '-')}").inner_text()


def _start_from_form(page, workspace: Path, name: str, import_by_path: bool,  # noqa: ANN001
                     spec_file: str = "tiny.yaml") -> None:
    if import_by_path:
        _choose(page, "load-path", spec_file)  # the workspace's spec files are listed
        page.locator("#btn-load").click()
    else:
        with page.expect_file_chooser() as chooser:
            page.locator("#btn-import").click()
        chooser.value.set_files(str(workspace / "tiny.yaml"))
    _wait_text(page, "form-summary", "OK: imported", 30)
    _open(page, "section-model")
    assert _field(page, "field-model-dtype").input_value() == "float32"
    _open(page, "section-presample")
    assert _field(page, "field-presample-max_new_tokens").input_value() == "16"
    _type(page, "field-model-name_or_path", "tiny-model")
    _type(page, "field-run-name", name)
    _choose(page, "start-stage", START_STAGE)


def test_presets_strict_numbers_and_problems_at_their_fields(browser, workspace: Path,  # noqa: ANN001
                                                            servers, shots: Path) -> None:
    servers.append(Server(workspace))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(servers[0].url)
    _field(page, "field-model-name_or_path").wait_for(timeout=60_000)
    if not has_gpu():  # the page has loaded: the first line says what the form opened on
        _wait_text(page, "form-summary", "This machine has no GPU", 60)
    # a small preset, one click away, which says that it only checks the plumbing
    page.locator("#preset-smoke").click()
    _wait_text(page, "form-summary", "loaded preset Plumbing check (learns nothing)", 30)
    assert "A plumbing check, not a demonstration" in page.locator("#form-summary").inner_text()
    assert _field(page, "field-presample-k").input_value() == "2"
    assert _field(page, "field-run-name").input_value() == "smoke"
    page.screenshot(path=str(shots / "webui-form.png"), full_page=False)

    # numbers are read strictly; the problem is shown at its field, naming it
    _type(page, "field-presample-k", "-3")
    _wait_text(page, "note-presample-k", "greater than or equal to 1", 30)
    assert "presample.k:" in _note(page, "presample.k")
    _type(page, "field-reward-lambda", "2,5")
    _wait_text(page, "note-reward-lambda", "write decimals with a dot", 30)
    page.locator("#btn-preview").click()
    _wait_text(page, "form-summary", "Error: 2 problem(s)", 30)
    assert "OK" not in page.locator("#form-summary").inner_text()
    assert page.locator(".toast-body").count() == 0  # no Gradio pop-up that names no field
    _type(page, "field-presample-k", "2")
    _wait_text(page, "note-presample-k", "presample.k", 30)
    assert "greater" not in _note(page, "presample.k")  # fixed: its problem is gone
    _type(page, "field-reward-lambda", "2.5")
    assert _preview_command(page, "runs/smoke/spec.yaml") == "o1pruner run runs/smoke/spec.yaml"
    _wait_text(page, "form-summary", "OK: spec is valid", 30)

    # a problem found with the whole spec goes once the field is fixed, and on an import
    _type(page, "field-model-name_or_path", "./models/x")
    page.locator("#btn-preview").click()
    _wait_text(page, "note-model-name_or_path", "no such directory: ./models/x", 30)
    _type(page, "field-model-name_or_path", "tiny-model")
    _wait_text(page, "note-model-name_or_path", "model.name_or_path", 30)
    assert "no such directory" not in _note(page, "model.name_or_path")
    _type(page, "field-model-name_or_path", "./models/x")
    page.locator("#btn-preview").click()
    _wait_text(page, "note-model-name_or_path", "no such directory", 30)
    _choose(page, "load-path", "tiny.yaml")
    page.locator("#btn-load").click()
    _wait_text(page, "form-summary", "OK: imported tiny.yaml", 30)
    assert "no such directory" not in _note(page, "model.name_or_path")

    # options that do not apply are hidden: LoRA's unless fine-tuning is lora
    _open(page, "section-train")
    assert not page.locator("#field-train-lora_rank").is_visible()
    _choose(page, "field-train-finetuning", "lora")
    page.locator("#field-train-lora_rank").wait_for(state="visible", timeout=30_000)
    assert not page.locator("#field-train-dpo_beta").is_visible()
    _choose(page, "field-train-finetuning", "full")
    page.locator("#field-train-lora_rank").wait_for(state="hidden", timeout=30_000)

    # the YAML download sits beside Export
    _type(page, "field-model-name_or_path", "tiny-model")
    exported = _export(page)
    assert exported.presample.k == 2 and exported.model.name_or_path == "tiny-model"


def test_build_import_export_start_watch_and_evaluate(browser, workspace: Path, servers,  # noqa: ANN001
                                                      shots: Path) -> None:
    servers.append(Server(workspace))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(servers[0].url)
    _field(page, "field-model-name_or_path").wait_for(timeout=60_000)
    _start_from_form(page, workspace, "e2e-run", import_by_path=False)

    assert _preview_command(page, "runs/e2e-run/spec.yaml") == \
        "o1pruner run runs/e2e-run/spec.yaml"

    exported = _export(page)
    assert exported.run.name == "e2e-run" and exported.presample.k == 2

    page.locator("#btn-start").click()
    _wait_text(page, "start-message", f"o1pruner {START_STAGE} runs/e2e-run/spec.yaml", 30)
    _wait_text(page, "run-status", "e2e-run", 30)
    _wait_text(page, "run-progress", "/4 problem", 120)
    page.screenshot(path=str(shots / "webui-running.png"), full_page=False)
    _wait_text(page, "run-status", "state: done", 420)
    progress = page.locator("#run-progress").inner_text()
    assert "presample" in progress and "train" in progress and "eval" in progress
    _wait_text(page, "run-presample", "pre-sample: 4 problems", 30)
    _wait_text(page, "run-results", "trained", 180)
    page.locator("#run-curves img").first.wait_for(timeout=30_000)  # training curves drawn
    assert "reference pass" in progress  # a bar of its own, apart from the training steps
    assert not page.locator("#run-failure").is_visible()  # only a failed run has one
    assert page.locator("#run-log textarea").input_value().count("wall time:") == 1

    # after a reload the log shows its last lines, and the form the watched run's spec
    page.reload()
    _wait_text(page, "form-summary", "Form restored from runs/e2e-run/spec.yaml", 60)
    assert _field(page, "field-presample-k").input_value() == "2"
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_function("() => { const t = document.querySelector('#run-log textarea'); "
                           "return t && t.value.includes('wall time:') && "
                           "t.scrollHeight - t.scrollTop - t.clientHeight < 40; }",
                           timeout=60_000)

    # the finished run and its model are in the pickers without a Refresh
    _choose(page, "compare-pick", "runs/e2e-run")  # one run is enough to compare
    page.locator("#btn-compare").click()
    page.locator("#compare-plot img").first.wait_for(timeout=60_000)
    _wait_text(page, "compare-table", "e2e-run", 30)
    _open(page, "section-evaluate")
    _field(page, "eval-model").click()
    page.get_by_role("option", name="runs/e2e-run/train/final", exact=True).wait_for(
        timeout=15_000)
    model = _field(page, "eval-model")
    model.fill("tiny-model")
    model.press("Enter")
    page.locator("#btn-evaluate").click()
    _wait_text(page, "runs-message", "o1pruner eval runs/e2e-run/spec.yaml --model tiny-model", 30)
    # another model's evaluation is a job of its own, and the view follows it
    _wait_text(page, "runs-message", "as its own job runs/e2e-run/eval/adhoc/tiny-model-", 30)
    _wait_text(page, "run-status", "tiny-model-", 30)
    _wait_text(page, "run-status", "state: done", 300)
    _wait_text(page, "run-results", "arithmetic_test", 60)
    page.locator("#run-report img").first.wait_for(timeout=30_000)
    page.locator("#run-results").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "webui-results.png"), full_page=True)
    _wait_text(page, "runs-history", "done", 30)
    history = page.locator("#runs-history").inner_text()
    assert "runs/e2e-run" in history and "runs/e2e-run/eval/adhoc/tiny-model-" in history
    assert jobs.status(RunDir(workspace / "runs" / "e2e-run"))["state"] == "done"

    # the run beside the other model's evaluation: accuracy vs tokens and the curves
    _field(page, "compare-pick").click()
    page.get_by_role("option").filter(has_text="adhoc/tiny-model-").first.click()
    page.keyboard.press("Escape")
    page.locator("#btn-compare").click()
    _wait_text(page, "compare-table", "tiny-model-", 60)
    page.locator("#compare-plot img").first.wait_for(timeout=60_000)
    page.locator("#compare-table").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "webui-compare.png"), full_page=False)


def test_stop_from_the_ui_saves_a_checkpoint_and_start_resumes_from_it(  # noqa: ANN001
        browser, workspace: Path, servers, shots: Path) -> None:
    (workspace / "long.yaml").write_text(LONG_SPEC)
    servers.append(Server(workspace))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(servers[0].url)
    _field(page, "field-model-name_or_path").wait_for(timeout=60_000)
    _start_from_form(page, workspace, "stopper", import_by_path=True, spec_file="long.yaml")
    page.locator("#btn-start").click()
    _wait_text(page, "run-status", "stopper", 30)
    _wait_text(page, "run-progress", "/1600 step", 240)  # training has begun
    page.locator("#btn-stop").click()
    _wait_text(page, "runs-message", "stopping: the running stage is saving", 30)
    _wait_text(page, "run-status", "Start resumes from it", 180)
    _wait_text(page, "run-status", "stopped", 30)
    log = page.locator("#run-log textarea").input_value()
    assert log.count("\nstopped") == 1, log[-500:]  # the last word once, not twice
    status = page.locator("#run-status").inner_text()
    assert "state: stopped" in status, status
    step = int(re.search(r"checkpoint step-(\d+) saved", status).group(1))
    assert step >= 1
    assert not page.locator("#run-failure").is_visible()  # a stop is not a failure
    run = RunDir(workspace / "runs" / "stopper")
    logged = [e["step"] for e in run.events() if e["kind"] == "metrics" and e["stage"] == "train"]
    bar = page.locator("#run-progress").inner_text()
    assert int(re.search(r"train (\d+)/1600 step", bar).group(1)) >= max(logged, default=0)
    page.screenshot(path=str(shots / "webui-stopped.png"), full_page=False)
    _choose(page, "compare-pick", "runs/stopper")  # a stopped run compares with what it has
    page.locator("#btn-compare").click()
    _wait_text(page, "compare-table", "stopper: no evaluation results yet", 60)
    page.locator("#compare-plot img").first.wait_for(timeout=60_000)

    page.get_by_role("tab", name="Build").click()
    page.locator("#btn-start").click()  # the same spec again: it resumes
    _wait_text(page, "start-message", "o1pruner run runs/stopper/spec.yaml", 30)
    _wait_text(page, "run-status", "state: done", 600)
    assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [step]
    # Delete sits beside the run it acts on: the first click asks, naming the run
    page.locator("#btn-delete").click()
    _wait_text(page, "delete-message", "delete runs/stopper (done, ", 30)
    assert run.root.exists()
    page.locator("#confirm-delete input").check()
    page.locator("#btn-delete").click()
    _wait_text(page, "delete-message", "deleted runs/stopper", 30)
    assert not run.root.exists()


def test_a_run_survives_a_server_restart_and_the_ui_reattaches(browser, workspace: Path,  # noqa: ANN001
                                                               servers) -> None:
    servers.append(Server(workspace))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(servers[0].url)
    _field(page, "field-model-name_or_path").wait_for(timeout=60_000)
    _start_from_form(page, workspace, "survivor", import_by_path=True)
    page.locator("#btn-start").click()
    _wait_text(page, "run-status", "state: running", 30)
    page.close()

    servers[0].kill()  # the server dies; the detached worker must not
    run = RunDir(workspace / "runs" / "survivor")
    job = jobs.status(run)
    assert job["state"] in ("running", "done") and job["state"] != "failed"

    servers.append(Server(workspace))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(servers[1].url)
    page.get_by_role("tab", name="Runs").click()
    _wait_text(page, "run-status", "survivor", 60)  # re-attached from files on page load
    page.get_by_role("tab", name="Build").click()  # and the form shows the run's spec
    _wait_text(page, "form-summary", "Form restored from runs/survivor/spec.yaml", 60)
    assert _field(page, "field-run-name").input_value() == "survivor"
    assert _field(page, "field-presample-k").input_value() == "2"
    page.get_by_role("tab", name="Runs").click()
    _wait_text(page, "run-progress", "presample", 120)
    _wait_text(page, "run-status", "state: done", 240)
    assert jobs.status(run)["state"] == "done"
