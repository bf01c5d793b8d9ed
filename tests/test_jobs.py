"""Job control with real processes: launch detached, one job per run directory (the lock),
status from files, process identity, stop without loss, re-attach, and damaged files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.files import CorruptFileError, atomic_write_json, read_jsonl
from o1pruner.jobs import JobRunning, RunDir, RunLock, control, procs
from o1pruner.spec import RunSpec

PY = [sys.executable, "-c"]
REPO = Path(__file__).resolve().parents[1]


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
    assert job["start"] == procs.start_time(job["pid"])  # identity: pid and start time
    assert job["command"][:3] == [sys.executable, "-m", "o1pruner.cli"]
    assert os.getsid(job["pid"]) == job["pid"]  # its own session
    _wait(lambda: jobs.status(run)["state"] != "running")
    final = jobs.status(run)
    assert final["state"] == "done" and final["exit_code"] == 0
    assert "schema_version: 1" in (run.root / "logs" / "worker.log").read_text()
    assert json.loads(run.job_path.read_text())["state"] == "done"


def test_failure_report_gives_the_message_first_then_the_log_tail(tmp_path: Path) -> None:
    run = _run(tmp_path)
    fail = _script("import sys; print('loading model'); print('boom: bad row', file=sys.stderr);"
                   " sys.exit(3)")
    jobs.launch(run, ["presample"], program=fail)
    _wait(lambda: jobs.status(run)["state"] != "running")
    assert jobs.status(run)["exit_code"] == 3
    report = jobs.failure_report(run)
    assert report.splitlines()[0] == "worker exited with code 3"
    assert "(stage presample, exit code 3)" in report
    assert report.index("worker exited") < report.index("boom: bad row")


def test_a_second_launch_is_refused_and_changes_no_file(tmp_path: Path) -> None:
    run = _run(tmp_path)
    jobs.launch(run, ["presample", str(tmp_path / "pid")], program=SLEEPER,
                spec_text=RunSpec().to_yaml())
    spec_before, job_before = run.spec_path.read_bytes(), run.job_path.read_bytes()
    try:
        with pytest.raises(JobRunning, match=r"(?s)already running.*pid \d+ \(`.*presample"):
            jobs.launch(run, ["train"], program=SLEEPER, spec_text="run: {name: other}\n")
        assert run.spec_path.read_bytes() == spec_before
        assert run.job_path.read_bytes() == job_before
        with pytest.raises(UserError, match="stop it before deleting"):
            jobs.delete_run(run)
    finally:
        jobs.stop(run, timeout=5)


def test_two_launches_from_threads_start_exactly_one_job(tmp_path: Path) -> None:
    run = _run(tmp_path)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        try:
            jobs.launch(run, ["presample", str(tmp_path / "pid")], program=SLEEPER)
            outcomes.append("started")
        except JobRunning:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(outcomes) == ["refused"] * 3 + ["started"]
        assert jobs.status(run)["state"] == "running"
    finally:
        jobs.stop(run, timeout=5)


def test_two_launches_from_processes_start_exactly_one_job(tmp_path: Path) -> None:
    run = _run(tmp_path)
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from o1pruner import jobs
        from o1pruner.jobs import JobRunning, RunDir
        while not Path({str(tmp_path / 'go')!r}).exists():
            time.sleep(0.005)
        try:
            jobs.launch(RunDir(Path({str(run.root)!r})), ["presample", "{tmp_path / 'pid'}"],
                        program={SLEEPER!r})
            print("started")
        except JobRunning:
            print("refused")
    """)
    launchers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  text=True, cwd=REPO) for _ in range(3)]
    time.sleep(1.5)  # let the interpreters start, then release them together
    (tmp_path / "go").write_text("")
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in launchers)
    try:
        assert outcomes == ["refused", "refused", "started"]
    finally:
        jobs.stop(run, timeout=5)


