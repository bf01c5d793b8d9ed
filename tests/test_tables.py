"""Tables and logs that read (#30 item 10), below the browser: terminal codes stripped from
the log, accuracy in %, "no answer" for an answer not found, headers on empty tables,
numeric order of step models, whole numbers as integers and Stop only for a running job."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from o1pruner import explore
from o1pruner.evaluation.compare import _show
from webui.explore_tab import SAMPLE_COLUMNS, _table
from webui.live import TextTail
from webui.runs_tab import stop_button
from webui.text import natural_key


def _tqdm_log(path: Path) -> None:
    """What a stage with two tqdm bars writes to a file: carriage returns and cursor-up
    codes (ESC[A)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write("presample: engine hf\n")
        with tqdm(total=2, desc="presample", file=fh, position=0, ascii=True) as outer:
            for _ in range(2):
                with tqdm(total=3, desc="batch", file=fh, position=1, leave=False,
                          ascii=True) as inner:
                    for _ in range(3):
                        inner.update(1)
                outer.update(1)
        fh.write("train: done\n")


def test_the_log_view_drops_terminal_codes_of_nested_tqdm_bars(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    _tqdm_log(log)
    assert "\x1b[A" in log.read_text()  # what tqdm really writes
    tail = TextTail(log)
    tail.read_new()
    text = tail.text()
    assert "\x1b" not in text and "[A" not in text
    assert text.splitlines()[0] == "presample: engine hf" and "train: done" in text


def test_a_partial_line_shows_without_codes(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with open(log, "w") as fh, tqdm(total=4, desc="eval", file=fh, position=1, ascii=True) as bar:
        bar.update(2)
        fh.flush()
        tail = TextTail(log)
        tail.read_new()
        assert "\x1b" not in tail.text() and "eval" in tail.text()


def test_an_answer_not_found_reads_no_answer() -> None:
    assert explore.answer_text(None) == explore.NO_ANSWER == "no answer"
    assert explore.answer_text("  ") == "no answer" and explore.answer_text("42") == "42"


def test_empty_tables_keep_their_headers() -> None:
    assert list(_table([], explore.PROBLEM_COLUMNS).columns) == list(explore.PROBLEM_COLUMNS)
    assert list(_table([], SAMPLE_COLUMNS).columns) == list(SAMPLE_COLUMNS)
    assert list(_table([], explore.pair_columns("a", "b")).columns)[:4] == [
        "problem", "gold", "a", "a tokens"]
    assert "accuracy %" in explore.PROBLEM_COLUMNS


def test_step_models_sort_by_their_number() -> None:
    names = ["r/train/models/step-12", "r/train/models/step-3", "r/train/final"]
    assert sorted(names, key=natural_key) == [
        "r/train/final", "r/train/models/step-3", "r/train/models/step-12"]


def test_whole_numbers_of_a_spec_show_as_integers() -> None:
    assert (_show(2.0), _show(6.0), _show(1e-5), _show("x")) == ("2", "6", "1e-05", "x")


def test_stop_is_red_and_clickable_only_while_the_job_runs() -> None:
    assert stop_button("running") == {"__type__": "update", "variant": "stop",
                                      "interactive": True}
    for state in ("done", "failed", "stopped", None):
        update = stop_button(state)
        assert update["variant"] == "secondary" and update["interactive"] is False
