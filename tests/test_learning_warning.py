"""A run that cannot learn says so where the user looks (#30 item 4): the training stage
records the cause and the fix as a `warnings` event, and the status line (CLI and studio),
the Samples explorer and the evaluation results all show it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from o1pruner import explore, jobs
from o1pruner.analysis import learning_warning
from o1pruner.evaluation import run_eval
from o1pruner.evaluation.report import headline_lines
from o1pruner.files import atomic_write_text, read_json, read_jsonl
from o1pruner.jobs import current_warnings, run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.training import run_train
from tests.presample_files import make_spec, write_presample
from webui.live import LiveView, job_markdown

MAX_NEW = 12


def _truncate_every_sample(presample: Path) -> None:
    """Every pre-sample cut at max_new_tokens (one length) and wrong, as SmolLM2 gives at
    32-48 tokens: every reward is 0."""
    samples = read_jsonl(presample / "samples.jsonl")
    stats = read_jsonl(presample / "problem_stats.jsonl")
    for s in samples:
        s.update(num_tokens=MAX_NEW, correct=False, finish_reason="length", extracted=None)
    for st in stats:
        st.update(mean_length=float(MAX_NEW), mean_accuracy=0.0)
    for name, rows in (("samples.jsonl", samples), ("problem_stats.jsonl", stats)):
        atomic_write_text(presample / name, "".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def stuck(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """A real run (tiny model) whose pre-samples all hit max_new_tokens: trained, then
    evaluated."""
    spec = make_spec(tiny_model_dir, tmp_path_factory.mktemp("stuck"), "stuck",
                     presample={"max_new_tokens": MAX_NEW},
                     data={"eval_limit": 2, "local_dir": str(data_dir)},
                     eval={"benchmarks": ["arithmetic_test"], "max_new_tokens": 4,
                           "engine": "hf", "batch_size": 2})
    run = run_dir_for(spec)
    run.write_spec(spec.to_yaml())
    tokenizer = load_tokenizer(spec.model, str(tiny_model_dir))
    _truncate_every_sample(write_presample(run.root, tokenizer, n_problems=4, k=2))
    run_train(spec)
    return spec, run


def test_training_records_the_cause_and_the_fix_as_an_event(stuck) -> None:
    _, run = stuck
    (warning,) = current_warnings(run.events())
    assert warning["code"] == "no_learning_signal"
    assert f"hit max_new_tokens {MAX_NEW}" in warning["message"]
    assert "raise presample.max_new_tokens" in warning["fix"]


def test_a_run_that_can_learn_records_no_warning(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(tiny_model_dir, tmp_path, "fine")
    run = run_dir_for(spec)
    write_presample(run.root, load_tokenizer(spec.model, str(tiny_model_dir)), n_problems=2)
    run_train(spec)
    assert [e["items"] for e in run.events() if e["kind"] == "warnings"] == [[]]
    assert current_warnings(run.events()) == []


def test_the_cli_status_line_says_it(stuck) -> None:
    _, run = stuck
    out = subprocess.run([sys.executable, "-m", "o1pruner.cli", "status", str(run.root)],
                         capture_output=True, text=True, check=True).stdout
    assert "warning: training cannot change the model" in out
    assert "raise presample.max_new_tokens" in out


def test_the_studio_status_line_and_results_area_say_it(stuck) -> None:
    _, run = stuck
    view = LiveView(run)
    view.poll()
    line = job_markdown(run, jobs.status(run), view.choices)
    assert "**warning: training cannot change the model" in line
    assert f"max\\_new\\_tokens {MAX_NEW}" not in line  # our text, only markup escaped
    assert f"max_new_tokens {MAX_NEW}: raise presample.max_new_tokens" in line
    assert "training cannot change the model" in view.presample_markdown()


def test_the_samples_explorer_header_says_it(stuck) -> None:
    spec, run = stuck
    view = explore.load_presample_view(spec, run.root)
    assert view.warning is not None and "every reward is 0" in view.warning
    assert "raise presample.max_new_tokens" in view.warning


def test_the_results_say_it(stuck) -> None:
    spec, run = stuck
    results = run_eval(spec)
    assert read_json(run.results_path)["warnings"] == current_warnings(run.events())
    assert "training cannot change the model" in headline_lines(results)[0]
    report = (run.root / "report" / "report.md").read_text()
    assert "**Warning: training cannot change the model" in report


def test_no_correct_sample_says_training_only_shortens() -> None:
    samples = {"p0": [{"correct": False, "finish_reason": "stop", "num_tokens": 5},
                      {"correct": False, "finish_reason": "length", "num_tokens": 9}]}
    warning = learning_warning(samples, [0.3, -0.3], "lh", 9)
    assert warning is not None and warning["code"] == "no_correct_sample"
    assert "0 of 2" in warning["message"]


def test_problems_without_both_grades_are_named_as_the_cause() -> None:
    samples = {"p0": [{"correct": True, "finish_reason": "stop", "num_tokens": 5}] * 2,
               "p1": [{"correct": False, "finish_reason": "length", "num_tokens": 9}] * 2}
    warning = learning_warning(samples, [0.0] * 4, "lh", 9)
    assert warning is not None and "both right and wrong" in warning["message"]
    assert "presample.k" in warning["fix"]
