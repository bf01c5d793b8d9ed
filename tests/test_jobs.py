"""Job control with real processes: launch detached, status from files, stop, re-attach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.runs import RunDir, atomic_write_json
from o1pruner.spec import RunSpec

PY = [sys.executable, "-c"]


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _run(tmp_path: Path, name: str = "r1") -> RunDir:
    run = RunDir(tmp_path / "runs" / name)
    run.root.mkdir(parents=True)
    run.spec_path.write_text(RunSpec().to_yaml())
    return run


def _script(body: str) -> list[str]:
    return [*PY, textwrap.dedent(body)]


SLEEPER = _script("""
    import subprocess, sys, time
    from pathlib import Path
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(sys.argv[2]).write_text(str(child.pid))
    time.sleep(120)
""")


def test_launch_runs_the_real_cli_detached_and_records_done(tmp_path: Path) -> None:
    run = _run(tmp_path)
    job = jobs.launch(run, ["validate", str(run.spec_path)])
    assert job["state"] == "running" and job["pid"] == job["pgid"]
    assert job["command"][:3] == [sys.executable, "-m", "o1pruner.cli"]
    assert os.getsid(job["pid"]) == job["pid"]  # its own session
    _wait(lambda: jobs.status(run)["state"] != "running")
    final = jobs.status(run)
    assert final["state"] == "done" and final["exit_code"] == 0
    assert "schema_version: 1" in (run.root / "logs" / "worker.log").read_text()
    assert json.loads(run.job_path.read_text())["state"] == "done"


def test_failed_worker_reports_stage_exit_code_and_log_tail(tmp_path: Path) -> None:
    run = _run(tmp_path)
    fail = _script("import sys; print('loading model'); print('boom: bad row', file=sys.stderr);"
                   " sys.exit(3)")
    jobs.launch(run, ["presample"], program=fail)
    _wait(lambda: jobs.status(run)["state"] != "running")
    assert jobs.status(run)["exit_code"] == 3
    report = jobs.failure_report(run)
    assert "stage presample failed (exit code 3)" in report
    assert "boom: bad row" in report


def test_launch_refuses_a_second_job_while_one_runs(tmp_path: Path) -> None:
    run = _run(tmp_path)
    jobs.launch(run, ["presample", str(tmp_path / "pid")], program=SLEEPER)
    try:
        with pytest.raises(UserError, match="already running"):
            jobs.launch(run, ["train"], program=SLEEPER)
        with pytest.raises(UserError, match="stop it before deleting"):
            jobs.delete_run(run)
    finally:
        jobs.stop(run, timeout=5)


def test_stop_terminates_the_whole_process_group_gracefully(tmp_path: Path) -> None:
    run = _run(tmp_path)
    saved = tmp_path / "checkpoint"
    graceful = _script(f"""
        import signal, subprocess, sys, time
        from pathlib import Path
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path(sys.argv[2]).write_text(str(child.pid))
        def on_term(*_):
            Path({str(saved)!r}).write_text("saved")
            child.terminate(); sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        time.sleep(120)
    """)
    job = jobs.launch(run, ["train", str(tmp_path / "pid")], program=graceful)
    _wait(lambda: (tmp_path / "pid").exists())
    grandchild = int((tmp_path / "pid").read_text())
    assert jobs.group_alive(job["pgid"])
    final = jobs.stop(run, timeout=10)
    assert final["state"] == "stopped" and final["stopped_with"] == "SIGTERM"
    assert saved.read_text() == "saved"
    assert not jobs.group_alive(job["pgid"]) and not jobs.pid_alive(grandchild)
    assert jobs.status(run)["state"] == "stopped"


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    run = _run(tmp_path)
    stubborn = _script("""
        import signal, sys, time
        from pathlib import Path
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(sys.argv[2]).write_text("ready")
        time.sleep(120)
    """)
    job = jobs.launch(run, ["train", str(tmp_path / "ready")], program=stubborn)
    _wait(lambda: (tmp_path / "ready").exists())
    started = time.monotonic()
    final = jobs.stop(run, timeout=1.0)
    assert time.monotonic() - started >= 1.0
    assert final["state"] == "stopped" and final["stopped_with"] == "SIGKILL"
    assert not jobs.group_alive(job["pgid"])


def _launch_from_another_process(run: RunDir, program: list[str], argv: list[str]) -> None:
    """Launch through a short-lived process, as a web UI server that is then restarted."""
    code = ("import sys, json; from pathlib import Path; from o1pruner import jobs; "
            "from o1pruner.runs import RunDir; "
            f"jobs.launch(RunDir(Path({str(run.root)!r})), {argv!r}, program={program!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_fresh_status_reattaches_to_a_job_started_by_a_dead_launcher(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _launch_from_another_process(run, SLEEPER, ["presample", str(tmp_path / "pid")])
    job = jobs.status(run)  # this process never saw the launch: state comes from files
    assert job["state"] == "running" and job["alive"]
    assert job["pid"] not in jobs._CHILDREN
    final = jobs.stop(run, timeout=5)
    assert final["state"] == "stopped" and not jobs.group_alive(job["pgid"])


def test_worker_gone_without_final_state_is_failed_with_unknown_exit_code(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _launch_from_another_process(run, [*PY, "import sys; sys.exit(4)"], ["eval"])
    _wait(lambda: jobs.status(run)["state"] != "running")
    job = jobs.status(run)
    assert job["state"] == "failed" and job["exit_code"] is None
    assert "exit code unknown" in jobs.failure_report(run)


def test_a_reused_pid_is_not_mistaken_for_the_worker(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.update_job(state="running", stage="train", pid=os.getpid(), pgid=os.getpid(),
                   proc_start=1)  # our pid, but a different start time
    assert jobs.status(run)["state"] == "failed"


def test_list_runs_gives_history_rows_with_parameters_and_results(tmp_path: Path) -> None:
    old = _run(tmp_path, "old")
    time.sleep(0.02)
    new = _run(tmp_path, "new")
    new.spec_path.write_text(RunSpec.model_validate(
        {"presample": {"k": 4}, "reward": {"samples_per_problem": 2, "lambda": 5}}).to_yaml())
    m = {"n": 4, "accuracy": 0.5, "mean_tokens": 12.0, "median_tokens": 12.0,
         "truncation_rate": 0.0, "wall_s": 1.0}
    c = {"d_len": 0.25, "d_acc": 0.0, "aes": 0.25}
    atomic_write_json(new.root / "eval" / "results.json", {  # the evaluation stage's format
        "methods": ["base", "trained"],
        "metrics": {"base": {"arithmetic_test": {**m, "mean_tokens": 16.0}},
                    "trained": {"arithmetic_test": m}},
        "averages": {"base": {**m, "mean_tokens": 16.0}, "trained": m},
        "comparison": {"trained": {"arithmetic_test": c, "AVG": c}}})
    new.update_job(state="done", stage="eval", started_at=time.time(), pid=None)
    (tmp_path / "runs" / "not-a-run").mkdir()
    rows = jobs.list_runs(tmp_path / "runs")
    assert [r["name"] for r in rows] == ["new", "old"]
    assert rows[0]["state"] == "done" and rows[1]["state"] == "created"
    assert rows[0]["parameters"]["K"] == 4 and rows[0]["parameters"]["lambda"] == 5
    assert rows[0]["model"] == "pypi:smollm2-135m-instruct"
    assert rows[0]["results"] == ("base: acc 50.0% / 16.0 tok; "
                                  "trained: acc 50.0% / 12.0 tok / AES 0.25")
    jobs.delete_run(old)
    assert not old.root.exists()
    assert jobs.list_runs(tmp_path / "missing") == []


def test_a_stage_writing_done_mid_pipeline_does_not_end_the_job(tmp_path: Path) -> None:
    run = _run(tmp_path)
    pipeline = _script(f"""
        import time
        from pathlib import Path
        from o1pruner.runs import RunDir
        run = RunDir(Path({str(run.root)!r}))
        run.update_job(state="done", stage="train", pid=2**22 + 7, pgid=2**22 + 7)
        Path(run.root / "wrote").write_text("1")
        time.sleep(120)
    """)
    jobs.launch(run, ["run"], program=pipeline)
    _wait(lambda: (run.root / "wrote").exists())
    assert jobs.status(run)["state"] == "running"
    assert jobs.stop(run, timeout=5)["state"] == "stopped"