def test_a_terminal_command_is_refused_while_the_ui_job_runs(tmp_path: Path) -> None:
    run = _run(tmp_path)
    jobs.launch(run, ["presample", str(tmp_path / "pid")], program=SLEEPER)
    try:
        with pytest.raises(JobRunning, match="already running"):
            with jobs.job_process(run, "train", spec_text="changed"):
                pass
        assert "changed" not in run.spec_path.read_text()
    finally:
        jobs.stop(run, timeout=5)


def test_the_lock_is_released_by_the_kernel_when_its_holder_is_killed(tmp_path: Path) -> None:
    run = _run(tmp_path)
    job = jobs.launch(run, ["presample", str(tmp_path / "pid")], program=SLEEPER)
    _wait(lambda: (tmp_path / "pid").exists())
    os.killpg(job["pgid"], signal.SIGKILL)
    _wait(lambda: not jobs.status(run)["alive"])
    with RunLock.acquire(run.lock_path):  # free again: no stale lock file to clean up
        pass
    assert jobs.status(run)["state"] == "failed"


def test_stop_terminates_the_whole_process_group_gracefully(tmp_path: Path) -> None:
    run = _run(tmp_path)
    saved = tmp_path / "checkpoint"
    graceful = _script(f"""
        import signal, subprocess, sys, time
        from pathlib import Path
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path(sys.argv[2]).write_text(str(child.pid))
        def on_term(*_):
            time.sleep(1.0)  # saving takes a while: the job is "stopping" meanwhile
            Path({str(saved)!r}).write_text("saved")
            child.terminate(); sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        time.sleep(120)
    """)
    job = jobs.launch(run, ["train", str(tmp_path / "pid")], program=graceful)
    _wait(lambda: (tmp_path / "pid").exists())
    grandchild = int((tmp_path / "pid").read_text())
    assert procs.group_alive(job["pgid"])
    asked = jobs.request_stop(run, timeout=30)
    assert asked["state"] == "stopping"  # returns at once, while the job saves
    assert jobs.status(run)["state"] == "stopping"
    final = jobs.stop(run)
    assert final["state"] == "stopped" and final["stop"]["signal"] == "SIGTERM"
    assert saved.read_text() == "saved"
    assert not procs.group_alive(job["pgid"]) and not procs.pid_alive(grandchild)
    assert jobs.status(run)["state"] == "stopped"


def test_stop_escalates_to_sigkill_after_the_deadline(tmp_path: Path) -> None:
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
    assert final["state"] == "stopped" and final["stop"]["signal"] == "SIGKILL"
    assert "SIGKILL" in final["message"]
    assert not procs.group_alive(job["pgid"])


