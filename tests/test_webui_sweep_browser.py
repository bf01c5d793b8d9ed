"""End to end: a sweep started from the Sweeps tab in Chromium, the UI server killed and
started again while the sweep runs, the queue going on by itself, and the report shown in
the new UI. Screenshot: webui-sweep.png (tmp, or $O1PRUNER_SCREENSHOT_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_webui_browser import Server, browser  # noqa: F401 (a fixture)
from tests.test_webui_studio_browser import _field, _wait_text
from tests.test_webui_sweep import failed_sweep_workspace, workspace_spec

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_sweep_started_in_the_ui_survives_a_restart_of_the_ui(  # noqa: ANN001
        browser, tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    ws = tmp_path / "workspace"
    ws.mkdir()
    spec = workspace_spec(ws, tiny_model_dir)
    shots = Path(os.environ.get("O1PRUNER_SCREENSHOT_DIR") or tmp_path)
    server = Server(ws)
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    try:
        page.goto(server.url)
        page.get_by_role("tab", name="Sweeps").click()
        _field(page, "sweep-spec").fill(spec.name)
        _field(page, "sweep-grid").fill("reward.lambda=0.5,2")
        _field(page, "sweep-name").fill("lam")
        page.locator("#sweep-start").click()
        _wait_text(page, "sweep-message", "2 runs", 60)
        _wait_text(page, "sweep-status", "sweep job running", 60)
        # the UI goes away while the first run is going
        server.kill()
        sweep = ws / "runs" / "sweeps" / "lam"
        job = json.loads((sweep / "job.json").read_text())
        assert job["state"] == "running"
        server = Server(ws)
        page.goto(server.url)
        page.get_by_role("tab", name="Sweeps").click()
        _field(page, "sweep-pick").click()
        page.get_by_role("option").filter(has_text="runs/sweeps/lam").first.click()
        _wait_text(page, "sweep-status", "sweep job done", 600)
        _wait_text(page, "sweep-report", "2 of 2 runs done", 30)
        assert "lambda=0.5" in page.locator("#sweep-report").inner_text()
        page.locator("#sweep-plot img").wait_for(timeout=30_000)
        assert page.locator("#sweep-points").get_by_role("gridcell", name="done").count() == 2
        page.screenshot(path=str(shots / "webui-sweep.png"), full_page=True)
    finally:
        page.close()
        if server.proc.poll() is None:
            server.kill()
    # the sweep ran its two runs once each, across the restart
    starts = [json.loads(line) for line in (sweep / "events.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "point" and e["state"] == "running" for e in starts) == 2


def test_a_failed_points_reason_shows_in_the_tab_as_text_and_start_plans_apart(  # noqa: ANN001
        browser, tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    """A sweep whose SFT point failed for want of a correct pre-sample and whose DPO point's
    error quotes markup: the runs table says why, as text. Then a Start whose second point
    is outside the workspace: the page shows the planning, then the refusal naming it.
    Screenshot: webui-sweep-failed.png."""
    ws, outside = failed_sweep_workspace(tmp_path, tiny_model_dir)
    shots = Path(os.environ.get("O1PRUNER_SCREENSHOT_DIR") or tmp_path)
    server = Server(ws)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(server.url)
        page.get_by_role("tab", name="Sweeps").click()
        page.get_by_role("button", name="Refresh").click()
        _field(page, "sweep-pick").click()
        page.get_by_role("option").filter(has_text="runs/sweeps/t").first.click()
        _wait_text(page, "sweep-points", "are any correct?", 60)
        _wait_text(page, "sweep-status", "2 failed, 1 pending", 30)
        points = page.locator("#sweep-points")
        assert points.get_by_text("<img src=http://127.0.0.1:9/x>", exact=False).count() >= 1
        assert page.locator("#sweep-points img, #sweep-report img").count() == 0
        assert "Runs that did not finish" in page.locator("#sweep-report").inner_text()
        page.screenshot(path=str(shots / "webui-sweep-failed.png"), full_page=True)

        _field(page, "sweep-spec").fill("spec.yaml")
        _field(page, "sweep-grid").fill(f"run.output_root=runs,{outside}")
        page.locator("#sweep-start").click()
        _wait_text(page, "sweep-message", "outside the workspace", 60)
        assert "sweep point output_root=" in page.locator("#sweep-message").inner_text()
        assert not outside.exists()
    finally:
        page.close()
        server.kill()
