"""`run.rounds: 2` through `o1pruner run` on a tiny model: round 2 pre-samples from round
1's trained model and trains from it in its own folder, the evaluation reports each round
against the base, and a re-run finds every round done."""

from __future__ import annotations

import json

import pytest
import yaml

from o1pruner.files import read_json, read_jsonl
from tests.test_pipeline import N_TRAIN, K, run_cli, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory):
    from tests.tiny_model import build_stopping_model

    tmp = tmp_path_factory.mktemp("rounds")
    spec_path = write_spec(tmp, build_stopping_model(tmp / "model"))
    spec = yaml.safe_load(spec_path.read_text())
    spec["run"]["rounds"] = 2
    spec_path.write_text(yaml.safe_dump(spec))
    result = run_cli(spec_path, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return spec_path, tmp / "runs" / "e2e", result, tmp


def test_round_two_starts_from_round_one_model_in_its_own_folder(two_rounds):
    _, run, _, _ = two_rounds
    round2 = run / "rounds" / "round-2"
    spec = yaml.safe_load((round2 / "spec.yaml").read_text())
    assert spec["model"]["name_or_path"] == str((run / "train" / "final").resolve())
    assert spec["run"]["rounds"] == 1
    # pre-sampled on the same training problems, by the round-1 model
    first = read_jsonl(run / "presample" / "samples.jsonl")
    second = read_jsonl(round2 / "presample" / "samples.jsonl")
    assert len(second) == N_TRAIN * K
    assert {s["problem_id"] for s in second} == {s["problem_id"] for s in first}
    assert [s["completion"] for s in second] != [s["completion"] for s in first]
    keys = [read_json(p) for p in (run / "rounds").glob(".cache/presample/*/key.json")]
    assert [k["model"]["path"] for k in keys] == [str((run / "train" / "final").resolve())]
    # rewards against round 2's own averages
    stats = {s["problem_id"]: s for s in read_jsonl(round2 / "presample" / "problem_stats.jsonl")}
    for pid, stat in stats.items():
        mine = [s["num_tokens"] for s in second if s["problem_id"] == pid]
        assert stat["mean_length"] == pytest.approx(sum(mine) / len(mine))
    assert (round2 / "train" / "final" / "config.json").exists()
    summary = read_json(round2 / "train" / "summary.json")
    assert summary["steps"] > 0


def test_evaluation_reports_every_round_against_the_base(two_rounds):
    _, run, result, _ = two_rounds
    results = read_json(run / "eval" / "results.json")
    assert results["methods"] == ["base", "round-1", "trained"]
    assert results["rounds"] == 2
    assert results["models"]["round-1"]["path"] == str(run / "train" / "final")
    trained = results["models"]["trained"]["path"]
    assert trained == str((run / "rounds" / "round-2" / "train" / "final").resolve())
    for label in ("round-1", "trained"):
        assert results["comparison"][label]["AVG"]["d_len"] is not None
        assert results["comparison"][label]["arithmetic_test"]["interval"]["problems"] > 0
    assert "round-1: accuracy" in result.stdout and "trained: accuracy" in result.stdout
    report = (run / "report" / "report.md").read_text()
    assert "(round 2, the last)" in report and "| round-1 |" in report
    stages = [e for e in read_jsonl(run / "events.jsonl") if e["kind"] == "round"]
    assert [(e["round"], e["state"]) for e in stages] == [(2, "started"), (2, "started"),
                                                          (2, "done")]


def test_a_rerun_finds_every_round_done(two_rounds):
    spec_path, run, _, tmp = two_rounds
    final = run / "rounds" / "round-2" / "train" / "final"
    before = {p.name: p.stat().st_mtime_ns for p in final.iterdir()}
    result = run_cli(spec_path, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in final.iterdir()} == before
    events = [json.loads(line) for line in
              (run / "rounds" / "round-2" / "events.jsonl").read_text().splitlines()]
    skipped = {e["stage"] for e in events if e["kind"] == "skipped"}
    assert {"presample", "train"} <= skipped


def test_the_runs_tab_shows_a_bar_for_each_stage_of_a_later_round(two_rounds):
    from o1pruner.jobs import RunDir
    from webui.live import LiveView

    _, run, _, _ = two_rounds
    view = LiveView(RunDir(run))
    view.poll()
    assert {"presample", "train", "eval", "round-2 presample", "round-2 train",
            "round-2 reference pass"} <= set(view.progress)
    assert "data-stage='round-2 train'" in view.progress_html(running=False)
    # the curves: a series per round, each against its own steps
    loss = view.curve("loss")
    assert set(loss["series"]) == {"round-1 train loss", "round-2 train loss"}
    steps = read_json(run / "rounds" / "round-2" / "train" / "summary.json")["steps"]
    assert list(loss[loss["series"] == "round-2 train loss"]["x"]) == list(range(1, steps + 1))
    length = view.curve("mean sample length")
    assert "round-2 presample mean_length" in set(length["series"])
    fig = view.curves_figure()
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert "round-2 presample mean_length" in legend and "round-2 train loss" not in legend


def test_a_sweep_report_has_a_row_per_round(two_rounds, tmp_path):
    import shutil

    from o1pruner.sweep import plan_sweep, point_status, save_definition
    from o1pruner.sweep_report import sweep_rows

    spec_path, run, _, _ = two_rounds
    sweep = plan_sweep(spec_path, ["run.rounds=2"], "0", name="r")
    save_definition(sweep)
    shutil.copytree(run, sweep.run_dir(sweep.points[0]).root, symlinks=True)
    data = sweep_rows(sweep, [point_status(sweep.run_dir(p)) for p in sweep.points])
    assert [r["label"] for r in data["rows"]] == [
        "base", "rounds=2 · round-1", "rounds=2 · round-2"]
    results = read_json(run / "eval" / "results.json")
    first = data["rows"][1]["metrics"]["arithmetic_test"]["tokens"]["mean"]
    assert first == results["metrics"]["round-1"]["arithmetic_test"]["mean_tokens"]


def test_export_and_the_pickers_take_the_last_round_unless_told(two_rounds, tmp_path):
    from o1pruner.errors import UserError
    from o1pruner.export import export_model
    from tests.test_export import weights
    from webui.export_tab import checkpoint_choices, export_argv
    from webui.playground_tab import model_choices
    from webui.workspace import Workspace

    _, run, _, tmp = two_rounds
    finals = {1: run / "train" / "final", 2: run / "rounds" / "round-2" / "train" / "final"}
    results = read_json(run / "eval" / "results.json")
    for r, label, out in ((2, "trained", tmp_path / "last"), (1, "round-1", tmp_path / "r1")):
        result = export_model(run, out, round=None if r == 2 else r)
        assert result.source == str(finals[r].relative_to(run))
        saved = weights(finals[r])
        assert all(torch_equal(v, saved[k]) for k, v in weights(out).items())
        card = (out / "README.md").read_text()
        assert f"round {r} of 2" in card and f"(`{label}` in the run's eval/results" in card
        row = next(line for line in card.splitlines() if line.startswith("| arithmetic_test"))
        metrics = results["metrics"][label]["arithmetic_test"]
        assert f"| {metrics['mean_tokens']:.0f} |" in row.split("|", 6)[-1]
        assert f"{100 * metrics['accuracy']:.1f}%" in row
    assert any(not torch_equal(v, weights(finals[1])[k])
               for k, v in weights(finals[2]).items())
    with pytest.raises(UserError, match=r"--round 3: .* has 2 rounds"):
        export_model(run, tmp_path / "x", round=3)
    # the Export tab: every round's models, the last round first; an earlier round's
    # choice becomes --round
    ws = Workspace.open(tmp)
    run_id = ws.relative(run)
    choices = checkpoint_choices(ws, run_id)
    assert choices[0] == ("round 2: final model (rounds/round-2/train/final) (the run's "
                          "trained model)", "final")
    assert ("round 1: final model (train/final)", "1:final") in choices
    _, argv = export_argv(ws, run_id, "1:final", False, None, "exports/r1", False)
    assert argv[-2:] == ["--round", "1"]
    _, argv = export_argv(ws, run_id, "final", False, None, "exports/r2", False)
    assert "--round" not in argv
    # the Playground: B is the last round's model, every round's model is offered
    choices, base, trained = model_choices(ws, run_id)
    assert trained == ws.relative(finals[2])
    assert ws.relative(finals[1]) in choices and trained in choices


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_earlier_rounds_off_evaluates_only_the_base_and_the_last_round(two_rounds):
    from o1pruner.evaluation.runner import plan_methods
    from o1pruner.jobs import RunDir
    from o1pruner.specio import load_spec

    spec_path, run, _, _ = two_rounds
    spec = load_spec(spec_path)
    assert [m.label for m in plan_methods(spec, RunDir(run), None)] == [
        "base", "round-1", "trained"]
    methods = plan_methods(load_spec(spec_path, ["eval.earlier_rounds=false"]), RunDir(run),
                           None)
    assert [m.label for m in methods] == ["base", "trained"]
    assert methods[1].path == str((run / "rounds" / "round-2" / "train" / "final").resolve())


def test_raising_the_rounds_of_a_finished_run_keeps_what_is_done(two_rounds):
    # round 3 is added: rounds 1 and 2 are not pre-sampled, trained or evaluated again
    # (round 2's model, evaluated as `trained`, is now `round-2`: its generations are reused)
    spec_path, run, _, tmp = two_rounds
    before = (run / "eval" / "trained" / "arithmetic_test" / "generations.jsonl").read_text()
    round2 = run / "rounds" / "round-2" / "train" / "final"
    stamp = {p.name: p.stat().st_mtime_ns for p in round2.iterdir()}
    spec = yaml.safe_load(spec_path.read_text())
    spec["run"]["rounds"] = 3
    spec_path.write_text(yaml.safe_dump(spec))
    result = run_cli(spec_path, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in round2.iterdir()} == stamp
    results = read_json(run / "eval" / "results.json")
    assert results["methods"] == ["base", "round-1", "round-2", "trained"]
    assert results["models"]["trained"]["path"].endswith("rounds/round-3/train/final")
    assert (run / "eval" / "round-2" / "arithmetic_test" / "generations.jsonl").read_text() \
        == before
    log = (run / "logs" / "eval.log").read_text()
    assert "generations of the same model and settings found in" in log
    spec3 = yaml.safe_load((run / "rounds" / "round-3" / "spec.yaml").read_text())
    assert spec3["model"]["name_or_path"] == str(round2.resolve())
