"""Progress that lives (#30 item 7): an ETA from the steps since a resume, elapsed time that
ticks between events, and tokens generated within a batch."""

from __future__ import annotations

import json
from pathlib import Path

from o1pruner.jobs import RunDir
from o1pruner.jobs.progress import TOKEN_INTERVAL, Progress
from o1pruner.sampling.engines import HFEngine, counting_tokens
from o1pruner.spec import ModelSpec
from webui.live import LiveView


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress_events(run: RunDir) -> list[dict]:
    return [e for e in run.events() if e["kind"] == "progress"]


def test_the_eta_after_a_resume_counts_the_steps_since_then_not_the_warm_up(
        tmp_path: Path) -> None:
    run, clock = RunDir(tmp_path / "run"), Clock()
    (tmp_path / "run").mkdir()
    # resumed at step 7 of 36: 55 s of loading and a slow first step, then 5 s a step
    progress = Progress(run, "train", total=36, initial=7, unit="step", clock=clock)
    clock.now += 60
    progress.update(1)
    for _ in range(3):
        clock.now += 5
        progress.update(1)
    last = _progress_events(run)[-1]
    assert last["done"] == 11 and last["eta_s"] == 25 * 5.0
    assert last["elapsed_s"] == 75.0  # since this process started the stage


def test_tokens_within_a_batch_are_reported_and_the_batch_end_at_once(tmp_path: Path) -> None:
    run, clock = RunDir(tmp_path / "run"), Clock()
    (tmp_path / "run").mkdir()
    progress = Progress(run, "presample", total=4, unit="problem", clock=clock)
    for _ in range(3):
        clock.now += TOKEN_INTERVAL
        progress.tokens(40)
    assert [e.get("tokens") for e in _progress_events(run)] == [None, 40, 80, 120]
    clock.now += 0.1  # well within the rate limit: the finished batch is still reported
    progress.update(2)
    last = _progress_events(run)[-1]
    assert last["done"] == 2 and "tokens" not in last


def test_a_transformers_engine_reports_every_generated_token(tiny_model_dir: Path) -> None:
    engine = HFEngine(ModelSpec(name_or_path=str(tiny_model_dir)), str(tiny_model_dir),
                      batch_size=3)
    steps: list[int] = []
    with counting_tokens(steps.append):
        groups = engine.generate(["1 + 1 =", "Say hi"], 2, temperature=1.0, top_p=1.0,
                                 max_new_tokens=12, seed=3)
    assert len(steps) > 1  # per decoding step, not per batch
    assert sum(steps) == sum(c.num_tokens for group in groups for c in group)
    engine.generate(["1 + 1 ="], 1, temperature=0.0, top_p=1.0, max_new_tokens=4)
    assert sum(steps) == sum(c.num_tokens for group in groups for c in group)  # none now


def _write_events(run: RunDir, *events: dict) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    with open(run.events_path, "a") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")


def test_elapsed_ticks_and_the_eta_counts_down_between_events(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _write_events(run, {"time": 5000.0, "kind": "progress", "stage": "presample", "done": 1,
                        "total": 3, "unit": "problem", "elapsed_s": 10.0, "eta_s": 300.0,
                        "tokens": 1234})
    view = LiveView(run)
    view.poll()
    html = view.progress_html(running=True, now=5000.0 + 125)
    assert "elapsed 2m15s" in html and "ETA 2m55s" in html
    assert "generating: 1,234 tokens so far" in html
    stopped = view.progress_html(running=False, now=5000.0 + 125)
    assert "elapsed 0m10s" in stopped and "ETA -" in stopped and "generating" not in stopped


def test_only_the_active_phase_ticks(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _write_events(run, {"time": 100.0, "kind": "progress", "stage": "presample", "done": 2,
                        "total": 3, "unit": "problem", "elapsed_s": 50.0, "eta_s": 25.0},
                  {"time": 200.0, "kind": "progress", "stage": "train", "done": 0,
                   "total": 9, "unit": "step", "elapsed_s": 0.0, "eta_s": None})
    view = LiveView(run)
    view.poll()
    html = view.progress_html(running=True, now=260.0)
    presample, train = html.split("data-stage='train'")
    assert "elapsed 0m50s" in presample  # an earlier phase (a stopped pre-sampling) stays
    assert "elapsed 1m00s" in train
