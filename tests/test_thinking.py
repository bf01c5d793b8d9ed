"""Thinking vs answer: detection per template, the split by token ids, grading only the
answer, and the thinking counts through pre-sampling, evaluation and the reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from o1pruner.errors import UserError
from o1pruner.files import read_jsonl
from o1pruner.grading import grade_many
from o1pruner.jobs import run_dir_for
from o1pruner.prompts import PromptTemplate, build_prompt
from o1pruner.reward import build_training_set
from o1pruner.sampling import Completion, run_presample
from o1pruner.spec import ModelSpec
from o1pruner.thinking import ThinkingFormat, split_completions
from tests.presample_files import make_spec, write_presample
from tests.test_presample import make_spec as presample_spec
from tests.tiny_model import build_stopping_model, build_tiny_model

TEMPLATE = PromptTemplate(name="t", system=None, user="{problem}")


@pytest.fixture(scope="module")
def r1(tmp_path_factory: pytest.TempPathFactory) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(
        build_tiny_model(tmp_path_factory.mktemp("r1") / "m", thinking="r1"))


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(
        build_tiny_model(tmp_path_factory.mktemp("sw") / "m", thinking="switch"))


def completion(tok, text: str, finish: str = "stop") -> Completion:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return Completion(tok.decode(ids), ids, len(ids), finish)


def test_an_r1_template_thinks_and_the_split_is_at_the_closing_tag(r1) -> None:
    prompt = build_prompt(r1, TEMPLATE, "What is 2 + 2?")
    assert prompt.endswith("<think>\n")
    fmt = ThinkingFormat.detect(r1, "auto", prompt)
    assert fmt.expected and len(fmt.close_ids) == 1  # </think> is one token here
    c = completion(r1, "2 plus 2 is 4, so \\boxed{5}? no.</think>The answer is \\boxed{4}.")
    (measured, answer), = split_completions(r1, "auto", [prompt], [c])
    close = c.token_ids.index(fmt.close_ids[0])
    assert measured.thinking_tokens == close + 1
    assert measured.thinking_tokens + measured.answer_tokens == c.num_tokens
    assert answer == "The answer is \\boxed{4}."
    # only the answer is graded: the box inside the thinking does not count
    assert [g.correct for g in grade_many([answer, answer], ["4", "5"])] == [True, False]


def test_a_completion_cut_off_inside_its_thinking_has_no_answer(r1) -> None:
    prompt = build_prompt(r1, TEMPLATE, "What is 2 + 2?")
    c = completion(r1, "So the answer is \\boxed{4}. But wait, let me", finish="length")
    (measured, answer), = split_completions(r1, "auto", [prompt], [c])
    assert measured.in_thinking and answer == ""
    assert measured.thinking_tokens == c.num_tokens and measured.answer_tokens == 0
    assert grade_many([answer], ["4"])[0].extracted is None


def test_a_switch_template_thinks_by_default_and_not_when_turned_off(switch) -> None:
    auto = build_prompt(switch, TEMPLATE, "Q?")
    off = build_prompt(switch, TEMPLATE, "Q?", thinking="off")
    on = build_prompt(switch, TEMPLATE, "Q?", thinking="on")
    assert off.endswith("<think>\n\n</think>\n\n") and auto == on
    assert ThinkingFormat.detect(switch, "auto", auto).expected
    assert not ThinkingFormat.detect(switch, "auto", off).expected
    c = completion(switch, "The answer is \\boxed{4}.")
    (measured, answer), = split_completions(switch, "auto", [off], [c])
    assert (measured.thinking_tokens, measured.answer_tokens) == (0, c.num_tokens)
    # a completion that opens its own thinking block is split too
    own = completion(switch, "<think>2 + 2 = 4</think>\\boxed{4}")
    (m2, a2), = split_completions(switch, "off", [off], [own])
    assert m2.thinking_tokens > 0 and a2 == "\\boxed{4}"


def test_a_model_that_does_not_think_is_all_answer(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = build_prompt(tok, TEMPLATE, "Q?")
    fmt = ThinkingFormat.detect(tok, "auto", prompt)
    assert not fmt.expected and len(fmt.close_ids) > 1  # the tag is several tokens here
    c = completion(tok, "12 + 7 = 19. \\boxed{19}")
    assert fmt.measure(c.token_ids).thinking_tokens == 0
    with_tag = completion(tok, "12 + 7</think> = 19")  # the multi-token tag is still found
    assert 0 < fmt.measure(with_tag.token_ids).thinking_tokens < with_tag.num_tokens


def test_presample_records_thinking_and_answer_tokens(tmp_path: Path) -> None:
    model = build_stopping_model(tmp_path / "m", p_stop=0.25, thinking="r1")
    spec = presample_spec(ModelSpec(name_or_path=str(model)), tmp_path, n=3,
                          max_new_tokens=24, batch_size=4)
    run_presample(spec)
    out = run_dir_for(spec).root / "presample"
    samples = read_jsonl(out / "samples.jsonl")
    assert all(s["thinking_tokens"] + s["answer_tokens"] == s["num_tokens"] for s in samples)
    close = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("</think>")
    for s in samples:
        if close not in s["token_ids"]:  # never closed its thinking: no answer, all thinking
            assert s["answer_tokens"] == 0 and s["extracted"] is None and not s["correct"]
    stats = read_jsonl(out / "problem_stats.jsonl")
    for st in stats:
        mine = [s for s in samples if s["problem_id"] == st["problem_id"]]
        assert st["mean_thinking_tokens"] == pytest.approx(
            sum(s["thinking_tokens"] for s in mine) / len(mine))


def _with_thinking(out: Path, thinking: list[int]) -> None:
    samples = read_jsonl(out / "samples.jsonl")
    for s, t in zip(samples, thinking * len(samples), strict=False):
        s["thinking_tokens"], s["answer_tokens"] = t, s["num_tokens"] - t
    stats = read_jsonl(out / "problem_stats.jsonl")
    for st in stats:
        mine = [s for s in samples if s["problem_id"] == st["problem_id"]]
        st["mean_thinking_tokens"] = sum(s["thinking_tokens"] for s in mine) / len(mine)
    for name, rows in (("samples", samples), ("problem_stats", stats)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_reward_length_thinking_uses_the_thinking_tokens(tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    spec = make_spec(tiny_model_dir, tmp_path, name="rt", reward={"length": "thinking",
                                                                  "samples_per_problem": 4})
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = write_presample(run_dir_for(spec).root, tok, n_problems=2)
    with pytest.raises(UserError, match="no thinking counts"):
        build_training_set(spec, out)
    _with_thinking(out, [0, 0, 0, 0])
    with pytest.raises(UserError, match="no pre-sample has a thinking part"):
        build_training_set(spec, out)
    _with_thinking(out, [4, 8, 12, 16])
    rows = build_training_set(spec, out)
    for row in rows:  # L_ref / L - 1 with thinking lengths: 10 / t - 1
        sample_t = [4, 8, 12, 16][row["sample_idx"]]
        assert row["length_term"] == pytest.approx(10 / sample_t - 1)


def test_a_one_token_thinking_cannot_explode_the_reward(tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    """Thinking lengths 1, 1066, 1066, 1067 (mean 800): the 1-token one has a length term of
    799; with reward_clip null, length thinking clips rewards to [-2, 4]; a clip given is
    kept."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rewards = {}
    for name, clip in (("default", {}), ("given", {"reward_clip": [-1.0, 2.0]})):
        spec = make_spec(tiny_model_dir, tmp_path, name=name, reward={
            "length": "thinking", "samples_per_problem": 4, **clip})
        out = write_presample(run_dir_for(spec).root, tok, n_problems=1)
        _with_thinking(out, [1, 1066, 1066, 1067])
        rows = {r["sample_idx"]: r for r in build_training_set(spec, out)}
        assert rows[0]["length_term"] == pytest.approx(799.0)
        rewards[name] = [rows[i]["reward"] for i in range(4)]
    assert rewards["default"][0] == 4.0 and max(rewards["default"]) == 4.0
    assert min(rewards["default"]) >= -2.0
    assert rewards["given"][0] == 2.0 and all(-1.0 <= r <= 2.0 for r in rewards["given"])
