"""RunSpec: defaults, YAML round trip, overrides, and one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from o1pruner.cli import main
from o1pruner.spec import RunSpec
from o1pruner.specio import SpecError, dump_yaml, load_spec, load_spec_text

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / "templates").rglob("*.yaml"))
SPEC_TEMPLATES = [p for p in TEMPLATES if "prompts" not in p.parts]


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text)
    return info.value.problems


def test_defaults_follow_the_paper():
    spec = RunSpec()
    assert spec.presample.k == 16
    assert (spec.presample.temperature, spec.presample.top_p) == (0.5, 0.8)
    assert spec.presample.max_new_tokens == 8192
    assert spec.reward.lambda_ == 2.0
    assert spec.reward.ratio_level == "token_mean"
    assert spec.reward.samples_per_problem == 2
    assert spec.train.epsilon == 0.2
    assert spec.train.learning_rate == 2e-7
    assert spec.train.max_grad_norm == 10
    assert spec.model.trust_remote_code is False
    assert (spec.eval.aes_alpha, spec.eval.aes_beta, spec.eval.aes_gamma) == (1, 3, 5)


def test_yaml_round_trip_is_exact():
    spec = load_spec_text(
        "reward: {lambda: 5, reward_clip: [-2, 4], reward_normalize: true}\n"
        "train: {finetuning: lora, lora_rank: 16}\n"
        "data: {train: {name: arithmetic_train, arithmetic: {n: 10, seed: 3}}}\n"
        "eval: {benchmarks: [gsm8k_test, {name: my.jsonl, problem_field: q, answer_field: a}]}\n"
    )
    text = dump_yaml(spec)
    again = load_spec_text(text)
    assert again == spec
    assert dump_yaml(again) == text
    assert yaml.safe_load(text)["reward"]["lambda"] == 5.0


@pytest.mark.parametrize("path", SPEC_TEMPLATES, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_specs_validate(path: Path):
    spec = load_spec(path)
    assert load_spec_text(dump_yaml(spec)) == spec


def test_every_field_has_help_text():
    def walk(model: type, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(prefix + name)
            ann = field.annotation
            for sub in (ann, *getattr(ann, "__args__", ())):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    missing += walk(sub, f"{prefix}{name}.")
        return missing

    assert walk(RunSpec, "") == []


def test_overrides_are_read_as_yaml():
    spec = load_spec(None, ["presample.k=4", "reward.lambda=5", "reward.reward_clip=[-2, 4]",
                            "train.finetuning=freeze", "train.freeze_trainable_layers=-3",
                            "run.name=my-run", "model.system_prompt=null"])
    assert spec.presample.k == 4 and spec.reward.lambda_ == 5.0
    assert spec.reward.reward_clip == (-2.0, 4.0)
    assert spec.train.freeze_trainable_layers == -3
    assert spec.run_name() == "my-run"


def test_renamed_keys_are_accepted_with_a_warning(caplog):
    spec = load_spec_text("presample: {num_samples: 6}\ntrain: {lr: 1.0e-5}\n")
    assert spec.presample.k == 6 and spec.train.learning_rate == 1e-5
    assert "renamed" in caplog.text


def test_run_name_is_stable_and_follows_the_spec():
    a, b = RunSpec(), RunSpec()
    assert a.run_name() == b.run_name()
    assert a.run_name().startswith("smollm2-135m-instruct-")
    c = load_spec(None, ["presample.k=4"])
    assert c.run_name() != a.run_name()


# Each broken spec: (YAML text, a fragment that must appear in the message, the field path).
BROKEN = [
    ("presample: {k: 0}", "greater than or equal to 1", "presample.k"),
    ("presample: {k: many}", "valid integer", "presample.k"),
    ("presample: {temperature: -1}", "greater than 0", "presample.temperature"),
    ("presample: {top_p: 1.5}", "less than or equal to 1", "presample.top_p"),
    ("presample: {engine: tgi}", "'auto', 'vllm' or 'hf'", "presample.engine"),
    ("reward: {lambda: -2}", "greater than or equal to 0", "reward.lambda"),
    ("reward: {ratio_level: token}", "'token_mean' or 'sequence'", "reward.ratio_level"),
    ("reward: {reward_clip: [4, -2]}", "must be < high", "reward.reward_clip"),
    ("reward: {reward_clip: [1, 2, 3]}", "at most 2 items", "reward.reward_clip"),
    ("reward: {samples_per_problem: 20}", "must be <= presample.k",
     "reward.samples_per_problem"),
    ("train: {epsilon: 1.5}", "less than 1", "train.epsilon"),
    ("train: {epsilon: 0}", "greater than 0", "train.epsilon"),
    ("train: {finetuning: partial}", "'full', 'freeze' or 'lora'", "train.finetuning"),
    ("train: {lora_rank: 16}", "only applies with finetuning: lora", "train.lora_rank"),
    ("train: {freeze_trainable_layers: 4}", "only applies with finetuning: freeze",
     "train.freeze_trainable_layers"),
    ("train: {finetuning: freeze, freeze_trainable_layers: 0}", "must not be 0",
     "train.freeze_trainable_layers"),
    ("train: {method: ppo}", "'lh', 'sft', 'dpo', 'grpo_length' or 'thinkprune'", "train.method"),
    ("train: {dpo_beta: 0.5}", "only applies with method: dpo", "train.dpo_beta"),
    ("train: {deepspeed_stage: 4}", "0, 1, 2 or 3", "train.deepspeed_stage"),
    ("train: {deepspeed_offload: true}", "needs deepspeed_stage 2 or 3",
     "train.deepspeed_offload"),
    ("train: {learning_rate: 0}", "greater than 0", "train.learning_rate"),
    ("train: {precision: fp8}", "'bf16', 'fp16' or 'fp32'", "train.precision"),
    ("train: {lern_rate: 1}", "unknown field; allowed here: method", "train.lern_rate"),
    ("eval: {temperature: 0.7}", "only applies with decoding: sample", "eval.temperature"),
    ("eval: {benchmarks: []}", "at least 1 item", "eval.benchmarks"),
    ("eval: {benchmarks: [{name: x.jsonl, fields: q}]}", "unknown field",
     "eval.benchmarks.0.fields"),
    ("data: {train: {name: arithmetic_train, arithmetic: {min_steps: 3, max_steps: 2}}}",
     "must be <= max_steps", "data.train.arithmetic.min_steps"),
    ("data: {train_limit: 0}", "greater than or equal to 1", "data.train_limit"),
    ("model: {name_or_path: ''}", "at least 1 character", "model.name_or_path"),
    ("model: {dtype: int8}", "'auto', 'bfloat16', 'float16' or 'float32'", "model.dtype"),
    ("run: {name: 'bad name/..'}", "should match pattern", "run.name"),
    ("schema_version: 2", "Input should be 1", "schema_version"),
    ("modle: {name_or_path: x}", "unknown field; allowed here: schema_version, model",
     "modle"),
]


@pytest.mark.parametrize("text,fragment,path", BROKEN, ids=[b[2] for b in BROKEN])
def test_broken_spec_names_field_and_problem(text: str, fragment: str, path: str):
    problems = problems_of(text)
    line = next((p for p in problems if p.startswith(path)), None)
    assert line is not None, problems
    assert fragment in line, line
    assert "\n" not in line


def test_every_problem_is_reported_at_once_with_its_line():
    problems = problems_of("presample:\n  k: 0\n  top_p: 2\ntrain:\n  epsilon: 3\n")
    assert problems == [
        "presample.k (line 2): Input should be greater than or equal to 1; got 0",
        "presample.top_p (line 3): Input should be less than or equal to 1; got 2",
        "train.epsilon (line 5): Input should be less than 1; got 3",
    ]


@pytest.mark.parametrize("text,where", [
    ("presample:\n  k: [1\n", "line 3, column 1"),
    ("presample:\n\tk: 1\n", "line 2, column 1"),
    ("a: b: c\n", "line 1, column 5"),
])
def test_malformed_yaml_names_line_and_column(text: str, where: str):
    (problem,) = problems_of(text)
    assert problem.startswith(f"malformed YAML at {where}")


def test_top_level_must_be_a_mapping():
    (problem,) = problems_of("- model\n- data\n")
    assert "top level must be a mapping" in problem


def test_cli_validate_prints_resolved_yaml(tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("presample: {k: 4}\n")
    assert main(["validate", str(spec), "--set", "reward.lambda=5"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["presample"]["k"] == 4 and out["reward"]["lambda"] == 5.0


def test_cli_validate_reports_every_problem_without_traceback(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("presample:\n  k: 0\ntrain:\n  finetuning: partial\n")
    result = subprocess.run([sys.executable, "-m", "o1pruner.cli", "validate", str(spec)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{spec}: invalid spec"
    assert lines[1].startswith("presample.k (line 2):")
    assert lines[2].startswith("train.finetuning (line 4):")


@pytest.mark.parametrize("argv,message", [
    (["validate", "/nonexistent/spec.yaml"], "spec file not found"),
    (["validate", "--set", "novalue"], "expected KEY=VALUE"),
    (["validate", "--set", "presample.k=abc"], "presample.k"),
])
def test_cli_user_mistakes_exit_2(argv: list[str], message: str, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_spec_reference_doc_is_current():
    from o1pruner.specdoc import spec_reference

    doc = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    assert doc == spec_reference(), "regenerate: python -m o1pruner.specdoc > docs/spec.md"
