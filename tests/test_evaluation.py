"""`o1pruner eval` / `compare` on real tiny models and real benchmark rows (hf engine).

A random tiny Llama never finishes within a few tokens, so every solution is truncated
and wrong: the tests check bookkeeping (files, resume, cache, truncation, reports), and
the AES arithmetic is covered by tests/test_aes.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from o1pruner.cli import main as cli_main
from o1pruner.data import load_problems
from o1pruner.errors import UserError
from o1pruner.evaluation import (
    benchmark_metrics,
    compare,
    headline_lines,
    results_table,
    run_compare,
    run_eval,
)
from o1pruner.files import read_json, read_jsonl
from o1pruner.jobs import RunDir
from o1pruner.prompts import FAST_SOLVING_SUFFIX
from o1pruner.specio import save_spec, spec_from_dict
from tests.tiny_model import build_tiny_model

MAX_NEW = 12
LIMIT = 6
BENCHES = ["gsm8k_test", "arithmetic_test"]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model standing in for a fine-tuned checkpoint."""
    return build_tiny_model(tmp_path_factory.mktemp("trained") / "model", seed=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output root for the module, so runs share the base-model cache."""
    return tmp_path_factory.mktemp("runs")


def make_spec(root: Path, base: Path, data_dir: Path, name: str, **extra: Any):
    data: dict[str, Any] = {
        "model": {"name_or_path": str(base), "prompt_template": "generic", "dtype": "float32"},
        "data": {"eval_limit": LIMIT, "local_dir": str(data_dir)},
        "eval": {"benchmarks": BENCHES, "max_new_tokens": MAX_NEW, "engine": "hf",
                 "batch_size": LIMIT},
        "run": {"name": name, "output_root": str(root)},
    }
    for dotted, value in extra.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return spec_from_dict(data)


def generations(job: Path, label: str, bench: str) -> list[dict[str, Any]]:
    """Generations of an ad-hoc evaluation (`job` is its folder, eval/adhoc/<name>)."""
    return read_jsonl(job / label / bench / "generations.jsonl")


@pytest.fixture(scope="module")
def first(root: Path, tiny_model_dir: Path, trained_dir: Path, data_dir: Path):
    spec = make_spec(root, tiny_model_dir, data_dir, "first", eval__fast_solving_prompt=True)
    results = run_eval(spec, model=str(trained_dir))
    return Path(results["eval_dir"]), results


def test_results_are_consistent_with_saved_generations(first, data_dir: Path) -> None:
    run, results = first
    assert results["methods"] == ["base", "fast_solving", "trained"]
    assert read_json(run / "results.json") == results
    for bench in BENCHES:
        ids = [p.id for p in load_problems(bench, str(data_dir), LIMIT)]
        for label in results["methods"]:
            records = generations(run, label, bench)
            assert [r["problem_id"] for r in records] == ids
            assert results["metrics"][label][bench] == benchmark_metrics(records)
            assert read_json(run / label / bench / "metrics.json") == \
                results["metrics"][label][bench]
        for label in ("fast_solving", "trained"):
            expected = compare(results["metrics"][label][bench],
                               results["metrics"]["base"][bench]).to_dict()
            comparison = dict(results["comparison"][label][bench])
            interval = comparison.pop("interval")
            assert comparison == expected
            assert interval["problems"] == LIMIT and interval["resamples"] == 2000
            assert interval["length_pct"] == pytest.approx(
                100 * (results["metrics"][label][bench]["mean_tokens"]
                       / results["metrics"]["base"][bench]["mean_tokens"] - 1), abs=0.01)


def test_truncated_solutions_are_counted_and_wrong_without_an_answer(first) -> None:
    run, results = first
    for bench in BENCHES:
        records = generations(run, "base", bench)
        truncated = [r for r in records if r["finish_reason"] == "length"]
        assert truncated, "a random tiny model should hit the 12-token limit"
        assert all(r["num_tokens"] == MAX_NEW for r in truncated)
        assert all(not r["correct"] for r in truncated if r["extracted"] is None)
        m = results["metrics"]["base"][bench]
        assert m["n_truncated"] == len(truncated)
        assert m["truncation_rate"] == pytest.approx(len(truncated) / LIMIT)


def test_wall_time_and_replica_time_are_reported_apart(first) -> None:
    run, results = first
    for label in results["methods"]:
        for bench in BENCHES:
            records = generations(run, label, bench)
            m = results["metrics"][label][bench]
            assert m["wall_s"] == round(sum(r["wall_s"] for r in records), 3)
            assert m["replica_s"] == round(sum(r["gen_s"] for r in records), 3)
            # one replica: the elapsed time holds its generation seconds, and the grading
            assert m["wall_s"] >= m["replica_s"] - 1e-3
    report = (Path(results["report_dir"]) / "report.md").read_text()
    assert "| wall s | replica s |" in report


def test_replicas_working_at_once_report_the_elapsed_time_not_the_sum() -> None:
    # 4 one-problem batches of 1 s each on 2 replicas, two at a time: 2 s elapsed
    records = [{"problem_id": f"p{i}", "num_tokens": 10, "finish_reason": "stop",
                "correct": True, "extracted": "1", "gen_s": 1.0, "wall_s": 0.5}
               for i in range(4)]
    m = benchmark_metrics(records)
    assert (m["wall_s"], m["replica_s"], m["tokens_per_s"]) == (2.0, 4.0, 20.0)
    # records written before wall_s existed: their replica time stands in for it
    old = benchmark_metrics([{k: v for k, v in r.items() if k != "wall_s"} for r in records])
    assert (old["wall_s"], old["replica_s"]) == (4.0, 4.0)


def test_base_accuracy_zero_gives_null_aes_with_a_reason(first) -> None:
    _, results = first
    comp = results["comparison"]["trained"]
    if any(results["metrics"]["base"][b]["accuracy"] > 0 for b in BENCHES):
        pytest.skip("the random base model answered something right")
    assert all(comp[b]["aes"] is None and "base accuracy is 0" in comp[b]["note"]
               for b in BENCHES)
    assert comp["AVG"]["aes"] is None


def test_fast_solving_prompt_appends_the_published_suffix(first) -> None:
    run, _ = first
    fast = generations(run, "fast_solving", "gsm8k_test")[0]["prompt"]
    base = generations(run, "base", "gsm8k_test")[0]["prompt"]
    assert FAST_SOLVING_SUFFIX in fast and FAST_SOLVING_SUFFIX.strip() not in base
    assert generations(run, "trained", "gsm8k_test")[0]["prompt"] == base


def test_report_has_the_table_and_existing_plots(first) -> None:
    run, _ = first
    text = (run / "report" / "report.md").read_text()
    assert "| model, method | gsm8k_test | arithmetic_test | AVG |" in text
    for label in ("base", "fast_solving", "trained"):
        assert f"| {label} |" in text
    images = [line.split("](")[1].rstrip(")") for line in text.splitlines()
              if line.startswith("![")]
    assert {"accuracy_vs_tokens.png", "tokens_gsm8k_test.png"} <= set(images)
    for name in images:
        assert (run / "report" / name).read_bytes()[:4] == b"\x89PNG"
    rows = results_table(run)
    assert len(rows) == 3 * (len(BENCHES) + 1)
    assert {r["benchmark"] for r in rows} == {*BENCHES, "AVG"}
    metrics_events = [e for e in RunDir(run).events() if e["kind"] == "metrics"]
    assert metrics_events[-1]["table"] == rows


def test_headline_summarises_each_method_against_the_base(first) -> None:
    _, results = first
    lines = headline_lines(results)
    heads = [line for line in lines if not line.startswith("  ")]
    assert [line.split(":")[0] for line in heads] == ["base", "fast_solving", "trained"]
    assert all("tokens" in line for line in heads) and "AES" in heads[-1]
    intervals = [line for line in lines if line.startswith("  95% paired bootstrap")]
    assert len(intervals) == 2 and all("points" in x and "% tokens" in x for x in intervals)


def test_second_run_reuses_the_cached_baseline(first, root: Path, tiny_model_dir: Path,
                                               trained_dir: Path, data_dir: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="o1pruner")
    run1, results1 = first
    cached = Path(results1["cache"]["base/gsm8k_test"]["path"]) / "generations.jsonl"
    before = cached.stat().st_mtime_ns, cached.stat().st_size
    spec = make_spec(root, tiny_model_dir, data_dir, "second", eval__fast_solving_prompt=True,
                     reward__lambda=5.0)
    results = run_eval(spec, model=str(trained_dir))
    run2 = Path(results["eval_dir"])
    assert (cached.stat().st_mtime_ns, cached.stat().st_size) == before
    assert all(v["reused"] for v in results["cache"].values())
    assert results["metrics"]["base"] == results1["metrics"]["base"]
    assert generations(run2, "base", "gsm8k_test") == generations(run1, "base", "gsm8k_test")
    events = RunDir(run2).events()
    assert max(e["total"] for e in events if e["kind"] == "progress") == LIMIT * len(BENCHES)
    assert all(e["reused"] for e in events if e["kind"] == "cache")
    assert "reused cached baseline" in (run2 / "logs" / "eval.log").read_text()

    table = run_compare([run1, run2])
    assert "reward.lambda" in table and "first" in table and "second" in table
    lines = [line for line in table.splitlines() if line.startswith("| first/") or
             line.startswith("| second/")]
    assert sum(" base " in line for line in lines) == 1  # one shared base row
    assert any("| 2 |" in line for line in lines) and any("| 5 |" in line for line in lines)


def test_another_batch_size_is_another_cached_baseline(first, root: Path, tiny_model_dir: Path,
                                                      trained_dir: Path, data_dir: Path) -> None:
    """The batch a problem shares can change a greedy token, so the base is generated again
    at another eval.batch_size, and reused again at the same one."""
    _, results1 = first
    spec = make_spec(root, tiny_model_dir, data_dir, "batch4", eval__batch_size=4)
    results = run_eval(spec, model=str(trained_dir), benchmarks=["arithmetic_test"])
    entry = results["cache"]["base/arithmetic_test"]
    assert not entry["reused"]
    assert entry["path"] != results1["cache"]["base/arithmetic_test"]["path"]
    assert read_json(Path(entry["path"]) / "key.json")["batch_size"] == 4
    assert read_json(Path(results1["cache"]["base/arithmetic_test"]["path"])
                     / "key.json")["batch_size"] == LIMIT
    again = run_eval(make_spec(root, tiny_model_dir, data_dir, "batch4-again",
                               eval__batch_size=4),
                     model=str(trained_dir), benchmarks=["arithmetic_test"])
    assert again["cache"]["base/arithmetic_test"] == {**entry, "reused": True}


def test_interrupted_evaluation_resumes(root: Path, tiny_model_dir: Path, trained_dir: Path,
                                        data_dir: Path) -> None:
    spec = make_spec(root, tiny_model_dir, data_dir, "resume")
    job = Path(run_eval(spec, model=str(trained_dir), benchmarks=["gsm8k_test"])["eval_dir"])
    path = job / "trained" / "gsm8k_test" / "generations.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    kept = "".join(lines[:2])
    path.write_text(kept + lines[2][:25])  # two records and a torn third line
    n_events = len(RunDir(job).events())

    results = run_eval(spec, model=str(trained_dir), benchmarks=["gsm8k_test"])
    assert path.read_text().startswith(kept)
    records = read_jsonl(path)
    assert len(records) == LIMIT == len({r["problem_id"] for r in records})
    new = RunDir(job).events()[n_events:]
    assert max(e["total"] for e in new if e["kind"] == "progress") == LIMIT - 2
    assert results["metrics"]["trained"]["gsm8k_test"] == benchmark_metrics(records)


def test_retrained_model_is_not_mixed_with_old_generations(
        root: Path, tiny_model_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "ckpt")
    spec = make_spec(root, tiny_model_dir, data_dir, "retrain")
    run_eval(spec, model=str(model), benchmarks=["arithmetic_test"])
    weights = next(model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    job = Path(run_eval(spec, model=str(model), benchmarks=["arithmetic_test"])["eval_dir"])
    assert len(list((job / "trained").glob("arithmetic_test.stale-*"))) == 1
    assert len(generations(job, "trained", "arithmetic_test")) == LIMIT


def _edit_chat_template(model: Path) -> None:
    """Put a line before every conversation of a saved tokenizer's chat template (stored
    in chat_template.jinja or in tokenizer_config.json, by transformers version)."""
    jinja = model / "chat_template.jinja"
    if jinja.exists():
        jinja.write_text("Solve it.\n" + jinja.read_text())
        return
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "Solve it.\n" + config["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))


def _add_stop_id(model: Path, token_id: int) -> None:
    gen = json.loads((model / "generation_config.json").read_text())
    ids = gen["eos_token_id"]
    gen["eos_token_id"] = [*(ids if isinstance(ids, list) else [ids]), token_id]
    (model / "generation_config.json").write_text(json.dumps(gen))


def test_a_local_models_keys_see_its_chat_template_and_stop_ids(tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """The model fingerprint hashes the tokenizer files and generation_config.json; the
    prompt part of the evaluation key holds the rendered chat template and the stop ids
    (also for a hub model, whose fingerprint is its id)."""
    from o1pruner.evaluation.cache import prompt_fingerprint
    from o1pruner.models import load_tokenizer, model_fingerprint
    from o1pruner.prompts import PromptTemplate
    from o1pruner.spec import ModelSpec

    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    template = PromptTemplate(name="t", system=None, user="{problem}")

    def keys() -> tuple[dict, dict]:
        tok = load_tokenizer(ModelSpec(name_or_path=str(model)), str(model))
        return (model_fingerprint(str(model), str(model)),
                prompt_fingerprint(tok, template, "", "auto", str(model)))

    fp0, prompt0 = keys()
    assert keys() == (fp0, prompt0)
    _edit_chat_template(model)
    fp1, prompt1 = keys()
    assert fp1 != fp0 and prompt1["rendered_sha256"] != prompt0["rendered_sha256"]
    _add_stop_id(model, 3)
    fp2, prompt2 = keys()
    assert fp2 != fp1 and 3 in prompt2["stop_ids"] and 3 not in prompt1["stop_ids"]


def test_an_edited_chat_template_or_stop_id_is_another_cached_baseline(
        root: Path, tiny_model_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "local")

    def base_entry(name: str) -> dict[str, Any]:
        spec = make_spec(root, model, data_dir, name)
        return run_eval(spec, benchmarks=["arithmetic_test"])["cache"]["base/arithmetic_test"]

    first = base_entry("local-1")
    assert base_entry("local-1b") == {**first, "reused": True}
    _edit_chat_template(model)
    second = base_entry("local-2")
    assert not second["reused"] and second["path"] != first["path"]
    prompts = [r["prompt"] for r in read_jsonl(Path(second["path"]) / "generations.jsonl")]
    assert prompts and all(p.startswith("Solve it.") for p in prompts)
    _add_stop_id(model, 3)
    third = base_entry("local-3")
    assert not third["reused"] and third["path"] not in (first["path"], second["path"])


def test_without_a_trained_model_only_the_base_is_evaluated(
        root: Path, tiny_model_dir: Path, trained_dir: Path, data_dir: Path) -> None:
    spec = make_spec(root, tiny_model_dir, data_dir, "baseonly")
    results = run_eval(spec)
    assert results["methods"] == ["base"] and results["comparison"] == {}
    assert "| base |" in (root / "baseonly" / "report" / "report.md").read_text()
    shutil.copytree(trained_dir, root / "baseonly" / "train" / "final")
    results = run_eval(spec)  # now the run's own trained model is picked up
    assert results["methods"] == ["base", "trained"]
    assert results["models"]["trained"]["path"] == str(root / "baseonly" / "train" / "final")


def test_cli_eval_and_compare_errors(root: Path, tiny_model_dir: Path, trained_dir: Path,
                                     data_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = make_spec(root, tiny_model_dir, data_dir, "cli")
    save_spec(spec, tmp_path / "spec.yaml")
    code = cli_main(["eval", str(tmp_path / "spec.yaml"), "--model", str(trained_dir),
                     "--benchmarks", "arithmetic_test"])
    assert code == 0
    adhoc = next((root / "cli" / "eval" / "adhoc").glob("*/results.json")).parent
    results = read_json(adhoc / "results.json")
    assert list(results["benchmarks"]) == ["arithmetic_test"]
    assert "--benchmarks arithmetic_test" in results["command"]

    empty = tmp_path / "not-evaluated"
    empty.mkdir()
    assert cli_main(["compare", str(adhoc), str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    with pytest.raises(UserError, match="no evaluation results"):
        results_table(empty)
    with pytest.raises(UserError, match="--model"):
        run_eval(spec, model=str(empty))


def test_sampled_evaluation_keeps_n_samples_per_problem_and_resumes(
        root: Path, tiny_model_dir: Path, trained_dir: Path, data_dir: Path) -> None:
    spec = make_spec(root, tiny_model_dir, data_dir, "sampled", eval__decoding="sample",
                     eval__temperature=1.0, eval__samples_per_problem=4)
    results = run_eval(spec, model=str(trained_dir), benchmarks=["arithmetic_test"])
    job = Path(results["eval_dir"])
    path = job / "trained" / "arithmetic_test" / "generations.jsonl"
    records = read_jsonl(path)
    assert sorted((r["problem_id"], r["sample_idx"]) for r in records) == sorted(
        (p.id, i) for p in load_problems("arithmetic_test", str(data_dir), LIMIT)
        for i in range(4))
    m = results["metrics"]["trained"]["arithmetic_test"]
    assert (m["n"], m["n_samples"], m["samples_per_problem"]) == (LIMIT, 4 * LIMIT, 4)
    assert set(m["pass_at_k"]) == {"1", "2", "4"}
    assert results["settings"]["samples_per_problem"] == 4
    key = read_json(path.parent / "key.json")
    assert key["grading"] == {"version": 3, "mode": "strict"} and key["engine"] == "hf"
    assert key["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    # a crash in the middle of a problem's samples: the problem is sampled again, whole
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:6]))
    results = run_eval(spec, model=str(trained_dir), benchmarks=["arithmetic_test"])
    again = read_jsonl(path)
    counts = Counter(r["problem_id"] for r in again)
    assert set(counts.values()) >= {4} and len(counts) == LIMIT
    assert results["metrics"]["trained"]["arithmetic_test"]["n_samples"] == 4 * LIMIT


def test_sampled_evaluations_with_two_seeds_share_no_problem_and_sample_seed(
        root: Path, tiny_model_dir: Path, data_dir: Path,
        requested_sample_seeds: dict[str, set[int]]) -> None:
    seen = []
    for seed in (0, 1):
        spec = make_spec(root, tiny_model_dir, data_dir, f"seed{seed}", eval__decoding="sample",
                         eval__temperature=1.0, eval__samples_per_problem=2, run__seed=seed)
        run_eval(spec, benchmarks=["arithmetic_test"])
        seen.append(dict(requested_sample_seeds))
        requested_sample_seeds.clear()
    assert len(seen[0]) == LIMIT and seen[1].keys() == seen[0].keys()
    assert all(len(seeds) == 2 and not seeds & seen[1][p] for p, seeds in seen[0].items())
