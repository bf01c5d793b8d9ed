"""The spec form is generated from RunSpec: every leaf has a widget; values <-> spec."""

from __future__ import annotations

from typing import get_args

import gradio as gr
import pytest
from pydantic import BaseModel

from o1pruner.spec import DatasetRef, RunSpec
from o1pruner.specio import SpecError
from webui import form, layout
from webui.app import build_app
from webui.build_tab import make_component


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[str]:
    """Every leaf of the spec found independently of webui.form (DatasetRef is one leaf)."""
    out = set()
    for name, info in model.model_fields.items():
        key = (*prefix, info.alias or name)
        nested = [a for a in (info.annotation, *get_args(info.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel) and a is not DatasetRef]
        if nested and type(None) not in get_args(info.annotation):
            out |= _leaf_paths(nested[0], key)
        else:
            out.add(".".join(key))
    return out


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> gr.Blocks:
    return build_app(tmp_path_factory.mktemp("ws"))


def test_every_leaf_field_of_the_spec_has_a_component(app: gr.Blocks) -> None:
    ids = {b.elem_id for b in app.blocks.values() if getattr(b, "elem_id", None)}
    paths = _leaf_paths(RunSpec)
    assert {leaf.key for leaf in form.leaves()} == paths
    missing = [p for p in paths if "field-" + p.replace(".", "-") not in ids]
    assert not missing
    assert {"reward.lambda", "eval.benchmarks", "data.train"} <= paths


def test_widgets_follow_field_types_bounds_help_and_defaults() -> None:
    by_key = {leaf.key: leaf for leaf in form.leaves()}
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    made = {key: make_component(leaf, values[key], ["arithmetic_train", "gsm8k_test"])
            for key, leaf in by_key.items()}
    k = made["presample.k"]  # numbers are text boxes parsed strictly, bounds in the hint
    assert isinstance(k, gr.Textbox) and k.value == "16"
    assert k.placeholder == "1 to 1024 · whole number"
    assert k.info == RunSpec.model_fields["presample"].annotation.model_fields["k"].description
    assert k.label == "K: samples per problem"
    assert made["train.epsilon"].placeholder == "> 0 and < 1"
    engine = made["presample.engine"]
    assert isinstance(engine, gr.Dropdown)
    assert [c[1] for c in engine.choices] == ["auto", "vllm", "hf"]
    assert isinstance(made["reward.reward_normalize"], gr.Checkbox)
    assert isinstance(made["model.name_or_path"], gr.Textbox)
    train = made["data.train"]
    assert isinstance(train, gr.Dropdown) and train.allow_custom_value
    assert train.value == "arithmetic_train"
    bench = made["eval.benchmarks"]
    assert bench.multiselect and bench.value == ["paper_math_test", "paper_gsm8k", "paper_gaokao"]
    assert made["reward.reward_clip"].value == "" and made["reward.lambda"].value == "2"
    assert made["train.learning_rate"].value == "2e-07"
    assert made["train.lora_target"].value == "all-linear"
    limit = made["data.train_limit"]  # optional number: empty means null
    assert isinstance(limit, gr.Textbox) and limit.value == "" and "empty = null" in limit.placeholder


def test_labels_are_words_and_the_method_knobs_are_on_the_first_screen() -> None:
    by_key = {leaf.key: leaf for leaf in form.leaves()}
    assert by_key["presample.max_new_tokens"].label == "Max new tokens"
    assert by_key["train.lora_rank"].label == "LoRA rank"
    assert by_key["reward.lambda"].label.startswith("λ")
    assert all(leaf.label and "_" not in leaf.label for leaf in by_key.values())
    groups = layout.groups()
    first = [leaf.key for leaf in groups[layout.FIRST]]
    assert first[:7] == ["model.name_or_path", "data.train", "presample.k", "reward.lambda",
                         "reward.samples_per_problem", "train.epsilon", "train.finetuning"]
    placed = [leaf.key for members in groups.values() for leaf in members]
    assert sorted(placed) == sorted(by_key)  # every field exactly once
    scale_out = {leaf.key for leaf in groups[layout.SCALE_OUT]}
    assert {"presample.data_parallel_size", "eval.tensor_parallel_size", "train.devices",
            "presample.gpu_memory_utilization", "eval.ray_address"} <= scale_out


def test_fields_that_do_not_apply_are_hidden_and_left_out() -> None:
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    shown = layout.visibility(values, cuda=False)
    assert not shown["train.lora_rank"] and not shown["train.freeze_trainable_layers"]
    assert not shown["train.dpo_beta"] and not shown["eval.temperature"]
    assert not shown["train.deepspeed_stage"]  # one device, no CUDA
    assert layout.visibility(values, cuda=True)["train.deepspeed_stage"]
    assert layout.visibility({**values, "train.devices": "2"}, cuda=False)[
        "train.deepspeed_offload"]
    lora = layout.visibility({**values, "train.finetuning": "lora", "train.method": "dpo"},
                             cuda=False)
    assert lora["train.lora_rank"] and lora["train.dpo_beta"]
    assert not lora["train.freeze_trainable_layers"]
    assert {"train.finetuning", "train.method", "eval.decoding", "train.devices"} <= set(
        layout.controllers())
    # a hidden field keeps what was typed, but the spec gets its default
    spec = form.form_to_spec({**values, "train.lora_rank": "64"})
    assert spec.train.finetuning == "full" and spec.train.lora_rank == 8
    lora_spec = form.form_to_spec({**values, "train.finetuning": "lora", "train.lora_rank": "64"})
    assert lora_spec.train.lora_rank == 64


@pytest.mark.parametrize("key, typed, expected", [
    ("reward.lambda", "2,5", "reward.lambda: expected a number; got '2,5'; write decimals "
     "with a dot (2.5), not a comma"),
    ("presample.k", "-3", "presample.k: Input should be greater than or equal to 1; got -3"),
    ("presample.k", "2.5", "presample.k: expected a whole number; got '2.5'"),
    ("presample.k", "1 000", "presample.k: expected a whole number; got '1 000'"),
    ("train.epsilon", "1", "train.epsilon: Input should be less than 1; got 1.0"),
    ("run.name", "a b", "run.name: String should match pattern"),
])
def test_numbers_are_read_strictly_and_each_problem_names_its_field(
        key: str, typed: str, expected: str) -> None:
    leaf = next(leaf for leaf in form.leaves() if leaf.key == key)
    assert form.check_field(leaf, typed).startswith(expected)
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    with pytest.raises(SpecError) as err:
        form.form_to_spec({**values, key: typed})
    assert any(p.startswith(key) for p in err.value.problems)


def test_numbers_in_any_plain_notation_are_accepted() -> None:
    by_key = {leaf.key: leaf for leaf in form.leaves()}
    assert form.parse_number(by_key["train.learning_rate"], "1e-5") == 1e-5
    assert form.parse_number(by_key["train.learning_rate"], " .5 ") == 0.5
    assert form.parse_number(by_key["presample.k"], "+8") == 8
    assert form.check_field(by_key["presample.k"], "8") is None
    assert form.check_field(by_key["data.train_limit"], "") is None


def test_defaults_and_a_rich_spec_round_trip() -> None:
    assert form.form_to_spec(form.default_values()) == RunSpec()
    spec = RunSpec.model_validate({
        "model": {"system_prompt": "Be brief."},
        "data": {"train": {"name": "my.jsonl", "problem_field": "q", "answer_field": "a"},
                 "train_limit": 4},
        "presample": {"k": 2, "max_new_tokens": 16, "engine": "hf"},
        "reward": {"lambda": 5, "reward_clip": [-2, 4], "reward_normalize": True,
                   "samples_per_problem": 1},
        "train": {"finetuning": "lora", "lora_target": ["q_proj", "v_proj"],
                  "deepspeed_stage": 2, "deepspeed_offload": True},
        "eval": {"benchmarks": ["arithmetic_test", {"name": "b.jsonl", "answer_format": "gsm8k"}]},
        "run": {"name": "round-trip"},
    })
    values = form.spec_to_values(spec)
    assert form.form_to_spec(values) == spec
    by_key = dict(zip([leaf.key for leaf in form.leaves()], values, strict=True))
    assert by_key["reward.reward_clip"] == "-2, 4"
    assert by_key["train.lora_target"] == "q_proj, v_proj"
    assert by_key["data.train"] == "{name: my.jsonl, problem_field: q, answer_field: a}"


def test_values_by_dotted_key_and_empty_means_null() -> None:
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    values.update({"model.system_prompt": "", "data.train_limit": "4", "run.name": "x1",
                   "reward.reward_clip": " ", "eval.benchmarks": ["arithmetic_test", "t.jsonl"]})
    spec = form.form_to_spec(values)
    assert spec.model.system_prompt is None and spec.reward.reward_clip is None
    assert spec.data.train_limit == 4 and isinstance(spec.data.train_limit, int)
    assert [b.name for b in spec.eval.benchmarks] == ["arithmetic_test", "t.jsonl"]


def test_each_error_names_its_field_and_lands_in_its_section() -> None:
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    values.update({"presample.k": 0, "reward.reward_clip": "4, -2", "model.name_or_path": "",
                   "train.freeze_trainable_layers": 0, "train.finetuning": "freeze",
                   "reward.lambda": "lots"})
    with pytest.raises(SpecError) as err:
        form.form_to_spec(values)
    problems = err.value.problems
    placed, unplaced = form.problems_by_field(problems)
    assert {"presample.k", "reward.reward_clip", "model.name_or_path",
            "train.freeze_trainable_layers", "reward.lambda"} <= set(placed)
    assert not unplaced
    grouped = form.problems_by_section(problems)
    assert set(grouped) >= {"presample", "reward", "model", "train"}
    assert any("must not be 0" in p for p in placed["train.freeze_trainable_layers"])
    assert any("must be <" in p for p in grouped["reward"])


def test_a_malformed_range_is_reported_not_guessed() -> None:
    leaf = next(leaf for leaf in form.leaves() if leaf.key == "reward.reward_clip")
    with pytest.raises(ValueError, match="low, high"):
        form.from_widget(leaf, "1, 2, 3")
    assert form.from_widget(leaf, "[-2, 4]") == [-2.0, 4.0]
