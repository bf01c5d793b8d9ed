"""`o1pruner sweep`: the grid, the queue (one run per point, resumable), shared
pre-samples and base evaluation, and the report with intervals over seeds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from o1pruner.errors import UserError
from o1pruner.files import read_jsonl
from o1pruner.specio import load_spec
from o1pruner.sweep import parse_grid, plan_sweep, point_run_spec, queue_order
from o1pruner.sweep_report import mean_ci
from tests.test_pipeline import write_spec

REPO = Path(__file__).resolve().parents[1]


def test_grid_values_are_yaml_scalars_and_errors_name_the_item():
    assert parse_grid(["reward.lambda=0.5,1,2", "train.method=lh,sft"]) == [
        ("reward.lambda", [0.5, 1, 2]), ("train.method", ["lh", "sft"])]
    for bad, words in (("reward.lambda", "expected FIELD=V1,V2"),
                       ("reward.lambda=1,1", "twice"), ("=1,2", "expected FIELD")):
        with pytest.raises(UserError, match=words):
            parse_grid([bad])
    with pytest.raises(UserError, match="given twice"):
        parse_grid(["reward.lambda=1", "reward.lambda=2"])


def test_points_are_every_combination_times_seeds_and_invalid_values_are_refused(
        tmp_path, tiny_model_dir):
    spec = write_spec(tmp_path, tiny_model_dir)
    sweep = plan_sweep(spec, ["reward.lambda=0.5,2", "train.method=lh,sft"], "0,1")
    assert len(sweep.points) == 8 and len({p.name for p in sweep.points}) == 8
    assert {(p.values["reward.lambda"], p.values["train.method"], p.seed)
            for p in sweep.points} == {(lam, m, s) for lam in (0.5, 2) for m in ("lh", "sft")
                                       for s in (0, 1)}
    assert sweep.root == tmp_path / "runs" / "sweeps" / sweep.name
    with pytest.raises(UserError, match=r"sweep point .*reward.lambda|lambda"):
        plan_sweep(spec, ["reward.lambda=-1,1"])
    with pytest.raises(UserError, match="no_such"):
        plan_sweep(spec, ["train.no_such=1,2"])
    with pytest.raises(UserError, match="--seeds"):
        plan_sweep(spec, [], "0,x")
    paper = plan_sweep(spec, [], preset="paper-table")
    assert [p.values for p in paper.points] == [
        {"train.method": "sft", "reward.samples_per_problem": 2},
        {"train.method": "dpo", "reward.samples_per_problem": 2}, {"train.method": "lh"}]
    crossed = plan_sweep(spec, ["reward.lambda=1,2"], preset="paper-table")
    assert len(crossed.points) == 6 and crossed.points[-1].values == {
        "train.method": "lh", "reward.lambda": 2}


def test_the_peers_preset_adds_the_on_policy_methods_under_the_pre_samples_limit(
        tmp_path, tiny_model_dir):
    spec = write_spec(tmp_path, tiny_model_dir)
    limit = load_spec(spec).presample.max_new_tokens
    peers = plan_sweep(spec, [], "0,1", preset="peers")
    methods = [p.values["train.method"] for p in peers.points]
    assert methods == [m for m in ("sft", "dpo", "lh", "grpo_length", "thinkprune")
                       for _ in (0, 1)]
    for p in peers.points:
        run = point_run_spec(peers.base_yaml, p, peers.seed_fields)
        assert run.eval.fast_solving_prompt
        if p.values["train.method"] in ("grpo_length", "thinkprune"):
            assert run.train.grpo_max_completion_length == limit
            # the tiny spec trains on 2 completions a step: groups of 2, not K, and as
            # many epochs as sample K completions per problem (the pre-samples' budget)
            assert run.train.grpo_num_generations == 2
            assert run.train.epochs == max(1, round(run.presample.k / 2))
        else:
            assert "train.grpo_max_completion_length" not in p.values
    # a field only the on-policy methods take cannot be crossed with the other points
    with pytest.raises(UserError, match=r"sweep point method=sft.*grpo_max_completion_length"):
        plan_sweep(spec, ["train.grpo_max_completion_length=16"], preset="peers")
    # the quickstart's step holds K = 8 completions: groups of K
    quick = plan_sweep(Path(__file__).parents[1] / "templates" / "quickstart.yaml", [],
                       preset="peers", overrides=[f"run.output_root={tmp_path}"])
    assert quick.points[3].values == {"train.method": "grpo_length",
                                      "train.grpo_max_completion_length": 512,
                                      "train.grpo_num_generations": 8, "train.epochs": 1}
    # ThinkPrune's first cap below the pre-samples' limit: half of it, then lowered
    thinkprune = point_run_spec(quick.base_yaml, quick.points[4], quick.seed_fields)
    assert thinkprune.train.grpo_token_limit(1) == 256
    assert thinkprune.train.grpo_token_limit(3) == 128


def test_points_run_seed_by_seed(tmp_path, tiny_model_dir):
    """After one seed's runs the sweep has a whole comparison, not one method's seeds."""
    sweep = plan_sweep(write_spec(tmp_path, tiny_model_dir), ["reward.lambda=1,2,3"], "5,0")
    assert [(p.values["reward.lambda"], p.seed) for p in sweep.points][:2] == [(1, 5), (1, 0)]
    assert [(p.values["reward.lambda"], p.seed) for p in queue_order(sweep.points)] == [
        (1, 5), (2, 5), (3, 5), (1, 0), (2, 0), (3, 0)]


def test_mean_and_t_interval_over_seeds():
    stat = mean_ci([50.0, 52.0, 54.0])
    assert stat["mean"] == 52.0
    # stdev 2, t(0.975, 2) = 4.303: half-width 4.303 * 2 / sqrt(3) = 4.969
    assert stat["ci"] == pytest.approx([52.0 - 4.969, 52.0 + 4.969], abs=1e-3)
    assert mean_ci([3.0])["ci"] is None and mean_ci([])["mean"] is None


def test_a_cached_reference_counts_once_across_seeds(tmp_path):
    # the base and the Fast-Solving Prompt are the same greedy evaluations in every seed's
    # run; only their bootstrap intervals differ (drawn with the run's seed): one row each
    from o1pruner.files import atomic_write_json
    from o1pruner.jobs import RunDir
    from o1pruner.sweep import point_status, save_definition
    from o1pruner.sweep_report import sweep_rows

    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name_or_path: m}\ndata: {train: arithmetic_train}\n"
                    f"run: {{output_root: {tmp_path / 'runs'}}}\n")
    sweep = plan_sweep(spec, [], "0,1", preset="paper-table", name="t")
    save_definition(sweep)

    def method(acc, tokens, ci, cut=0.0):
        quartiles = [{"quartile": q, "problems": 15, "accuracy_points": 10.0 * i - cut,
                      "accuracy_points_ci": [-ci, ci], "length_pct": -cut,
                      "length_pct_ci": [-ci, ci]}
                     for i, q in enumerate(("Q1 easiest", "Q2", "Q3", "Q4 hardest"))]
        return ({"arithmetic_test": {"accuracy": acc, "mean_tokens": tokens}},
                {"arithmetic_test": {"aes": 0.1, "interval": {
                    "accuracy_points": 1.0, "accuracy_points_ci": [-ci, ci],
                    "length_pct": -5.0, "length_pct_ci": [-ci, ci]},
                    "difficulty": {"quartiles": quartiles}}})

    for point in sweep.points:
        run = sweep.run_dir(point)
        atomic_write_json(run.root / "job.json", {"state": "done"})
        ci = 2.0 + point.seed  # the same estimates, other bootstrap draws
        labels = {"base": method(0.5, 100.0, ci), "fast_solving": method(0.5, 110.0, ci),
                  "trained": method(0.4 + 0.1 * point.seed, 90.0, ci, cut=10.0 * point.seed)}
        atomic_write_json(RunDir(run.root).results_path, {
            "benchmarks": ["arithmetic_test"], "methods": list(labels),
            "metrics": {k: v[0] for k, v in labels.items()},
            "averages": {k: v[0]["arithmetic_test"] for k, v in labels.items()},
            "comparison": {k: v[1] | {"AVG": v[1]["arithmetic_test"]}
                           for k, v in labels.items() if k != "base"}})
    states = [point_status(sweep.run_dir(p)) for p in sweep.points]
    rows = {r["label"]: r for r in sweep_rows(sweep, states)["rows"]}
    assert rows["Base"]["seeds"] == rows["Fast-Solving Prompt"]["seeds"] == 1
    fast = rows["Fast-Solving Prompt"]["metrics"]["arithmetic_test"]["len_pct"]
    assert fast["ci"] == [-2.0, 2.0] and fast["interval"] == "paired bootstrap of the run"
    assert {r["seeds"] for k, r in rows.items() if k not in ("Base", "Fast-Solving Prompt")} \
        == {2}
    # where each method cut: per quartile, the mean over seeds (cuts 0 and 10: -5 %) with
    # its t-interval; the one-seed reference keeps its run's bootstrap interval
    [q1, _, _, q4] = rows["O1-Pruner"]["metrics"]["arithmetic_test"]["difficulty"]
    assert q1["quartile"] == "Q1 easiest" and q1["problems"] == 15
    assert q1["length_pct"]["mean"] == -5.0 and q1["length_pct"]["n"] == 2
    assert q4["accuracy_points"]["mean"] == 25.0 and q4["accuracy_points"]["ci"] is not None
    fast_q1 = rows["Fast-Solving Prompt"]["metrics"]["arithmetic_test"]["difficulty"][0]
    assert fast_q1["length_pct"]["ci"] == [-2.0, 2.0]
    from o1pruner.sweep_report import difficulty_markdown

    text = difficulty_markdown(sweep_rows(sweep, states))
    assert "| O1-Pruner | 2 | -5.0 [" in text and "Q4 hardest: acc (points) / length (%)" in text


NO_CORRECT = ("no training samples selected from runs/x/presample for method sft (m=2); "
              "check the pre-samples (are any correct?)")


def failed_sweep(tmp_path: Path, reasons: dict[str, str]):
    """A paper-table sweep whose points named in `reasons` (by method) failed in their train
    stage with that error, recorded by the job layer as a real run records it."""
    from o1pruner.jobs import RunDir, job_process
    from o1pruner.sweep import point_spec, save_definition

    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name_or_path: m}\ndata: {train: arithmetic_train}\n"
                    f"run: {{output_root: {tmp_path / 'runs'}}}\n")
    sweep = plan_sweep(spec, [], preset="paper-table", name="t")
    save_definition(sweep)
    for point in sweep.points:
        reason = reasons.get(point.values["train.method"])
        if reason is None:
            continue
        run = RunDir(sweep.run_dir(point).root)
        with pytest.raises(UserError), job_process(
                run, "train", spec_text=point_spec(sweep.base_yaml, point, sweep.seed_fields)):
            raise UserError(reason)
    return sweep


def test_a_failed_point_says_why_in_the_report(tmp_path):
    from o1pruner.sweep import write_report

    sweep = failed_sweep(tmp_path, {"sft": NO_CORRECT, "dpo": "line one\n<b>line two</b>"})
    data = write_report(sweep.root)
    by_method = {p["values"]["train.method"]: p for p in data["points"]}
    assert by_method["sft"]["state"] == "failed"
    assert by_method["sft"]["reason"] == f"train: {NO_CORRECT}"
    assert by_method["lh"]["state"] == "pending" and by_method["lh"]["reason"] is None
    table = (sweep.root / "report" / "table.md").read_text()
    head, block = table.split("## Runs that did not finish")
    # each reason stands in an indented code block (shown as text wherever it is rendered),
    # wrapped to be read without scrolling
    code = [line for line in block.splitlines() if line.startswith("    ")]
    assert all(len(line) <= 100 for line in code)
    assert f"{by_method['sft']['name']} (method=sft, samples_per_problem=2, seed 42): " \
        f"failed: train: {NO_CORRECT}" in " ".join(line.strip() for line in code)
    assert "    <b>line two</b>" in code
    assert block.count("\n\n") == 2  # the block is one: no blank line breaks out of it
    saved = json.loads((sweep.root / "report" / "sweep.json").read_text())
    assert saved["points"][0]["reason"] == f"train: {NO_CORRECT}"


@pytest.mark.slow
def test_the_cli_reports_why_the_paper_tables_sft_and_dpo_points_failed(tmp_path,
                                                                         tiny_model_dir):
    # the random tiny model answers nothing right: SFT and DPO have no correct pre-sample to
    # train on (the paper-table sweep), and with skip_unsolved O1-Pruner neither
    spec = write_spec(tmp_path, tiny_model_dir)
    command = [sys.executable, "-m", "o1pruner.cli", "sweep", str(spec), "--preset",
               "paper-table", "--set", "reward.skip_unsolved=true", "--name", "pt"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert result.returncode != 0
    assert "## Runs that did not finish" in result.stdout, result.stdout[-3000:]
    block = result.stdout.split("## Runs that did not finish")[1].split("sweep pt")[0]
    text = " ".join(line.strip() for line in block.splitlines())  # unwrapped
    for method in ("sft", "dpo", "lh"):
        assert re.search(rf"\(method={method}[^)]*\): failed: stage train failed: no "
                         r"training samples selected .*?\(are any correct\?\)", text), text
    assert "3 of 3 sweep points did not finish" in result.stderr
    assert "(failed): stage train failed: no training samples selected" in result.stderr


@pytest.mark.slow
def test_a_lambda_sweep_samples_once_evaluates_the_base_once_and_reports(tmp_path,
                                                                        tiny_model_dir):
    spec = write_spec(tmp_path, tiny_model_dir)
    command = [sys.executable, "-m", "o1pruner.cli", "sweep", str(spec),
               "--grid", "reward.lambda=0.5,1,2", "--name", "lam"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    runs, root = tmp_path / "runs", tmp_path / "runs" / "sweeps" / "lam"
    data = json.loads((root / "report" / "sweep.json").read_text())
    assert [p["state"] for p in data["points"]] == ["done"] * 3
    assert [r["label"] for r in data["rows"]] == ["base", "lambda=0.5", "lambda=1", "lambda=2"]
    assert all(r["seeds"] == 1 for r in data["rows"])
    # one pre-sample entry and one base evaluation for the three runs
    assert len(list((runs / ".cache" / "presample").iterdir())) == 1
    generated = [p["name"] for p in data["points"] if any(
        e["kind"] == "engine" for e in read_jsonl(runs / p["name"] / "events.jsonl")
        if e.get("stage") == "presample")]
    assert len(generated) == 1
    reused = [e["reused"] for p in data["points"]
              for e in read_jsonl(runs / p["name"] / "events.jsonl")
              if e["kind"] == "cache" and e.get("method") == "base"]
    assert sorted(reused) == [False, True, True]
    table = (root / "report" / "table.md").read_text()
    assert "3 of 3 runs done" in table and "| lambda=0.5 |" in table.replace("* ", "")
    assert (root / "report" / "accuracy_vs_tokens.png").stat().st_size > 10_000
    assert "sweep lam: 3 runs" in result.stdout
    # the same command again: every point is done, nothing is launched
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    starts = [e for e in read_jsonl(root / "events.jsonl")
              if e["kind"] == "point" and e["state"] == "running"]
    assert len(starts) == 3
