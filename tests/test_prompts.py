"""Prompt templates: YAML files, `auto` matching, overrides, and the rendered prompt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from o1pruner.errors import UserError
from o1pruner.prompts import (
    FAST_SOLVING_SUFFIX,
    PromptTemplate,
    build_prompt,
    list_templates,
    load_template,
)
from o1pruner.spec import ModelSpec


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_fast_solving_suffix_is_the_papers_text_verbatim():
    assert FAST_SOLVING_SUFFIX == (
        "\nBe confident. Solving this problem quickly with less pause, stop or reflection.")


def test_shipped_templates_cover_the_model_families():
    names = list_templates()
    for name in ("generic", "qwq", "marco-o1", "deepseek-r1", "qwen3-thinking", "qwen2.5"):
        assert name in names
    for name in names:  # every shipped file loads and has the problem placeholder
        template = load_template(ModelSpec(prompt_template=name))
        assert template.name == name and "{problem}" in template.user


@pytest.mark.parametrize("model, expected", [
    ("Qwen/QwQ-32B-Preview", "qwq"),
    ("AIDC-AI/Marco-o1", "marco-o1"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-r1"),  # longest match beats qwen
    ("Qwen/Qwen3-8B", "qwen3-thinking"),
    ("pypi:qwen2.5-coder-0.5b-instruct", "qwen2.5"),
    ("pypi:smollm2-135m-instruct", "generic"),
])
def test_auto_picks_the_template_from_the_model_name(model, expected):
    assert load_template(ModelSpec(name_or_path=model)).name == expected


def test_r1_distills_get_no_system_prompt():
    assert load_template(ModelSpec(prompt_template="deepseek-r1")).system is None


def test_system_prompt_in_the_spec_overrides_the_templates():
    spec = ModelSpec(prompt_template="qwq", system_prompt="Be brief.")
    assert load_template(spec).system == "Be brief."


def test_unknown_template_name_lists_the_available_ones():
    with pytest.raises(UserError, match="available: .*generic.*qwq"):
        load_template(ModelSpec(prompt_template="no-such-template"))


def test_user_template_file(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsystem: Think.\nuser: 'Problem: {problem}'\n"
                    "suffix: ' Answer in \\boxed{}.'\n")
    template = load_template(ModelSpec(prompt_template=str(path)))
    assert template == PromptTemplate(name="mine", system="Think.", user="Problem: {problem}",
                                      suffix=" Answer in \\boxed{}.", description="")
    assert template.user_turn("2+{x}") == "Problem: 2+{x} Answer in \\boxed{}."


@pytest.mark.parametrize("text, message", [
    ("name: x\nuser: [unclosed\n", "malformed YAML in prompt template .* at line"),
    ("name: x\nuser: 'no placeholder'\n", "must contain {problem}"),
    ("name: x\nuser: '{problem}'\ncolour: red\n", "unknown field.*colour"),
    ("user: '{problem}'\n", "`name` is required"),
    ("- a list\n", "must be a mapping"),
])
def test_bad_template_file_names_the_file_and_the_mistake(tmp_path: Path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        load_template(ModelSpec(prompt_template=str(path)))
    assert str(path) in str(err.value)


def test_missing_template_file_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_template(ModelSpec(prompt_template=str(tmp_path / "nope.yaml")))


def test_build_prompt_applies_the_chat_template(tokenizer):
    template = PromptTemplate(name="t", system="SYS", user="Q: {problem}", suffix=" END")
    prompt = build_prompt(tokenizer, template, "1 + {1}", extra_suffix=FAST_SOLVING_SUFFIX)
    assert prompt == ("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ: 1 + {1} END"
                      + FAST_SOLVING_SUFFIX + "<|im_end|>\n<|im_start|>assistant\n")


def test_build_prompt_without_system_prompt_has_only_the_user_turn(tokenizer):
    template = load_template(ModelSpec(prompt_template="deepseek-r1"))
    prompt = build_prompt(tokenizer, template, "What is 2+2?")
    assert prompt.startswith("<|im_start|>user\nWhat is 2+2?\nPlease reason step by step")
    assert "system" not in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_tokenizer_without_chat_template_gets_plain_text_and_one_warning(tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain.chat_template = None
    plain.name_or_path = "plain-tokenizer-for-test"
    template = PromptTemplate(name="t", system="SYS", user="{problem}")
    with caplog.at_level(logging.WARNING, logger="o1pruner.prompts"):
        first = build_prompt(plain, template, "P1")
        second = build_prompt(plain, template, "P2")
    assert first == "SYS\n\nP1\n" and second == "SYS\n\nP2\n"
    assert sum("no chat template" in r.message for r in caplog.records) == 1