def test_the_stop_deadline_comes_from_the_spec(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.spec_path.write_text(RunSpec.model_validate({"run": {"stop_timeout": 42}}).to_yaml())
    assert jobs.stop_timeout_of(run) == 42
    run.spec_path.write_text("a: &a [*a]\n")  # unreadable: the default, no error
    assert jobs.stop_timeout_of(run) == control.DEFAULT_STOP_TIMEOUT


def _launch_from_another_process(run: RunDir, program: list[str], argv: list[str]) -> None:
    """Launch through a short-lived process, as a web UI server that is then restarted."""
    code = ("import sys, json; from pathlib import Path; from o1pruner import jobs; "
            "from o1pruner.jobs import RunDir; "
            f"jobs.launch(RunDir(Path({str(run.root)!r})), {argv!r}, program={program!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


def test_a_fresh_status_reattaches_to_a_job_started_by_a_dead_launcher(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _launch_from_another_process(run, SLEEPER, ["presample", str(tmp_path / "pid")])
    job = jobs.status(run)  # this process never saw the launch: state comes from files
    assert job["state"] == "running" and job["alive"]
    assert job["pid"] not in control._CHILDREN
    final = jobs.stop(run, timeout=5)
    assert final["state"] == "stopped" and not procs.group_alive(job["pgid"])


def test_worker_gone_without_final_state_is_failed_with_unknown_exit_code(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _launch_from_another_process(run, [*PY, "import sys; sys.exit(4)"], ["eval"])
    _wait(lambda: jobs.status(run)["state"] != "running")
    job = jobs.status(run)
    assert job["state"] == "failed" and job["exit_code"] is None
    assert "exit code unknown" in jobs.failure_report(run)


def test_a_stale_pid_reused_by_another_process_is_neither_believed_nor_signalled(
        tmp_path: Path) -> None:
    run = _run(tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)
    try:
        real = procs.start_time(stranger.pid)
        assert procs.pid_alive(stranger.pid, real)
        assert not procs.pid_alive(stranger.pid, real - 1)
        # job.json names the stranger's pid, as if an old worker had had it
        run.update_job(state="running", stage="train", pid=stranger.pid, pgid=stranger.pid,
                       start=real - 1)
        assert jobs.status(run)["state"] == "failed"  # not "running"
        run.update_job(state="running", stop=None)
        jobs.request_stop(run, timeout=1)
        time.sleep(0.3)
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_stage_writing_done_mid_pipeline_does_not_end_the_job(tmp_path: Path) -> None:
    run = _run(tmp_path)
    pipeline = _script(f"""
        import time
        from pathlib import Path
        from o1pruner.jobs import RunDir
        run = RunDir(Path({str(run.root)!r}))
        run.update_stage("train", state="done")
        run.update_job(state="done", stage="train")  # as a confused stage might
        Path(run.root / "wrote").write_text("1")
        time.sleep(120)
    """)
    jobs.launch(run, ["run"], program=pipeline)
    _wait(lambda: (run.root / "wrote").exists())
    assert jobs.status(run)["state"] == "running"
    assert jobs.stop(run, timeout=5)["state"] == "stopped"


def test_a_registered_process_keeps_the_job_alive_and_blocks_a_new_start(
        tmp_path: Path) -> None:
    """A training rank outlives its launcher for a moment while it saves: the job is still
    running, and no second job may start until it has gone."""
    run = _run(tmp_path)
    rank = subprocess.Popen([*PY, textwrap.dedent(f"""
        import time
        from pathlib import Path
        from o1pruner import jobs
        from o1pruner.jobs import RunDir
        jobs.register_process(RunDir(Path({str(run.root)!r})), "train rank 1")
        time.sleep(60)
    """)], cwd=REPO, start_new_session=True)
    try:
        _wait(lambda: len(jobs.registered_processes(run)) == 1)
        run.update_job(state="running", stage="train", pid=2**22 + 11, pgid=2**22 + 11,
                       start=1)  # the leader is gone (kill -9)
        assert jobs.status(run)["state"] == "running"
        with pytest.raises(JobRunning, match="still exiting"):
            jobs.launch(run, ["train"], program=SLEEPER)
        final = jobs.stop(run, timeout=5)
        assert final["state"] == "stopped" and rank.wait(timeout=10) != 0
        assert jobs.registered_processes(run) == []
    finally:
        rank.kill()
        rank.wait()


def test_a_child_stops_itself_when_its_parent_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        from o1pruner import jobs
        def on_term(*_):
            Path({str(marker)!r}).write_text("saved and stopped")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        jobs.watch_parent(interval=0.1)
        print("ready", flush=True)
        time.sleep(60)
    """))
    parent = subprocess.Popen([*PY, textwrap.dedent(f"""
        import subprocess, sys, time
        from o1pruner import jobs
        subprocess.Popen([sys.executable, {str(child)!r}], env=jobs.child_env())
        time.sleep(60)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"
    parent.kill()  # kill -9: no handler of the parent runs
    parent.wait()
    _wait(lambda: marker.exists(), timeout=10)
    assert marker.read_text() == "saved and stopped"


# ---------------------------------------------------------------- damaged files
def test_an_unreadable_job_json_is_reported_and_the_history_still_works(
        tmp_path: Path) -> None:
    good, binary, listy = _run(tmp_path, "good"), _run(tmp_path, "binary"), _run(tmp_path, "listy")
    good.update_job(state="done", started_at=time.time())
    binary.job_path.write_bytes(b"\xff\xfe\x00garbage")
    listy.job_path.write_text("[1, 2]\n")
    assert jobs.status(binary)["state"] == "unreadable"
    assert "not UTF-8" in jobs.status(binary)["message"]
    assert "expected a JSON object" in jobs.failure_report(listy)
    rows = {r["name"]: r for r in jobs.list_runs(tmp_path / "runs")}
    assert rows["good"]["state"] == "done"
    assert rows["binary"]["state"] == rows["listy"]["state"] == "unreadable"
    assert "job.json" in rows["listy"]["message"]


def test_a_hostile_spec_in_a_run_directory_does_not_break_the_history(tmp_path: Path) -> None:
    run = _run(tmp_path, "bomb")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    run.spec_path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    (row,) = jobs.list_runs(tmp_path / "runs")
    assert time.monotonic() - started < 1.0
    assert row["state"] == "unreadable" and "expands to more than" in row["message"]


def test_a_damaged_jsonl_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n{"a": 4')  # line 2 damaged, line 4 torn
    with pytest.raises(CorruptFileError, match=r"samples.jsonl, line 2: not a valid JSON "
                       r"record .* delete that line"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n{"a": 3}\n{"a": 4')  # only a torn tail: skipped silently
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]


def test_list_runs_gives_history_rows_with_parameters_results_and_adhoc_evals(
        tmp_path: Path) -> None:
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
    adhoc = new.adhoc("ckpt-1234abcd")
    adhoc.root.mkdir(parents=True)
    adhoc.update_job(state="failed", stage="eval", started_at=time.time() + 1,
                     command=["o1pruner", "eval", "x", "--model", "models/ckpt"])
    (tmp_path / "runs" / "not-a-run").mkdir()
    rows = jobs.list_runs(tmp_path / "runs")
    assert [r["name"] for r in rows] == ["ckpt-1234abcd", "new", "old"]
    assert rows[0]["kind"] == "eval" and rows[0]["model"] == "models/ckpt"
    assert rows[1]["state"] == "done" and rows[2]["state"] == "created"
    assert rows[1]["parameters"]["K"] == 4 and rows[1]["parameters"]["lambda"] == 5
    assert rows[1]["model"] == "pypi:smollm2-135m-instruct"
    assert rows[1]["results"] == ("base: acc 50.0% / 16.0 tok; "
                                  "trained: acc 50.0% / 12.0 tok / AES 0.25")
    jobs.delete_run(old)
    assert not old.root.exists()
    assert jobs.list_runs(tmp_path / "missing") == []


def test_a_job_inside_another_process_group_is_stopped_alone(tmp_path: Path) -> None:
    """A job started by a script or a test runner lives in their process group: Stop must
    signal the job's own processes, never that group (here: pytest's)."""
    run = _run(tmp_path)
    worker = subprocess.Popen([*PY, textwrap.dedent(f"""
        import time
        from pathlib import Path
        from o1pruner import jobs
        from o1pruner.jobs import RunDir
        with jobs.job_process(RunDir(Path({str(run.root)!r})), "train"):
            time.sleep(60)
    """)], cwd=REPO)  # no new session: pytest's group
    try:
        _wait(lambda: run.read_job().get("pid") == worker.pid)
        assert os.getpgid(worker.pid) == os.getpgid(0)
        assert run.read_job()["pgid"] is None
        assert jobs.stop(run, timeout=10)["state"] == "stopped"
        assert worker.wait(timeout=10) == -signal.SIGTERM
    finally:
        worker.kill()
        worker.wait()
