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


def _wait_for(condition, what: str, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_start_returns_before_the_points_are_planned_and_shows_their_progress(
        tmp_path, tiny_model_dir, monkeypatch):
    import threading

    from o1pruner import jobs
    from webui.sweep_tab import SweepPlanner

    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    spec = workspace_spec(ws_root, tiny_model_dir)
    ws = Workspace.open(ws_root)
    launched = []  # the detached job is recorded here, not started
    monkeypatch.setattr(jobs, "launch", lambda run, argv, **kw: launched.append(argv))
    gate = threading.Semaphore(0)  # each point's check waits for a pass

    def gated(point_spec) -> None:  # noqa: ANN001
        assert gate.acquire(timeout=60), "the point was never let through"
        ws.confine(point_spec)

    planner = SweepPlanner(ws, check_point=gated)
    key = planner.submit(spec.name, "reward.lambda=0.5,2", "", "none", 1, "lam")
    planning = planner.get(key)  # the click has returned; no point is checked yet
    assert planning.runs == 2 and not planning.done.is_set()
    assert "0 of 2 runs checked" in planning.line() and sweep_ids(ws) == []
    with pytest.raises(UserError, match="another sweep is being planned"):
        planner.submit(spec.name, "reward.lambda=3", "", "none", 1, "other")
    gate.release()
    _wait_for(lambda: planning.checked == 1, "the first point was not checked")
    assert "1 of 2 runs checked" in planning.line()
    gate.release()
    assert planning.done.wait(60)
    assert planning.ident == "runs/sweeps/lam" and "2 runs, 1 at a time" in planning.line()
    assert len(launched) == 1 and launched[0][:4] == ["sweep", "spec.yaml", "--name", "lam"]
    assert sweep_ids(ws) == ["runs/sweeps/lam"]


def test_a_sweep_refused_while_planning_says_why_and_writes_nothing(tmp_path, tiny_model_dir):
    from webui.sweep_tab import SweepPlanner

    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    spec = workspace_spec(ws_root, tiny_model_dir)
    ws = Workspace.open(ws_root)
    planner = SweepPlanner(ws)
    # refused at the click, before any point is built: too many runs
    with pytest.raises(UserError, match="110 runs; at most 100"):
        planner.submit(spec.name, "reward.lambda=" + ",".join(map(str, range(1, 12))),
                       ",".join(map(str, range(10))), "none", 1, "")
    # refused while planning: the second point's output root is outside the workspace
    key = planner.submit(spec.name, f"run.output_root=runs,{tmp_path / 'outside'}", "",
                         "none", 1, "")
    planning = planner.get(key)
    assert planning.done.wait(60) and planning.ident is None
    assert planning.line().startswith("Error: sweep point output_root=")
    assert "outside the workspace" in planning.line()
    assert sweep_ids(ws) == [] and not (tmp_path / "outside").exists()


HOSTILE = "<img src=http://127.0.0.1:9/x> [link](http://127.0.0.1:9/y)"


def failed_sweep_workspace(tmp_path: Path, model_dir: Path) -> tuple[Path, Path]:
    """(workspace, a folder beside it): the workspace holds the paper-table sweep
    `runs/sweeps/t` whose SFT point failed for want of a correct pre-sample and whose DPO
    point's error quotes markup (HOSTILE), with its report, and the base spec `spec.yaml`
    of the tiny model."""
    from o1pruner.sweep import write_report
    from tests.test_sweep import NO_CORRECT, failed_sweep

    ws = tmp_path / "workspace"
    ws.mkdir()
    write_report(failed_sweep(ws, {"sft": NO_CORRECT, "dpo": HOSTILE}).root)
    workspace_spec(ws, model_dir)
    return ws, tmp_path / "outside"


def test_a_failed_point_shows_why_in_the_tabs_table_as_text(tmp_path, tiny_model_dir):
    from tests.test_sweep import NO_CORRECT

    ws_root, _ = failed_sweep_workspace(tmp_path, tiny_model_dir)
    ws = Workspace.open(ws_root)
    line, points, report, _ = sweep_view(ws, "runs/sweeps/t")
    assert list(points.columns) == ["run", "values", "seed", "state", "why"]
    assert list(points["state"]) == ["failed", "failed", "pending"]
    assert list(points["why"]) == [f"train: {NO_CORRECT}", f"train: {HOSTILE}", ""]
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
