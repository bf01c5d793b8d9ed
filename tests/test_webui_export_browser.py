"""End to end: the Export tab of `o1pruner webui`, driven by Chromium via Playwright, on a
trained tiny run (a model every 2 steps): choose a run and a checkpoint, export it as a
detached job into the workspace, watch its log, read the files written and download the
zip. Screenshots go to tmp (or $O1PRUNER_SCREENSHOT_DIR, e.g. docs/screenshots)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.training import run_train
from tests.presample_files import make_spec, write_presample
from tests.test_webui_browser import Server, browser  # noqa: F401 (a fixture)
from tests.test_webui_studio_browser import _field, _wait_text, shots  # noqa: F401 (a fixture)
from tests.tiny_model import build_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`o1pruner webui` on a workspace with the trained runs `runs/tiny` (6 steps, models at
    steps 2, 4 and 6) and `runs/lora` (a LoRA adapter, merged on save)."""
    ws = tmp_path_factory.mktemp("export-studio") / "workspace"
    model = build_tiny_model(ws / "tiny-model")
    spec = make_spec(model, ws / "runs", name="tiny",
                     train={"precision": "bf16", "save_model_steps": 2})
    write_presample(run_dir_for(spec).root, load_tokenizer(spec.model, str(model)))
    run_train(spec)
    lora = make_spec(model, ws / "runs", name="lora",
                     train={"precision": "bf16", "finetuning": "lora", "lora_rank": 4})
    write_presample(run_dir_for(lora).root, load_tokenizer(lora.model, str(model)),
                    n_problems=2)
    run_train(lora)
    server = Server(ws)
    yield server
    if server.proc.poll() is None:
        server.kill()


@pytest.fixture()
def page(browser, studio: Server):  # noqa: ANN001, ANN201, F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(studio.url)
    page.get_by_role("tab", name="Export").click(timeout=60_000)
    yield page
    page.close()



def _choose(page, elem_id: str, option: str) -> None:  # noqa: ANN001
    _field(page, elem_id).click()
    page.get_by_role("option").filter(has_text=option).first.click()


def _wait_value(page, elem_id: str, value: str, timeout_s: float = 90) -> None:  # noqa: ANN001
    page.wait_for_function(
        "([id, v]) => { const f = document.querySelector(`#${id} textarea, #${id} input`); "
        "return f && f.value === v; }", arg=[elem_id, value], timeout=timeout_s * 1000)


def _wait_in_value(page, elem_id: str, text: str, timeout_s: float = 90) -> None:  # noqa: ANN001
    page.wait_for_function(
        "([id, t]) => { const f = document.querySelector(`#${id} textarea, #${id} input`); "
        "return f && f.value.includes(t); }", arg=[elem_id, text], timeout=timeout_s * 1000)


def test_export_a_step_model_watch_it_download_and_reattach(page, studio: Server,  # noqa: ANN001
                                                           shots: Path) -> None:  # noqa: F811
    _choose(page, "model-export-run", "runs/tiny")
    _wait_value(page, "model-export-out", "exports/tiny")  # proposed: a folder of its own
    _wait_value(page, "model-export-checkpoint", "final model (train/final)")
    _choose(page, "model-export-checkpoint", "step 4 (model)")
    _choose(page, "model-export-dtype", "fp32")
    page.locator("#model-export-start").click()
    _wait_text(page, "model-export-message", "o1pruner export runs/tiny --out exports/tiny "
               "--checkpoint 4 --dtype fp32")  # the command a user could type
    _wait_text(page, "model-export-status", "export: done", 120)
    _wait_text(page, "model-export-status", "exported the model of train/models/step-4 "
               "(float32)")
    _wait_text(page, "model-export-files", "model.safetensors")
    _wait_in_value(page, "model-export-log", "INFO o1pruner.export: exported the model")
    button = page.locator("#model-export-download")
    button.wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(shots / "webui-export.png"), full_page=False)

    out = Path(studio.log.name).parent / "workspace" / "exports" / "tiny"
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float32" and (out / "README.md").exists()
    with page.expect_download() as download:
        button.click()
    with zipfile.ZipFile(download.value.path()) as archive:
        names = set(archive.namelist())
    assert {"tiny/config.json", "tiny/model.safetensors", "tiny/README.md",
            "tiny/tokenizer.json", "tiny/generation_config.json"} <= names

    # the same output again: refused before any job starts, with the way out
    page.locator("#model-export-start").click()
    _wait_text(page, "model-export-message", "the folder exists and is not empty")
    # a folder outside the workspace is refused
    _field(page, "model-export-out").fill("/tmp/outside-export")
    _field(page, "model-export-out").press("Tab")
    page.locator("#model-export-start").click()
    _wait_text(page, "model-export-message", "outside the workspace")
    assert not Path("/tmp/outside-export").exists()
    assert not page.locator("#model-export-merge").is_visible()  # not a LoRA run

    # a LoRA run: its adapter unless "merge" is ticked
    _choose(page, "model-export-run", "runs/lora")
    _wait_value(page, "model-export-out", "exports/lora")
    page.locator("#model-export-merge").get_by_role("checkbox").check()
    page.locator("#model-export-start").click()
    _wait_text(page, "model-export-status", "exported the model of train/final (bfloat16) "
               "to exports/lora", 120)
    assert (out.parent / "lora" / "config.json").exists()


    # a reloaded page re-attaches to the run's last export
    page.reload()
    page.get_by_role("tab", name="Export").click(timeout=60_000)
    _choose(page, "model-export-run", "runs/tiny")
    _wait_text(page, "model-export-status", "export: done")
    _wait_text(page, "model-export-files", "config.json")
