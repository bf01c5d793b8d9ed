"""The Sweeps tab's handlers: a sweep started from the UI is a detached job, watched from
its folder, with the report shown when it ends; paths outside the workspace are refused."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from o1pruner.errors import UserError
from webui.sweep_tab import start_sweep, sweep_ids, sweep_view
from webui.workspace import Workspace


def workspace_spec(ws: Path, model_dir: Path) -> Path:
    """The pipeline test's tiny spec, with its model and runs inside the workspace."""
    from tests.test_pipeline import write_spec

    shutil.copytree(model_dir, ws / "model")
    path = write_spec(ws, ws / "model")
    data = yaml.safe_load(path.read_text())
    data["model"]["name_or_path"] = "model"
    data["run"]["output_root"] = "runs"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_sweep_outside_the_workspace_or_with_a_bad_grid_is_refused(tmp_path, tiny_model_dir):
    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    spec = workspace_spec(ws_root, tiny_model_dir)
    ws = Workspace.open(ws_root)
    with pytest.raises(UserError, match="outside the workspace"):
        start_sweep(ws, str(tmp_path / "elsewhere.yaml"), "reward.lambda=1,2", "", "none", 1, "")
    with pytest.raises(UserError, match="reward.lambda"):
        start_sweep(ws, spec.name, "reward.lambda=1,-2", "", "none", 1, "")
    assert sweep_ids(ws) == [] and not (ws_root / "runs").exists()


def test_a_failed_point_shows_why_in_the_tabs_table_as_text(tmp_path):
    from tests.test_sweep import NO_CORRECT, failed_sweep

    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    hostile = "<img src=http://127.0.0.1:9/x> [link](http://127.0.0.1:9/y)"
    sweep = failed_sweep(ws_root, {"sft": NO_CORRECT, "dpo": hostile})
    from o1pruner.sweep_report import write_sweep_report

    write_sweep_report(sweep.root)
    ws = Workspace.open(ws_root)
    line, points, report, _ = sweep_view(ws, "runs/sweeps/t")
    assert list(points.columns) == ["run", "values", "seed", "state", "why"]
    assert list(points["state"]) == ["failed", "failed", "pending"]
    assert list(points["why"]) == [f"train: {NO_CORRECT}", f"train: {hostile}", ""]
    assert "2 failed, 1 pending" in line
    # the report's markdown quotes the reasons only inside an indented code block
    assert all(x.startswith("    ") for x in report.splitlines() if "127.0.0.1" in x)


@pytest.mark.slow
def test_a_sweep_started_from_the_tab_runs_detached_and_reports(tmp_path, tiny_model_dir):
    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    spec = workspace_spec(ws_root, tiny_model_dir)
    ws = Workspace.open(ws_root)
    message, ident = start_sweep(ws, spec.name, "reward.lambda=0.5,2", "", "none", 1, "lam")
    assert ident == "runs/sweeps/lam" and "2 runs" in message
    assert sweep_ids(ws) == ["runs/sweeps/lam"]
    deadline = time.time() + 900
    while True:
        line, points, report, plot = sweep_view(ws, ident)
        if "sweep job done" in line or "failed" in line:
            break
        assert time.time() < deadline, line
        time.sleep(2)
    assert "sweep job done" in line and "2 done" in line, line
    assert list(points["state"]) == ["done", "done"]
    assert "| lambda=0.5 |" in report.replace("* ", "") and plot.endswith(".png")
